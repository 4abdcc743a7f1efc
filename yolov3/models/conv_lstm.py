"""``[conv_lstm]``: Darknet's convolutional LSTM, with the inference forward of AlexeyAB's Darknet on the CPU.

Darknet builds, with the section's size, stride, padding, groups, batch norm and activation, a convolution per
gate on the input (``uf``, ``ui``, ``ug``, ``uo``: in -> output), one per gate on the previous output ``h``
(``wf``, ``wi``, ``wg``, ``wo``: output -> output) and, with ``peephole=1``, peepholes on the cell ``c``
(``vf``, ``vi``, ``vo``). Each step of ``forward_conv_lstm_layer``::

    f = logistic(wf(h) + uf(x) + vf(c))
    i = logistic(wi(h) + ui(x) + vi(c))
    g = tanh(wg(h) + ug(x))
    c = f * c + i * g
    o = logistic(wo(h) + uo(x) + vo(c))      # vo reads the new cell
    h = o * tanh(c)                          # the layer's output

Here a forward is one step from a zero state (what ``darknet detector test`` computes for one image: the
network is parsed with ``time_steps=1`` and ``h`` and ``c`` are allocated zeroed), so ``c = i * g`` and the
forget gate drops out; ``w*(0)`` and ``vf(0)``, ``vi(0)`` are the activations of their bias (or batch-norm
shift). ``fuse_conv_batchnorm`` does not reach these convs, so their batch norm is Darknet's unfused one:
``(x - mean) / sqrt(var + 1e-5)``. The ``.weights`` hold, each laid out as a [convolutional]: ``vf, vi, vo``
(peephole only), ``wf, wi, wg, wo``, ``uf, ui, ug, uo``. Not trained here, and no state is kept between calls:
a video's frames are independent.
"""

from __future__ import annotations

import torch
from torch import nn

from yolov3.darknet.cfg import ConvLstmSection
from yolov3.models.crnn import recurrent_convolution
from yolov3.models.layers import ConvBNAct

GATES = ("f", "i", "g", "o")
PEEPHOLES = ("f", "i", "o")


class ConvLstm(nn.Module):
    """[conv_lstm] for one step from a zero state (``h = 0``, ``c = 0``)."""

    def __init__(self, section: ConvLstmSection, in_channels: int) -> None:
        super().__init__()
        self.u = nn.ModuleDict({gate: recurrent_convolution(section, in_channels, section.output) for gate in GATES})
        self.w = nn.ModuleDict({gate: recurrent_convolution(section, section.output, section.output) for gate in GATES})
        peepholes = PEEPHOLES if section.peephole else ()
        self.v = nn.ModuleDict(
            {gate: recurrent_convolution(section, section.output, section.output) for gate in peepholes}
        )

    @property
    def blocks(self) -> tuple[ConvBNAct, ...]:
        """The convs in ``.weights`` order: ``vf, vi, vo`` (peephole only), ``wf, wi, wg, wo``, ``uf, ui, ug, uo``."""
        convs = [*self.v.values(), *(self.w[gate] for gate in GATES), *(self.u[gate] for gate in GATES)]
        return tuple(convs)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = {gate: self.u[gate](x) for gate in GATES}
        zero = u["i"].new_zeros(u["i"].shape)  # (B, output, H, W): Darknet's h and c start zeroed
        w = {gate: self.w[gate](zero) for gate in GATES}
        pre_i = w["i"] + u["i"]
        if self.v:
            pre_i = pre_i + self.v["i"](zero)
        # f * c is 0 for the zero cell: the forget gate does not reach this step's output
        cell = torch.sigmoid(pre_i) * torch.tanh(w["g"] + u["g"])
        pre_o = w["o"] + u["o"]
        if self.v:
            pre_o = pre_o + self.v["o"](cell)  # the peephole of o reads the new cell
        return torch.sigmoid(pre_o) * torch.tanh(cell)
