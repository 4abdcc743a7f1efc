"""Quantization-aware training (QAT) models: a detector with fake quantization in the scheme onnxruntime runs.

:func:`prepare_qat_detector` traces a detector with torch.fx and inserts torch.ao's fake quantization
(``prepare_qat_fx``): convolutions and their batch norms are fused into QAT modules that fold the batch norm
into the weights as they train (``torch.ao.nn.intrinsic.qat.ConvBn2d``), every weight is fake-quantized per
output channel and every activation per tensor. The scheme is the one of onnxruntime's QDQ int8
(``quantize_static`` with ``per_channel=True``, :func:`yolov3.export.quantize.quantize_int8`), so the trained
model is the model onnxruntime runs:

- weights: int8, symmetric (zero point 0), per output channel, range -127..127, scale ``max |w| / 127`` of the
  current (batch-norm folded) weights;
- activations: uint8, affine (scale and zero point), per tensor, ranges from a moving average of the training
  batches' minima and maxima.

What stays in float: max pooling with Darknet's -inf padding (an infinite range cannot be quantized; the pool's
finite output is quantized where the next convolution reads it, as in the PTQ export), and the convolutions
named in :attr:`QatConfig.keep_float` (``"first"``, ``"heads"`` or ``fnmatch`` patterns, as
:func:`~yolov3.compression.masks.prunable_layers` reads them), with their batch norms and activations.

:class:`QuantizationAwareDetector` wraps the traced graph behind our detector interface (``forward`` returns
the raw heads, ``head_specs``), so the trainer trains it like any detector; its observers learn from training
batches only (they are paused in eval mode, so validation never moves the ranges).
:func:`reference_quantized_model` is torch.ao's own int8 model of it (``convert_to_reference_fx``): explicit
quantize / dequantize around float kernels, the reference the exported ONNX graph is checked against.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.ao.nn.intrinsic.qat as intrinsic_qat
from torch import nn
from torch.ao.quantization import (
    FakeQuantize,
    FakeQuantizeBase,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    QConfig,
    QConfigMapping,
)
from torch.ao.quantization.quantize_fx import convert_to_reference_fx, prepare_qat_fx
from torch.fx import GraphModule

from yolov3.compression.masks import is_pruned, prunable_layers
from yolov3.models.layers import ConvBNAct, DarknetMaxPool
from yolov3.models.yolo_head import YoloHeadSpec

logger = logging.getLogger(__name__)

ACTIVATION_RANGE = (0, 255)  # uint8, affine
WEIGHT_RANGE = (-127, 127)  # int8, symmetric: onnxruntime's range for symmetric int8 weights
# The weight observer follows the current weights (a moving average with constant 1 keeps only the latest
# minimum and maximum), so the weight scale is max |w| / 127 of the weights quantized, as onnxruntime computes it.
WEIGHT_AVERAGING_CONSTANT = 1.0
ACTIVATION_AVERAGING_CONSTANT = 0.01  # torch.ao's default
KEEP_FLOAT_KEYWORDS = ("first", "heads")


class QatError(ValueError):
    """A model or setting quantization-aware training cannot use; the message says what was expected."""


@dataclass(frozen=True)
class QatConfig:
    """What quantization-aware training quantizes, and when its statistics stop moving.

    ``keep_float``: convolutions left in float with their batch norm and activation: ``"first"`` (the conv that
    reads the image), ``"heads"`` (the 1x1 output convs of the detection heads) or ``fnmatch`` patterns of
    module names. ``freeze_epoch``: from this (0-based) epoch of the fine-tuning on, batch-norm statistics
    (torch.ao's ``freeze_bn_stats``) and activation ranges stop updating, so that the last epochs train the
    weights against the very quantizer that ships; ``None``: never.
    """

    keep_float: tuple[str, ...] = ()
    freeze_epoch: int | None = None

    def __post_init__(self) -> None:
        if self.freeze_epoch is not None and self.freeze_epoch < 0:
            raise QatError(f"freeze_epoch must be None or a 0-based epoch >= 0, got {self.freeze_epoch}")


def quantization_qconfig() -> QConfig:
    """torch.ao fake quantization matching onnxruntime's QDQ int8: int8 symmetric per-channel weights
    (-127..127), uint8 affine per-tensor activations."""
    activation = FakeQuantize.with_args(
        observer=MovingAverageMinMaxObserver,
        averaging_constant=ACTIVATION_AVERAGING_CONSTANT,
        quant_min=ACTIVATION_RANGE[0],
        quant_max=ACTIVATION_RANGE[1],
        dtype=torch.quint8,
        qscheme=torch.per_tensor_affine,
    )
    weight = FakeQuantize.with_args(
        observer=MovingAveragePerChannelMinMaxObserver,
        averaging_constant=WEIGHT_AVERAGING_CONSTANT,
        quant_min=WEIGHT_RANGE[0],
        quant_max=WEIGHT_RANGE[1],
        dtype=torch.qint8,
        qscheme=torch.per_channel_symmetric,
        ch_axis=0,
    )
    return QConfig(activation=activation, weight=weight)


def float_module_names(model: nn.Module, keep_float: Sequence[str]) -> list[str]:
    """Modules that stay in float: Darknet max pools that pad with -inf cells (those max_pool2d pads by itself
    are quantized), and the convs ``keep_float`` names (as their :class:`~yolov3.models.layers.ConvBNAct`
    block when they have one: conv, batch norm, activation)."""
    names = [
        name for name, module in model.named_modules() if isinstance(module, DarknetMaxPool) and module.pads_with_a_copy
    ]
    if not keep_float:
        return names
    convs = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    quantized = {name for name, _ in prunable_layers(model, tuple(keep_float))}
    modules = dict(model.named_modules())
    for name in (name for name in convs if name not in quantized):
        parent, _, leaf = name.rpartition(".")
        names.append(parent if leaf == "conv" and isinstance(modules.get(parent), ConvBNAct) else name)
    return names


def qconfig_mapping(model: nn.Module, config: QatConfig) -> QConfigMapping:
    """:func:`quantization_qconfig` everywhere but in :func:`float_module_names`."""
    mapping = QConfigMapping().set_global(quantization_qconfig())
    for name in float_module_names(model, config.keep_float):
        mapping.set_module_name(name, None)
    return mapping


@contextlib.contextmanager
def torch_ao_quantization() -> Iterator[None]:
    """torch.ao's FX graph-mode quantization, without its notice that torchao's pt2e flow will replace it
    (this module uses the FX flow on purpose: torch.fx traces our detectors, and torchao is not a dependency)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        yield


class QuantizationAwareDetector(nn.Module):
    """A detector prepared for QAT (a torch.fx graph with fake quantization), as a detector: ``forward(images)``
    returns the list of raw heads, ``head_specs`` decode them. In eval mode the observers are paused: the
    activation ranges and weight scales stay those of training, and evaluation data never moves them."""

    def __init__(self, network: GraphModule, head_specs: Sequence[YoloHeadSpec], float_modules: Sequence[str]) -> None:
        super().__init__()
        self.network = network
        self.head_specs = list(head_specs)
        self.float_modules = tuple(float_modules)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        if self.training:
            return list(self.network(images))
        with observers_paused(self.network):
            return list(self.network(images))


def prepare_qat_detector(
    model: nn.Module, input_size: tuple[int, int], config: QatConfig = QatConfig()
) -> QuantizationAwareDetector:
    """A :class:`QuantizationAwareDetector` of a copy of ``model`` (the model itself is left as it is).

    ``input_size`` (height, width) makes the example batch torch.fx traces with. A pruned model must be
    finalized first (``finalize_pruning``: its masks are pre-hooks, which tracing would bake in).
    """
    if is_pruned(model):
        raise QatError(f"{type(model).__name__} still has pruning masks: finalize_pruning(model) first")
    head_specs = getattr(model, "head_specs", None)
    if not head_specs:
        raise QatError(f"{type(model).__name__} has no head_specs: QAT prepares detectors (raw heads out)")
    float_modules = float_module_names(model, config.keep_float)
    mapping = qconfig_mapping(model, config)
    copied = copy.deepcopy(model).train()
    device = next(model.parameters()).device
    example = (torch.zeros(1, 3, *input_size, device=device),)
    try:
        with torch_ao_quantization():
            network = prepare_qat_fx(copied, mapping, example)
    except (torch.fx.proxy.TraceError, TypeError, RuntimeError) as error:
        raise QatError(f"torch.fx cannot trace {type(model).__name__} for QAT: {error}") from error
    logger.info(
        "QAT: fake quantization in %s (int8 per-channel symmetric weights, uint8 affine activations); float: %s",
        type(model).__name__, ", ".join(float_modules) or "nothing",
    )  # fmt: skip
    return QuantizationAwareDetector(network, head_specs, float_modules)


def weight_quantized_modules(network: nn.Module) -> list[tuple[nn.Module, FakeQuantizeBase]]:
    """(QAT conv, its weight fake-quantizer) pairs of a prepared network, in module order."""
    pairs = []
    for module in network.modules():
        quantizer = getattr(module, "weight_fake_quant", None)
        if isinstance(quantizer, FakeQuantizeBase):
            pairs.append((module, quantizer))
    return pairs


def fake_quantizers(network: nn.Module) -> tuple[list[FakeQuantizeBase], list[FakeQuantizeBase]]:
    """(weight fake-quantizers, activation fake-quantizers) of a prepared network."""
    weights = [quantizer for _, quantizer in weight_quantized_modules(network)]
    weight_ids = {id(module) for module in weights}
    activations = [
        module for module in network.modules() if isinstance(module, FakeQuantizeBase) and id(module) not in weight_ids
    ]
    return weights, activations


@contextlib.contextmanager
def observers_paused(network: nn.Module) -> Iterator[None]:
    """Observers off inside the block (fake quantization goes on with the qparams they hold), then as before."""
    quantizers = [module for module in network.modules() if isinstance(module, FakeQuantizeBase)]
    enabled = [bool(module.observer_enabled[0]) for module in quantizers]
    for module in quantizers:
        module.disable_observer()
    try:
        yield
    finally:
        for module, was_enabled in zip(quantizers, enabled, strict=True):
            if was_enabled:
                module.enable_observer()


def freeze_statistics(detector: QuantizationAwareDetector) -> None:
    """Freeze the batch-norm statistics of the fused convs and the activation ranges (the weight scales keep
    following the weights, as onnxruntime computes them from the weights it is given)."""
    detector.network.apply(intrinsic_qat.freeze_bn_stats)
    for module in fake_quantizers(detector.network)[1]:
        module.disable_observer()


def reference_quantized_model(detector: QuantizationAwareDetector) -> GraphModule:
    """torch.ao's reference int8 model of ``detector`` (``convert_to_reference_fx`` of a copy, in eval mode):
    batch norms folded, weights quantized with scales of the current weights, activations quantized and
    dequantized around float kernels. It returns the heads as a list, like the detector."""
    network = copy.deepcopy(detector.network).eval()
    with torch_ao_quantization():
        return convert_to_reference_fx(network)
