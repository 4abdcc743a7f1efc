"""``[region] classfix=-1`` against AlexeyAB's Darknet itself: the fork's ``get_region_boxes`` (what its
``get_network_boxes`` calls for [region]) sets an objectness below 0.5 to 0 before the class probabilities, with
softmax classes and with a class tree (YOLO9000). Small cfgs with random weights, every box and probability of
Darknet's detections equal to our decoded rows; decoded with ``classfix`` ignored, they are not."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from darknet_harness import DarknetResult, run_random_networks

from yolov3.darknet.cfg import DarknetCfg, RegionSection
from yolov3.inference.region_decode import decode_head_sections
from yolov3.models.darknet import Darknet

TREE = Path(__file__).with_name("data") / "small.tree"
SIZE = 16
CONVS = (
    "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\nstride=2\npad=1\nactivation=leaky\n"
    "[convolutional]\nfilters={filters}\nsize=1\nactivation=linear\n"
)
REGION = "[region]\nanchors=1,1.5,2.5,0.8\nnum=2\ncoords=4\nsoftmax=1\nclassfix=-1\nclasses={classes}\n"
CFGS = {
    "softmax": (SIZE, CONVS.format(filters=2 * (5 + 3)) + REGION.format(classes=3)),
    "tree": (SIZE, CONVS.format(filters=2 * (5 + 10)) + REGION.format(classes=10) + f"tree={TREE}\n"),
}
THRESHOLD = 0.01  # the harness's get_network_boxes threshold
logger = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def darknet_boxes(alexeyab_darknet: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """name -> (cfg, weights path, input, Darknet's get_network_boxes result)."""
    work = tmp_path_factory.mktemp("darknet_region_classfix")
    runs, boxes = run_random_networks(alexeyab_darknet, work, CFGS, 300, boxes=CFGS)
    return {name: (*run[:3], boxes[name]) for name, run in runs.items()}


def decoded_rows(cfg: DarknetCfg, weights_path: Path, image: np.ndarray, region: RegionSection) -> np.ndarray:
    """Our (A*H*W, 5+C) rows for the cfg's [region] head decoded as ``region`` says, in float64."""
    model = Darknet(cfg).eval()
    model.load_darknet_weights(weights_path)
    with torch.no_grad():
        outputs = model(torch.from_numpy(image)[None])
    return decode_head_sections([region], outputs, (SIZE, SIZE))[0].double().numpy()


def darknet_probabilities(rows: np.ndarray, tree: bool) -> np.ndarray:
    """Darknet's probabilities from our rows: objectness times the class score, kept where the objectness passes
    the threshold; without a tree (``scale * prediction > thresh``) only the probabilities that pass it."""
    probabilities = np.where(rows[:, 4:5] > THRESHOLD, rows[:, 4:5] * rows[:, 5:], 0.0)
    if not tree:
        probabilities[probabilities <= THRESHOLD] = 0.0
    return probabilities


def largest_difference(rows: np.ndarray, result: DarknetResult, tree: bool) -> float:
    """Every Darknet detection matched to our nearest box (within 1e-4): the largest probability difference."""
    probabilities = darknet_probabilities(rows, tree)
    reference = np.array(result.detections)
    assert reference.shape == (len(rows), len(rows[0]))  # every cell and anchor, objectness 1, the probabilities
    largest = 0.0
    for detection in reference:
        distance = np.abs(rows[:, :4] / SIZE - detection[:4]).sum(1)
        match = int(distance.argmin())
        assert distance[match] < 1e-4
        largest = max(largest, float(np.abs(probabilities[match] - detection[5:]).max()))
    return largest


@pytest.mark.parametrize("name", list(CFGS))
def test_classfix_detections_match_darknet(darknet_boxes: dict, name: str) -> None:
    cfg, weights_path, image, result = darknet_boxes[name]
    region = cfg.layers[-1]
    assert isinstance(region, RegionSection) and region.classfix == -1
    rows = decoded_rows(cfg, weights_path, image, region)
    ignored = decoded_rows(cfg, weights_path, image, dataclasses.replace(region, classfix=0))
    objectness = ignored[:, 4]
    below = int(np.count_nonzero((objectness > THRESHOLD) & (objectness < 0.5)))
    above = int(np.count_nonzero(objectness >= 0.5))
    assert below > 0 and above > 0  # boxes on both sides of 0.5 that pass the threshold
    np.testing.assert_array_equal(rows[:, 4], np.where(ignored[:, 4] < 0.5, 0.0, ignored[:, 4]))
    tree = bool(region.tree)
    largest = largest_difference(rows, result, tree)
    if_ignored = largest_difference(ignored, result, tree)
    logger.info(
        "%s: %d boxes below 0.5, %d above; largest probability difference %.2e (%.2e with classfix ignored)",
        name,
        below,
        above,
        largest,
        if_ignored,
    )
    assert largest < 1e-5
    assert if_ignored > 1e-2
    assert np.count_nonzero(darknet_probabilities(rows, tree)) > 0  # some boxes keep their probabilities
