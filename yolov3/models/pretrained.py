"""Starting a model from pretrained weights whose heads may not fit: transfer learning to your own classes.

:func:`load_darknet_pretrained` reads a Darknet ``.weights`` file into a model, layer by layer
(:func:`yolov3.train.pretrained.load_pretrained` also takes checkpoints of ours). The heads' output
convolutions (the conv feeding each [yolo] layer) are the only tensors allowed to differ: when the class or
anchor count changed they are re-initialised (:func:`initialize_output_convs`: Darknet's weight init, biases
at the priors). Anything else that does not fit is an error naming the first layer that differs and both
shapes. The returned :class:`PretrainedReport` says, per layer, what was loaded, re-initialised (and why)
or missing.

A Darknet file stores no shapes, only floats in layer order, so the class count of its heads is solved from
its length: every tensor but the output convs has a known size, and each output conv costs a known number
of floats per filter.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from yolov3.darknet.cfg import YoloSection
from yolov3.darknet.weights_file import ConvParameters, copy_floats, read_weights_file
from yolov3.models.darknet_io import DarknetIO
from yolov3.models.layers import ConvBNAct
from yolov3.models.registry import create_model, list_models
from yolov3.models.yolo_head import YoloHeadSpec

logger = logging.getLogger(__name__)

DEFAULT_OBJECTNESS_PRIOR = 0.01  # about one object per hundred anchor cells, as the focal-loss paper's prior
Status = Literal["loaded", "re-initialised", "missing"]


class PretrainedWeightsError(ValueError):
    """Pretrained weights that do not fit the model; the message names the file, the layer and both shapes."""


@dataclass(frozen=True)
class LayerRow:
    """One row of the report: a layer (Darknet index) or tensor name, what happened, and why."""

    name: str
    status: Status
    shape: str
    reason: str = ""


@dataclass
class PretrainedReport:
    """What :func:`load_pretrained` did with each layer of the model."""

    source: str
    rows: list[LayerRow] = field(default_factory=list)

    def names(self, status: Status) -> list[str]:
        return [row.name for row in self.rows if row.status == status]

    @property
    def counts(self) -> dict[str, int]:
        return {status: len(self.names(status)) for status in ("loaded", "re-initialised", "missing")}

    def format_table(self) -> str:
        """Every re-initialised or missing row, and one line for the loaded ones."""
        lines = [f"pretrained weights {self.source}:"]
        counts = self.counts
        lines.append(f"  loaded: {counts['loaded']} layers")
        for row in self.rows:
            if row.status != "loaded":
                lines.append(f"  {row.status}: {row.name} {row.shape}" + (f" ({row.reason})" if row.reason else ""))
        return "\n".join(lines)


def _logit(probability: float) -> float:
    return math.log(probability / (1.0 - probability))


def output_conv_modules(model: nn.Module) -> list[tuple[nn.Conv2d, YoloHeadSpec]]:
    """The conv feeding each detection head, with that head's spec, in head order.

    Models with a Darknet form: the [convolutional] right before each [yolo]. Others: the biased convs whose
    outputs are ``A * (5 + C)`` channels of some head, in module order.
    """
    specs = list(getattr(model, "head_specs", None) or [])
    if not specs:
        return []
    if isinstance(model, DarknetIO):
        try:
            layers = model.darknet_layers()
        except NotImplementedError:
            layers = None
        if layers is not None:
            convs = [
                module.conv
                for index, section in enumerate(layers.sections)
                if isinstance(section, YoloSection)
                and index > 0
                and isinstance(module := layers.modules[index - 1], ConvBNAct)
            ]
            if len(convs) == len(specs):
                return list(zip(convs, specs, strict=True))
    wanted = [spec.out_channels for spec in specs]
    convs = [
        module
        for module in model.modules()
        if isinstance(module, nn.Conv2d) and module.bias is not None and module.out_channels in wanted
    ]
    if len(convs) != len(specs):
        raise PretrainedWeightsError(
            f"{type(model).__name__}: cannot tell its {len(specs)} head output convs apart (found {len(convs)})"
        )
    return list(zip(convs, specs, strict=True))


def initialize_output_convs(
    model: nn.Module,
    objectness_prior: float = DEFAULT_OBJECTNESS_PRIOR,
    class_prior: float | None = None,
    only: set[int] | None = None,
) -> None:
    """Fresh head output convs: Darknet's weight init, box biases 0, objectness and class biases at priors.

    Darknet draws conv weights from U(-s, s), s = sqrt(2 / fan_in), with zero biases; here the objectness
    bias is ``logit(objectness_prior)`` and each class bias ``logit(class_prior)`` (default ``min(0.5, 1/C)``),
    so the first steps do not spend themselves unlearning an objectness of 0.5 on every cell. ``only``
    restricts this to the convs whose ``id`` it holds.
    """
    if not 0.0 < objectness_prior < 1.0:
        raise ValueError(f"objectness_prior must be in (0, 1), got {objectness_prior}")
    with torch.no_grad():
        for conv, spec in output_conv_modules(model):
            if only is not None and id(conv) not in only:
                continue
            fan_in = conv.weight[0].numel()
            scale = math.sqrt(2.0 / fan_in)
            conv.weight.uniform_(-scale, scale)
            probability = min(0.5, 1.0 / spec.num_classes) if class_prior is None else class_prior
            if not 0.0 < probability < 1.0:
                raise ValueError(f"class_prior must be in (0, 1), got {probability}")
            if conv.bias is None:
                raise ValueError(f"{type(model).__name__}: a head output conv has no bias")
            bias = conv.bias.view(spec.num_anchors, 5 + spec.num_classes)  # (A*(5+C),) -> (A, 5+C)
            bias.zero_()
            bias[:, 4] = _logit(objectness_prior)
            bias[:, 5:] = _logit(probability)


def _key(layer: ConvParameters) -> int:
    """Identity of a layer's conv (weighted [shortcut] layers, which have none, are never heads)."""
    return id(getattr(layer, "conv", layer))


def _describe(layer: ConvParameters, filters: int | None = None) -> str:
    if not hasattr(layer, "conv"):
        return f"{type(layer).__name__} of {layer.num_floats:,} floats"
    conv = layer.conv
    out = conv.out_channels if filters is None else filters
    kernel = "x".join(str(side) for side in conv.kernel_size)
    return f"conv {conv.in_channels // conv.groups}->{out} {kernel}" + (" +bn" if layer.bn is not None else "")


def _floats_per_filter(layer: ConvParameters) -> int:
    return layer.conv.weight[0].numel() + (4 if layer.bn is not None else 1)


def load_darknet_pretrained(
    model: nn.Module, path: Path, objectness_prior: float = DEFAULT_OBJECTNESS_PRIOR
) -> PretrainedReport:
    """A Darknet ``.weights`` file whose output convs may have another filter count than ``model``'s."""
    if not isinstance(model, DarknetIO):
        raise TypeError(f"{type(model).__name__} has no Darknet layer description; it cannot read a .weights file")
    header, floats = read_weights_file(path)
    layers: list[ConvParameters] = model.darknet_conv_parameters()
    head_convs = {id(conv): spec for conv, spec in output_conv_modules(model)}
    heads = [layer for layer in layers if _key(layer) in head_convs]
    fixed = sum(layer.num_floats for layer in layers if _key(layer) not in head_convs)
    per_filter = sum(_floats_per_filter(layer) for layer in heads)
    spare = floats.size - fixed
    if (per_filter == 0 and spare != 0) or (per_filter and (spare <= 0 or spare % per_filter)):
        raise PretrainedWeightsError(_darknet_mismatch(model, path, floats, layers, head_convs))
    file_filters = spare // per_filter if per_filter else 0  # the file's filters per output conv, for every head
    report = PretrainedReport(f"{path} (Darknet, seen {header.seen:,})")
    fresh: set[int] = set()
    offset = 0
    for layer in layers:
        spec = head_convs.get(_key(layer))
        if spec is None or file_filters == layer.conv.out_channels:  # only convs are heads
            offset = copy_floats(layer, floats, offset)
            report.rows.append(LayerRow(f"layer {layer.layer_index}", "loaded", _describe(layer)))
            continue
        offset += file_filters * _floats_per_filter(layer)
        fresh.add(_key(layer))
        report.rows.append(
            LayerRow(
                f"layer {layer.layer_index}",
                "re-initialised",
                _describe(layer),
                _head_reason(file_filters, spec),
            )
        )
    initialize_output_convs(model, objectness_prior, only=fresh)
    if hasattr(model, "darknet_header"):
        model.darknet_header = header
    return report


def _head_reason(file_filters: int, spec: YoloHeadSpec) -> str:
    """Why an output conv of ``file_filters`` outputs does not fit a head of ``spec``."""
    model_says = f"{spec.num_anchors} anchors x (5 + {spec.num_classes} classes) = {spec.out_channels}"
    if file_filters % spec.num_anchors == 0 and file_filters // spec.num_anchors > 5:
        classes = file_filters // spec.num_anchors - 5
        return f"class count: the file's head has {classes} classes ({file_filters} outputs), the model {model_says}"
    return f"anchor or class count: the file's head has {file_filters} outputs, the model {model_says}"


def _darknet_mismatch(
    model: nn.Module, path: Path, floats: np.ndarray, layers: list[ConvParameters], head_convs: dict
) -> str:
    """The error for a Darknet file of another architecture: the first layer that differs, with both shapes."""
    name = type(model).__name__
    message = f"{path}: {floats.size:,} floats do not fit {name} with heads of any class count"
    source = _identify_architecture(floats.size)
    if source is not None:
        source_name, source_layers = source
        for ours, theirs in zip(layers, source_layers, strict=False):
            if _key(ours) in head_convs:
                continue
            if _describe(ours) != _describe(theirs):
                return (
                    f"{message}; the file fits {source_name}. First layer that differs: layer {ours.layer_index} "
                    f"is {_describe(ours)} in this model, {_describe(theirs)} in the file"
                )
        counts = f"{len(source_layers)} conv layers, this model {len(layers)}"
        return f"{message}; the file fits {source_name}, which has {counts}"
    offset = 0
    for layer in layers:
        if offset + layer.num_floats > floats.size:
            return f"{message}; the file ends inside layer {layer.layer_index} ({_describe(layer)})"
        if getattr(layer, "bn", None) is not None and _key(layer) not in head_convs:
            count = layer.conv.out_channels
            variance = floats[offset + 3 * count : offset + 4 * count]  # beta, gamma, mean, then variance
            if not np.all(np.isfinite(variance)) or np.any(variance <= 0):
                return (
                    f"{message}; layer {layer.layer_index} ({_describe(layer)}) reads negative or non-finite "
                    "batch-norm variances, so the file's layers differ from this model's there or before"
                )
        offset += layer.num_floats
    return message


def _identify_architecture(num_floats: int) -> tuple[str, list[ConvParameters]] | None:
    """The registered full-size model (with some class count) whose Darknet file holds ``num_floats`` floats."""
    for name in list_models():
        if name.endswith("_test") or name == "darknet_cfg":
            continue
        try:
            candidate = create_model(name)
            if not isinstance(candidate, DarknetIO):
                continue
            layers = candidate.darknet_conv_parameters()
            heads = {id(conv) for conv, _ in output_conv_modules(candidate)}
        except (NotImplementedError, PretrainedWeightsError, ValueError, TypeError, AttributeError):
            continue
        fixed = sum(layer.num_floats for layer in layers if _key(layer) not in heads)
        per_filter = sum(_floats_per_filter(layer) for layer in layers if _key(layer) in heads)
        spare = num_floats - fixed
        if per_filter and spare > 0 and spare % per_filter == 0:
            return f"{name} ({spare // per_filter} outputs per head)", layers
        if not heads and fixed == num_floats:
            return name, layers
    return None
