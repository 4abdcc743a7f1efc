"""YOLOv3-tiny: seven 3x3 convs with max pools, and two detection heads (strides 32 and 16)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from yolov3.darknet.cfg import NetSection
from yolov3.models.darknet53 import scale_channels
from yolov3.models.darknet_io import DarknetIO, DarknetLayers
from yolov3.models.layers import ConvBNAct, ConvOptions, DarknetMaxPool, Upsample
from yolov3.models.yolo_head import COCO_TINY_ANCHORS_PX, DetectorConfig, YoloHeadSpec, yolo_section
from yolov3.models.yolov3 import yolov3_net_section


@dataclass(frozen=True)
class YOLOv3TinyConfig(DetectorConfig):
    """YOLOv3-tiny shape. Heads are ordered stride 32, then 16, as in Darknet."""

    NUM_HEADS: ClassVar[int] = 2

    anchors_px: tuple[tuple[float, float], ...] = COCO_TINY_ANCHORS_PX
    anchor_masks: tuple[tuple[int, ...], ...] = ((3, 4, 5), (0, 1, 2))
    in_channels: int = 3
    backbone_channels: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024)
    width_multiple: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.backbone_channels) != 7:
            raise ValueError(f"backbone_channels needs 7 widths, got {self.backbone_channels}")


class YOLOv3Tiny(DarknetIO, nn.Module):
    """YOLOv3-tiny. ``forward(x)`` returns the raw outputs [(B, A*(5+C), H/32, W/32), (..., H/16, W/16)]."""

    def __init__(self, config: YOLOv3TinyConfig = YOLOv3TinyConfig()) -> None:
        super().__init__()
        self.config = config
        options: ConvOptions = {"activation": config.activation, "bn_momentum": config.bn_momentum}
        widths = [scale_channels(c, config.width_multiple) for c in config.backbone_channels]
        in_channels = [config.in_channels, *widths[:-1]]
        convs = [ConvBNAct(cin, cout, 3, **options) for cin, cout in zip(in_channels, widths, strict=True)]
        # Five 2x2 stride-2 pools, then a 2x2 stride-1 pool that Darknet pads on the right and bottom.
        pools = [DarknetMaxPool(2, 2) for _ in range(5)] + [DarknetMaxPool(2, 1)]
        self.stride16 = nn.Sequential(
            *[layer for pair in zip(convs[:5], pools[:4], strict=False) for layer in pair], convs[4]
        )
        self.stride32 = nn.Sequential(pools[4], convs[5], pools[5], convs[6])
        outputs = [len(mask) * (5 + config.num_classes) for mask in config.anchor_masks]
        reduced, lateral = (
            scale_channels(256, config.width_multiple),
            scale_channels(128, config.width_multiple),
        )
        self.reduce = ConvBNAct(widths[6], reduced, 1, **options)
        self.head_large = nn.Sequential(
            ConvBNAct(reduced, scale_channels(512, config.width_multiple), 3, **options),
            ConvBNAct(
                scale_channels(512, config.width_multiple),
                outputs[0],
                1,
                batch_norm=False,
                activation="linear",
            ),
        )
        self.lateral = ConvBNAct(reduced, lateral, 1, **options)
        self.upsample = Upsample(2)
        self.head_medium = nn.Sequential(
            ConvBNAct(lateral + widths[4], widths[4], 3, **options),
            ConvBNAct(widths[4], outputs[1], 1, batch_norm=False, activation="linear"),
        )

    @property
    def head_specs(self) -> list[YoloHeadSpec]:
        return [
            YoloHeadSpec(tuple(self.config.anchors_px[i] for i in mask), stride, self.config.num_classes)
            for mask, stride in zip(self.config.anchor_masks, (32, 16), strict=True)
        ]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skip = self.stride16(x)
        features = self.reduce(self.stride32(skip))
        out_large = self.head_large(features)
        x = torch.cat([self.upsample(self.lateral(features)), skip], dim=1)
        return [out_large, self.head_medium(x)]

    def describe_darknet(self, layers: DarknetLayers) -> None:
        for module in (*self.stride16, *self.stride32):
            layers.add(module.to_section(), module)
            if module is self.stride16[-1]:
                skip = layers.last
        features = layers.conv(self.reduce)
        layers.conv(*self.head_large)
        layers.add(yolo_section(self.config.anchors_px, self.config.anchor_masks[0], self.config.num_classes))
        layers.route(features)
        layers.conv(self.lateral)
        layers.add(self.upsample.to_section(), self.upsample)
        layers.route(layers.last, skip)
        layers.conv(*self.head_medium)
        layers.add(yolo_section(self.config.anchors_px, self.config.anchor_masks[1], self.config.num_classes))

    def darknet_net_section(self) -> NetSection:
        return yolov3_net_section(self.config.input_size, self.config.in_channels)
