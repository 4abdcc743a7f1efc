"""YOLOv3 (Redmon & Farhadi 2018): a backbone, a top-down neck and three detection heads.

The neck follows Darknet's yolov3.cfg: at stride 32 a set of five convolutions (optionally with SPP
in the middle, as yolov3-spp.cfg) feeds a 3x3 conv and the 1x1 output conv; its features are reduced,
upsampled and concatenated with the stride-16 backbone map, and again down to stride 8.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from yolov3.darknet.cfg import NetSection
from yolov3.models.darknet53 import Darknet53, Darknet53Config, scale_channels
from yolov3.models.darknet_io import DarknetIO, DarknetLayers
from yolov3.models.layers import ConvBNAct, ConvOptions, DarknetMaxPool, Upsample
from yolov3.models.mobilenet import MOBILENET_BACKBONES, MobileNetV3Backbone
from yolov3.models.yolo_head import DetectorConfig, YoloHeadSpec, yolo_section

BACKBONES = ("darknet53", *MOBILENET_BACKBONES)


@dataclass(frozen=True)
class YOLOv3Config(DetectorConfig):
    """Everything that shapes a YOLOv3 network. Heads are ordered stride 32, 16, 8, as in Darknet."""

    backbone: str = "darknet53"
    backbone_pretrained: bool = False  # torchvision ImageNet weights, for the MobileNet backbones
    darknet53: Darknet53Config = field(default_factory=Darknet53Config)
    neck_channels: tuple[int, int, int] = (512, 256, 128)
    spp: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone {self.backbone!r} is not one of {', '.join(BACKBONES)}")


class SpatialPyramidPooling(nn.Module):
    """Max pools of 5, 9 and 13 at stride 1, concatenated with the input: C -> 4C channels."""

    def __init__(self, sizes: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        self.pools = nn.ModuleList(DarknetMaxPool(size, 1) for size in sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([pool(x) for pool in reversed(self.pools)] + [x], dim=1)

    def describe_darknet(self, layers: DarknetLayers) -> None:
        source = layers.last
        pooled = []
        for number, pool in enumerate(self.pools):
            assert isinstance(pool, DarknetMaxPool)
            if number:
                layers.route(source)
            pooled.append(layers.add(pool.to_section(), pool))
        layers.route(*reversed(pooled), source)


class DetectionBlock(nn.Module):
    """The conv set of one scale (1x1, 3x3, 1x1, [SPP, 1x1,] 3x3, 1x1), then a 3x3 conv and the output."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        out_channels: int,
        spp: bool,
        activation: str,
        bn_momentum: float,
    ) -> None:
        super().__init__()
        options: ConvOptions = {"activation": activation, "bn_momentum": bn_momentum}
        layers: list[nn.Module] = [
            ConvBNAct(in_channels, channels, 1, **options),
            ConvBNAct(channels, 2 * channels, 3, **options),
            ConvBNAct(2 * channels, channels, 1, **options),
        ]
        if spp:
            layers += [SpatialPyramidPooling(), ConvBNAct(4 * channels, channels, 1, **options)]
        layers += [
            ConvBNAct(channels, 2 * channels, 3, **options),
            ConvBNAct(2 * channels, channels, 1, **options),
        ]
        self.convs = nn.Sequential(*layers)
        self.head = ConvBNAct(channels, 2 * channels, 3, **options)
        self.output = ConvBNAct(2 * channels, out_channels, 1, batch_norm=False, activation="linear")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (features routed to the next scale, raw head output)."""
        features = self.convs(x)
        return features, self.output(self.head(features))

    def describe_darknet(self, layers: DarknetLayers) -> int:
        """Append the block up to the output conv; returns the index of the routed features."""
        for module in self.convs:
            if isinstance(module, ConvBNAct):
                layers.conv(module)
            else:
                assert isinstance(module, SpatialPyramidPooling)  # the only other module of the conv set
                module.describe_darknet(layers)
        features = layers.last
        layers.conv(self.head, self.output)
        return features


class YOLOv3(DarknetIO, nn.Module):
    """YOLOv3. ``forward(x)`` returns the raw outputs [(B, A*(5+C), H/32, W/32), .../16, .../8]."""

    def __init__(self, config: YOLOv3Config = YOLOv3Config()) -> None:
        super().__init__()
        self.config = config
        self.backbone: Darknet53 | MobileNetV3Backbone
        if config.backbone == "darknet53":
            self.backbone = Darknet53(config.darknet53)
        else:
            self.backbone = MobileNetV3Backbone(config.backbone, pretrained=config.backbone_pretrained)
        options: ConvOptions = {"activation": config.activation, "bn_momentum": config.bn_momentum}
        width = config.darknet53.width_multiple if config.backbone == "darknet53" else 1.0
        neck = [scale_channels(c, width) for c in config.neck_channels]
        outputs = [len(mask) * (5 + config.num_classes) for mask in config.anchor_masks]
        c3, c4, c5 = self.backbone.out_channels
        self.blocks = nn.ModuleList(
            [
                DetectionBlock(c5, neck[0], outputs[0], config.spp, **options),
                DetectionBlock(c4 + neck[1], neck[1], outputs[1], False, **options),
                DetectionBlock(c3 + neck[2], neck[2], outputs[2], False, **options),
            ]
        )
        self.laterals = nn.ModuleList(
            [ConvBNAct(neck[0], neck[1], 1, **options), ConvBNAct(neck[1], neck[2], 1, **options)]
        )
        self.upsample = Upsample(2)

    @property
    def head_specs(self) -> list[YoloHeadSpec]:
        return [
            YoloHeadSpec(tuple(self.config.anchors_px[i] for i in mask), stride, self.config.num_classes)
            for mask, stride in zip(self.config.anchor_masks, (32, 16, 8), strict=True)
        ]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c3, c4, c5 = self.backbone(x)
        features, out_large = self.blocks[0](c5)
        x = torch.cat([self.upsample(self.laterals[0](features)), c4], dim=1)
        features, out_medium = self.blocks[1](x)
        x = torch.cat([self.upsample(self.laterals[1](features)), c3], dim=1)
        _, out_small = self.blocks[2](x)
        return [out_large, out_medium, out_small]

    def describe_darknet(self, layers: DarknetLayers) -> None:
        if not isinstance(self.backbone, Darknet53):
            raise NotImplementedError(
                f"backbone {self.config.backbone!r} has no Darknet cfg form; only darknet53 exports to Darknet"
            )
        skips = self.backbone.describe_darknet(layers)[:2][::-1]  # stride 16, then stride 8
        config = self.config
        for number, (block, mask) in enumerate(zip(self.blocks, config.anchor_masks, strict=True)):
            assert isinstance(block, DetectionBlock)
            features = block.describe_darknet(layers)
            layers.add(yolo_section(config.anchors_px, mask, config.num_classes))
            if number < 2:
                layers.route(features)
                lateral = self.laterals[number]
                assert isinstance(lateral, ConvBNAct)
                layers.conv(lateral)
                layers.add(self.upsample.to_section(), self.upsample)
                layers.route(layers.last, skips[number])

    def darknet_net_section(self) -> NetSection:
        return yolov3_net_section(self.config.input_size, self.config.darknet53.in_channels)


def yolov3_net_section(input_size: tuple[int, int], channels: int) -> NetSection:
    """The [net] section of Darknet's yolov3.cfg (training values) for this input size."""
    height, width = input_size
    return NetSection(
        batch=64,
        subdivisions=16,
        width=width,
        height=height,
        channels=channels,
        momentum=0.9,
        decay=0.0005,
        angle=0.0,
        saturation=1.5,
        exposure=1.5,
        hue=0.1,
        learning_rate=0.001,
        burn_in=1000,
        max_batches=500200,
        policy="steps",
        steps=(400000, 450000),
        scales=(0.1, 0.1),
    )
