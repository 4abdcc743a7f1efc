"""``[rnn]``, ``[gru]``, ``[lstm]``: Darknet's fully connected recurrent layers, with the inference forward of
AlexeyAB's Darknet on the CPU for one time step from the zeroed state.

Each is made of inner [connected] layers (:class:`~yolov3.models.connected.Connected`: ``W x``, unfused batch
norm with eps 1e-5 when ``batch_normalize``, biases, activation) on the flattened (C*H*W) input or on the state.
``darknet detector test`` parses the network with ``batch=1, time_steps=1``, so the forward loops once, and the
state is allocated zeroed. An inner layer on the zero state outputs the activation of its bias (with batch norm:
of ``scales * (0 - mean) / sqrt(variance + 1e-5) + biases``): its weight matrix cannot act in one step. The
forwards below are what is left of ``forward_rnn_layer``, ``forward_gru_layer`` and ``forward_lstm_layer``.

Not trained here (Darknet's training runs many steps and carries the state), and no state is kept between calls:
each call is a first step, as each image of ``darknet detector test`` is (Darknet's ``demo`` would carry it).
``.weights``: the inner layers in ``load_weights_upto``'s order, each laid out as a [connected] (biases,
weights output x inputs, then with batch norm scales, rolling mean, rolling variance).
"""

from __future__ import annotations

import torch
from torch import nn

from yolov3.darknet.cfg import ConnectedSection, GruSection, HistorySection, LstmSection, RnnSection, Section
from yolov3.models.connected import Connected
from yolov3.models.history import History


def inner_connected(inputs: int, outputs: int, activation: str, batch_normalize: int) -> Connected:
    """One inner [connected] layer of a recurrent section: ``inputs -> outputs`` with Darknet's layout."""
    section = ConnectedSection(output=outputs, activation=activation, batch_normalize=batch_normalize)
    return Connected(inputs, section)


def zero_state(like: torch.Tensor) -> torch.Tensor:
    """Darknet's state before the first step: zeros of the state's shape (B, outputs, 1, 1)."""
    return like.new_zeros(like.shape)


class ConnectedRecurrent(nn.Module):
    """Inner [connected] layers by name; ``ORDER`` is the order ``load_weights_upto`` reads them."""

    ORDER: tuple[str, ...] = ()

    def __init__(self, layers: dict[str, Connected]) -> None:
        super().__init__()
        self.inner = nn.ModuleDict({name: layers[name] for name in self.ORDER})

    @property
    def blocks(self) -> tuple[Connected, ...]:
        """The inner layers in ``.weights`` order."""
        return tuple(self.inner[name] for name in self.ORDER)  # type: ignore[misc]

    def darknet_tensors(self) -> list[torch.Tensor]:
        """Every inner layer's tensors, in file order."""
        return [tensor for block in self.blocks for tensor in block.darknet_tensors()]


class Rnn(ConnectedRecurrent):
    """``[rnn]`` for one step from a zero state::

        state = (state if shortcut else 0) + input(x) + self(state)      # state = 0 before the step
        y = output(state)

    that is ``output(input(x) + self(0))``. ``self`` has ``logistic=1``'s logistic, ``logistic=2``'s loggy
    (``2 * logistic - 1``) or the section's activation.
    """

    ORDER = ("input", "self", "output")

    def __init__(self, section: RnnSection, inputs: int) -> None:
        loggy = section.self_activation == "loggy"
        self_activation = "logistic" if loggy else section.self_activation
        hidden, normalize = section.hidden, section.batch_normalize
        super().__init__(
            {
                "input": inner_connected(inputs, hidden, section.activation, normalize),
                "self": inner_connected(hidden, hidden, self_activation, normalize),
                "output": inner_connected(hidden, section.output, section.activation, normalize),
            }
        )
        self.loggy = loggy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from_input = self.inner["input"](x)  # (B, C, H, W) -> (B, hidden, 1, 1)
        from_state = self.inner["self"](zero_state(from_input))
        if self.loggy:
            from_state = 2 * from_state - 1  # loggy(x) = 2 / (1 + exp(-x)) - 1 = 2 * logistic(x) - 1
        return self.inner["output"](from_input + from_state)  # (B, output, 1, 1)


class Gru(ConnectedRecurrent):
    """``[gru]`` for one step from a zero state. ``forward_gru_layer``::

        z = logistic(input_z(x) + state_z(state))
        r = logistic(input_r(x) + state_r(state))
        h = logistic(input_h(x) + state_h(r * state))      # logistic: gru_layer.c has no USET, so no tanh
        y = z * state + (1 - z) * h                         # weighted_sum_cpu; the new state

    With ``state = 0``: ``y = (1 - z) * h``, ``state_z(0)`` and ``state_h(0)`` their biases' part, and ``r``
    (``input_r``, ``state_r``) multiplies the zero state: it cannot act.
    """

    ORDER = ("input_z", "input_r", "input_h", "state_z", "state_r", "state_h")

    def __init__(self, section: GruSection, inputs: int) -> None:
        outputs, normalize = section.output, section.batch_normalize
        super().__init__(
            {
                name: inner_connected(inputs if name.startswith("input") else outputs, outputs, "linear", normalize)
                for name in self.ORDER
            }
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from_input_z = self.inner["input_z"](x)  # (B, C, H, W) -> (B, output, 1, 1)
        state = zero_state(from_input_z)
        z = torch.sigmoid(from_input_z + self.inner["state_z"](state))
        # r * state is zero: state_h reads the zero state whatever r is
        h = torch.sigmoid(self.inner["input_h"](x) + self.inner["state_h"](state))
        return z * state + (1 - z) * h


class Lstm(ConnectedRecurrent):
    """``[lstm]`` for one step from a zero state. ``forward_lstm_layer``::

        f = logistic(wf(h) + uf(x))
        i = logistic(wi(h) + ui(x))
        g = tanh(wg(h) + ug(x))
        o = logistic(wo(h) + uo(x))
        c = f * c + i * g
        h = o * tanh(c)                                     # the layer's output

    With ``h = 0`` and ``c = 0``: ``c = i * g``, the forget gate (``uf``, ``wf``) multiplies the zero cell and
    cannot act, and ``wi(0)``, ``wg(0)``, ``wo(0)`` are their biases' part.
    """

    ORDER = ("wf", "wi", "wg", "wo", "uf", "ui", "ug", "uo")

    def __init__(self, section: LstmSection, inputs: int) -> None:
        outputs, normalize = section.output, section.batch_normalize
        super().__init__(
            {
                name: inner_connected(inputs if name.startswith("u") else outputs, outputs, "linear", normalize)
                for name in self.ORDER
            }
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = {gate: self.inner[f"u{gate}"](x) for gate in "igo"}  # (B, C, H, W) -> (B, output, 1, 1) each
        previous_output = zero_state(u["i"])
        w = {gate: self.inner[f"w{gate}"](previous_output) for gate in "igo"}
        # f * c is 0 for the zero cell: the forget gate does not reach this step's output
        cell = torch.sigmoid(w["i"] + u["i"]) * torch.tanh(w["g"] + u["g"])
        return torch.sigmoid(w["o"] + u["o"]) * torch.tanh(cell)


def build_recurrent_layer(section: Section, input_shape: tuple[int, int, int]) -> nn.Module:
    """The module of a [rnn], [gru], [lstm] or [history] reading ``input_shape`` (C, H, W)."""
    inputs = input_shape[0] * input_shape[1] * input_shape[2]  # read flattened: Darknet's params.inputs
    if isinstance(section, RnnSection):
        return Rnn(section, inputs)
    if isinstance(section, GruSection):
        return Gru(section, inputs)
    if isinstance(section, LstmSection):
        return Lstm(section, inputs)
    if isinstance(section, HistorySection):
        return History(section)
    raise section.error("is not a recurrent section")  # pragma: no cover - graph.py dispatches only these
