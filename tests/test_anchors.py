"""k-means anchors: IoU against a brute-force loop, recovery of known clusters, letterbox scaling, the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.cluster import KMeans

from yolov3 import anchors
from yolov3.data.bad_data import BadDataPolicy
from yolov3.data.detection_dataset import DetectionDataset, ImageRecord
from yolov3.data.image_io import read_image_rgb
from yolov3.loss.anchors import dataset_box_shapes, kmeans_anchors, mean_best_iou, read_current_anchors
from yolov3.models.yolo_head import COCO_ANCHORS_PX

TRUE_CENTRES = np.array([[12, 16], [40, 20], [24, 60], [90, 80], [200, 120], [150, 300]], dtype=np.float64)


def clustered_shapes(seed: int = 0, per_cluster: int = 300, spread: float = 0.03) -> np.ndarray:
    """(6 * per_cluster, 2) shapes scattered multiplicatively (log-normal, ``spread``) around TRUE_CENTRES."""
    rng = np.random.default_rng(seed)
    centres = np.repeat(TRUE_CENTRES, per_cluster, axis=0)  # (6 * per_cluster, 2)
    return centres * np.exp(rng.normal(0, spread, centres.shape))


def brute_force_mean_best_iou(boxes: np.ndarray, anchor_shapes: np.ndarray) -> float:
    total = 0.0
    for width, height in boxes:
        best = 0.0
        for anchor_width, anchor_height in anchor_shapes:
            intersection = min(width, anchor_width) * min(height, anchor_height)
            best = max(best, intersection / (width * height + anchor_width * anchor_height - intersection))
        total += best
    return total / len(boxes)


def test_mean_best_iou_matches_a_double_loop() -> None:
    rng = np.random.default_rng(1)
    boxes, anchor_shapes = rng.uniform(1, 300, (200, 2)), rng.uniform(1, 300, (7, 2))
    assert mean_best_iou(boxes, anchor_shapes) == pytest.approx(brute_force_mean_best_iou(boxes, anchor_shapes), 1e-12)


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_kmeans_recovers_known_clusters(init: str) -> None:
    shapes = clustered_shapes()
    found = kmeans_anchors(shapes, k=6, seed=0, restarts=5, init=init)
    assert found.shape == (6, 2) and np.all(np.diff(found.prod(axis=1)) > 0)  # sorted by area
    for centre in TRUE_CENTRES:
        relative_error = np.abs(found / centre - 1).max(axis=1).min()
        assert relative_error < 0.03, (centre, found)
    # sklearn's Euclidean k-means, an independent implementation, finds the same well-separated centres.
    reference = KMeans(6, n_init=10, random_state=0).fit(shapes).cluster_centers_
    reference = reference[np.argsort(reference.prod(axis=1))]
    np.testing.assert_allclose(found, reference, rtol=0.02)
    assert mean_best_iou(shapes, found) > 0.9 > mean_best_iou(shapes, np.array(COCO_ANCHORS_PX))


def test_kmeans_is_deterministic_and_checks_its_input() -> None:
    rng = np.random.default_rng(2)
    shapes = rng.uniform(5, 100, (500, 2))
    first = kmeans_anchors(shapes, 9, seed=3, restarts=2)
    np.testing.assert_array_equal(first, kmeans_anchors(shapes, 9, seed=3, restarts=2))
    assert mean_best_iou(shapes, kmeans_anchors(shapes, 9, seed=3, restarts=4)) >= mean_best_iou(shapes, first) - 1e-12
    with pytest.raises(ValueError, match="at least 9 boxes"):
        kmeans_anchors(shapes[:8], 9)
    with pytest.raises(ValueError, match="init"):
        kmeans_anchors(shapes, 3, init="forgy")


def test_box_shapes_are_letterboxed() -> None:
    records = [
        ImageRecord(Path("wide.png"), 0, (100, 200), np.array([[0, 0, 50, 20]], np.float32), np.array([0])),
        ImageRecord(Path("tall.png"), 1, (416, 208), np.array([[1, 1, 11, 41], [0, 0, 4, 4]], np.float32), [0, 0]),
        ImageRecord(Path("empty.png"), 2, (10, 10), np.zeros((0, 4), np.float32), np.zeros(0, np.int64)),
    ]
    dataset = DetectionDataset(records, ("thing",), BadDataPolicy(), "records")
    shapes = dataset_box_shapes(dataset, 416, progress=False)
    np.testing.assert_allclose(shapes, [[104, 41.6], [10, 40], [4, 4]])


def test_current_anchors_from_text_yaml_or_default(tmp_path: Path) -> None:
    np.testing.assert_array_equal(read_current_anchors(None), COCO_ANCHORS_PX)
    np.testing.assert_array_equal(read_current_anchors("10,13,  16,30"), [[10, 13], [16, 30]])
    (tmp_path / "model.yaml").write_text("model:\n  head:\n    anchors_px: [[1, 2], [3, 4]]\n")
    np.testing.assert_array_equal(read_current_anchors(str(tmp_path / "model.yaml")), [[1, 2], [3, 4]])


@pytest.fixture(scope="module")
def shapes_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("anchors")
    (folder / "shapes.yaml").write_text(
        "format: synthetic\nroot: shapes\nsynthetic: {num_train: 24, num_val: 1, image_size: [96, 128], seed: 5}\n"
    )
    return folder / "shapes.yaml"


def test_cli_writes_anchors_and_plot(shapes_yaml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert anchors.main(["--data", str(shapes_yaml), "-n", "9", "--img-size", "320", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    written = np.array(yaml.safe_load((out / "anchors.yaml").read_text())["anchors_px"], dtype=np.float64)
    assert written.shape == (9, 2) and np.all(np.diff(written.prod(axis=1)) >= 0)
    darknet_line = (out / "anchors.cfg").read_text().strip()
    assert darknet_line.startswith("anchors = ")
    numbers = [float(v) for v in darknet_line.split("=", 1)[1].split(",")]
    np.testing.assert_array_equal(np.reshape(numbers, (9, 2)), written)
    match = re.search(r"mean best IoU: current anchors ([\d.]+) -> k-means anchors ([\d.]+)", printed)
    before, after = float(match[1]), float(match[2])
    assert 0 < before < after <= 1
    assert read_image_rgb(out / "anchors.png").shape[2] == 3
    assert "mean best IoU" in (out / "anchors.yaml").read_text()


def test_cli_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert anchors.main(["--data", str(tmp_path / "missing.yaml"), "--out", str(tmp_path)]) == 2
    assert "missing.yaml" in capsys.readouterr().err
