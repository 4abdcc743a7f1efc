"""[rnn], [gru], [lstm] and [history] against AlexeyAB's Darknet itself, parsed as ``darknet detector test`` parses
(batch 1, one time step from the zeroed state): small cfgs with random weights, every layer's output within 1e-4
relative, and ``.weights`` byte for byte what Darknet's own writer saves after reading them.

A zero state hides some weights in one step (the recurrent weight matrices; the [gru] reset gate; the [lstm]
forget gate): ``test_one_step_reads_exactly_the_weights_that_act`` shows which, so that a match with Darknet
vouches for the layout of every weight that acts; the last tests show the comparison failing on a dropped term
or a wrong layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from darknet_harness import NET, RandomRuns, run_random_networks
from darknet_testing import relative_error
from test_darknet_layers import our_layer_outputs

from yolov3.darknet.cfg import CfgError, parse_cfg_text
from yolov3.models.connected import Connected
from yolov3.models.darknet import Darknet
from yolov3.models.recurrent import ConnectedRecurrent

# Each cfg starts with a [convolutional]: Darknet's parse_network_cfg_custom divides by the count of layers whose
# input is larger than 1x1 (and a recurrent layer's l.w, l.h are 0), so a cfg without one stops it (SIGFPE).
FIRST_CONV = """
[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
activation=leaky
"""
CFGS = {
    "rnn": (
        6,
        FIRST_CONV
        + """[rnn]
batch_normalize=1
output=8
hidden=10
activation=leaky
logistic=2
[rnn]
output=6
hidden=5
shortcut=1
[rnn]
output=4
hidden=6
activation=tanh
logistic=1
[connected]
output=3
activation=linear
""",
    ),
    "gru": (
        6,
        FIRST_CONV
        + """[gru]
batch_normalize=1
output=8
[gru]
output=6
[connected]
output=3
activation=linear
""",
    ),
    "lstm": (
        6,
        FIRST_CONV
        + """[lstm]
batch_normalize=1
output=8
[lstm]
output=6
""",
    ),
    "history": (
        6,
        FIRST_CONV
        + """[history]
history_size=3
[convolutional]
filters=5
size=3
pad=1
activation=linear
[history]
[lstm]
output=4
""",
    ),
}

# Which tensors of each inner [connected] layer act in one step from the zero state: "all" (an input layer),
# "offsets" (a layer on the zero state: its biases and batch norm, not its weight matrix) or "none" (a layer
# whose output multiplies the zero state: the [gru] reset gate, the [lstm] forget gate).
ACTING = {
    "rnn": {"input": "all", "self": "offsets", "output": "all"},
    "gru": {
        "input_z": "all",
        "input_r": "none",
        "input_h": "all",
        "state_z": "offsets",
        "state_r": "none",
        "state_h": "offsets",
    },
    "lstm": {
        "wf": "none",
        "wi": "offsets",
        "wg": "offsets",
        "wo": "offsets",
        "uf": "none",
        "ui": "all",
        "ug": "all",
        "uo": "all",
    },
}


@pytest.fixture(scope="module")
def recurrent_runs(alexeyab_darknet: Path, tmp_path_factory: pytest.TempPathFactory) -> RandomRuns:
    """All cfgs through one Darknet harness process: name -> (cfg, weights path, input, Darknet result)."""
    work = tmp_path_factory.mktemp("darknet_recurrent_layers")
    runs, _ = run_random_networks(alexeyab_darknet, work, CFGS, 100)
    return runs


def _loaded_model(recurrent_runs: dict, name: str) -> Darknet:
    cfg, weights_path, _, _ = recurrent_runs[name]
    model = Darknet(cfg).eval()
    model.load_darknet_weights(weights_path)  # must fit exactly
    return model


def _first_layer_error(recurrent_runs: dict, name: str, model: Darknet) -> float:
    """The relative error, against Darknet, of the first recurrent layer of cfg ``name`` in ``model``."""
    _, _, image, result = recurrent_runs[name]
    first = next(index for index, layer in enumerate(model.layers) if isinstance(layer, ConnectedRecurrent))
    mine = our_layer_outputs(model, torch.from_numpy(image)[None])[first].ravel()
    return relative_error(mine, result.outputs[first].ravel())


@pytest.mark.parametrize("name", list(CFGS))
def test_every_layer_matches_darknet(recurrent_runs: dict, name: str) -> None:
    cfg, _, image, result = recurrent_runs[name]
    ours = our_layer_outputs(_loaded_model(recurrent_runs, name), torch.from_numpy(image)[None])
    assert sorted(result.outputs) == list(range(len(cfg.layers)))
    for index, section in enumerate(cfg.layers):
        mine, reference = ours[index].ravel(), result.outputs[index].ravel()
        assert mine.shape == reference.shape, f"layer {index} [{section.KIND}]"
        error = relative_error(mine, reference)
        assert error < 1e-4, f"layer {index} [{section.KIND}]: relative error {error:.2e}"


@pytest.mark.parametrize("name", list(CFGS))
def test_weights_layout_is_what_darknet_reads(recurrent_runs: dict, name: str) -> None:
    """Darknet loads our file and saves it back: the same floats, and the same length (header aside)."""
    _, weights_path, _, result = recurrent_runs[name]
    ours = weights_path.read_bytes()
    assert len(result.saved_weights) == len(ours)
    assert result.saved_weights[20:] == ours[20:]


def _acts(layer: torch.nn.Module, x: torch.Tensor, tensor: torch.Tensor) -> bool:
    """Whether changing ``tensor`` (a parameter or running statistic of ``layer``) changes ``layer(x)``."""
    with torch.no_grad():
        before = layer(x)
        saved = tensor.clone()
        tensor.mul_(1.5).add_(0.3)  # keeps a running variance positive
        after = layer(x)
        tensor.copy_(saved)
    return bool((after - before).abs().max() > 1e-3 * before.abs().max())


@pytest.mark.parametrize("name", ["rnn", "gru", "lstm"])
def test_one_step_reads_exactly_the_weights_that_act(recurrent_runs: dict, name: str) -> None:
    """Every tensor ACTING says acts changes the output, every other one does not: so the match with Darknet
    above checks the place in the file of every weight that can act in one step."""
    model = _loaded_model(recurrent_runs, name)
    checked = 0
    for node, layer in zip(model.nodes, model.layers, strict=True):
        if not isinstance(layer, ConnectedRecurrent):
            continue
        x = torch.rand((1, *node.input_shape), generator=torch.Generator().manual_seed(node.index))
        for inner_name, block in layer.inner.items():
            assert isinstance(block, Connected)
            matrix = block.linear.weight
            for tensor in block.darknet_tensors():
                expected = ACTING[name][inner_name] == "all" or (
                    ACTING[name][inner_name] == "offsets" and tensor is not matrix
                )
                assert _acts(layer, x, tensor) == expected, f"layer {node.index} {inner_name} {tuple(tensor.shape)}"
                checked += 1
    assert checked > 10


def _drop(layer: ConnectedRecurrent, inner_name: str) -> None:
    layer.inner[inner_name].register_forward_hook(lambda _module, _inputs, output: torch.zeros_like(output))


def _swap(layer: ConnectedRecurrent, first: str, second: str) -> None:
    """As if the file held the two (same-shaped) inner layers in the other order."""
    first_state = {key: value.clone() for key, value in layer.inner[first].state_dict().items()}
    layer.inner[first].load_state_dict(layer.inner[second].state_dict())
    layer.inner[second].load_state_dict(first_state)


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("rnn", "drop self"),  # the self layer on the zero state: its batch-norm offsets through loggy
        ("rnn", "logistic for loggy"),
        ("gru", "drop state_z"),
        ("gru", "swap input_z input_h"),
        ("lstm", "drop wg"),
        ("lstm", "swap ui uo"),
    ],
)
def test_the_comparison_sees_a_dropped_term_or_a_wrong_layout(recurrent_runs: dict, name: str, change: str) -> None:
    model = _loaded_model(recurrent_runs, name)
    layer = next(layer for layer in model.layers if isinstance(layer, ConnectedRecurrent))
    assert _first_layer_error(recurrent_runs, name, model) < 1e-4
    action, *inner_names = change.split()
    if action == "drop":
        _drop(layer, inner_names[0])
    elif action == "swap":
        _swap(layer, *inner_names)
    else:  # loggy is 2 * logistic - 1: undo it
        layer.inner["self"].register_forward_hook(lambda _module, _inputs, output: (output + 1) / 2)
    assert _first_layer_error(recurrent_runs, name, model) > 1e-2


@pytest.mark.parametrize(
    ("layers", "fragment"),
    [
        ("[rnn]\nactivation=mish\n", r"activation=mish is refused: the inner \[connected\] layers of \[rnn\]"),
        ("[rnn]\nhidden=0\n", "hidden=0 is out of range"),
        ("[gru]\noutput=0\n", "output=0 is out of range"),
        ("[history]\nhistory_size=0\n", "history_size=0 is out of range; allowed: 1..1024"),
        ("[lstm]\noutptu=3\n", "unknown key 'outptu'; did you mean 'output'"),  # xnor: read by others, ignored
        ("[gru]\n[convolutional]\nfilters=2\n", r"\[convolutional\] reads layer 0, a \[gru\]: Darknet's make_gru"),
        ("[gru]\n[connected]\n[route]\nlayers=-2\n", r"\[route\] reads layer 0, a \[gru\]"),
    ],
)
def test_what_darknet_would_not_compute_is_refused(layers: str, fragment: str) -> None:
    with pytest.raises(CfgError, match=fragment):
        Darknet(parse_cfg_text(NET.format(size=4) + layers))


def test_sections_round_trip_and_shapes() -> None:
    cfg = parse_cfg_text(NET.format(size=6) + CFGS["history"][1] + CFGS["rnn"][1] + CFGS["gru"][1])
    model = Darknet(cfg)
    kinds = [(section.KIND, node.output_shape) for section, node in zip(cfg.layers, model.nodes, strict=True)]
    assert kinds[1:5] == [
        ("history", (12, 6, 6)),
        ("convolutional", (5, 6, 6)),
        ("history", (20, 6, 6)),
        ("lstm", (4, 1, 1)),
    ]
    assert kinds[6:9] == [("rnn", (8, 1, 1)), ("rnn", (6, 1, 1)), ("rnn", (4, 1, 1))]
    assert kinds[-3:] == [("gru", (8, 1, 1)), ("gru", (6, 1, 1)), ("connected", (3, 1, 1))]
    assert parse_cfg_text(model.to_darknet_cfg_text()).layers == cfg.layers
