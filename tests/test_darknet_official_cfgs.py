"""Darknet's own small cfgs (``tests/data/darknet_cfgs``, public domain): each parses and builds, and its heads
equal AlexeyAB's Darknet's at a small input with random weights (the XNOR cfg's binary layers included).
The larger official cfgs were checked the same way once; ``docs/darknet.md`` records the results."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from darknet_harness import DarknetJob, compile_harness, run_darknet
from test_darknet_layers import write_random_weights

from yolov3.darknet.cfg import CfgError, DarknetCfg, RegionSection, parse_cfg, parse_cfg_text
from yolov3.darknet.graph import HEAD_SECTIONS
from yolov3.models import Darknet
from yolov3.models.darknet_layers import darknet_head_activation

CFG_DIR = Path(__file__).with_name("data") / "darknet_cfgs"
SIZE = 128  # every cfg here takes a multiple of 32
# name -> per head (section kind, channels, grid side at SIZE)
EXPECTED_HEADS = {
    "yolov2-tiny.cfg": [("region", 425, 4)],
    "yolov3-tiny-prn.cfg": [("yolo", 255, 4), ("yolo", 255, 8)],
    "yolov3-tiny_xnor.cfg": [("yolo", 255, 4), ("yolo", 255, 8)],
    "yolov4-tiny.cfg": [("yolo", 255, 4), ("yolo", 255, 8)],
    "yolov4-tiny-3l.cfg": [("yolo", 255, 4), ("yolo", 255, 8), ("yolo", 255, 16)],
    "yolov7-tiny.cfg": [("yolo", 255, 16), ("yolo", 255, 8), ("yolo", 255, 4)],
}


def at_size(text: str, size: int) -> str:
    """The cfg text with [net] width and height set to ``size`` (the rest untouched)."""
    net_end = re.search(r"\n\s*\[(?!net\])", text).start()
    net = re.sub(r"(?m)^(width|height)\s*=.*$", lambda match: f"{match.group(1)}={size}", text[:net_end])
    return net + text[net_end:]


def small(cfg: DarknetCfg) -> DarknetCfg:
    return dataclasses.replace(cfg, net=dataclasses.replace(cfg.net, width=SIZE, height=SIZE))


@pytest.mark.parametrize("name", sorted(EXPECTED_HEADS))
def test_official_cfg_parses_and_builds(name: str) -> None:
    cfg = small(parse_cfg(CFG_DIR / name))
    model = Darknet(cfg).eval()
    with torch.no_grad():
        heads = model(torch.rand(1, 3, SIZE, SIZE))
    kinds = [section.KIND for section in cfg.layers if isinstance(section, HEAD_SECTIONS)]
    found = [(kind, head.shape[1], head.shape[2]) for kind, head in zip(kinds, heads, strict=True)]
    assert found == EXPECTED_HEADS[name]


@pytest.mark.slow
def test_official_cfgs_give_alexeyab_darknets_heads(alexeyab_darknet: Path, tmp_path: Path) -> None:
    executable = compile_harness(alexeyab_darknet, tmp_path)
    jobs, prepared = [], []
    for seed, name in enumerate(sorted(EXPECTED_HEADS)):
        cfg_path, weights_path = tmp_path / name, tmp_path / f"{name}.weights"
        cfg_path.write_text(at_size((CFG_DIR / name).read_text(), SIZE))
        cfg = parse_cfg_text(cfg_path.read_text(), source=str(cfg_path))
        write_random_weights(cfg, weights_path, seed)
        image = np.random.default_rng(seed).random((3, SIZE, SIZE), dtype=np.float32)
        jobs.append(DarknetJob(cfg_path, weights_path, image))
        prepared.append((cfg, weights_path, image))
    results = run_darknet(executable, jobs, tmp_path / "out")
    for (cfg, weights_path, image), result in zip(prepared, results, strict=True):
        model = Darknet(cfg).eval()
        model.load_darknet_weights(weights_path)  # the float count must fit exactly
        assert result.saved_weights[20:] == weights_path.read_bytes()[20:], cfg.source
        with torch.no_grad():
            heads = model(torch.from_numpy(image)[None])
        indices = [index for index, section in enumerate(cfg.layers) if isinstance(section, HEAD_SECTIONS)]
        assert sorted(result.outputs) == indices, cfg.source
        for index, head in zip(indices, heads, strict=True):
            section = cfg.layers[index]
            ours = darknet_head_activation(section, head)[0].numpy().ravel()
            reference = result.outputs[index].ravel()
            error = np.abs(ours - reference).max() / np.abs(reference).max()
            assert error < 1e-4, f"{cfg.source} layer {index} [{section.KIND}]: relative error {error:.1e}"
        assert any(isinstance(section, RegionSection) for section in cfg.layers) == ("yolov2" in cfg.source)


CONTRASTIVE = """[net]
width=32
height=32
channels=3
contrastive=1
[convolutional]
filters=14
size=1
activation=linear
[yolo]
mask=0,1
anchors=4,4,8,8
classes=2
num=2
embedding_layer=-1
[route]
layers=-2
[contrastive]
classes=2
temperature=1.0
yolo_layer={yolo_layer}
cls_normalizer=1.0
max_delta=10
"""


def test_contrastive_layers_pass_through_as_in_darknets_inference() -> None:
    """yolov4-tiny_contrastive.cfg's last layer: no weights, and Darknet's forward returns at once outside
    training; its ``yolo_layer`` must name a [yolo] layer (Darknet stops otherwise)."""
    model = Darknet(parse_cfg_text(CONTRASTIVE.format(yolo_layer=-2))).eval()
    image = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        (head,) = model(image)
        torch.testing.assert_close(head, model.layers[0](image))
    assert [type(layer).__name__ for layer in model.layers][-1] == "Identity"
    for reference, fragment in ((-1, "yolo_layer=-1 must refer to a"), (0, "yolo_layer=0 must refer to a")):
        with pytest.raises(CfgError, match=rf"c\.cfg:18: \[contrastive\] {fragment} \[yolo\] layer"):
            Darknet(parse_cfg_text(CONTRASTIVE.format(yolo_layer=reference), source="c.cfg"))
