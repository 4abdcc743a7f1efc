"""The training configuration: one typed dataclass tree, loaded strictly from YAML.

``python -m yolov3.train --cfg configs/shapes.yaml --set train.epochs=3 --set optimizer.name=adam`` reads
the YAML, applies the dotted overrides, and checks every key and value (an unknown key is an error with
a suggestion). The resolved config is saved as ``logs/<run>/args.yaml``; ``--cfg logs/<run>/args.yaml``
repeats the run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from yolov3.config_loading import apply_overrides, load_dataclass, load_yaml
from yolov3.data.data_config import DataConfig
from yolov3.evaluation.validate import EvalConfig
from yolov3.loss.yolo_loss import LossConfig
from yolov3.train.optimizer import OptimizerConfig
from yolov3.train.schedule import ScheduleConfig


@dataclass(frozen=True)
class ModelConfig:
    """A registered model (``yolov3.models.list_models()``) and its builder arguments.

    ``num_classes`` defaults to the number of dataset class names. ``weights`` starts from a whole pretrained
    detector (Darknet ``.weights`` or a checkpoint of ours): every tensor is loaded where it fits, and the
    heads' output convs are re-initialised when the class or anchor count differs (``weights_strict: false``
    also lets other tensors that do not fit keep their initialisation). ``backbone_weights`` reads only the
    layers below ``backbone_cutoff`` of a Darknet file (``darknet53.conv.74``, or any longer file). Fresh
    output convs start from priors: objectness bias ``logit(objectness_prior)``, class biases ``logit(1/C)``.
    """

    name: str = "yolov3_tiny"
    num_classes: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    weights: Path | None = None
    weights_strict: bool = True
    backbone_weights: Path | None = None
    backbone_cutoff: int = 74
    objectness_prior: float = 0.01

    def __post_init__(self) -> None:
        if not 0.0 < self.objectness_prior < 1.0:
            raise ValueError(f"objectness_prior must be in (0, 1), got {self.objectness_prior}")
        if self.backbone_cutoff < 1:
            raise ValueError(f"backbone_cutoff must be at least 1, got {self.backbone_cutoff}")


@dataclass(frozen=True)
class LoopConfig:
    """The training loop. ``accumulate`` micro-batches of ``data.batch_size`` make one optimizer step.

    ``amp: auto`` picks the fastest mixed precision the device computes natively (``yolov3.hardware``): bf16
    autocast on CPUs with AVX512-BF16 or AMX, fp16 with a gradient scaler on CUDA (bf16 where the GPU has
    it), fp32 (``none``) elsewhere; the loss is always computed in fp32. ``channels_last`` puts the
    convolutions of 16 channels or more in NHWC memory order, which oneDNN's and cuDNN's convolutions run
    faster (bench/train_precision.py: yolov3-tiny's bf16 step 0.38x of fp32 NCHW against 0.52x in NCHW, on a
    2-core AVX512-BF16 CPU); narrower ones stay NCHW, where PyTorch's batch-norm backward is 4-7x slower in
    NHWC (``yolov3.train.memory_format``).
    """

    epochs: int = 100
    accumulate: int = 1
    amp: Literal["auto", "none", "fp16", "bf16"] = "auto"
    channels_last: bool = True
    ema: bool = True
    ema_decay: float = 0.999
    grad_clip_norm: float | None = 10.0
    freeze_backbone_epochs: int = 0
    overfit_batches: int = 0  # > 0: train and validate on this many fixed batches (a sanity check)
    sync_batchnorm: bool = False  # under DDP
    deterministic: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.accumulate < 1 or self.overfit_batches < 0 or self.freeze_backbone_epochs < 0:
            raise ValueError("epochs >= 1, accumulate >= 1, overfit_batches >= 0, freeze_backbone_epochs >= 0")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")


@dataclass(frozen=True)
class LoggingConfig:
    """TensorBoard under ``log_dir/<run_name>``; images and histograms every N epochs (0 = never)."""

    log_dir: Path = Path("logs")
    run_name: str = ""  # empty: <config name>-<date>-<time>
    scalars_every_steps: int = 10
    images_every_epochs: int = 5
    histograms_every_epochs: int = 10
    num_images: int = 8


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; ``data.dataset`` is the only required key."""

    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"


def load_train_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read ``path``, apply ``a.b=value`` overrides, and check everything against :class:`TrainConfig`."""
    mapping = apply_overrides(load_yaml(path), list(overrides))
    return load_dataclass(TrainConfig, mapping, source=str(path))


def flatten_config(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping (``to_dict`` of a config) as ``{dotted key: leaf}``; tuples become lists, as in YAML."""
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(flatten_config(value, f"{prefix}{key}."))
        return flat
    return {prefix.removesuffix("."): list(node) if isinstance(node, tuple) else node}
