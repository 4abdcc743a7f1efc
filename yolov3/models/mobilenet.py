"""torchvision's MobileNetV3 as a YOLOv3 backbone (an encoder ablation): features at strides 8, 16, 32."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

MOBILENET_BACKBONES = ("mobilenet_v3_large", "mobilenet_v3_small")

# ImageNet statistics the torchvision weights were trained with; the backbone applies them itself so
# that every model takes the same input (RGB in 0..1).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MobileNetV3Backbone(nn.Module):
    """``torchvision.models.mobilenet_v3_{large,small}().features``, tapped at the last block of each stride."""

    mean: torch.Tensor  # buffer, (1, 3, 1, 1)
    std: torch.Tensor  # buffer, (1, 3, 1, 1)

    def __init__(self, name: str = "mobilenet_v3_large", pretrained: bool = False) -> None:
        super().__init__()
        if name not in MOBILENET_BACKBONES:
            raise ValueError(f"unknown MobileNet backbone {name!r}; expected one of {', '.join(MOBILENET_BACKBONES)}")
        builder = getattr(torchvision.models, name)
        weights = "IMAGENET1K_V1" if pretrained else None
        self.features = builder(weights=weights).features
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.taps, self.out_channels = self._find_taps()
        self.strides = (8, 16, 32)

    @torch.no_grad()
    def _find_taps(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """Index and channels of the last block at strides 8, 16 and 32 (found by a 64x64 probe)."""
        x = torch.zeros(1, 3, 64, 64)
        last_at_stride: dict[int, tuple[int, int]] = {}
        was_training = self.features.training
        self.features.eval()
        for index, block in enumerate(self.features):
            x = block(x)
            last_at_stride[64 // x.shape[-1]] = (index, x.shape[1])
        self.features.train(was_training)
        (index8, channels8), (index16, channels16), (index32, channels32) = (
            last_at_stride[stride] for stride in (8, 16, 32)
        )
        return (index8, index16, index32), (channels8, channels16, channels32)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean) / self.std
        features = []
        for index, block in enumerate(self.features):
            x = block(x)
            if index in self.taps:
                features.append(x)
            if index == self.taps[-1]:
                break
        return features
