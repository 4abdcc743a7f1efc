"""Loading a detector for inference from whatever a user has: a training checkpoint or Darknet weights.

:func:`load_inference_model` accepts

- a checkpoint of ours (``best.pt``, written by :func:`yolov3.train.checkpoint.save_checkpoint`): it names its
  model, and carries its class names, input size and preprocessing; the EMA weights are used when present;
- a Darknet ``.weights`` file with either its ``.cfg`` (built as :class:`~yolov3.models.Darknet`) or the name
  of a registered model (``yolov3_tiny``; ``num_classes`` for one trained on other classes).

The result, a :class:`LoadedModel`, is everything inference and export need: the model in eval mode, its head
specs, class names (or None), input size and preprocessing. Every error names the file and what was expected.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from yolov3.darknet.cfg import CfgError
from yolov3.darknet.weights_file import WeightsFileError
from yolov3.inference.predictor import model_head_specs, model_input_size
from yolov3.inference.preprocess import Preprocessing
from yolov3.models import Darknet, create_model
from yolov3.models.yolo_head import YoloHeadSpec
from yolov3.train.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".pt", ".pth")


class ModelLoadingError(ValueError):
    """Weights that cannot be loaded as asked; the message names the file and what was expected."""


@dataclass(frozen=True)
class LoadedModel:
    """A detector ready for inference, with what it needs to be fed and read.

    ``model`` is in eval mode on the CPU; ``input_size`` is (height, width); ``class_names`` is None when the
    weights do not carry them (Darknet files); ``source`` says what was loaded, for logs and reports.
    """

    model: nn.Module
    head_specs: list[YoloHeadSpec]
    class_names: tuple[str, ...] | None
    input_size: tuple[int, int]
    preprocessing: Preprocessing
    source: str
    normalization: str = "darknet"  # how the training pipeline normalized inputs: darknet (RGB/255) or imagenet

    @property
    def num_classes(self) -> int:
        return self.head_specs[0].num_classes


def is_checkpoint_file(path: Path) -> bool:
    """A checkpoint of ours: a ``.pt``/``.pth`` suffix, or a zip archive (what ``torch.save`` writes)."""
    return path.suffix.lower() in CHECKPOINT_SUFFIXES or zipfile.is_zipfile(path)


def load_inference_model(
    weights: str | os.PathLike,
    cfg: str | os.PathLike | None = None,
    model_name: str | None = None,
    num_classes: int | None = None,
) -> LoadedModel:
    """Load ``weights`` (a checkpoint, or Darknet ``.weights`` with ``cfg`` or ``model_name``) for inference.

    Raises :class:`ModelLoadingError` (a ``ValueError``) naming the file on a missing file, a checkpoint given
    a cfg or model name, Darknet weights given neither (or both), or weights that do not fit the model;
    an unknown ``model_name`` raises ``KeyError`` with the closest registered name.
    """
    path = Path(weights)
    if not path.is_file():
        raise ModelLoadingError(f"{path}: no such weights file" if not path.exists() else f"{path}: not a file")
    if is_checkpoint_file(path):
        if cfg is not None or model_name is not None or num_classes is not None:
            raise ModelLoadingError(
                f"{path}: a checkpoint names its own model and classes; do not give a cfg, model name or class count"
            )
        loaded = _load_checkpoint_model(path)
    else:
        loaded = _load_darknet_model(path, cfg, model_name, num_classes)
    logger.info("loaded %s: %d classes, input %dx%d", loaded.source, loaded.num_classes, *loaded.input_size)
    return loaded


def _load_checkpoint_model(path: Path) -> LoadedModel:
    try:
        checkpoint = load_checkpoint(path)
    except CheckpointError as error:
        raise ModelLoadingError(str(error)) from error
    spec = checkpoint.get("model")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str) or "model_state" not in checkpoint:
        raise ModelLoadingError(f"{path}: checkpoint lacks 'model' {{name, kwargs}} or 'model_state'")
    try:
        model = model_from_checkpoint(checkpoint).eval()
    except KeyError as error:  # an unknown model name
        raise ModelLoadingError(f"{path}: {error.args[0]}") from error
    except (RuntimeError, TypeError) as error:  # state dict or builder arguments that do not fit
        raise ModelLoadingError(f"{path}: the weights do not fit model {spec['name']!r}: {error}") from error
    head_specs = _head_specs(model, path)
    uses_ema = checkpoint.get("ema_state") is not None
    class_names = _class_names(checkpoint.get("class_names"), head_specs[0].num_classes, path)
    input_size = _input_size(checkpoint.get("input_size"), model, path)
    preprocessing = _preprocessing(checkpoint.get("preprocessing"), path)
    source = f"{spec['name']} from checkpoint {path} ({'EMA' if uses_ema else 'model'} weights)"
    normalization = checkpoint.get("normalization", "darknet")
    if normalization not in ("darknet", "imagenet"):
        raise ModelLoadingError(f"{path}: 'normalization' must be darknet or imagenet, got {normalization!r}")
    return LoadedModel(model, head_specs, class_names, input_size, preprocessing, source, normalization)


def _load_darknet_model(
    path: Path, cfg: str | os.PathLike | None, model_name: str | None, num_classes: int | None
) -> LoadedModel:
    if (cfg is None) == (model_name is None):
        raise ModelLoadingError(
            f"{path}: Darknet weights need exactly one of a cfg file or a registered model name to build the network"
        )
    if cfg is not None:
        if num_classes is not None:
            raise ModelLoadingError(f"{cfg}: a cfg sets its own classes; num_classes goes with a model name")
        if not Path(cfg).is_file():
            raise ModelLoadingError(f"{cfg}: no such cfg file")
        model: nn.Module = Darknet(cfg)  # CfgError names file and line
        built = f"cfg {cfg}"
    else:
        model = create_model(model_name, **({} if num_classes is None else {"num_classes": num_classes}))
        built = f"model {model_name}"
    if not hasattr(model, "load_darknet_weights"):
        raise ModelLoadingError(f"{path}: {built} has no Darknet form, so it cannot load Darknet weights")
    try:
        model.load_darknet_weights(path)
    except NotImplementedError as error:
        raise ModelLoadingError(f"{path}: {built} has no Darknet form ({error})") from error
    except (WeightsFileError, CfgError):
        raise  # their messages already name the file
    model.eval()
    head_specs = _head_specs(model, path)
    source = f"{built} with Darknet weights {path}"
    return LoadedModel(model, head_specs, None, model_input_size(model), Preprocessing(), source)


def _head_specs(model: nn.Module, path: Path) -> list[YoloHeadSpec]:
    try:
        return model_head_specs(model)
    except ValueError as error:
        raise ModelLoadingError(f"{path}: not a detector: {error}") from error


def _class_names(value: Any, num_classes: int, path: Path) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(name, str) for name in value):
        raise ModelLoadingError(f"{path}: 'class_names' must be a list of strings, got {type(value).__name__}")
    if len(value) != num_classes:
        raise ModelLoadingError(f"{path}: 'class_names' has {len(value)} names but the model has {num_classes} classes")
    return tuple(value)


def _input_size(value: Any, model: nn.Module, path: Path) -> tuple[int, int]:
    if value is None:
        return model_input_size(model)
    if isinstance(value, int):
        value = (value, value)
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(isinstance(side, int) for side in value):
        raise ModelLoadingError(f"{path}: 'input_size' must be (height, width) integers, got {value!r}")
    return int(value[0]), int(value[1])


def _preprocessing(value: Any, path: Path) -> Preprocessing:
    if value is None:
        return Preprocessing()
    if isinstance(value, Preprocessing):
        return value
    known = {field.name for field in dataclasses.fields(Preprocessing)}
    if not isinstance(value, Mapping):
        raise ModelLoadingError(f"{path}: 'preprocessing' must be a mapping with keys {sorted(known)}")
    unknown = sorted(set(value) - known)
    if unknown:
        raise ModelLoadingError(f"{path}: 'preprocessing' has unknown key {unknown[0]!r}; expected {sorted(known)}")
    try:
        return Preprocessing(**value)
    except ValueError as error:
        raise ModelLoadingError(f"{path}: 'preprocessing': {error}") from error
