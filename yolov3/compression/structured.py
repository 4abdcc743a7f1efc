"""Structured channel pruning: remove whole conv filters, so that the network becomes a smaller dense one.

The pass works on the Darknet layer graph (:func:`yolov3.darknet.graph.build_graph`), where every coupling is
explicit, so it applies to every model with a cfg form: the native YOLOv3, YOLOv3-tiny and Darknet-53 (through
``describe_darknet``) and any cfg-built :class:`~yolov3.models.Darknet`. The result is always a ``Darknet``
whose cfg has its own ``filters`` per layer; it saves as ``.cfg`` + ``.weights`` and loads back without pickle.

Couplings, handled by tracing every channel of every layer output to its origin (a conv layer and filter, or
the input image):

- [route] concatenates the origin lists of its sources, so the channel offsets of the convs that read a route
  follow from what each source kept; [upsample], [maxpool], [avgpool], [dropout] pass origins through.
- A conv is never pruned ("locked") when its filters reach a [shortcut] (either operand: both sides of an
  addition must keep the same channels), a [yolo] layer or the network output (the heads' output convs), a
  grouped [route] or grouped conv, an [upsample] with ``scale`` != 1, or when it has no batch norm. In YOLOv3
  this keeps the residual streams (downsampling convs and the 3x3 of every residual block) and the output
  convs, and prunes the stem, the inner 1x1 of every residual block and the convs of the neck and heads, as
  most YOLOv3 slimming work does.

A removed channel is not simply dropped: its expected output, under batch norm's own statistics (mean beta,
spread ``|gamma|`` times the normalized standard deviation, taken as Gaussian), is folded into every conv
that reads it (into that conv's BN running mean, or its bias). It is exact where the channel is constant:
gamma = 0 (network slimming), or an all-zero filter (then its running variance is 0); on the real yolov3-tiny
weights, pruning 10-30% of the filters by L1 without fine-tuning, it cut the raw-head error of dropping them
by 7-31% (:func:`expected_channel_outputs`); by |gamma| on those weights, not trained for slimming, it was
mixed (worse on the stride-32 head at 20-30%). In eval mode it is exact for 1x1 readers,
and for 3x3 readers everywhere but the one-pixel border, where the original conv saw zero padding instead of
the constant. ``absorb_removed=False`` drops removed channels instead.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import torch
from torch import nn

from yolov3.darknet.cfg import (
    ConvolutionalSection,
    DarknetCfg,
    RouteSection,
    Section,
    ShortcutSection,
    UpsampleSection,
    YoloSection,
)
from yolov3.darknet.graph import build_graph
from yolov3.models.darknet import Darknet
from yolov3.models.darknet_io import DarknetIO
from yolov3.models.layers import ConvBNAct
from yolov3.models.summary import summarize, summarize_cfg

logger = logging.getLogger(__name__)

CRITERIA = ("l1", "bn_gamma")
# Where a channel comes from: (conv layer index, filter index), or None for a channel of the input image.
Origin = tuple[int, int] | None


@dataclass(frozen=True)
class ChannelGraph:
    """A model's layers in Darknet form, where each conv's input channels come from, and which convs may shrink.

    ``conv_inputs[i]`` holds one origin per input channel of conv layer ``i``; ``locked[i]`` says why conv
    layer ``i`` keeps all its filters; ``prunable`` are the other conv layers, in layer order.
    """

    cfg: DarknetCfg
    modules: dict[int, ConvBNAct]
    conv_inputs: dict[int, tuple[Origin, ...]]
    locked: dict[int, str]
    prunable: tuple[int, ...]


def analyze_channels(model: nn.Module) -> ChannelGraph:
    """Trace every channel of ``model`` (native or cfg-built, with a Darknet form) to the filter it comes from."""
    if not isinstance(model, DarknetIO):
        raise TypeError(f"{type(model).__name__} has no Darknet layer description; structured pruning needs one")
    layers = model.darknet_layers()
    cfg = DarknetCfg(net=model.darknet_net_section(), layers=layers.sections)
    modules = {index: module for index, module in enumerate(layers.modules) if isinstance(module, ConvBNAct)}
    outputs: list[tuple[Origin, ...]] = []
    conv_inputs: dict[int, tuple[Origin, ...]] = {}
    locked: dict[int, str] = {}

    def lock(origins: tuple[Origin, ...], reason: str) -> None:
        for origin in origins:
            if origin is not None:
                locked.setdefault(origin[0], reason)

    for node in build_graph(cfg):
        section, index = node.section, node.index
        previous = outputs[index - 1] if index else (None,) * cfg.net.channels
        if isinstance(section, ConvolutionalSection):
            conv_inputs[index] = previous
            if section.groups > 1:
                lock(previous, f"feeds grouped conv layer {index}")
                locked.setdefault(index, "is a grouped conv")
            previous = tuple((index, filter_index) for filter_index in range(section.filters))
        elif isinstance(section, ShortcutSection):
            for source in node.sources:
                lock(outputs[source], f"adds into [shortcut] layer {index}")
        elif isinstance(section, RouteSection):
            parts = [outputs[source] for source in node.sources]
            if section.groups > 1:
                for part in parts:
                    lock(part, f"is split by grouped [route] layer {index}")
                parts = [
                    part[len(part) // section.groups * section.group_id :][: len(part) // section.groups]
                    for part in parts
                ]
            previous = tuple(origin for part in parts for origin in part)
        elif isinstance(section, YoloSection):
            lock(previous, f"feeds [yolo] layer {index}")
        elif isinstance(section, UpsampleSection) and section.scale != 1.0:
            lock(previous, f"is scaled by [upsample] layer {index}")
        outputs.append(previous)
    lock(outputs[-1], "is the network output")
    for index, module in modules.items():
        if module.bn is None:
            locked.setdefault(index, "has no batch norm")
    prunable = tuple(index for index in conv_inputs if index not in locked)
    return ChannelGraph(cfg, modules, conv_inputs, locked, prunable)


def channel_importance(model: nn.Module, criterion: str = "l1") -> dict[int, torch.Tensor]:
    """Importance of every removable filter: Darknet layer index -> (filters,) scores, low = remove first.

    ``"l1"``: the L1 norm of each conv filter (Li et al. 2017); ``"bn_gamma"``: ``|gamma|`` of each BN channel,
    meaningful after network slimming (Liu et al. 2017, :mod:`yolov3.compression.slimming`). Layers whose
    filters cannot be removed (see :func:`analyze_channels`) are absent.
    """
    graph = analyze_channels(model)
    return {index: _importance(graph.modules[index], criterion) for index in graph.prunable}


def _importance(module: ConvBNAct, criterion: str) -> torch.Tensor:
    if criterion == "l1":
        return module.conv.weight.detach().abs().sum(dim=(1, 2, 3)).float().cpu()  # (F, C, k, k) -> (F,)
    if criterion == "bn_gamma":
        assert module.bn is not None, "prunable layers have batch norm (analyze_channels locks the others)"
        return module.bn.weight.detach().abs().float().cpu()
    raise ValueError(f"unknown criterion {criterion!r}; expected one of {', '.join(CRITERIA)}")


@dataclass(frozen=True)
class PruningPlan:
    """Which filters each prunable conv keeps (sorted indices); layers absent from ``keep`` keep all."""

    keep: dict[int, torch.Tensor]
    removed: int
    prunable_channels: int


def plan_pruning(
    model: nn.Module,
    ratio: float | None = None,
    *,
    flops_target: float | None = None,
    criterion: str = "l1",
    min_keep_fraction: float = 0.1,
    channel_multiple: int = 1,
) -> PruningPlan:
    """Choose the filters to remove: ``ratio`` of all prunable filters, or enough to reach ``flops_target``.

    Filters are ranked across layers: by ``|gamma|`` for ``"bn_gamma"`` (network slimming's global threshold),
    by L1 norm divided by its layer's mean for ``"l1"`` (raw norms grow with a layer's fan-in). Each layer
    keeps at least ``ceil(min_keep_fraction * filters)`` filters, and at least one. With ``ratio``, exactly
    ``round(ratio * prunable filters)`` are removed; with ``flops_target`` (a fraction of the model's FLOPs to
    keep, e.g. 0.5), the fewest filters in ranking order whose removal brings the FLOPs down to that fraction.
    ``channel_multiple`` > 1 rounds each layer's kept count up to a multiple of it (or all its filters), which
    suits vectorized CPU kernels; ``ratio`` then removes at most the requested count.
    """
    if (ratio is None) == (flops_target is None):
        raise ValueError("give exactly one of ratio (fraction of filters to remove) and flops_target")
    if not 0.0 <= min_keep_fraction <= 1.0 or channel_multiple < 1:
        raise ValueError(
            f"need min_keep_fraction in [0, 1] and channel_multiple >= 1; got {min_keep_fraction}, {channel_multiple}"
        )
    graph = analyze_channels(model)
    importance = {index: _importance(graph.modules[index], criterion) for index in graph.prunable}
    order = _removal_order(importance, criterion, min_keep_fraction)
    total = sum(len(scores) for scores in importance.values())
    if ratio is not None:
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"ratio must be in [0, 1), got {ratio}")
        count = round(ratio * total)
        if count > len(order):
            raise ValueError(
                f"cannot remove {count} of {total} prunable filters: with min_keep_fraction={min_keep_fraction} "
                f"at most {len(order)} ({len(order) / max(total, 1):.1%}) can go"
            )
    else:
        assert flops_target is not None  # exactly one of ratio and flops_target is given (checked above)
        if not 0.0 < flops_target <= 1.0:
            raise ValueError(f"flops_target is the fraction of FLOPs to keep, in (0, 1]; got {flops_target}")
        count = _count_for_flops(graph.cfg, importance, order, flops_target, channel_multiple)
    keep = _keep_after(importance, order[:count], channel_multiple)
    return PruningPlan(keep, total - sum(len(indices) for indices in keep.values()), total)


def _removal_order(
    importance: dict[int, torch.Tensor], criterion: str, min_keep_fraction: float
) -> list[tuple[float, int, int]]:
    """(score, layer, filter) of every removable filter, lowest first; each layer's floor is left out."""
    candidates = []
    for layer, scores in importance.items():
        floor = max(1, math.ceil(min_keep_fraction * len(scores)))
        normalized = scores / scores.mean().clamp_min(1e-12) if criterion == "l1" else scores
        ranked = torch.argsort(normalized, stable=True)[: len(scores) - floor]
        candidates += [(float(normalized[index]), layer, int(index)) for index in ranked]
    # Sorting by (score, layer, filter) keeps each layer's own order, so any prefix removes each layer's lowest.
    return sorted(candidates)


def _keep_after(
    importance: dict[int, torch.Tensor], removed: list[tuple[float, int, int]], channel_multiple: int = 1
) -> dict[int, torch.Tensor]:
    """Sorted kept filter indices per layer; each layer keeps a multiple of ``channel_multiple`` (or all)."""
    gone: dict[int, list[int]] = {layer: [] for layer in importance}
    for _, layer, filter_index in removed:
        gone[layer].append(filter_index)  # lowest first
    keep = {}
    for layer, scores in importance.items():
        filters = len(scores)
        kept = min(filters, math.ceil((filters - len(gone[layer])) / channel_multiple) * channel_multiple)
        dropped = set(gone[layer][: filters - kept])
        keep[layer] = torch.tensor([index for index in range(filters) if index not in dropped], dtype=torch.long)
    return keep


def _count_for_flops(
    cfg: DarknetCfg,
    importance: dict[int, torch.Tensor],
    order: list[tuple[float, int, int]],
    flops_target: float,
    channel_multiple: int,
) -> int:
    """The fewest removals, in ``order``, that bring the FLOPs to ``flops_target`` of the original (bisection)."""

    def bflops(count: int) -> float:
        pruned = pruned_cfg(cfg, _keep_after(importance, order[:count], channel_multiple))
        return sum(row.bflops for row in summarize_cfg(pruned))

    goal = flops_target * bflops(0)
    if bflops(len(order)) > goal:
        raise ValueError(
            f"cannot reach {flops_target:.0%} of the FLOPs: removing every prunable filter above the per-layer floor "
            f"leaves {bflops(len(order)) / bflops(0):.1%}; lower min_keep_fraction"
        )
    low, high = 0, len(order)  # bflops(high) <= goal; FLOPs never grow as more filters go
    while low < high:
        middle = (low + high) // 2
        if bflops(middle) <= goal:
            high = middle
        else:
            low = middle + 1
    return low


def pruned_cfg(cfg: DarknetCfg, keep: dict[int, torch.Tensor]) -> DarknetCfg:
    """``cfg`` with ``filters`` of every layer in ``keep`` set to the number of filters it keeps."""
    layers = [
        _with_filters(section, len(keep[index])) if index in keep else section
        for index, section in enumerate(cfg.layers)
    ]
    return DarknetCfg(net=cfg.net, layers=layers, source=cfg.source)


def _with_filters(section: Section, filters: int) -> Section:
    if not isinstance(section, ConvolutionalSection):
        raise TypeError(f"{section.where()} has no filters to prune")
    return dataclasses.replace(section, filters=filters)


def apply_plan(model: nn.Module, plan: PruningPlan, absorb_removed: bool = True) -> Darknet:
    """Build the smaller dense :class:`Darknet` that ``plan`` describes, with ``model``'s remaining weights."""
    graph = analyze_channels(model)
    keep = {layer: indices for layer, indices in plan.keep.items() if layer in graph.modules}
    kept_sets = {layer: set(indices.tolist()) for layer, indices in keep.items()}
    pruned = Darknet(pruned_cfg(graph.cfg, keep))
    assert isinstance(model, DarknetIO)  # analyze_channels raised otherwise
    pruned.darknet_header = model.darknet_header
    constants = {layer: expected_channel_outputs(graph.modules[layer]) for layer in keep} if absorb_removed else {}
    with torch.no_grad():
        for index, inputs in graph.conv_inputs.items():
            source, target = graph.modules[index], pruned.layers[index]
            assert isinstance(target, ConvBNAct)  # built from the same cfg layer as ``source``
            outputs = keep.get(index, torch.arange(source.conv.out_channels))
            survives = [origin is None or origin[1] in kept_sets.get(origin[0], (origin[1],)) for origin in inputs]
            weight = source.conv.weight[outputs]  # (F, C/groups, k, k) -> (F', C/groups, k, k)
            if source.conv.groups == 1:
                weight = weight[:, [channel for channel, kept in enumerate(survives) if kept]]  # -> (F', C', k, k)
            target.conv.weight.copy_(weight)
            if source.bn is not None:
                assert target.bn is not None and target.bn.num_batches_tracked is not None
                assert source.bn.num_batches_tracked is not None
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(target.bn, name).copy_(getattr(source.bn, name)[outputs])
                target.bn.num_batches_tracked.copy_(source.bn.num_batches_tracked)
            else:
                assert target.conv.bias is not None and source.conv.bias is not None  # no BN: the conv has a bias
                target.conv.bias.copy_(source.conv.bias[outputs])
            # Channels of the input image (origin None) always survive.
            removed = [
                (channel, origin)
                for channel, origin in enumerate(inputs)
                if not survives[channel] and origin is not None
            ]
            if constants and removed:
                values = torch.stack([constants[origin[0]][origin[1]] for _, origin in removed])  # (R,)
                taps = source.conv.weight[outputs][:, [channel for channel, _ in removed]].sum(dim=(2, 3))  # (F', R)
                shift = taps @ values  # what the removed constant inputs added to each kept output, (F',)
                if target.bn is not None:
                    assert target.bn.running_mean is not None
                    target.bn.running_mean.sub_(shift)
                else:
                    assert target.conv.bias is not None
                    target.conv.bias.add_(shift)
    parameter = next(model.parameters(), None)
    if parameter is not None:
        pruned.to(parameter.device)
    return pruned.train(model.training)


def expected_channel_outputs(module: ConvBNAct, points: int = 1201) -> torch.Tensor:
    """Per filter, the constant that best stands in for the filter's output: its expected value, (F,).

    Batch norm makes each channel's pre-activation ``beta + gamma * (x - mean) / sqrt(var + eps)`` have mean
    ``beta`` and standard deviation ``|gamma| * sqrt(var / (var + eps))`` over the data its statistics were
    measured on; taking it as Gaussian, ``E[act(.)]`` is integrated on ``points`` nodes over +-6 standard
    deviations (the trapezoid rule, accurate to ~1e-4 even across an activation's kink). This is exact where
    the channel is constant: gamma = 0, or a filter that is all zero (then var = 0).
    """
    bn = module.bn
    if bn is None or bn.running_var is None:
        raise ValueError("expected_channel_outputs needs a conv layer with batch norm and its running statistics")
    nodes = torch.linspace(-6.0, 6.0, points, dtype=bn.bias.dtype, device=bn.bias.device)
    weights = torch.exp(-0.5 * nodes.square())
    weights = weights / weights.sum()  # the standard normal's density on the nodes, summing to 1
    spread = bn.weight.abs() * torch.sqrt(bn.running_var / (bn.running_var + bn.eps))  # (F,)
    samples = bn.bias[:, None] + spread[:, None] * nodes  # (F, points)
    return (module.act(samples.detach()) * weights).sum(dim=1)


def prune_channels(
    model: nn.Module,
    ratio: float | None = None,
    *,
    flops_target: float | None = None,
    criterion: str = "l1",
    min_keep_fraction: float = 0.1,
    channel_multiple: int = 1,
    absorb_removed: bool = True,
) -> Darknet:
    """Remove the least important filters; returns the pruned dense ``Darknet`` (``model`` is left unchanged).

    Give ``ratio`` (fraction of the prunable filters to remove) or ``flops_target`` (fraction of the FLOPs
    to keep); see :func:`plan_pruning` for the ranking and :func:`apply_plan` for the surgery. The heads'
    output shapes are unchanged. Fine-tune the result (``Darknet`` trains like any model; see
    :func:`darknet_cfg` for the trainer), then save it with ``save_darknet_cfg`` and ``save_darknet_weights``.
    """
    plan = plan_pruning(
        model,
        ratio,
        flops_target=flops_target,
        criterion=criterion,
        min_keep_fraction=min_keep_fraction,
        channel_multiple=channel_multiple,
    )
    pruned = apply_plan(model, plan, absorb_removed=absorb_removed)
    size = (pruned.cfg.net.height, pruned.cfg.net.width)
    bflops = (flops(model, size), flops(pruned, size))
    share = 100 * plan.removed / max(plan.prunable_channels, 1)
    message = "pruned %d of %d prunable filters (%.1f%%, %s): %.2f -> %.2f BFLOPs at %dx%d"
    logger.info(message, plan.removed, plan.prunable_channels, share, criterion, *bflops, size[1], size[0])
    return pruned


def flops(model: nn.Module, input_size: tuple[int, int] | int = 416) -> float:
    """Darknet's BFLOPs (2 x multiply-adds of the convs) of ``model`` at ``input_size`` (int or (H, W))."""
    return summarize(model, input_size).bflops
