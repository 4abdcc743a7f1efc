"""Structured (channel) pruning of a trained checkpoint as a library function: a smaller dense Darknet network.

:func:`structured_prune` is what ``python -m yolov3.prune structured`` runs, callable with a
:class:`StructuredSettings`: it removes whole channels until ``flops_target`` of the FLOPs remain, saves the
result as ``pruned.cfg`` + ``pruned.weights`` in ``out``, and (``finetune_epochs`` > 0) fine-tunes it through the
``darknet_cfg`` model builder in ``out/finetune`` (with its ``args.yaml``), saving ``finetuned.weights``.

With ``slimming_epochs`` > 0 it first trains the dense model that many epochs under network slimming's L1
penalty on the batch-norm scales (Liu et al. 2017, :mod:`yolov3.compression.slimming`) in ``out/slimming``,
and prunes that model, by ``|gamma|`` unless another criterion is named: the channels the penalty drove to
zero go, and the folding of their constant outputs makes their removal nearly free. Both trainings keep
``last.pt`` every epoch; ``resume=True`` with the same settings (``out/structured.json``) continues a killed
run where it stopped (the pruning between them is deterministic and runs again).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from yolov3.atomic import write_text_atomic
from yolov3.checkpoint import load_checkpoint, model_from_checkpoint
from yolov3.compression.pipelines import (
    StartFrom,
    check_model_spec,
    finetune,
    markdown_table,
    record_settings,
    settings_record,
)
from yolov3.compression.slimming import SlimmingCallback
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
    criterion: Literal["l1", "bn_gamma"] | None = None  # channel importance; None: bn_gamma after slimming, else l1
    channel_multiple: int = 1  # each layer keeps a multiple of this many channels (16: onnxruntime's blocks)
    finetune_epochs: int = 0
    slimming_epochs: int = 0  # > 0: sparsity training (L1 on the BN scales) of the dense model before pruning
    slimming_strength: float = 1e-3  # the L1 penalty's weight
    progress: bool = True
    resume: bool = False

    @property
    def channel_criterion(self) -> Literal["l1", "bn_gamma"]:
        if self.criterion is not None:
            return self.criterion
        return "bn_gamma" if self.slimming_epochs > 0 else "l1"


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


def slimmed_checkpoint(settings: StructuredSettings) -> Path:
    """Train ``settings.weights``' model ``slimming_epochs`` under the slimming penalty in ``out/slimming``;
    its ``last.pt`` (the end of the penalty's work, not the best validation epoch)."""
    checkpoint = load_checkpoint(settings.weights)
    config = settings.config
    check_model_spec(settings.weights, checkpoint, config)
    # StartFrom loads the checkpoint: no pretrained file of the dense run's config is read first.
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, weights=None, backbone_weights=None))
    state = checkpoint.inference_state
    assert state is not None  # check_model_spec: a checkpoint that builds a model has a state
    run_dir = settings.out / "slimming"
    callbacks = [StartFrom(state), SlimmingCallback(settings.slimming_strength)]
    finetune(config, settings.slimming_epochs, config.optimizer.learning_rate, run_dir, callbacks,
             settings.progress, resume=settings.resume)  # fmt: skip
    return run_dir / "last.pt"


def structured_prune(settings: StructuredSettings) -> StructuredResult:
    """(Slim,) prune channels, save the Darknet cfg + weights, optionally fine-tune; ``structured.md`` in ``out``."""
    config, out = settings.config, settings.out
    out.mkdir(parents=True, exist_ok=True)
    record_settings(out / "structured.json", settings_record(settings, ("progress", "resume", "out")), settings.resume)
    source = slimmed_checkpoint(settings) if settings.slimming_epochs > 0 else settings.weights
    model = model_from_checkpoint(load_checkpoint(source)).eval()
    size = (config.data.image_size, config.data.image_size)
    pruned = prune_channels(
        model,
        flops_target=settings.flops_target,
        criterion=settings.channel_criterion,
        channel_multiple=settings.channel_multiple,
    )
    cfg_path, weights_path = out / "pruned.cfg", out / "pruned.weights"
    pruned.save_darknet_cfg(cfg_path, header=f"{source} pruned to {settings.flops_target:.0%} of its FLOPs")
    pruned.save_darknet_weights(weights_path)
    dense = "dense, slimmed" if settings.slimming_epochs > 0 else "dense"
    rows = [
        [name, f"{flops(network, size):.3f}", f"{sum(p.numel() for p in network.parameters()):,}", "-"]
        for name, network in ((dense, model), ("pruned", pruned))
    ]
    finetuned = None
    if settings.finetune_epochs > 0:
        config = finetune_config(config, cfg_path, weights_path, settings.finetune_epochs)
        # its args.yaml: the fine-tuned model can be trained on (--cfg), or fine-tuned for int8 (export --qat)
        resumed = settings.resume and (out / "finetune" / "last.pt").is_file()
        if not resumed:
            prepare_run_folder(out / "finetune", config, resolve_device(config.device))
        trainer = build_trainer(config, out / "finetune", progress=settings.progress, resume=resumed)
        fitted = trainer.fit()
        finetuned = out / "finetuned.weights"
        assert isinstance(trainer.model, Darknet)  # the darknet_cfg builder makes one
        trainer.model.save_darknet_weights(finetuned)
        # the last validation: this fit's, or (a finished run resumed) the history's
        last_map50 = next((entry["mAP50"] for entry in reversed(fitted.history) if "mAP50" in entry), None)
        rows[1][3] = f"{last_map50:.4f}" if last_map50 is not None else "-"
    result = StructuredResult(cfg_path, weights_path, finetuned, rows)
    write_text_atomic(out / "structured.md", result.format_markdown())
    return result
