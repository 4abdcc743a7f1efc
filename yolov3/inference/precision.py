"""Inference precision: run a detector in fp32, bf16 or fp16, with BN fusion and channels_last.

A precision is one of :data:`PRECISIONS`:

- ``"fp32"`` (the default) is *exact mode*: the model's own arithmetic, BatchNorms unfused, contiguous
  tensors, so Darknet ``.weights`` give Darknet's detections. Fusion and channels_last can be switched on.
- ``"bf16"`` and ``"fp16"`` fold every conv+BatchNorm pair (:func:`yolov3.models.fuse.fuse_conv_bn`), put
  weights and input in ``torch.channels_last`` and run the forward pass under
  ``torch.autocast(device_type, dtype)``. bf16 is the fast one on a CPU with AVX512-BF16 or AMX
  (:func:`yolov3.hardware.native_bf16`) and on recent GPUs; fp16 is the fast one on CUDA and runs, slower
  than fp32, on a CPU.

Why autocast rather than ``model.to(dtype)`` (on CUDA too): autocast is one code path for every model of the
library and every device. It runs convolutions in the low precision and keeps the ops that PyTorch lists as
needing fp32 (softmax, reductions, e.g. in ``[region]`` heads) in fp32, and BatchNorms left unfused (a
torchvision MobileNet backbone) keep fp32 statistics; a whole-model cast gives none of that, and fp16
activations would overflow in any op autocast keeps in fp32. Autocast's one cost, casting the conv weights
to the low dtype on every forward pass (its cast cache lives only as long as one ``autocast`` block), is
avoided by storing the conv weights in that dtype once: autocast leaves tensors already in its dtype alone
(yolov3, bf16, one thread of an AVX512-BF16 CPU: 246 -> 203 ms, an indicative measurement).

The stem, the first conv, which sees the image itself (at most :data:`STEM_MAX_CHANNELS` input channels),
stays in fp32 (:class:`Float32Conv`). With the real yolov3-tiny weights on the six Darknet sample images,
rounding the stem's weights (27 per filter) to bf16 moved detection scores by up to 0.017, rounding every
layer's weights by 0.021; bf16 everywhere moved them by up to 0.038, bf16 with an fp32 stem by 0.013 (fp16:
0.005 and 0.0015). The stem is 0.5% of yolov3's FLOPs and 3% of yolov3-tiny's.

fp16 holds values up to 65504 only: :class:`InferenceModel` warns once when a head comes out inf or NaN.

:func:`prepare_for_inference` returns an :class:`InferenceModel`, a module whose forward takes the float32
input batch and returns the raw head outputs as contiguous float32, so decoding and NMS are unchanged.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
from torch import nn

from yolov3.hardware import cpu_flags, native_bf16
from yolov3.models.fuse import fuse_conv_bn

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CPU_FP16_FLAGS = ("avx512_fp16", "amx_fp16")
# A first conv with at most this many input channels sees the image itself (RGB, grayscale, RGBA): a stem.
STEM_MAX_CHANNELS = 4


def check_precision(precision: object) -> str:
    """``precision`` itself when it is one of :data:`PRECISIONS`; otherwise a ``ValueError`` saying so."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"inference precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return precision


@dataclass(frozen=True)
class InferenceSettings:
    """How a model runs: its precision, whether BatchNorms are folded, whether tensors are channels_last."""

    precision: str = "fp32"
    fuse_batchnorm: bool = False
    channels_last: bool = False

    def __post_init__(self) -> None:
        check_precision(self.precision)

    @classmethod
    def for_precision(
        cls, precision: str, fuse_batchnorm: bool | None = None, channels_last: bool | None = None
    ) -> InferenceSettings:
        """``precision`` with its defaults for the switches left ``None``: off in fp32 (exact), on otherwise."""
        fast = check_precision(precision) != "fp32"
        return cls(
            precision,
            fast if fuse_batchnorm is None else fuse_batchnorm,
            fast if channels_last is None else channels_last,
        )

    @property
    def dtype(self) -> torch.dtype:
        return PRECISION_DTYPES[self.precision]

    @property
    def autocast(self) -> bool:
        return self.precision != "fp32"

    def describe(self) -> str:
        """One line for the log, e.g. ``precision bf16 (autocast, stem conv fp32), BN fused, channels_last``."""
        if self.autocast:
            mode = f"precision {self.precision} (autocast, stem conv fp32)"
        else:
            mode = "precision fp32" + ("" if self.fuse_batchnorm or self.channels_last else " (exact)")
        layout = "channels_last" if self.channels_last else "contiguous"
        return f"{mode}, {'BN fused' if self.fuse_batchnorm else 'BN unfused'}, {layout}"


class InferenceModel(nn.Module):
    """A detector prepared by :func:`prepare_for_inference`: float32 batch in, float32 raw heads out.

    ``model`` is the prepared network (fused, channels_last, conv weights in the low dtype as ``settings``
    say); ``forward`` converts the input's memory format, runs ``model`` under autocast where the precision
    asks for it, and returns the heads as contiguous float32 tensors.
    """

    def __init__(self, model: nn.Module, settings: InferenceSettings) -> None:
        super().__init__()
        self.model = model
        self.settings = settings
        self.overflow_reported = False

    def forward(self, images: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        if self.settings.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if not self.settings.autocast:
            outputs = self.model(images)
        else:
            with torch.autocast(images.device.type, dtype=self.settings.dtype):
                outputs = self.model(images)
        heads = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
        heads = [head.to(torch.float32, memory_format=torch.contiguous_format) for head in heads]
        if self.settings.autocast and not self.overflow_reported:
            self._report_overflow(heads)
        return heads[0] if isinstance(outputs, torch.Tensor) else heads

    def _report_overflow(self, heads: list[torch.Tensor]) -> None:
        """Warn once when a head holds inf or NaN: fp16's range (65504) overflowed; detections would vanish."""
        if all(bool(torch.isfinite(head).all()) for head in heads):
            return
        self.overflow_reported = True
        logger.warning(
            "precision %s: the raw heads hold inf or NaN (activations beyond the range of %s); "
            "use bf16 (fp32's range) or fp32",
            self.settings.precision,
            self.settings.dtype,
        )

    def extra_repr(self) -> str:
        return self.settings.describe()


class Float32Conv(nn.Module):
    """A conv that computes in float32 inside an autocast region and returns autocast's dtype.

    For the stem, the conv that sees the raw pixels: its few weights (27 per filter for RGB 3x3) and the
    pixels themselves lose the most to bf16 rounding, at a small share of the FLOPs. Its output is rounded to
    ``dtype`` as the next conv would round it anyway, so what follows runs as fast as without it.
    """

    def __init__(self, conv: nn.Conv2d, dtype: torch.dtype) -> None:
        super().__init__()
        self.conv = conv
        self.dtype = dtype

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.autocast(images.device.type, enabled=False):
            return self.conv(images.float()).to(self.dtype)


def _keep_stem_in_float32(model: nn.Module, dtype: torch.dtype) -> nn.Conv2d | None:
    """Wrap the stem in :class:`Float32Conv` and return it (None where the first conv is not image-facing).

    The stem is the first conv in module order (every model of the library registers its stem first, and a
    Darknet cfg lists it first) when it has at most :data:`STEM_MAX_CHANNELS` input channels.
    """
    name, stem = next(
        ((name, module) for name, module in model.named_modules() if isinstance(module, nn.Conv2d)), ("", None)
    )
    if stem is None or not name or stem.in_channels > STEM_MAX_CHANNELS:
        logger.debug("no image-facing first conv (%s): no stem kept in fp32", stem)
        return None
    parent_name, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent_name), attribute, Float32Conv(stem, dtype))
    return stem


def prepare_for_inference(
    model: nn.Module,
    precision: str = "fp32",
    device: torch.device | str = "cpu",
    fuse_batchnorm: bool | None = None,
    channels_last: bool | None = None,
) -> InferenceModel:
    """``model`` on ``device`` in eval mode, ready to run in ``precision``, as an :class:`InferenceModel`.

    ``fuse_batchnorm`` and ``channels_last`` default to off for ``"fp32"`` (exact mode: ``model`` itself is
    used, moved and put in eval mode as :class:`~yolov3.inference.predictor.Predictor` always did) and on for
    ``"bf16"``/``"fp16"``, where channels_last is what lets oneDNN use its fast bf16 kernels (yolov3-tiny's
    bf16 forward took 2.6x less time with it on a 2-core AVX512-BF16 CPU; fp32 gained less, or lost, so exact
    mode keeps the plain layout). Any change works on a copy: ``model`` itself is then left as it was.
    Logs the settings once (``precision bf16 (autocast, stem conv fp32), BN fused, channels_last on cpu``)
    and warns where the precision is slow on ``device``.
    """
    if isinstance(model, InferenceModel):
        raise ValueError(
            f"the model is already prepared for inference ({model.settings.describe()}); pass the original model"
        )
    settings = InferenceSettings.for_precision(precision, fuse_batchnorm, channels_last)
    device = torch.device(device)
    _warn_if_slow(settings.precision, device)
    if settings.fuse_batchnorm:
        model = fuse_conv_bn(model)  # a copy, in eval mode
    elif settings.channels_last or settings.autocast:
        model = copy.deepcopy(model)
    model = model.to(device).eval()
    if settings.channels_last:
        # Module.to takes memory_format (documented, and it works); torch's overloads leave it out.
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if settings.autocast:
        stem = _keep_stem_in_float32(model, settings.dtype)
        for module in model.modules():
            if isinstance(module, nn.Conv2d) and module is not stem:
                module.to(settings.dtype)  # stored once in autocast's dtype, so autocast does not re-cast them
    logger.info("%s on %s", settings.describe(), device)
    return InferenceModel(model, settings)


def _warn_if_slow(precision: str, device: torch.device) -> None:
    """A warning where ``precision`` runs but is expected to be slower than fp32 on ``device``."""
    if precision == "bf16":
        native, reason = native_bf16(device)
        if not native:
            logger.warning("precision bf16 on %s: %s; it runs, but likely slower than fp32", device, reason)
    elif precision == "fp16" and device.type == "cpu":
        flags = cpu_flags()
        has = [flag for flag in CPU_FP16_FLAGS if flag in flags]
        detail = f"the CPU has {' and '.join(has)}, but" if has else "the CPU has no fp16 arithmetic, and"
        logger.warning(
            "precision fp16 on the CPU: %s fp16 is usually slower than fp32 there; bf16 is the fast CPU one", detail
        )
