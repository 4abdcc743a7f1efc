"""Unstructured magnitude pruning of conv weights, on ``torch.nn.utils.prune``.

Pruning reparametrizes a conv's ``weight`` as ``weight = weight_orig * weight_mask`` (a forward pre-hook
recomputes it before every forward): the optimizer moves ``weight_orig``, but the *effective* weight stays
exactly zero wherever the mask is zero, whatever momentum, weight decay or AMP do. Masks are buffers, so they
travel in ``state_dict`` (as ``<conv>.weight_orig`` / ``<conv>.weight_mask``) and with ``copy.deepcopy``.

- :func:`prunable_layers` picks the convs to prune (by default all but the first conv and the heads' outputs);
- :func:`magnitude_prune` prunes a fraction of the *remaining* weights (``l1_unstructured`` per layer or
  ``global_unstructured`` over all layers), so ``n`` calls with ``p`` leave ``(1 - p)^n`` of the weights;
- :func:`prune_to_sparsity` prunes up to an exact sparsity (a count of weights, global or per layer);
- :func:`pruning_masks` / :func:`apply_masks` save and re-apply masks (rewinding, reloading);
- :func:`finalize_pruning` makes the zeros permanent (``prune.remove``): a plain model again, whose
  ``state_dict`` loads into an unpruned model and which saves Darknet ``.weights``;
- :func:`sparsity_report` counts the zeros of the effective weights.

Checkpoints: ``yolov3.checkpoint.load_model_state`` re-creates the reparametrization from the
``*_orig``/``*_mask`` keys before loading, and the EMA (``yolov3.train.ema``) copies the model's masks instead
of averaging them. Under DDP the masks are computed on every rank from bit-identical weights (DDP keeps them
identical), so they agree; the pruning callback also broadcasts them from rank 0.

Honest note: unstructured sparsity shrinks *storage* (with a sparse or entropy-coded encoding of the zeros),
not dense-runtime latency: a dense conv kernel multiplies the zeros all the same. For speed, prune channels
(``yolov3.compression.structured``).
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.nn.utils import prune
from torch.optim.swa_utils import AveragedModel

logger = logging.getLogger(__name__)

DEFAULT_SKIP: tuple[str, ...] = ("first", "heads")
Layers = Sequence[tuple[str, nn.Conv2d]]


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` or ``AveragedModel`` wrapper (names match the bare model)."""
    while isinstance(model, (DistributedDataParallel, AveragedModel)):
        model = model.module
    return model


def _head_out_channels(model: nn.Module) -> set[int] | None:
    """Output channels A*(5+C) of the detection heads, or None for a model without YOLO heads."""
    specs = getattr(model, "head_specs", None)
    if specs is not None:
        return {spec.out_channels for spec in specs}
    sections = getattr(model, "yolo_sections", None)  # a cfg-built Darknet
    if sections:
        return {len(section.mask) * (5 + section.classes) for section in sections}
    return None


def prunable_layers(model: nn.Module, skip: Iterable[str] = DEFAULT_SKIP) -> list[tuple[str, nn.Conv2d]]:
    """The ``(name, conv)`` pairs to prune, in module order.

    ``skip`` holds ``"first"`` (the first conv, which sees the image), ``"heads"`` (the 1x1 output convs of the
    detection heads: a bias and ``A*(5+C)`` output channels; for a classifier, its last conv) and any number of
    ``fnmatch`` patterns on conv names, e.g. ``"backbone.stem.*"`` or ``"head_*"``. Names are those of
    ``model.named_modules()`` (a DDP or EMA wrapper is looked through).
    """
    model = unwrap(model)
    skip = tuple(skip)
    convs = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    excluded: set[str] = set()
    if "first" in skip and convs:
        excluded.add(convs[0][0])
    if "heads" in skip and convs:
        channels = _head_out_channels(model)
        if channels is None:
            excluded.add(convs[-1][0])
        else:
            excluded |= {
                name
                for name, conv in convs
                if conv.kernel_size == (1, 1) and conv.bias is not None and conv.out_channels in channels
            }
    for pattern in (item for item in skip if item not in ("first", "heads")):
        matched = {name for name, _ in convs if fnmatch.fnmatchcase(name, pattern)}
        if not matched:
            logger.warning("skip pattern %r matches no conv of %s", pattern, type(model).__name__)
        excluded |= matched
    return [(name, conv) for name, conv in convs if name not in excluded]


def _pruning_hooks(module: nn.Module) -> dict[str, prune.BasePruningMethod]:
    """The pruning methods (forward pre-hooks) of ``module``, by the tensor they prune."""
    return {
        hook._tensor_name: hook
        for hook in module._forward_pre_hooks.values()
        if isinstance(hook, prune.BasePruningMethod)
    }


class UnknownLayerError(KeyError, ValueError):
    """Per-layer amounts or masks that name layers the model does not have (a budget or masks of another model).
    A ``KeyError`` (a failed look-up) and a ``ValueError`` (bad input, which the CLIs report in one line); its
    ``str()`` is the message, without ``KeyError``'s quotes."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DetachPrunedTensors:
    """Forward hook: after a forward, hold the recomputed pruned tensor (``orig * mask``) detached.

    The pruning pre-hook leaves ``module.weight`` as a non-leaf tensor of the autograd graph, and
    ``copy.deepcopy`` refuses those. The graph of the forward that just ran keeps what backward needs, so
    keeping the attribute detached changes no gradient; the next forward recomputes it anyway.
    """

    def __call__(self, module: nn.Module, inputs: object, output: object) -> None:
        for name in _pruning_hooks(module):
            value = getattr(module, name)
            if value.grad_fn is not None:
                setattr(module, name, value.detach())


def refresh_pruned_tensors(model: nn.Module) -> None:
    """Recompute every pruned tensor from ``orig * mask`` now (as the pre-hook does before a forward).

    After an optimizer step or ``load_state_dict``, ``module.weight`` is stale until the next forward; this
    brings it up to date (detached, so the model can be deep-copied) and makes sure each pruned module
    carries :class:`DetachPrunedTensors`.
    """
    with torch.no_grad():
        for module in unwrap(model).modules():
            hooks = _pruning_hooks(module)
            for hook in hooks.values():
                hook(module, ())
            if hooks and not any(isinstance(hook, DetachPrunedTensors) for hook in module._forward_hooks.values()):
                module.register_forward_hook(DetachPrunedTensors())


def effective_weight(conv: nn.Module) -> torch.Tensor:
    """The weight the forward uses: ``weight_orig * weight_mask`` for a pruned conv, else ``weight``."""
    hook = _pruning_hooks(conv).get("weight")
    with torch.no_grad():
        weight = hook.apply_mask(conv) if hook is not None else conv.weight
        if not isinstance(weight, torch.Tensor):
            raise TypeError(f"{type(conv).__name__} has no weight tensor")
        return weight.detach()


def _mask_zeros(conv: nn.Conv2d) -> int:
    mask = getattr(conv, "weight_mask", None)
    return 0 if mask is None else int((mask == 0).sum())


def _check_fraction(value: float, what: str) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{what} must be in [0, 1], got {value}")


def _select(model: nn.Module, layers: Layers | None) -> list[tuple[str, nn.Conv2d]]:
    return list(layers) if layers is not None else prunable_layers(model)


def _per_layer(amount: Mapping[str, float], layers: Layers) -> list[tuple[nn.Conv2d, float]]:
    known = dict(layers)
    unknown = sorted(set(amount) - set(known))
    if unknown:
        raise UnknownLayerError(
            f"per-layer amounts name layers that are not prunable here: {unknown}; known: {sorted(known)}"
        )
    for name, value in amount.items():
        _check_fraction(value, f"amount for {name}")
    return [(known[name], float(value)) for name, value in amount.items()]


def magnitude_prune(
    model: nn.Module,
    amount: float | Mapping[str, float],
    scope: Literal["layer", "global"] = "global",
    layers: Layers | None = None,
) -> None:
    """Prune ``amount`` of the remaining weights of ``layers`` (default :func:`prunable_layers`) by magnitude.

    ``scope="layer"``: each conv loses ``round(amount * remaining)`` of its unpruned weights
    (``prune.l1_unstructured``); ``"global"``: the smallest ``round(amount * remaining)`` over all the convs
    together (``prune.global_unstructured``). Masks combine with existing ones, so pruning is cumulative.
    A mapping ``{conv name: amount}`` prunes each named conv by its own amount (``scope="layer"`` only),
    e.g. the budget of ``yolov3.compression.sensitivity``.
    """
    layers = _select(model, layers)
    _contiguous_weights(layers)  # torch's pruning flattens with .view(-1): no channels_last
    if isinstance(amount, Mapping):
        if scope != "layer":
            raise ValueError("per-layer amounts need scope='layer'")
        for conv, value in _per_layer(amount, layers):
            prune.l1_unstructured(conv, "weight", amount=value)
    else:
        _check_fraction(amount, "amount")
        if scope == "layer":
            for _, conv in layers:
                prune.l1_unstructured(conv, "weight", amount=float(amount))
        elif scope == "global":
            refresh_pruned_tensors(model)  # global_unstructured ranks the current effective weights
            parameters = [(conv, "weight") for _, conv in layers]
            prune.global_unstructured(parameters, pruning_method=prune.L1Unstructured, amount=float(amount))
        else:
            raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    refresh_pruned_tensors(model)


def _contiguous_weights(layers: Layers) -> None:
    """Put each conv's weight (and pruning ``weight_orig`` / ``weight_mask``) in the default memory format.

    A model trained in ``channels_last`` keeps its 4-D weights in NHWC order, which ``view(-1)`` inside
    ``torch.nn.utils.prune`` (``L1Unstructured``, ``global_unstructured``) cannot flatten. The values do not
    change, nor does any Parameter object (the optimizer's references stay valid); convolutions still run
    channels_last from their channels_last inputs.
    """
    for _, conv in layers:
        for name in ("weight", "weight_orig", "weight_mask"):
            tensor: torch.Tensor | None = conv._parameters.get(name)
            tensor = tensor if tensor is not None else conv._buffers.get(name)
            if tensor is not None and not tensor.is_contiguous():
                tensor.data = tensor.data.contiguous()


def prune_to_sparsity(
    model: nn.Module,
    sparsity: float | Mapping[str, float],
    scope: Literal["layer", "global"] = "global",
    layers: Layers | None = None,
) -> None:
    """Prune by magnitude until ``round(sparsity * n)`` weights are masked (never un-pruning any).

    ``scope="global"`` counts over all ``layers`` together, ``"layer"`` (or a per-layer mapping) per conv.
    Already-masked weights count, so calling it again with the same sparsity does nothing: schedules call it
    at every pruning step, and a resumed run continues where the masks stand.
    """
    layers = _select(model, layers)
    _contiguous_weights(layers)  # torch's pruning flattens with .view(-1): no channels_last
    if isinstance(sparsity, Mapping) or scope == "layer":
        targets = (
            _per_layer(sparsity, layers)
            if isinstance(sparsity, Mapping)
            else [(conv, float(sparsity)) for _, conv in layers]
        )
        for conv, value in targets:
            _check_fraction(value, "sparsity")
            extra = round(value * conv.weight.numel()) - _mask_zeros(conv)
            if extra > 0:
                prune.l1_unstructured(conv, "weight", amount=extra)
    elif scope == "global":
        _check_fraction(sparsity, "sparsity")
        total = sum(conv.weight.numel() for _, conv in layers)
        extra = round(float(sparsity) * total) - sum(_mask_zeros(conv) for _, conv in layers)
        if extra > 0:
            refresh_pruned_tensors(model)
            parameters = [(conv, "weight") for _, conv in layers]
            prune.global_unstructured(parameters, pruning_method=prune.L1Unstructured, amount=extra)
    else:
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    refresh_pruned_tensors(model)


def is_pruned(model: nn.Module) -> bool:
    """Whether any module of ``model`` carries a pruning reparametrization."""
    return prune.is_pruned(unwrap(model))


def pruning_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{module name: weight mask}`` (copies) of every pruned module, for :func:`apply_masks`."""
    return {
        name: module.weight_mask.detach().clone()
        for name, module in unwrap(model).named_modules()
        if "weight" in _pruning_hooks(module)
    }


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Prune each named module's weight with its saved mask (``prune.custom_from_mask``).

    On an unpruned module the mask is applied as is; on a pruned one it is combined with the existing mask
    (their product), as ``torch.nn.utils.prune`` combines methods. The surviving weights are left bit for bit
    as they are: rewinding is ``load_state_dict(saved)`` on an unpruned model, then ``apply_masks``.
    """
    model = unwrap(model)
    modules = dict(model.named_modules())
    missing = sorted(set(masks) - set(modules))
    if missing:
        raise UnknownLayerError(f"masks name modules that {type(model).__name__} does not have: {missing}")
    for name, mask in masks.items():
        module = modules[name]
        if tuple(mask.shape) != tuple(module.weight.shape):
            raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, the weight {tuple(module.weight.shape)}")
        prune.custom_from_mask(module, "weight", mask.to(module.weight.device, module.weight.dtype))
    refresh_pruned_tensors(model)


def finalize_pruning(model: nn.Module) -> None:
    """Make pruning permanent (``prune.remove``): zeros baked into plain ``weight`` parameters, no masks left."""
    for module in unwrap(model).modules():
        for name in _pruning_hooks(module):
            prune.remove(module, name)
        for key in [key for key, hook in module._forward_hooks.items() if isinstance(hook, DetachPrunedTensors)]:
            del module._forward_hooks[key]


@dataclass(frozen=True)
class LayerSparsity:
    """Zeros of one conv's effective weight; ``masked`` when it carries a pruning mask."""

    name: str
    parameters: int
    zeros: int
    masked: bool

    @property
    def sparsity(self) -> float:
        return self.zeros / self.parameters if self.parameters else 0.0


@dataclass(frozen=True)
class SparsityReport:
    """Per-layer and overall sparsity of a set of convs."""

    layers: tuple[LayerSparsity, ...]

    @property
    def parameters(self) -> int:
        return sum(layer.parameters for layer in self.layers)

    @property
    def zeros(self) -> int:
        return sum(layer.zeros for layer in self.layers)

    @property
    def sparsity(self) -> float:
        return self.zeros / self.parameters if self.parameters else 0.0

    def layer(self, name: str) -> LayerSparsity:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer {name!r} in this report")

    def format_table(self) -> str:
        """A markdown table: one row per conv, then the total."""
        lines = ["| layer | parameters | zeros | sparsity | masked |", "| --- | ---: | ---: | ---: | :---: |"]
        for layer in self.layers:
            masked = "yes" if layer.masked else ""
            lines.append(f"| {layer.name} | {layer.parameters:,} | {layer.zeros:,} | {layer.sparsity:.2%} | {masked} |")
        lines.append(f"| **total** | {self.parameters:,} | {self.zeros:,} | {self.sparsity:.2%} | |")
        return "\n".join(lines)


def sparsity_report(model: nn.Module, layers: Layers | None = None) -> SparsityReport:
    """Count the exact zeros of the effective weights of ``layers`` (default: every conv of the model)."""
    layers = list(layers) if layers is not None else prunable_layers(model, skip=())
    rows = []
    for name, conv in layers:
        weight = effective_weight(conv)
        rows.append(LayerSparsity(name, weight.numel(), int((weight == 0).sum()), "weight" in _pruning_hooks(conv)))
    return SparsityReport(tuple(rows))
