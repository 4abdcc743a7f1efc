"""Output shapes of [rnn], [gru], [lstm] and [history], and the one check a [gru] needs of the layers that read it.

[rnn], [gru] and [lstm] read their input flattened (Darknet's ``params.inputs``, C*H*W) and output
(output, 1, 1). But ``make_gru_layer`` never sets ``out_c``, ``out_h``, ``out_w``: the layer after a [gru] is
parsed with a 0x0x0 input and only its C*H*W ``inputs`` right. Only the sections that read nothing else
([connected], [rnn], [gru], [lstm]) may follow it; anything else reading a [gru] (a [route] included) is refused.
"""

from __future__ import annotations

from yolov3.darknet.cfg_fork_sections import ConnectedSection
from yolov3.darknet.cfg_recurrent_sections import GruSection, HistorySection, LstmSection, RnnSection
from yolov3.darknet.cfg_sections import Section

MAX_RECURRENT_WEIGHTS = 1 << 28  # as MAX_CONV_WEIGHTS: 1 GiB of float32 in one layer

# The sections whose Darknet parser reads only the previous layer's C*H*W count, never its C, H, W
READS_INPUT_COUNT_ONLY = (ConnectedSection, RnnSection, GruSection, LstmSection)


def recurrent_weight_count(section: RnnSection | GruSection | LstmSection, inputs: int) -> int:
    """The floats of every inner [connected] weight matrix (biases and batch norm aside)."""
    if isinstance(section, RnnSection):
        return (inputs + section.hidden + section.output) * section.hidden
    gates = 3 if isinstance(section, GruSection) else 4  # one input and one state layer per gate
    return gates * (inputs + section.output) * section.output


def recurrent_output_shape(section: Section, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The output (C, H, W) of a [rnn], [gru], [lstm] or [history] reading ``shape``."""
    channels, rows, columns = shape
    if isinstance(section, HistorySection):
        return (channels * section.history_size, rows, columns)
    assert isinstance(section, (RnnSection, GruSection, LstmSection))  # graph.py dispatches only these here
    inputs = channels * rows * columns
    weights = recurrent_weight_count(section, inputs)
    if weights > MAX_RECURRENT_WEIGHTS:
        raise section.error(
            f"{weights:,} weights in its inner [connected] layers for {inputs:,} inputs; allowed: at most "
            f"{MAX_RECURRENT_WEIGHTS:,} per layer"
        )
    return (section.output, 1, 1)


def check_gru_reader(section: Section, index: int, sources: dict[int, Section]) -> None:
    """Refuse layer ``index`` (``section``) if it reads a [gru] (``sources``: layer index -> section) other than
    as the next layer of a kind that reads only its C*H*W count."""
    for source, source_section in sources.items():
        if not isinstance(source_section, GruSection):
            continue
        if source == index - 1 and isinstance(section, READS_INPUT_COUNT_ONLY):
            continue
        raise section.error(
            f"reads layer {source}, a [gru]: Darknet's make_gru_layer leaves its out_c, out_h and out_w at 0, so "
            "a layer reading its shape gets a 0x0x0 input; only [connected], [rnn], [gru] or [lstm] may follow a "
            "[gru] (put a [connected] after it)"
        )
