"""Darknet-53: the YOLOv3 backbone (52 convolutions in residual stages) and its ImageNet classifier."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from yolov3.darknet.cfg import AvgpoolSection, NetSection, SoftmaxSection
from yolov3.models.darknet_io import DarknetIO, DarknetLayers
from yolov3.models.layers import ConvBNAct, ConvOptions, GlobalAvgPool


def scale_channels(channels: int, width_multiple: float) -> int:
    """Channels times ``width_multiple``, at least 1 (the tiny test variants use multiples like 1/16)."""
    return max(1, round(channels * width_multiple))


@dataclass(frozen=True)
class Darknet53Config:
    """Darknet-53 shape: stem width, (width, residual blocks) per stage, activation."""

    in_channels: int = 3
    stem_channels: int = 32
    stage_channels: tuple[int, ...] = (64, 128, 256, 512, 1024)
    stage_depths: tuple[int, ...] = (1, 2, 8, 8, 4)
    width_multiple: float = 1.0
    activation: str = "leaky"
    bn_momentum: float = 0.03

    def __post_init__(self) -> None:
        if len(self.stage_channels) != len(self.stage_depths) or len(self.stage_depths) < 3:
            raise ValueError(
                f"stage_channels {self.stage_channels} and stage_depths {self.stage_depths} must have the same "
                "length, at least 3 (the neck reads the last three stages)"
            )


class ResidualBlock(nn.Module):
    """1x1 conv to half the channels, 3x3 conv back, plus the input (Darknet: two convs and [shortcut])."""

    def __init__(self, channels: int, activation: str, bn_momentum: float) -> None:
        super().__init__()
        self.reduce = ConvBNAct(channels, channels // 2, 1, activation=activation, bn_momentum=bn_momentum)
        self.expand = ConvBNAct(channels // 2, channels, 3, activation=activation, bn_momentum=bn_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.expand(self.reduce(x))

    def describe_darknet(self, layers: DarknetLayers) -> None:
        start = layers.last
        layers.conv(self.reduce, self.expand)
        layers.shortcut(start)


class Darknet53(DarknetIO, nn.Module):
    """The backbone. ``forward`` returns the outputs of the last three stages (strides 8, 16, 32)."""

    def __init__(self, config: Darknet53Config = Darknet53Config()) -> None:
        super().__init__()
        self.config = config
        width = config.width_multiple
        options: ConvOptions = {"activation": config.activation, "bn_momentum": config.bn_momentum}
        channels = scale_channels(config.stem_channels, width)
        self.stem = ConvBNAct(config.in_channels, channels, 3, **options)
        stages = []
        for stage_channels, depth in zip(config.stage_channels, config.stage_depths, strict=True):
            out_channels = scale_channels(stage_channels, width)
            downsample = ConvBNAct(channels, out_channels, 3, stride=2, **options)
            blocks = [ResidualBlock(out_channels, **options) for _ in range(depth)]
            stages.append(nn.Sequential(downsample, *blocks))
            channels = out_channels
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(scale_channels(c, width) for c in config.stage_channels[-3:])
        self.strides = (8, 16, 32)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features[-3:]

    def describe_darknet(self, layers: DarknetLayers) -> list[int]:
        """Append the backbone; returns the layer indices of the three feature maps."""
        layers.conv(self.stem)
        ends = []
        for stage in self.stages:
            assert isinstance(stage, nn.Sequential)
            downsample, *blocks = stage
            assert isinstance(downsample, ConvBNAct)
            layers.conv(downsample)
            for block in blocks:
                assert isinstance(block, ResidualBlock)
                block.describe_darknet(layers)
            ends.append(layers.last)
        return ends[-3:]

    def darknet_net_section(self) -> NetSection:
        return NetSection(width=256, height=256, channels=self.config.in_channels)


class Darknet53Classifier(DarknetIO, nn.Module):
    """Darknet-53 with global average pooling and a 1x1 conv classifier; ``forward`` returns ``[logits]``."""

    def __init__(self, num_classes: int = 1000, config: Darknet53Config = Darknet53Config()) -> None:
        super().__init__()
        self.backbone = Darknet53(config)
        self.pool = GlobalAvgPool()
        self.classifier = ConvBNAct(
            self.backbone.out_channels[-1], num_classes, 1, batch_norm=False, activation="linear"
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        logits = self.classifier(self.pool(self.backbone(x)[-1]))
        return [logits.flatten(1)]  # (B, classes, 1, 1) -> (B, classes)

    def describe_darknet(self, layers: DarknetLayers) -> None:
        self.backbone.describe_darknet(layers)
        layers.add(AvgpoolSection(), self.pool)
        layers.conv(self.classifier)
        layers.add(SoftmaxSection(groups=1))

    def darknet_net_section(self) -> NetSection:
        return NetSection(
            batch=128,
            subdivisions=4,
            width=256,
            height=256,
            channels=self.backbone.config.in_channels,
            min_crop=128,
            max_crop=448,
            burn_in=1000,
            learning_rate=0.1,
            policy="poly",
            power=4.0,
            max_batches=800000,
            momentum=0.9,
            decay=0.0005,
            angle=7.0,
            hue=0.1,
            saturation=0.75,
            exposure=0.75,
            aspect=0.75,
        )
