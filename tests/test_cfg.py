"""The Darknet cfg parser and writer: every official cfg, Darknet's semantics, and every error path."""

from __future__ import annotations

from pathlib import Path

import pytest

from yolov3.darknet.cfg import (
    CfgError,
    ConvolutionalSection,
    MaxpoolSection,
    NetSection,
    RouteSection,
    ShortcutSection,
    YoloSection,
    format_cfg,
    parse_cfg,
    parse_cfg_text,
)
from yolov3.darknet.graph import build_graph
from yolov3.models import Darknet

NET = "[net]\nwidth=64\nheight=64\nchannels=3\n"


def official_cfgs(shared_darknet: Path) -> list[Path]:
    return sorted(shared_darknet.glob("*.cfg"))


def test_every_official_cfg_parses_and_round_trips(shared_darknet: Path) -> None:
    paths = official_cfgs(shared_darknet)
    assert len(paths) == 6
    for path in paths:
        cfg = parse_cfg(path)
        again = parse_cfg_text(format_cfg(cfg), source="rewritten")
        assert again.net == cfg.net and again.layers == cfg.layers, path.name


def test_yolov3_cfg_contents(shared_darknet: Path) -> None:
    cfg = parse_cfg(shared_darknet / "yolov3.cfg")
    assert (cfg.net.width, cfg.net.height, cfg.net.channels) == (608, 608, 3)
    assert cfg.net.steps == (400000, 450000) and cfg.net.scales == (0.1, 0.1) and cfg.net.policy == "steps"
    assert len(cfg.layers) == 107
    kinds = [type(section) for section in cfg.layers]
    assert kinds.count(ConvolutionalSection) == 75 and kinds.count(ShortcutSection) == 23
    yolos = [section for section in cfg.layers if isinstance(section, YoloSection)]
    assert [y.mask for y in yolos] == [(6, 7, 8), (3, 4, 5), (0, 1, 2)]
    assert yolos[0].anchors_px == ((116, 90), (156, 198), (373, 326))
    assert (yolos[0].ignore_thresh, yolos[0].truth_thresh, yolos[0].jitter) == (0.7, 1.0, 0.3)
    route = cfg.layers[86]
    assert isinstance(route, RouteSection) and route.layers == (-1, 61)
    assert build_graph(cfg)[86].sources == (85, 61)


def test_darknet_defaults_and_semantics() -> None:
    cfg = parse_cfg_text(
        NET + "[convolutional]\nfilters=4\nsize=3\npad=1\n"  # no activation: logistic; pad=1: size//2
        "[convolutional]\nfilters=4\nsize=5\npadding=1\nactivation=mish\n"  # pad=0: explicit padding
        "[maxpool]\nstride=2\n"  # size defaults to stride, padding to size-1
        "[convolutional]\nfilters=4\n"
        "[shortcut]\nfrom=-2\n"
        "[route]\nlayers=-1,-3\ngroups=2\ngroup_id=1\n"
    )
    first, second, pool, _, shortcut, route = cfg.layers
    assert first.activation == "logistic" and first.effective_padding == 1
    assert second.effective_padding == 1 and second.activation == "mish"
    assert isinstance(pool, MaxpoolSection) and (pool.size, pool.padding) == (2, 1)
    assert shortcut.activation == "linear" and route.groups == 2
    nodes = build_graph(cfg)
    assert [node.output_shape for node in nodes] == [(4, 64, 64), (4, 62, 62), (4, 31, 31)] + [(4, 31, 31)] * 3
    assert nodes[4].sources == (3, 2) and nodes[5].sources == (4, 2)


def test_tiny_stride_one_maxpool_keeps_size(shared_darknet: Path) -> None:
    nodes = build_graph(parse_cfg(shared_darknet / "yolov3-tiny.cfg"), 416, 416)
    assert nodes[11].input_shape == (512, 13, 13) and nodes[11].output_shape == (512, 13, 13)
    assert nodes[1].output_shape == (16, 208, 208)


def test_comments_whitespace_and_aliases() -> None:
    cfg = parse_cfg_text(
        "# a comment\n[network]\n width = 32 \nheight=32\nchannels=3\n; another\n[conv]\nfilters = 2\n"
    )
    assert isinstance(cfg.net, NetSection) and cfg.net.width == 32
    assert isinstance(cfg.layers[0], ConvolutionalSection) and cfg.layers[0].filters == 2


@pytest.mark.parametrize(
    ("text", "line", "fragments"),
    [
        (NET + "[convolutional]\nfilters=2\n[bogus]\n", 7, ["unknown section [bogus]"]),
        (
            NET + "[convolutional]\nfilterz=2\n",
            6,
            ["[convolutional]", "unknown key 'filterz'", "did you mean 'filters'"],
        ),
        (NET + "[convolutional]\nfilters=two\n", 6, ["filters='two' is not an integer"]),
        (NET + "[convolutional]\nactivation=sigmoid\n", 5, ["activation='sigmoid' is not one of"]),
        (NET + "[convolutional]\nfilters=2\nfilters=3\n", 7, ["'filters' given twice"]),
        (NET + "[convolutional]\nfilters\n", 6, ["expected 'key=value'"]),
        (NET + "[shortcut]\nactivation=linear\n", 5, ["missing required key(s): from"]),
        (NET + "[route]\nlayers=\n", 5, ["layers is empty"]),
        (NET + "[yolo]\nmask=0,1\nanchors=10,14\nnum=1\n", 5, ["mask indices [1] out of range"]),
        (NET + "[yolo]\nanchors=10,14,20\nnum=2\n", 5, ["anchors has 3 numbers but num=2 needs 4"]),
        (NET + "[convolutional\n", 5, ["has no ']'"]),
        ("width=3\n[net]\n", 1, ["before any [section]"]),
        ("[convolutional]\nfilters=1\n", 1, ["the first section must be [net]"]),
        (NET + "[net]\n", 5, ["only the first section may be [net]"]),
        ("[net]\nbatch=64\nsubdivisions=3\n", 1, ["multiple of subdivisions"]),
        (NET + "[convolutional]\nsize=3\npadding=0\ndilation=2\n", 5, ["dilation=2 with size=3 and padding 0"]),
        (NET + "[crnn]\nsize=4\npad=1\ndilation=2\n", 5, ["dilation=2 with size=4 and padding 2"]),
    ],
)
def test_parse_errors_name_file_line_and_section(text: str, line: int, fragments: list[str]) -> None:
    with pytest.raises(CfgError) as caught:
        parse_cfg_text(text, source="model.cfg")
    message = str(caught.value)
    assert message.startswith(f"model.cfg:{line}:"), message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("layers", "line", "fragment"),
    [
        ("[convolutional]\nfilters=2\n[route]\nlayers=-3\n", 7, "refers to layer -3 (absolute -2)"),
        ("[convolutional]\nfilters=2\n[route]\nlayers=5\n", 7, "refers to layer 5 (absolute 5)"),
        ("[convolutional]\nfilters=2\n[shortcut]\nfrom=1\n", 7, "can only read layers 0..0"),
        (
            "[convolutional]\nfilters=2\n[convolutional]\nfilters=4\nstride=2\n[shortcut]\nfrom=-2\n",
            10,
            "height and width must be equal",
        ),
        (
            "[convolutional]\nfilters=2\n[convolutional]\nfilters=2\nstride=2\n[route]\nlayers=-1,-2\n",
            10,
            "concatenates layers [1, 0] of different sizes",
        ),
        (
            "[convolutional]\nfilters=30\n[yolo]\nmask=0,1,2\nanchors=1,1,2,2,3,3\nnum=3\nclasses=80\n",
            7,
            "needs 3*85=255 filters in the layer before [yolo], but layer 0 has 30",
        ),
    ],
)
def test_graph_errors_name_line_and_what_was_expected(layers: str, line: int, fragment: str) -> None:
    cfg = parse_cfg_text(NET + layers, source="net.cfg")
    with pytest.raises(CfgError) as caught:
        Darknet(cfg)
    assert str(caught.value).startswith(f"net.cfg:{line}:")
    assert fragment in str(caught.value)


def test_unreadable_cfg_file(tmp_path: Path) -> None:
    with pytest.raises(CfgError, match="cannot read cfg file"):
        parse_cfg(tmp_path / "missing.cfg")
    binary = tmp_path / "binary.cfg"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CfgError, match="not a text file"):
        parse_cfg(binary)


def test_missing_input_size_is_an_error() -> None:
    cfg = parse_cfg_text("[net]\nchannels=3\n[convolutional]\nfilters=2\n", source="x.cfg")
    with pytest.raises(CfgError, match="width, height and channels must be set"):
        build_graph(cfg)
