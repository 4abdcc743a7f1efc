"""Darknet .weights I/O: exact float counts, headers, cutoff (backbone files) and byte-identical re-saving."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch
from darknet_testing import write_random_weights

from yolov3.darknet.cfg import parse_cfg
from yolov3.darknet.weights_file import WeightsFileError, WeightsHeader
from yolov3.models import Darknet, create_model

PROJECT_DARKNET = Path(__file__).resolve().parents[1] / "darknet"


@pytest.fixture
def tiny_test_files(tmp_path: Path) -> tuple[Path, Path, int]:
    """A small cfg from the project's darknet/ folder and a random weights file for it."""
    cfg_path = PROJECT_DARKNET / "yolov3-tiny-test.cfg"
    weights_path = tmp_path / "random.weights"
    count = write_random_weights(parse_cfg(cfg_path), weights_path, seed=1)
    return cfg_path, weights_path, count


def test_load_then_save_is_byte_identical(tiny_test_files, tmp_path: Path) -> None:
    cfg_path, weights_path, count = tiny_test_files
    model = Darknet(cfg_path)
    header = model.load_darknet_weights(weights_path)
    assert header == WeightsHeader(0, 2, 0, 12345)
    assert sum(p.num_floats for p in model.darknet_conv_parameters()) == count
    resaved = tmp_path / "resaved.weights"
    model.save_darknet_weights(resaved)
    assert resaved.read_bytes() == weights_path.read_bytes()


def test_layout_beta_gamma_mean_var_then_weights(tiny_test_files) -> None:
    cfg_path, weights_path, _ = tiny_test_files
    model = Darknet(cfg_path)
    model.load_darknet_weights(weights_path)
    data = weights_path.read_bytes()
    first = model.layers[0]
    filters = first.conv.out_channels
    floats = struct.unpack_from(f"<{4 * filters + 1}f", data, 20)
    assert torch.equal(first.bn.bias, torch.tensor(floats[:filters]))
    assert torch.equal(first.bn.weight, torch.tensor(floats[filters : 2 * filters]))
    assert torch.equal(first.bn.running_mean, torch.tensor(floats[2 * filters : 3 * filters]))
    assert torch.equal(first.bn.running_var, torch.tensor(floats[3 * filters : 4 * filters]))
    assert first.conv.weight.flatten()[0].item() == floats[4 * filters]


def test_truncated_and_overlong_files_say_expected_and_found(tiny_test_files, tmp_path: Path) -> None:
    cfg_path, weights_path, count = tiny_test_files
    model = Darknet(cfg_path)
    data = weights_path.read_bytes()
    truncated = tmp_path / "truncated.weights"
    truncated.write_bytes(data[:-40])
    with pytest.raises(
        WeightsFileError, match=rf"expected {count:,} floats .* found {count - 10:,}; the file is truncated"
    ):
        model.load_darknet_weights(truncated)
    overlong = tmp_path / "overlong.weights"
    overlong.write_bytes(data + b"\0" * 8)
    with pytest.raises(WeightsFileError, match=rf"found {count + 2:,}; the file is too long"):
        model.load_darknet_weights(overlong)
    ragged = tmp_path / "ragged.weights"
    ragged.write_bytes(data + b"\0")
    with pytest.raises(WeightsFileError, match=rf"{count:,} floats and 1 stray bytes\); the file is damaged"):
        model.load_darknet_weights(ragged)
    header_only = tmp_path / "header.weights"
    header_only.write_bytes(data[:10])
    with pytest.raises(WeightsFileError, match=r"too short for a Darknet \.weights header"):
        model.load_darknet_weights(header_only)
    with pytest.raises(WeightsFileError, match=r"cannot read weights file"):
        model.load_darknet_weights(tmp_path / "missing.weights")


def test_old_header_has_int32_seen(tiny_test_files, tmp_path: Path) -> None:
    cfg_path, weights_path, _ = tiny_test_files
    floats = weights_path.read_bytes()[20:]
    old = tmp_path / "old.weights"
    old.write_bytes(struct.pack("<3ii", 0, 1, 0, 777) + floats)  # version 0.1: seen is an int32
    model = Darknet(cfg_path)
    assert model.load_darknet_weights(old) == WeightsHeader(0, 1, 0, 777)
    resaved = tmp_path / "old-resaved.weights"
    model.save_darknet_weights(resaved)
    assert resaved.read_bytes() == old.read_bytes()


def test_cutoff_saves_and_loads_a_backbone_file(tmp_path: Path) -> None:
    """As darknet53.conv.74: yolov3-test with cutoff=the end of its backbone."""
    model = create_model("yolov3_test")
    backbone_end = len(model.backbone.darknet_layers().sections)
    full = tmp_path / "full.weights"
    write_random_weights(model.to_darknet_cfg(), full, seed=2)
    model.load_darknet_weights(full)
    backbone_file = tmp_path / "backbone.weights"
    model.save_darknet_weights(backbone_file, cutoff=backbone_end)
    expected = sum(p.num_floats for p in model.darknet_conv_parameters() if p.layer_index < backbone_end)
    assert backbone_file.stat().st_size == 20 + 4 * expected

    # The hint names the smallest cutoff that fits: one past the backbone's last conv (74 for yolov3).
    last_conv = max(p.layer_index for p in model.darknet_conv_parameters() if p.layer_index < backbone_end)
    fresh = create_model("yolov3_test")
    head_before = fresh.blocks[0].output.conv.weight.clone()
    with pytest.raises(WeightsFileError, match=rf"truncated\. It fits exactly with cutoff={last_conv + 1}"):
        fresh.load_darknet_weights(backbone_file)
    fresh.load_darknet_weights(backbone_file, cutoff=backbone_end)
    for ours, theirs in zip(fresh.backbone.state_dict().values(), model.backbone.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs)
    assert torch.equal(fresh.blocks[0].output.conv.weight, head_before)  # heads untouched


def test_yolov3_backbone_file_has_darknet53_conv74_size(tmp_path: Path) -> None:
    """cutoff=74 of yolov3 writes exactly the 162,482,580 bytes of the official darknet53.conv.74."""
    model = create_model("yolov3")
    floats = sum(p.num_floats for p in model.darknet_conv_parameters() if p.layer_index < 74)
    assert 20 + 4 * floats == 162_482_580
    assert 20 + 4 * sum(p.num_floats for p in model.darknet_conv_parameters()) == 248_007_048
