"""``[crop]``: Darknet's crop layer as its forward runs at test time."""

from __future__ import annotations

import torch
from torch import nn

from yolov3.darknet.cfg import CropSection


class CenterCrop(nn.Module):
    """``forward_crop_layer`` outside training: the window of ``crop_height`` x ``crop_width`` at offset
    ``((H - crop_height) / 2, (W - crop_width) / 2)`` (integer division), times 2 minus 1 (``noadjust=1``:
    as is). Darknet's training forward takes a random offset and flips at random instead; that is not done
    here, in train mode either. No ``.weights``."""

    def __init__(self, section: CropSection, input_height: int, input_width: int) -> None:
        super().__init__()
        self.top = (input_height - section.crop_height) // 2
        self.left = (input_width - section.crop_width) // 2
        self.height, self.width = section.crop_height, section.crop_width
        self.scale, self.shift = (1.0, 0.0) if section.noadjust else (2.0, -1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window = x[:, :, self.top : self.top + self.height, self.left : self.left + self.width]
        return window * self.scale + self.shift
