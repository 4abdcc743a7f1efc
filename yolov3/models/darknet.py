"""``Darknet``: any YOLO-family network built layer by layer from a Darknet ``.cfg``."""

from __future__ import annotations

import math
import os

import torch
from torch import nn

from yolov3.darknet.cfg import (
    CLASSIC_SECTION_TYPES,
    RECURRENT_SECTION_TYPES,
    ActivationSection,
    AvgpoolSection,
    BatchnormSection,
    ConnectedSection,
    ContrastiveSection,
    ConvLstmSection,
    ConvolutionalSection,
    CostSection,
    CrnnSection,
    DarknetCfg,
    DropoutSection,
    EmptySection,
    GaussianYoloSection,
    ImplicitSection,
    LocalAvgpoolSection,
    MaxpoolSection,
    NetSection,
    RegionSection,
    Reorg3dSection,
    ReorgSection,
    RouteSection,
    SamSection,
    ScaleChannelsSection,
    ShortcutSection,
    SoftmaxSection,
    UpsampleSection,
    YoloSection,
    parse_cfg,
)
from yolov3.darknet.class_tree import check_tree_size, load_class_tree
from yolov3.darknet.graph import HEAD_SECTIONS, LayerNode, build_graph, head_stride
from yolov3.darknet.weights_file import ConvParameters
from yolov3.models.antialiasing import AntialiasedConv
from yolov3.models.binary_conv import XnorConv, binary_output_layers
from yolov3.models.classic_layers import WEIGHTED_CLASSIC_MODULES, build_classic_layer
from yolov3.models.connected import Connected
from yolov3.models.conv_lstm import ConvLstm
from yolov3.models.crnn import Crnn
from yolov3.models.darknet_batchnorm import DarknetBatchNorm
from yolov3.models.darknet_io import DarknetIO, DarknetLayers
from yolov3.models.darknet_layers import (
    HeadOutput,
    LocalAvgPool,
    Reorg,
    Sam,
    ScaleChannels,
    Shortcut,
    reorg_gather_index,
)
from yolov3.models.darknet_pooling import maxpool_from_section
from yolov3.models.detection_head import DetectionOutput
from yolov3.models.implicit import Implicit
from yolov3.models.layers import ConvBNAct, GlobalAvgPool, Upsample, make_activation
from yolov3.models.recurrent import ConnectedRecurrent, build_recurrent_layer
from yolov3.models.shared_weights import is_sharing, share_conv_weights
from yolov3.models.yolo_head import YoloHeadSpec


class Route(nn.Module):
    """Concatenate the outputs of ``sources`` along channels, keeping channel group ``group_id``."""

    def __init__(self, sources: tuple[int, ...], groups: int = 1, group_id: int = 0) -> None:
        super().__init__()
        self.sources, self.groups, self.group_id = sources, groups, group_id

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.groups > 1:
            inputs = tuple(x.chunk(self.groups, dim=1)[self.group_id] for x in inputs)
        return inputs[0] if len(inputs) == 1 else torch.cat(inputs, dim=1)


class LayerTensors:
    """A layer's ``.weights`` tensors in file order, as ConvParameters has: a weighted [shortcut] (``(n + 1) * [C]``
    floats), [implicit], [connected], [batchnorm]."""

    def __init__(self, layer_index: int, tensors: list[torch.Tensor]) -> None:
        self.layer_index, self._tensors = layer_index, tensors

    def tensors(self) -> list[torch.Tensor]:
        return self._tensors

    @property
    def num_floats(self) -> int:
        return sum(tensor.numel() for tensor in self._tensors)


class YoloOutput(nn.Identity):
    """Marks a [yolo] layer: forward passes the raw head output through; decoding lives elsewhere."""

    def __init__(self, section: YoloSection) -> None:
        super().__init__()
        self.anchors_px = section.anchors_px
        self.num_classes = section.classes
        self.scale_x_y = section.scale_x_y


def _build_layer(node: LayerNode, linear_outputs: frozenset[int] = frozenset()) -> nn.Module:
    section = node.section
    if isinstance(section, ConvolutionalSection) and section.xnor:
        return XnorConv.from_section(section, node.in_channels, linear_output=node.index in linear_outputs)
    if isinstance(section, ConvolutionalSection) and section.antialiasing:
        return AntialiasedConv.from_antialiased_section(section, node.in_channels)
    if isinstance(section, ConvolutionalSection):
        block = ConvBNAct.from_section(section, node.in_channels)
        block.conv.stride = section.strides  # stride_y / stride_x (AlexeyAB)
        return block
    if isinstance(section, CrnnSection):
        return Crnn(section, node.in_channels)
    if isinstance(section, ConvLstmSection):
        return ConvLstm(section, node.in_channels)
    if isinstance(section, RECURRENT_SECTION_TYPES):  # [rnn], [gru], [lstm], [history]
        return build_recurrent_layer(section, node.input_shape)
    if isinstance(section, ShortcutSection):
        return Shortcut(node.sources, section, node.in_channels)
    if isinstance(section, SamSection):
        return Sam(node.sources, section.activation)
    if isinstance(section, ScaleChannelsSection):
        return ScaleChannels(node.sources, section.activation)
    if isinstance(section, (ReorgSection, Reorg3dSection)):
        channels, height, width = node.output_shape if isinstance(section, Reorg3dSection) else node.input_shape
        index = reorg_gather_index(channels, height, width, section.stride, forward=bool(section.reverse))
        return Reorg(index, node.output_shape)
    if isinstance(section, LocalAvgpoolSection):
        size, stride_y, stride_x, padding = section.size, section.stride_y, section.stride_x, section.padding
        assert size is not None and stride_y is not None and stride_x is not None and padding is not None  # defaulted
        return LocalAvgPool(size, stride_y, stride_x, padding)
    if isinstance(section, (RegionSection, GaussianYoloSection)):
        return HeadOutput(section)
    if isinstance(section, EmptySection):
        return nn.Identity()
    if isinstance(section, RouteSection):
        return Route(node.sources, section.groups, section.group_id)
    if isinstance(section, UpsampleSection):
        return Upsample(section.stride, section.scale)
    if isinstance(section, MaxpoolSection):
        return maxpool_from_section(section)
    if isinstance(section, ImplicitSection):
        return Implicit(section)
    if isinstance(section, CLASSIC_SECTION_TYPES):  # [lrn], [crop], [local], [detection]
        return build_classic_layer(node)
    if isinstance(section, ConnectedSection):
        return Connected(node.in_channels * node.input_shape[1] * node.input_shape[2], section)
    if isinstance(section, BatchnormSection):
        return DarknetBatchNorm(node.in_channels)
    if isinstance(section, ActivationSection):
        return make_activation(section.activation)
    if isinstance(section, AvgpoolSection):
        return GlobalAvgPool()
    if isinstance(section, DropoutSection):
        return nn.Dropout(section.probability)
    if isinstance(section, YoloSection):
        return YoloOutput(section)
    if isinstance(section, SoftmaxSection) and (tree := load_class_tree(section)) is not None:
        check_tree_size(section, tree, math.prod(node.input_shape), exact=False)  # Darknet reads past its input
    if isinstance(section, (SoftmaxSection, CostSection, ContrastiveSection)):
        return nn.Identity()  # forward returns logits; softmax, cost and contrastive losses belong to training
    raise section.error("has no PyTorch layer")  # pragma: no cover - every parsed kind is handled above


class Darknet(DarknetIO, nn.Module):
    """A network built from a Darknet cfg.

    ``forward(x)`` takes (B, channels, H, W), RGB in 0..1, and returns a list with one raw head output
    (B, A*(5+C), H/s, W/s) per [yolo] layer in cfg order, in train and eval mode alike; a classifier cfg
    (no [yolo]) returns ``[logits]`` of shape (B, classes). Softmax and cost layers are not applied.
    """

    def __init__(self, cfg: str | os.PathLike | DarknetCfg) -> None:
        super().__init__()
        self.cfg = cfg if isinstance(cfg, DarknetCfg) else parse_cfg(cfg)
        self.nodes = build_graph(self.cfg)
        linear_outputs = binary_output_layers(self.nodes)
        self.layers = nn.ModuleList(_build_layer(node, linear_outputs) for node in self.nodes)
        share_conv_weights(self.layers, self.nodes)  # [convolutional] share_index
        # Outputs read later by a route or shortcut; all others are dropped as soon as they are used.
        self._kept = frozenset(source for node in self.nodes for source in node.sources if source != node.index - 1)
        self.is_detector = any(isinstance(section, HEAD_SECTIONS) for section in self.cfg.layers)

    @property
    def head_specs(self) -> list[YoloHeadSpec]:
        """One spec per [yolo] layer: its anchors, stride (at the [net] size), classes and ``scale_x_y``."""
        net_height, net_width = self.cfg.net.height, self.cfg.net.width
        specs = []
        for node in self.nodes:
            section = node.section
            if not isinstance(section, YoloSection) or isinstance(section, GaussianYoloSection) or section.new_coords:
                if isinstance(section, HEAD_SECTIONS):
                    raise section.error(
                        f"layer {node.index}: only [yolo] heads without new_coords are trained here; [{section.KIND}]"
                        " heads are decoded by yolov3.inference.region_decode"
                    )
                continue
            stride = head_stride(node, net_height, net_width)
            specs.append(YoloHeadSpec(section.anchors_px, stride, section.classes, section.scale_x_y))
        return specs

    @property
    def yolo_sections(self) -> list[YoloSection]:
        return [
            section
            for section in self.cfg.layers
            if isinstance(section, YoloSection) and not isinstance(section, GaussianYoloSection)
        ]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs: dict[int, torch.Tensor] = {}
        heads: list[torch.Tensor] = []
        for index, layer in enumerate(self.layers):
            sources = getattr(layer, "sources", None)
            if sources is not None:
                x = layer(*(outputs[source] if source != index - 1 else x for source in sources))
            else:
                x = layer(x)
            if isinstance(layer, (YoloOutput, HeadOutput, DetectionOutput)):
                heads.append(x)
            if index in self._kept:
                outputs[index] = x
        return heads if self.is_detector else [x.flatten(1)]  # (B, C, 1, 1) -> (B, C)

    def darknet_conv_parameters(self) -> list[ConvParameters]:
        """Every layer with ``.weights`` tensors in file order: convolutions, weighted shortcuts, [implicit],
        [connected], [batchnorm], and the inner [connected] layers of [rnn], [gru], [lstm]."""
        parameters: list = []
        for index, module in enumerate(self.layers):
            if isinstance(module, ConvBNAct):
                section = self.cfg.layers[index]
                if not is_sharing(section, index):  # a sharing layer reads nothing (load_weights_upto)
                    flipped = bool(getattr(section, "flipped", 0))
                    parameters.append(ConvParameters(index, module.conv, module.bn, flipped=flipped))
            elif isinstance(module, (Crnn, ConvLstm)):
                parameters += [ConvParameters(index, block.conv, block.bn) for block in module.blocks]
            elif isinstance(module, Shortcut) and module.weight is not None:
                parameters.append(LayerTensors(index, [module.weight]))
            elif isinstance(
                module, (Implicit, Connected, DarknetBatchNorm, *WEIGHTED_CLASSIC_MODULES, ConnectedRecurrent)
            ):
                parameters.append(LayerTensors(index, module.darknet_tensors()))
        return parameters

    def describe_darknet(self, layers: DarknetLayers) -> None:
        for section, module in zip(self.cfg.layers, self.layers, strict=True):
            layers.add(section, module)

    def darknet_net_section(self) -> NetSection:
        return self.cfg.net
