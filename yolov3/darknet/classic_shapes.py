"""Output shapes of the classic sections ([lrn], [crop], [local], [detection], [deconvolutional]) and the
checks that need the input shape: every case where Darknet's CPU forward would read outside its buffers is
refused here."""

from __future__ import annotations

from yolov3.darknet.cfg_classic_sections import (
    CropSection,
    DeconvolutionalSection,
    DetectionSection,
    LocalSection,
    LrnSection,
)
from yolov3.darknet.cfg_sections import Section

MAX_LOCAL_WEIGHTS = 1 << 28  # as MAX_CONV_WEIGHTS: 1 GiB of float32 in one layer


def local_output_extent(extent: int, section: LocalSection) -> int:
    """``local_out_height`` / ``local_out_width``: ``(H - 1) / stride + 1`` with ``pad=1``, else
    ``(H - size) / stride + 1``."""
    return (extent - (1 if section.pad else section.size)) // section.stride + 1


def _local_shape(section: LocalSection, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    channels, rows, columns = shape
    output = tuple(local_output_extent(extent, section) for extent in (rows, columns))
    # im2col_cpu pads by `pad` pixels and writes (H + 2 pad - size) / stride + 1 positions per axis
    filled = tuple((extent + 2 * section.pad - section.size) // section.stride + 1 for extent in (rows, columns))
    if section.pad and filled != output:
        raise section.error(
            f"pad=1 with size={section.size} and stride={section.stride} on a {rows}x{columns} input is refused: "
            f"Darknet sizes the output {output[0]}x{output[1]} but im2col fills {filled[0]}x{filled[1]} positions, "
            "so its forward reads a mismatched buffer (size=3 always fits)"
        )
    if min(output) < 1:
        raise section.error(f"size={section.size} is larger than the {rows}x{columns} input")
    weights = output[0] * output[1] * section.filters * channels * section.size**2
    if weights > MAX_LOCAL_WEIGHTS:
        raise section.error(
            f"{output[0]}x{output[1]} locations x filters={section.filters} x {channels} channels x "
            f"size={section.size}^2 = {weights:,} weights; allowed: at most {MAX_LOCAL_WEIGHTS:,} per layer"
        )
    return (section.filters, output[0], output[1])


def classic_output_shape(section: Section, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The (C, H, W) output of a classic section for an input of ``shape``; ``CfgError`` when refused."""
    channels, rows, columns = shape
    if isinstance(section, LrnSection):
        if section.size // 2 > channels:
            raise section.error(
                f"size={section.size} on {channels} channels is refused: Darknet's forward_normalization_layer "
                f"sums the first size/2={section.size // 2} channels, reading past the input"
            )
        return shape
    if isinstance(section, CropSection):
        if section.crop_height > rows or section.crop_width > columns:
            raise section.error(
                f"crop_height={section.crop_height}, crop_width={section.crop_width} is larger than the "
                f"{rows}x{columns} input: Darknet's crop would read outside it"
            )
        return (channels, section.crop_height, section.crop_width)
    if isinstance(section, LocalSection):
        return _local_shape(section, shape)
    if isinstance(section, DetectionSection):
        if channels * rows * columns != section.inputs:
            raise section.error(
                f"side={section.side}, num={section.num}, coords={section.coords} and classes={section.classes} "
                f"need side*side*((1+coords)*num+classes)={section.inputs} inputs (Darknet asserts it), but the "
                f"layer before has {channels}x{rows}x{columns}={channels * rows * columns}"
            )
        return (section.inputs, 1, 1)
    if isinstance(section, DeconvolutionalSection):
        weights = channels * section.filters * section.size**2
        if weights > MAX_LOCAL_WEIGHTS:
            raise section.error(
                f"{channels} channels x filters={section.filters} x size={section.size}^2 = {weights:,} weights; "
                f"allowed: at most {MAX_LOCAL_WEIGHTS:,} per layer"
            )
        rows, columns = (
            (extent - 1) * section.stride + section.size - 2 * section.effective_padding for extent in (rows, columns)
        )
        return (section.filters, rows, columns)
    raise section.error("is not a classic section")  # pragma: no cover - callers pass classic sections only
