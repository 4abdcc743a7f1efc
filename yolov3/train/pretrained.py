"""``model.weights``: start training from a pretrained detector, a Darknet ``.weights`` file or a checkpoint.

Tensors are loaded where their shapes agree. The heads' output convs may differ (another class or anchor
count): they are re-initialised with priors. Every other tensor must fit (``strict``), else the error names
the first tensor that differs, both shapes, and which model the file holds. A table of what was loaded,
re-initialised (and why) and missing is logged and returned.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from yolov3.checkpoint import CheckpointError, load_checkpoint
from yolov3.inference.model_loading import is_checkpoint_file
from yolov3.models.darknet_io import DarknetIO
from yolov3.models.pretrained import (
    DEFAULT_OBJECTNESS_PRIOR,
    LayerRow,
    PretrainedReport,
    PretrainedWeightsError,
    initialize_output_convs,
    load_darknet_pretrained,
    output_conv_modules,
)
from yolov3.train.config import ModelConfig

logger = logging.getLogger(__name__)


def load_pretrained(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    strict: bool = True,
    objectness_prior: float = DEFAULT_OBJECTNESS_PRIOR,
) -> PretrainedReport:
    """Load ``path`` (Darknet ``.weights``, or a ``.pt`` checkpoint of ours) into ``model``; see the module."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PretrainedWeightsError(f"{path}: no such weights file")
    if is_checkpoint_file(path):
        report = load_checkpoint_weights(model, path, strict=strict, objectness_prior=objectness_prior)
    else:
        report = load_darknet_pretrained(model, path, objectness_prior=objectness_prior)
    logger.info("%s", report.format_table())
    return report


def _state_from_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    try:
        checkpoint = load_checkpoint(path)
    except CheckpointError as error:
        raise PretrainedWeightsError(str(error)) from error
    spec = checkpoint.model
    held = f"{spec.name} {spec.options}" if spec is not None else "an unnamed model"
    state = checkpoint.inference_state
    if state is None:
        raise PretrainedWeightsError(f"{path}: the checkpoint has no model_state")
    # A pruned state holds <name>_orig and <name>_mask: the pruned tensor is their product.
    merged = {}
    for key, value in state.items():
        if key.endswith("_mask") and key.removesuffix("_mask") + "_orig" in state:
            continue
        if key.endswith("_orig") and key.removesuffix("_orig") + "_mask" in state:
            merged[key.removesuffix("_orig")] = value * state[key.removesuffix("_orig") + "_mask"]
        else:
            merged[key] = value
    return merged, held


def load_checkpoint_weights(
    model: nn.Module, path: Path, *, strict: bool = True, objectness_prior: float = DEFAULT_OBJECTNESS_PRIOR
) -> PretrainedReport:
    """A checkpoint of ours (its EMA weights when present) into ``model``, tensor by tensor."""
    state, held = _state_from_checkpoint(path)
    output_convs = {id(conv) for conv, _ in output_conv_modules(model)}
    module_of = {f"{name}.{tensor}": module for name, module in model.named_modules() for tensor in ("weight", "bias")}
    report = PretrainedReport(f"{path} (checkpoint of {held})")
    target = model.state_dict()
    unexpected = sorted(set(state) - set(target))
    if strict and unexpected:
        raise PretrainedWeightsError(
            f"{path}: holds {held}, which does not fit {type(model).__name__}: its tensor {unexpected[0]!r} "
            f"has no counterpart in this model ({len(unexpected)} such tensors)"
        )
    fresh: set[int] = set()
    loadable: dict[str, torch.Tensor] = {}
    for key, tensor in target.items():
        shape = "x".join(map(str, tensor.shape)) or "scalar"
        if key not in state:
            if strict:
                raise PretrainedWeightsError(f"{path}: holds {held}, which lacks this model's tensor {key!r} ({shape})")
            report.rows.append(LayerRow(key, "missing", shape, "not in the file; keeps its initialisation"))
            continue
        theirs = state[key]
        if theirs.shape == tensor.shape:
            loadable[key] = theirs
            report.rows.append(LayerRow(key, "loaded", shape))
            continue
        module = module_of.get(key)
        file_shape = "x".join(map(str, theirs.shape))
        if module is not None and id(module) in output_convs:
            fresh.add(id(module))
            reason = f"head output: {file_shape} in the file (another class or anchor count)"
            report.rows.append(LayerRow(key, "re-initialised", shape, reason))
            continue
        if strict:
            raise PretrainedWeightsError(
                f"{path}: holds {held}, which does not fit {type(model).__name__}: first tensor that differs is "
                f"{key!r}, {shape} in this model and {file_shape} in the file"
            )
        report.rows.append(LayerRow(key, "missing", shape, f"{file_shape} in the file does not fit"))
    model.load_state_dict(loadable, strict=False)
    initialize_output_convs(model, objectness_prior, only=fresh)
    return report


def prepare_initial_weights(model: nn.Module, config: ModelConfig) -> PretrainedReport | None:
    """The start ``config`` asks for: priors on the output convs, then ``weights``, then ``backbone_weights``."""
    initialize_output_convs(model, config.objectness_prior)
    report = None
    if config.weights is not None:
        report = load_pretrained(
            model, config.weights, strict=config.weights_strict, objectness_prior=config.objectness_prior
        )
    if config.backbone_weights is not None:
        if not isinstance(model, DarknetIO):
            raise ValueError(f"model.backbone_weights: a {type(model).__name__} has no Darknet form to load them into")
        header = model.load_darknet_weights(Path(config.backbone_weights).expanduser(), cutoff=config.backbone_cutoff)
        logger.info(
            "loaded backbone %s (layers 0..%d, seen %s)", config.backbone_weights, config.backbone_cutoff - 1,
            f"{header.seen:,}",
        )  # fmt: skip
    return report
