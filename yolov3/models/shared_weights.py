"""``[convolutional] share_index`` in a built network: the sharing layer's conv and batch norm hold the very
tensors of the layer it names (see :mod:`yolov3.darknet.conv_sharing`), so loading, training or editing one
changes both, as in Darknet, and the ``.weights`` file holds them once, at the owning layer."""

from __future__ import annotations

from torch import nn

from yolov3.darknet.cfg_convolutional import ConvolutionalSection
from yolov3.darknet.conv_sharing import shared_source
from yolov3.darknet.graph import LayerNode
from yolov3.models.layers import ConvBNAct


def is_sharing(section: object, index: int) -> bool:
    """True for a [convolutional] that uses another layer's weights (it has none of its own in ``.weights``)."""
    return isinstance(section, ConvolutionalSection) and shared_source(section, index) is not None


def share_conv_weights(layers: nn.ModuleList, nodes: list[LayerNode]) -> None:
    """Point every sharing layer's weight, bias and batch-norm tensors at those of the layer it shares."""
    for node in nodes:
        section = node.section
        if not isinstance(section, ConvolutionalSection):
            continue
        source = shared_source(section, node.index)
        if source is None:
            continue
        sharer, owner = layers[node.index], layers[source]
        if not isinstance(sharer, ConvBNAct) or not isinstance(owner, ConvBNAct):
            raise section.error(f"layer {node.index} cannot share the weights of layer {source}")  # pragma: no cover
        sharer.conv.weight = owner.conv.weight
        sharer.conv.bias = owner.conv.bias  # None for both when both have batch norm (the graph checks that)
        if sharer.bn is not None and owner.bn is not None:
            sharer.bn.weight, sharer.bn.bias = owner.bn.weight, owner.bn.bias
            sharer.bn.running_mean, sharer.bn.running_var = owner.bn.running_mean, owner.bn.running_var
            sharer.bn.num_batches_tracked = owner.bn.num_batches_tracked
