"""Class trees (``tree=``: YOLO9000) against AlexeyAB's Darknet itself: the [region] and [softmax] forwards'
``softmax_tree``, and the fork's [region] detections (``get_network_boxes``: hierarchy products, the last class
above 0.5). The tree is ``tests/data/small.tree``: 10 classes in 7 sibling groups, one class listed before its
parent (Darknet's in-place loop multiplies it by the parent's unmultiplied value). ``tests/data/yolo9000.cfg`` is
an unmodified copy of pjreddie/darknet's ``cfg/yolo9000.cfg`` (commit 6731a35, public domain)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from darknet_harness import DarknetJob, compile_harness, run_darknet
from darknet_testing import write_random_weights
from test_darknet_layers import our_layer_outputs

from yolov3.darknet.cfg import CfgError, RegionSection, parse_cfg, parse_cfg_text
from yolov3.darknet.class_tree import ClassTree, load_class_tree, parse_tree_text, tree_softmax
from yolov3.darknet.graph import build_graph
from yolov3.inference import region_decode
from yolov3.inference.region_decode import decode_head_sections
from yolov3.models.darknet import Darknet
from yolov3.models.darknet_layers import darknet_head_activation

DATA = Path(__file__).with_name("data")
TREE = DATA / "small.tree"
CLASSES = 10
SIZE = 32
CONV = "[convolutional]\nbatch_normalize=1\nfilters={}\nsize=3\npad=1\nactivation=leaky\n[maxpool]\nsize=2\nstride=2\n"
REGION = (
    f"[net]\nwidth={SIZE}\nheight={SIZE}\nchannels=3\n"
    + CONV.format(8)
    + CONV.format(16)
    + f"[convolutional]\nfilters={2 * (5 + CLASSES)}\nsize=1\nactivation=linear\n"
    + f"[region]\nanchors=1,1.5,2.5,0.8\nclasses={CLASSES}\nnum=2\ncoords=4\nsoftmax=1\ntree={TREE}\n"
)
# 16 logits for a 10-class tree: Darknet's [softmax] leaves the last 6 outputs at 0.
SOFTMAX = (
    f"[net]\nwidth={SIZE}\nheight={SIZE}\nchannels=3\n"
    + CONV.format(8)
    + "[avgpool]\n[convolutional]\nfilters=16\nsize=1\nactivation=linear\n"
    + f"[softmax]\ntree={TREE}\ntemperature=2\nspatial=1\n"
)
logger = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def darknet_runs(alexeyab_darknet: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("tree")
    executable = compile_harness(alexeyab_darknet, work)
    prepared, jobs = {}, []
    for seed, (name, text, boxes) in enumerate((("region", REGION, True), ("softmax", SOFTMAX, False))):
        cfg_path, weights_path = work / f"{name}.cfg", work / f"{name}.weights"
        cfg_path.write_text(text)
        cfg = parse_cfg_text(text, source=str(cfg_path))
        write_random_weights(cfg, weights_path, seed=seed + 15)
        if boxes:  # logits 6 times sharper: products above 0.5 for six different classes across the cells
            floats = np.fromfile(weights_path, dtype="<f4", offset=20)
            floats[-2 * (5 + CLASSES) * 16 :] *= 6  # the last conv's weights (16 inputs), after its biases
            weights_path.write_bytes(weights_path.read_bytes()[:20] + floats.astype("<f4").tobytes())
        image = np.random.default_rng(seed).random((3, SIZE, SIZE), dtype=np.float32)
        prepared[name] = (cfg, weights_path, image)
        jobs.append(DarknetJob(cfg_path, weights_path, image, all_layers=not boxes, boxes=boxes))
    results = run_darknet(executable, jobs, work / "out")
    return {name: (*prepared[name], result) for name, result in zip(prepared, results, strict=True)}


def our_outputs(cfg, weights_path: Path, image: np.ndarray) -> tuple[Darknet, dict[int, np.ndarray]]:
    model = Darknet(cfg).eval()
    model.load_darknet_weights(weights_path)
    return model, our_layer_outputs(model, torch.from_numpy(image)[None])


def relative(mine: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(mine.ravel() - reference.ravel()).max() / np.abs(reference).max())


def test_the_tree_is_read_as_darknets_read_tree() -> None:
    tree = parse_tree_text(TREE.read_text(), str(TREE))
    assert tree.size == CLASSES
    assert tree.group_sizes == (2, 2, 1, 1, 1, 1, 2)
    assert tree.parents[5] == 8  # stone, listed before its parent pebble
    odd = parse_tree_text("a\n\nb 0 extra\nc x\r\nd +1", "odd.tree")  # no parent, an empty line, junk, CRLF, sign
    assert odd.names == ("a", "", "b", "c", "d")
    assert odd.parents == (-1, -1, 0, -1, 1)
    assert odd.group_sizes == (2, 1, 1, 1)


def test_region_forward_and_detections_match_darknet(darknet_runs: dict) -> None:
    cfg, weights_path, image, result = darknet_runs["region"]
    model, ours = our_outputs(cfg, weights_path, image)
    head = len(cfg.layers) - 1
    section = cfg.layers[head]
    activated = darknet_head_activation(section, torch.from_numpy(ours[head])[None])[0].numpy()
    forward_error = relative(activated, result.outputs[head])
    with torch.no_grad():
        outputs = model(torch.from_numpy(image)[None])
    rows = decode_head_sections([section], outputs, (SIZE, SIZE))[0].double().numpy()
    probabilities = np.where(rows[:, 4:5] > 0.01, rows[:, 4:5] * rows[:, 5:], 0.0)
    reference = np.array(result.detections)
    assert reference.shape == (2 * 8 * 8, 5 + CLASSES)  # every cell and anchor, objectness 1, 10 probabilities
    largest = 0.0
    for detection in reference:
        distance = np.abs(rows[:, :4] / SIZE - detection[:4]).sum(1)
        match = int(distance.argmin())
        np.testing.assert_allclose(rows[match, :4] / SIZE, detection[:4], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(probabilities[match], detection[5:], rtol=1e-4, atol=1e-6)
        largest = max(largest, float(np.abs(probabilities[match] - detection[5:]).max()))
    kept = np.count_nonzero(reference[:, 5:], axis=0)
    logger.info(
        "forward error %.2e, largest probability difference %.2e, kept per class %s", forward_error, largest, kept
    )
    assert forward_error < 1e-4
    assert np.count_nonzero(kept) >= 5  # several classes win somewhere: the choice is exercised


def walked_products(probabilities: torch.Tensor, tree: ClassTree) -> torch.Tensor:
    """Every class times all its ancestors' conditional probabilities (a tree walk), not Darknet's in-place order."""
    products = probabilities.clone()
    for index in range(tree.size):
        ancestor = tree.parents[index]
        while ancestor >= 0:
            products[..., index] = products[..., index] * probabilities[..., ancestor]
            ancestor = tree.parents[ancestor]
    return products


def test_a_tree_walk_instead_of_darknets_loop_order_is_seen(darknet_runs: dict, monkeypatch) -> None:
    """Stone is listed before its parent pebble: Darknet multiplies it by pebble's conditional probability alone.
    Decoded with the full ancestor products instead, some detection differs from Darknet's."""
    cfg, weights_path, image, result = darknet_runs["region"]
    model, _ = our_outputs(cfg, weights_path, image)
    monkeypatch.setattr(region_decode, "hierarchy_predictions", walked_products)
    with torch.no_grad():
        outputs = model(torch.from_numpy(image)[None])
    rows = decode_head_sections([cfg.layers[-1]], outputs, (SIZE, SIZE))[0].double().numpy()
    probabilities = np.where(rows[:, 4:5] > 0.01, rows[:, 4:5] * rows[:, 5:], 0.0)
    reference = np.array(result.detections)
    differences = []
    for detection in reference:
        match = int(np.abs(rows[:, :4] / SIZE - detection[:4]).sum(1).argmin())
        differences.append(float(np.abs(probabilities[match] - detection[5:]).max()))
    assert max(differences) > 1e-2


def test_softmax_layer_matches_darknet(darknet_runs: dict) -> None:
    cfg, weights_path, image, result = darknet_runs["softmax"]
    _, ours = our_outputs(cfg, weights_path, image)
    index = len(cfg.layers) - 1
    section = cfg.layers[index]
    tree = load_class_tree(section)
    assert tree is not None
    logits = torch.from_numpy(ours[index].ravel())
    expected = torch.cat((tree_softmax(logits[:CLASSES], tree, section.temperature), torch.zeros(16 - CLASSES)))
    error = relative(expected.numpy(), result.outputs[index])
    logger.info("[softmax] tree error %.2e", error)
    assert error < 1e-4
    plain = torch.cat((logits[:CLASSES].softmax(0), torch.zeros(16 - CLASSES)))  # one softmax over all 10
    assert relative(plain.numpy(), result.outputs[index]) > 1e-2


def test_tree_paths_resolve_from_the_working_directory_then_the_cfg(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "cfgs"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "small.tree").write_text(TREE.read_text())
    text = REGION.replace(f"tree={TREE}", "tree=data/small.tree")
    cfg_path = folder / "v2.cfg"
    cfg_path.write_text(text)
    monkeypatch.chdir(tmp_path)
    section = parse_cfg(cfg_path).layers[-1]  # beside the cfg
    assert isinstance(section, RegionSection) and load_class_tree(section) is not None
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "small.tree").write_text(TREE.read_text().replace("rock 1", "rock 0"))
    tree = load_class_tree(parse_cfg(cfg_path).layers[-1])  # the working directory first, as Darknet
    assert tree is not None and tree.parents[-1] == 1
    line = text.splitlines().index("tree=data/small.tree") + 1
    missing = rf"v2\.cfg:{line - 6}: \[region\] tree=data/missing\.tree: no such file; tried"
    with pytest.raises(CfgError, match=missing):
        parse_cfg_text(text.replace("small.tree", "missing.tree"), source=str(cfg_path))
    with pytest.raises(CfgError, match="has 10 classes; they must be equal to the layer's 9"):
        parse_cfg_text(text.replace(f"classes={CLASSES}", "classes=9"), source=str(cfg_path))


def test_yolo9000_builds_with_its_tree(tmp_path: Path) -> None:
    """Darknet's own yolo9000.cfg: ``tree=data/9k.tree`` beside it (a 9418-class tree of our own here), its
    ``map=`` accepted (Darknet reads it for training labels only)."""
    (tmp_path / "data").mkdir()
    lines = [f"n{index} -1" for index in range(18)] + [f"n{index} {(index - 18) // 523}" for index in range(18, 9418)]
    (tmp_path / "data" / "9k.tree").write_text("\n".join(lines) + "\n")
    cfg_path = tmp_path / "yolo9000.cfg"
    cfg_path.write_text((DATA / "yolo9000.cfg").read_text())
    cfg = parse_cfg(cfg_path)
    nodes = build_graph(cfg, 64, 64)
    assert nodes[-1].output_shape == (28269, 2, 2)
    tree = load_class_tree(cfg.layers[-1])
    assert tree is not None and tree.size == 9418 and len(tree.group_sizes) == 19
    cfg.net = dataclasses.replace(cfg.net, width=64, height=64)
    model = Darknet(cfg).eval()
    with torch.no_grad():
        outputs = model(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    rows = decode_head_sections([cfg.layers[-1]], outputs, (64, 64))[0]
    assert rows.shape == (3 * 2 * 2, 5 + 9418)
    assert ((rows[:, 5:] > 0).sum(1) <= 1).all()  # at most one class per box: the last one above 0.5
