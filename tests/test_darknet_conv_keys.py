"""[convolutional] keys against AlexeyAB's Darknet itself: ``share_index`` (another layer's weights, none read from
the file), ``flipped`` (the file holds the weights transposed), and the GPU-training-only keys (sway, rotate,
stretch, stretch_sway, angle, dot, reverse) that leave the CPU forward unchanged."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from darknet_harness import DarknetJob, compile_harness, run_darknet
from darknet_testing import write_random_weights
from test_darknet_layers import our_layer_outputs

from yolov3.darknet.cfg import CfgError, parse_cfg_text
from yolov3.darknet.graph import build_graph
from yolov3.models.darknet import Darknet

SIZE = 32
NET = f"[net]\nwidth={SIZE}\nheight={SIZE}\nchannels=3\n"


def conv(filters: int, size: int = 3, extra: str = "", bn: int = 1, activation: str = "leaky") -> str:
    return (
        f"[convolutional]\nbatch_normalize={bn}\nfilters={filters}\nsize={size}\npad=1\nactivation={activation}\n"
        + extra
    )


# Layers 2, 3, 6, 8 and 10 own no weights: 2 shares 1 (relative, another stride and activation), 3 shares 2 (so 1,
# through a chain), 6 shares 4 (grouped, no batch norm), 8 an anti-aliased stride-2 copy of 1, 10 an XNOR one.
SHARED = NET + "".join(
    (
        conv(8),
        conv(8, extra="flipped=1\n", activation="mish"),
        conv(8, extra="stride=2\nshare_index=-1\n"),
        conv(8, extra="share_index=2\nsway=1\nangle=30\ndot=0.1\nreverse=1\n", activation="swish"),
        conv(6, 1, extra="groups=2\nflipped=1\n", bn=0, activation="linear"),
        "[route]\nlayers=-2\n",
        conv(6, 1, extra="groups=2\nshare_index=4\nrotate=0\nstretch=0\nstretch_sway=0\n", bn=0, activation="logistic"),
        "[route]\nlayers=-4\n",
        conv(8, extra="stride=2\nantialiasing=1\nshare_index=1\nflipped=1\n"),
        "[route]\nlayers=-6\n",
        conv(8, extra="xnor=1\nshare_index=1\n"),
    )
)
OWNERS = (0, 1, 4)  # the layers whose floats the file holds


@pytest.fixture(scope="module")
def darknet_run(alexeyab_darknet: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    work = tmp_path_factory.mktemp("conv_keys")
    cfg_path, weights_path = work / "shared.cfg", work / "shared.weights"
    cfg_path.write_text(SHARED)
    cfg = parse_cfg_text(SHARED, source=str(cfg_path))
    write_random_weights(cfg, weights_path, seed=3)
    image = np.random.default_rng(7).random((3, SIZE, SIZE), dtype=np.float32)
    executable = compile_harness(alexeyab_darknet, work)
    (result,) = run_darknet(executable, [DarknetJob(cfg_path, weights_path, image, all_layers=True)], work / "out")
    return cfg, weights_path, image, result


def errors(cfg_text: str, weights_path: Path, image: np.ndarray, reference: dict[int, np.ndarray]) -> list[float]:
    """The relative error of every layer of ``cfg_text`` loaded from ``weights_path``, against ``reference``."""
    model = Darknet(parse_cfg_text(cfg_text)).eval()
    model.load_darknet_weights(weights_path)  # must fit exactly
    ours = our_layer_outputs(model, torch.from_numpy(image)[None])
    return [
        float(np.abs(ours[index].ravel() - reference[index].ravel()).max() / np.abs(reference[index]).max())
        for index in sorted(reference)
    ]


def test_shared_and_flipped_layers_match_darknet(darknet_run: tuple) -> None:
    cfg, weights_path, image, result = darknet_run
    assert sorted(result.outputs) == list(range(len(cfg.layers)))
    relative = errors(SHARED, weights_path, image, result.outputs)
    logging.getLogger(__name__).info("relative errors per layer: %s", relative)
    assert max(relative) < 1e-4, relative


def test_weights_hold_only_the_owning_layers(darknet_run: tuple) -> None:
    """The file Darknet reads holds layers 0, 1 and 4 only; Darknet saves them back in memory order, so its file
    is ours with the flipped layers' weights transposed (its writer does not flip them back)."""
    cfg, weights_path, _, result = darknet_run
    nodes = build_graph(cfg)
    ours = np.frombuffer(weights_path.read_bytes()[20:], dtype="<f4")
    expected_parts, offset = [], 0
    for index in OWNERS:
        node, section = nodes[index], cfg.layers[index]
        fan_in = node.in_channels // section.groups * section.size**2
        head = section.filters * (4 if section.batch_normalize else 1)
        weights = ours[offset + head : offset + head + section.filters * fan_in]
        if getattr(section, "flipped", 0):
            weights = weights.reshape(fan_in, section.filters).T.ravel()  # (k, F) in the file -> (F, k) in memory
        expected_parts += [ours[offset : offset + head], weights]
        offset += head + section.filters * fan_in
    assert offset == ours.size  # nothing for the sharing layers
    saved = np.frombuffer(result.saved_weights[20:], dtype="<f4")
    np.testing.assert_array_equal(saved, np.concatenate(expected_parts))
    assert not np.array_equal(saved, ours)  # the transposition is visible


def test_ignoring_flipped_is_seen(darknet_run: tuple) -> None:
    """Read as unflipped, layer 1's weights are scrambled: the comparison above would fail."""
    _, weights_path, image, result = darknet_run
    relative = errors(SHARED.replace("flipped=1\n", ""), weights_path, image, {1: result.outputs[1]})
    assert relative[0] > 1e-2


def test_our_writer_round_trips_flipped_and_shared_layers(tmp_path: Path) -> None:
    model = Darknet(parse_cfg_text(SHARED))
    path = tmp_path / "ours.weights"
    model.save_darknet_weights(path)
    floats = (path.stat().st_size - 20) // 4
    assert floats == sum(layer.num_floats for layer in model.darknet_conv_parameters())
    again = Darknet(parse_cfg_text(SHARED))
    again.load_darknet_weights(path)
    for mine, theirs in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    assert again.layers[3].conv.weight is again.layers[1].conv.weight  # one tensor, as Darknet's pointer


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (conv(8) + conv(8, extra="sway=1\nrotate=1\n"), "should be used only 1 param"),
        (conv(8) + conv(8, 1, extra="stretch=1\n"), "need size >= 3"),
        (conv(8) + conv(8, extra="share_index=1\n"), r"share_index=1 refers to layer 1; layer 1 can share .* 0\.\.0"),
        (conv(8) + conv(8, extra="share_index=-5\n"), "refers to layer -4"),
        (conv(8) + conv(8, extra="share_index=0\n"), r"\(3, 576, 8, 8\) differ from layer 0's \(3, 216, 3, 8\)"),
        (conv(8) + conv(8) + conv(8, extra="share_index=-1\n", bn=0), "batch_normalize=0 shares layer 1 with"),
        (conv(8) + "[maxpool]\nsize=1\nstride=1\n" + conv(8, extra="share_index=-1\n"), "a \\[maxpool\\]"),
    ],
)
def test_keys_darknet_refuses_are_errors(layers: str, message: str) -> None:
    with pytest.raises(CfgError, match=message):
        Darknet(parse_cfg_text(NET + layers, source="keys.cfg"))
