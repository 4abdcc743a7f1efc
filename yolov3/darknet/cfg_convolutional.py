"""The ``[convolutional]`` section (``[conv]``): its keys, Darknet's defaults and the checks its parser and CPU
forward need (:mod:`yolov3.darknet.cfg_sections` holds the base :class:`Section` and the other pjreddie sections).
"""

from __future__ import annotations

from dataclasses import dataclass

from yolov3.darknet.cfg_sections import (
    ACTIVATIONS,
    LIMITS,
    Section,
    check_antialiasing,
    check_range,
    darknet_padding,
)

INT32_MIN = -(2**31)
NO_SHARE = -1000000000  # Darknet's share_index default: no shared weights


@dataclass(kw_only=True)
class ConvolutionalSection(Section):
    """``[convolutional]``: a conv with optional batch norm, then an activation (default logistic!)."""

    KIND = "convolutional"
    ALIASES = ("conv",)
    ALWAYS_WRITTEN = ("filters", "size", "stride", "pad", "activation")

    batch_normalize: int = 0
    filters: int = 1
    size: int = 1
    stride: int = 1
    pad: int = 0
    padding: int = 0
    groups: int = 1
    dilation: int = 1
    activation: str = "logistic"
    stride_x: int = -1  # AlexeyAB: -1 means ``stride``
    stride_y: int = -1
    xnor: int = 0  # binary (XNOR) convolution: yolov3.models.binary_conv
    binary: int = 0  # binarized weights on Darknet's GPU only; its CPU forward is a float convolution
    bin_output: int = 0  # with xnor: the activation becomes linear (Darknet's calculate_binary_weights)
    antialiasing: int = 0  # 1: a fixed 3x3 blur after a stride-1 conv, 2: a 2x2 one (yolov3.models.antialiasing)
    coordconv: int = 0  # read by Darknet, used by its GPU forward only: no effect on the CPU forward matched here
    # Read by Darknet, used by its GPU training only (update_ / backward_convolutional_layer_gpu): no effect on the
    # CPU forward matched here. sway/rotate/stretch/stretch_sway are checked as parse_convolutional does.
    sway: int = 0
    rotate: int = 0
    stretch: int = 0
    stretch_sway: int = 0
    angle: float = 15.0
    dot: float = 0.0
    reverse: float = 0.0
    flipped: int = 0  # the file holds the weights transposed, (in/groups*size*size, filters) (load_weights)
    share_index: int = NO_SHARE  # the weights of this (absolute) or -n (relative) earlier conv: none in the file

    @property
    def strides(self) -> tuple[int, int]:
        """(rows, columns) stride: ``stride_y`` / ``stride_x`` where set, else ``stride``."""
        return (
            self.stride_y if self.stride_y > 0 else self.stride,
            self.stride_x if self.stride_x > 0 else self.stride,
        )

    @property
    def effective_groups(self) -> int:
        """Darknet ignores ``groups`` in an ``xnor=1`` layer (``make_convolutional_layer``)."""
        return 1 if self.xnor else self.groups

    @property
    def effective_padding(self) -> int:
        return darknet_padding(self, self.size, self.pad, self.padding, self.dilation)

    def validate(self) -> None:
        for name, low, high in LIMITS["convolutional"]:
            check_range(self, name, low, high)
        for name in ("stride_x", "stride_y"):  # below 1: ``stride`` (Darknet's int)
            check_range(self, name, INT32_MIN, 1024)
        if self.filters % self.effective_groups:
            raise self.error(f"filters={self.filters} is not divisible by groups={self.groups}")
        if self.activation not in ACTIVATIONS:
            raise self.error(f"activation={self.activation!r} is not one of {', '.join(ACTIVATIONS)}")
        check_antialiasing(self, self.antialiasing)
        darknet_padding(self, self.size, self.pad, self.padding, self.dilation)
        self._validate_deform()
        if self.xnor:
            if self.antialiasing:
                raise self.error(
                    "xnor=1 with antialiasing is refused: Darknet's XNOR forward returns before the blur, while the "
                    "next layer reads the blurred size"
                )
            self._validate_xnor()

    def _validate_deform(self) -> None:
        """parse_convolutional's two errors on the (GPU training only) weight-deforming keys."""
        deform = (self.sway, self.rotate, self.stretch, self.stretch_sway)
        if sum(deform) > 1:
            raise self.error(
                "should be used only 1 param: sway=1, rotate=1, stretch=1 or stretch_sway=1 (Darknet's error)"
            )
        if any(deform) and self.size == 1:
            raise self.error("sway, rotate, stretch and stretch_sway need size >= 3 (Darknet's error); got size=1")

    def _validate_xnor(self) -> None:
        """What AlexeyAB's CPU XNOR forward cannot compute (the channel count is checked by the graph)."""
        stride_y, stride_x = self.strides
        if stride_x != stride_y:
            raise self.error(
                f"xnor=1 with stride_x={stride_x} != stride_y={stride_y} is refused: Darknet then takes its float "
                "XNOR path, whose binarize_weights reads past the weights (undefined behaviour)"
            )
        if self.dilation != 1 and self.size != 1:
            raise self.error(f"xnor=1 with dilation={self.dilation} is refused: Darknet's XNOR path ignores dilation")
