"""Structured (channel) pruning of a trained checkpoint as a library function: a smaller dense Darknet network.

:func:`structured_prune` is what ``python -m yolov3.prune structured`` runs, callable with a
:class:`StructuredSettings`: it removes whole channels until ``flops_target`` of the FLOPs remain, saves the
result as ``pruned.cfg`` + ``pruned.weights`` in ``out``, and (``finetune_epochs`` > 0) fine-tunes it through the
``darknet_cfg`` model builder in ``out/finetune`` (with its ``args.yaml``), saving ``finetuned.weights``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from yolov3.atomic import write_text_atomic
from yolov3.checkpoint import load_checkpoint, model_from_checkpoint
from yolov3.compression.pipelines import markdown_table
from yolov3.compression.structured import flops, prune_channels
from yolov3.models import Darknet
from yolov3.train.builder import build_trainer
from yolov3.train.config import TrainConfig
from yolov3.train.distributed import resolve_device
from yolov3.train.run_folder import prepare_run_folder


@dataclass(frozen=True)
class StructuredSettings:
    config: TrainConfig
    weights: Path
    out: Path
    flops_target: float = 0.5  # fraction of the FLOPs kept
    criterion: Literal["l1", "bn_gamma"] = "l1"  # channel importance
    channel_multiple: int = 1  # each layer keeps a multiple of this many channels (8: faster CPU kernels)
    finetune_epochs: int = 0
    progress: bool = True


@dataclass
class StructuredResult:
    cfg_path: Path
    weights_path: Path
    finetuned_path: Path | None  # finetuned.weights, when fine-tuned
    rows: list[list[str]]  # model, BFLOPs, parameters, mAP@0.5 (after fine-tuning, else "-")

    HEADER = ("model", "BFLOPs", "parameters", "mAP@0.5")

    def format_markdown(self) -> str:
        return markdown_table(self.HEADER, self.rows)


def finetune_config(config: TrainConfig, cfg_path: Path, weights_path: Path, epochs: int) -> TrainConfig:
    """``config`` training the pruned ``cfg_path`` + ``weights_path`` (the ``darknet_cfg`` model) for ``epochs``:
    the pruned weights are the start, so no pretrained file of the dense run's config is read."""
    options = {"cfg": str(cfg_path), "weights": str(weights_path)}
    model = dataclasses.replace(config.model, name="darknet_cfg", options=options, weights=None, backbone_weights=None)
    return dataclasses.replace(config, model=model, train=dataclasses.replace(config.train, epochs=epochs))


def structured_prune(settings: StructuredSettings) -> StructuredResult:
    """Prune channels, save the Darknet cfg + weights, optionally fine-tune; ``structured.md`` in ``out``."""
    config, out = settings.config, settings.out
    out.mkdir(parents=True, exist_ok=True)
    model = model_from_checkpoint(load_checkpoint(settings.weights)).eval()
    size = (config.data.image_size, config.data.image_size)
    pruned = prune_channels(
        model,
        flops_target=settings.flops_target,
        criterion=settings.criterion,
        channel_multiple=settings.channel_multiple,
    )
    cfg_path, weights_path = out / "pruned.cfg", out / "pruned.weights"
    pruned.save_darknet_cfg(cfg_path, header=f"{settings.weights} pruned to {settings.flops_target:.0%} of its FLOPs")
    pruned.save_darknet_weights(weights_path)
    rows = [
        [name, f"{flops(network, size):.3f}", f"{sum(p.numel() for p in network.parameters()):,}", "-"]
        for name, network in (("dense", model), ("pruned", pruned))
    ]
    finetuned = None
    if settings.finetune_epochs > 0:
        config = finetune_config(config, cfg_path, weights_path, settings.finetune_epochs)
        # its args.yaml: the fine-tuned model can be trained on (--cfg), or fine-tuned for int8 (export --qat)
        prepare_run_folder(out / "finetune", config, resolve_device(config.device))
        trainer = build_trainer(config, out / "finetune", progress=settings.progress)
        fitted = trainer.fit()
        finetuned = out / "finetuned.weights"
        assert isinstance(trainer.model, Darknet)  # the darknet_cfg builder makes one
        trainer.model.save_darknet_weights(finetuned)
        rows[1][3] = f"{fitted.last_map50:.4f}" if fitted.last_map50 is not None else "-"
    result = StructuredResult(cfg_path, weights_path, finetuned, rows)
    write_text_atomic(out / "structured.md", result.format_markdown())
    return result
