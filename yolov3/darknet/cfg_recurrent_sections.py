"""Darknet's fully connected recurrent sections ([rnn], [gru], [lstm]) and [history], read as AlexeyAB's
``src/parser.c`` reads them (``parse_rnn``, ``parse_gru``, ``parse_lstm``, ``parse_history``), with its defaults.

Each of [rnn], [gru] and [lstm] is made of inner [connected] layers on the flattened (C*H*W) input or state;
their output is (output, 1, 1). They are built here as ``darknet detector test`` runs them: the network parsed
with ``batch=1, time_steps=1``, so one time step from the zeroed state (:mod:`yolov3.models.recurrent`).
[history] with ``time_steps=1`` copies its input into the first C channels of a C*history_size output whose
other channels stay zero (:mod:`yolov3.models.history`).
"""

from __future__ import annotations

from dataclasses import dataclass

from yolov3.darknet.cfg_fork_sections import ACTIVATE_ARRAY_ACTIVATIONS
from yolov3.darknet.cfg_sections import ACTIVATIONS, MAX_SIZE, Section, check_range

# history_size * C*H*W values per image are allocated; more than this many copies is a typo, not a network
MAX_HISTORY_SIZE = 1024


def check_inner_activation(section: Section, activation: str) -> None:
    """The inner [connected] layers activate with Darknet's ``activate_array``, which returns 0 for relu6, swish
    and mish (it has no case for them): refused, as in [connected]."""
    if activation not in ACTIVATIONS:
        raise section.error(f"activation={activation!r} is not one of {', '.join(ACTIVATIONS)}")
    if activation not in ACTIVATE_ARRAY_ACTIVATIONS:
        raise section.error(
            f"activation={activation} is refused: the inner [connected] layers of [{section.KIND}] activate with "
            f"Darknet's activate_array, which has no case for it and outputs 0; allowed: "
            f"{', '.join(ACTIVATE_ARRAY_ACTIVATIONS)}"
        )


@dataclass(kw_only=True)
class RnnSection(Section):
    """``[rnn]``: three inner [connected] layers, ``input`` (inputs -> hidden), ``self`` (hidden -> hidden) and
    ``output`` (hidden -> output), each with ``activation`` and ``batch_normalize``; ``logistic=1`` makes the
    self layer's activation logistic, ``logistic=2`` loggy (``2 / (1 + exp(-x)) - 1``), any other value keeps
    ``activation`` (``make_rnn_layer``). ``shortcut`` adds the previous state, zero in one step."""

    KIND = "rnn"
    ALWAYS_WRITTEN = ("output", "hidden", "activation")

    output: int = 1
    hidden: int = 1
    activation: str = "logistic"
    batch_normalize: int = 0
    logistic: int = 0
    shortcut: int = 0

    @property
    def self_activation(self) -> str:
        """The self layer's activation: ``loggy`` (not a cfg activation here) for ``logistic=2``."""
        return {1: "logistic", 2: "loggy"}.get(self.logistic, self.activation)

    def validate(self) -> None:
        check_range(self, "output", 1, MAX_SIZE)
        check_range(self, "hidden", 1, MAX_SIZE)
        check_inner_activation(self, self.activation)


@dataclass(kw_only=True)
class GatedRecurrentSection(Section):
    """What [gru] and [lstm] share: ``output`` values, and ``batch_normalize`` for every inner [connected] layer
    (``parse_gru`` / ``parse_lstm`` read these two keys alone)."""

    ALWAYS_WRITTEN = ("output",)

    output: int = 1
    batch_normalize: int = 0

    def validate(self) -> None:
        check_range(self, "output", 1, MAX_SIZE)


@dataclass(kw_only=True)
class GruSection(GatedRecurrentSection):
    """``[gru]``: six inner linear [connected] layers (``input_z``, ``input_r``, ``input_h`` on the input,
    ``state_z``, ``state_r``, ``state_h`` on the state), each with ``batch_normalize``; the gates and the
    candidate are logistic (``gru_layer.c`` is compiled without ``USET``, so its candidate is not tanh)."""

    KIND = "gru"


@dataclass(kw_only=True)
class LstmSection(GatedRecurrentSection):
    """``[lstm]``: eight inner linear [connected] layers (``uf``, ``ui``, ``ug``, ``uo`` on the input, ``wf``,
    ``wi``, ``wg``, ``wo`` on the previous output), each with ``batch_normalize``; gates logistic, ``g`` and the
    cell's output tanh."""

    KIND = "lstm"


@dataclass(kw_only=True)
class HistorySection(Section):
    """``[history]``: the last ``history_size`` inputs stacked along channels, newest first; output
    (C*history_size, H, W). With ``time_steps=1`` Darknet's forward copies the input and leaves the rest zero."""

    KIND = "history"
    ALWAYS_WRITTEN = ("history_size",)

    history_size: int = 4

    def validate(self) -> None:
        check_range(self, "history_size", 1, MAX_HISTORY_SIZE)


RECURRENT_SECTION_TYPES: tuple[type[Section], ...] = (RnnSection, GruSection, LstmSection, HistorySection)
