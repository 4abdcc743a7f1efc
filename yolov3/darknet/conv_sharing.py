"""``[convolutional] share_index``: a layer that computes with the weights of an earlier [convolutional].

AlexeyAB's ``parse_convolutional`` resolves ``share_index`` as absolute when ``>= 0`` and relative to the layer
otherwise (its default, -1000000000, means no sharing), and ``make_convolutional_layer`` points the layer's
weights, biases and batch-norm scales and rolling statistics at that layer's: both layers compute with the same
numbers, and ``load_weights_upto`` reads nothing for the sharing layer (``l.share_layer == NULL`` only). The
sharing layer keeps its own stride, padding, dilation, activation and xnor / anti-aliasing; Darknet requires
equal size, input channels, filters and weight count ("Layer size, nweights, channels or filters don't match
for the share_layer").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from yolov3.darknet.cfg_convolutional import NO_SHARE, ConvolutionalSection

if TYPE_CHECKING:
    from yolov3.darknet.graph import LayerNode


def shared_source(section: ConvolutionalSection, index: int) -> int | None:
    """The absolute index of the layer whose weights layer ``index`` uses, or None when it has its own."""
    if section.share_index == NO_SHARE:
        return None
    return section.share_index if section.share_index >= 0 else index + section.share_index


def check_shared_source(section: ConvolutionalSection, index: int, in_channels: int, nodes: list[LayerNode]) -> None:
    """Raise a CfgError unless ``share_index`` names an earlier [convolutional] Darknet can share weights with."""
    source = shared_source(section, index)
    if source is None:
        return
    if not 0 <= source < index:
        raise section.error(
            f"share_index={section.share_index} refers to layer {source}; layer {index} can share the weights of "
            f"layers 0..{index - 1} only (Darknet reads a layer not built yet, or outside the network)"
        )
    other = nodes[source]
    if not isinstance(other.section, ConvolutionalSection):
        raise section.error(
            f"share_index={section.share_index} refers to layer {source}, a [{other.section.KIND}]; only a "
            "[convolutional] has weights to share"
        )
    mine = _shape(section, in_channels)
    theirs = _shape(other.section, other.in_channels)
    if mine != theirs:
        raise section.error(
            f"share_index={section.share_index}: size, weights, input channels and filters {mine} differ from layer "
            f"{source}'s {theirs}; Darknet stops with \"Layer size, nweights, channels or filters don't match for "
            'the share_layer"'
        )
    if section.batch_normalize != other.section.batch_normalize:
        raise section.error(
            f"share_index={section.share_index} with batch_normalize={section.batch_normalize} shares layer "
            f"{source} with batch_normalize={other.section.batch_normalize}: refused, Darknet's result then depends "
            "on whether it fused batch norm first (without fusing it reads missing scales, or drops the shared ones)"
        )


def _shape(section: ConvolutionalSection, in_channels: int) -> tuple[int, int, int, int]:
    """(size, weight count, input channels, filters): what ``make_convolutional_layer`` compares."""
    weights = in_channels // section.effective_groups * section.filters * section.size**2
    return section.size, weights, in_channels, section.filters
