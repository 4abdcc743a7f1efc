"""``detect`` with the real yolov3-tiny.weights reports what pjreddie's ``darknet detector test`` reports.

The reference is Darknet itself: our C harness (tests/darknet_detect.c, linked with the built libdarknet.so)
prints every detection in full precision, and the ``darknet detector test`` binary's ``class: NN%`` lines are
checked to be the harness's. ``detect`` decodes with stb_image (``--stb-library``) as Darknet does; with
OpenCV's libjpeg the pixels differ by up to 3 levels and scores by up to ~1 point (docs/darknet.md).
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from yolov3.detect import main as detect_main
from yolov3.inference.stb_decoder import StbDecoder

SAMPLE_IMAGES = ("dog", "horses", "person", "eagle", "giraffe", "scream")
HARNESS_SOURCE = Path(__file__).with_name("darknet_detect.c")


@pytest.fixture(scope="module")
def darknet_harness(pjreddie_darknet: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    darknet_dir = pjreddie_darknet.parent
    binary = tmp_path_factory.mktemp("harness") / "darknet_detect"
    command = ["gcc", "-O2", "-std=c99", str(HARNESS_SOURCE), f"-I{darknet_dir / 'include'}", f"-L{darknet_dir}"]
    command += ["-ldarknet", f"-Wl,-rpath,{darknet_dir}", "-lm", "-lpthread", "-o", str(binary)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return binary


def darknet_detections(
    harness: Path, darknet_dir: Path, cfg: Path, weights: Path, image: Path, thresh: float = 0.25
) -> list[tuple]:
    """(class, prob, (left, top, right, bottom) clipped to the image) for every detection and class over ``thresh``."""
    result = subprocess.run(
        [str(harness), str(cfg), str(weights), str(image), str(thresh)], cwd=darknet_dir, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    height, width = StbDecoder(darknet_dir / "libdarknet.so")(image).shape[:2]
    detections = []
    for line in result.stdout.split("\n"):
        if line.strip():
            label, prob, x, y, w, h = line.split()
            x, y, w, h = float(x), float(y), float(w), float(h)
            box = (max(0.0, x - w / 2), max(0.0, y - h / 2), min(width, x + w / 2), min(height, y + h / 2))
            detections.append((int(label), float(prob), box))
    return detections


def darknet_printed(darknet: Path, cfg: Path, weights: Path, image: Path, names: Path, out: Path) -> Counter:
    """The ``name: NN%`` lines of ``darknet detector test DATA CFG WEIGHTS IMAGE -thresh 0.25``."""
    data = out / "coco.data"
    data.write_text(f"classes=80\nnames={names}\n")
    command = [str(darknet), "detector", "test", str(data), str(cfg), str(weights), str(image), "-thresh", "0.25"]
    result = subprocess.run([*command, "-out", str(out / "predictions")], cwd=darknet.parent, capture_output=True)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.decode().splitlines()
    return Counter(line for line in lines if line.endswith("%") and ": " in line)


def our_detections(labels_dir: Path, stem: str, image_size: tuple[int, int]) -> list[tuple]:
    height, width = image_size
    detections = []
    for line in (labels_dir / f"{stem}.txt").read_text().splitlines():
        label, x, y, w, h, score = line.split()
        x, y, w, h = float(x) * width, float(y) * height, float(w) * width, float(h) * height
        detections.append((int(label), float(score), (x - w / 2, y - h / 2, x + w / 2, y + h / 2)))
    return detections


def match(ours: list[tuple], reference: list[tuple]) -> tuple[float, float]:
    """Pair every reference detection with one of ours (same class, best IoU); (worst IoU, worst score gap)."""
    assert len(ours) == len(reference), f"{len(ours)} detections, Darknet has {len(reference)}"
    unused, worst_iou, worst_gap = list(range(len(ours))), 1.0, 0.0
    for label, prob, box in reference:
        candidates = [index for index in unused if ours[index][0] == label]
        assert candidates, f"Darknet's class {label} at {box} has no counterpart"
        ious = [box_iou(torch.tensor([box]), torch.tensor([ours[index][2]])).item() for index in candidates]
        best = candidates[int(np.argmax(ious))]
        unused.remove(best)
        worst_iou, worst_gap = min(worst_iou, max(ious)), max(worst_gap, abs(ours[best][1] - prob) * 100)
    return worst_iou, worst_gap


@pytest.mark.slow
def test_detect_equals_darknet_detector_test_on_the_sample_images(
    shared_darknet: Path, tiny_weights: Path, pjreddie_darknet: Path, darknet_harness: Path, tmp_path: Path
) -> None:
    cfg, names = shared_darknet / "yolov3-tiny.cfg", shared_darknet / "coco.names"
    library = pjreddie_darknet.parent / "libdarknet.so"
    images = [shared_darknet / "images" / f"{name}.jpg" for name in SAMPLE_IMAGES]
    arguments = ["--cfg", str(cfg), "--weights", str(tiny_weights), "--names", str(names), "--save-conf"]
    arguments += ["--source", *map(str, images), "--out", str(tmp_path / "out"), "--stb-library", str(library)]
    assert detect_main(arguments) == 0
    class_names = names.read_text().splitlines()
    total = 0
    for image in images:
        reference = darknet_detections(darknet_harness, pjreddie_darknet.parent, cfg, tiny_weights, image)
        printed = darknet_printed(pjreddie_darknet, cfg, tiny_weights, image, names, tmp_path)
        assert printed == Counter(f"{class_names[label]}: {prob * 100:.0f}%" for label, prob, _ in reference)
        size = StbDecoder(library)(image).shape[:2]
        worst_iou, worst_gap = match(our_detections(tmp_path / "out" / "labels", image.stem, size), reference)
        assert worst_iou >= 0.98 and worst_gap <= 0.5, (image.name, worst_iou, worst_gap)
        total += len(reference)
    assert total == 21  # dog 6 (car and truck on one box), horses 7, person 5, eagle 1, giraffe 2, scream 0


def test_stb_decoder_reads_what_darknet_reads(pjreddie_darknet: Path, shared_darknet: Path) -> None:
    from darknet_library import DarknetImageLibrary

    library = pjreddie_darknet.parent / "libdarknet.so"
    image = shared_darknet / "images" / "dog.jpg"
    decoded = StbDecoder(library)(image)
    darknet_float = DarknetImageLibrary(library).load_image_color(image)  # load_image_color: stb, then / 255.
    np.testing.assert_array_equal((decoded / 255.0).astype(np.float32), darknet_float)
    with pytest.raises(OSError, match="cannot decode"):
        StbDecoder(library)(HARNESS_SOURCE)
