"""[region], [Gaussian_yolo] and new_coords [yolo] decoding against loops transcribed from Darknet's C
(``get_region_box`` / pjreddie ``forward_region_layer``, ``get_gaussian_yolo_box`` and
``get_gaussian_yolo_detections``, ``get_yolo_box`` with ``new_coords``)."""

from __future__ import annotations

import math

import pytest
import torch

from yolov3.darknet.cfg import GaussianYoloSection, RegionSection, YoloSection, parse_cfg_text
from yolov3.inference.region_decode import decode_head_sections, decode_special_head
from yolov3.models.darknet import Darknet


def sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


def reference_rows(section, raw: torch.Tensor, net_h: int, net_w: int) -> list[list[float]]:
    """Rows (cx, cy, w, h px, objectness, class scores) anchor by anchor, then row-major: plain loops."""
    _, height, width = raw.shape
    x = raw.flatten().tolist()
    classes = section.classes
    gaussian = isinstance(section, GaussianYoloSection)
    anchors = section.num if isinstance(section, RegionSection) else len(section.anchor_indices)
    size = classes + (9 if gaussian else 5)

    def at(n: int, entry: int, row: int, col: int) -> float:
        return x[n * height * width * size + entry * height * width + row * width + col]

    rows = []
    for n in range(anchors):
        for row in range(height):
            for col in range(width):
                if isinstance(section, RegionSection):
                    bw_bias, bh_bias = section.anchors[2 * n], section.anchors[2 * n + 1]
                    bx = (col + sigmoid(at(n, 0, row, col))) / width
                    by = (row + sigmoid(at(n, 1, row, col))) / height
                    bw = math.exp(at(n, 2, row, col)) * bw_bias / width
                    bh = math.exp(at(n, 3, row, col)) * bh_bias / height
                    obj = sigmoid(at(n, 4, row, col))
                    logits = [at(n, 5 + j, row, col) for j in range(classes)]
                    top = max(logits)
                    total = sum(math.exp(v - top) for v in logits)
                    scores = [math.exp(v - top) / total for v in logits]
                else:
                    mask = section.anchor_indices[n]
                    aw, ah = section.anchors[2 * mask], section.anchors[2 * mask + 1]
                    s = section.scale_x_y
                    if gaussian:
                        tx = sigmoid(at(n, 0, row, col)) * s - 0.5 * (s - 1)
                        ty = sigmoid(at(n, 2, row, col)) * s - 0.5 * (s - 1)
                        bw = math.exp(at(n, 4, row, col)) * aw / net_w
                        bh = math.exp(at(n, 6, row, col)) * ah / net_h
                        bx, by = (col + tx) / width, (row + ty) / height
                        uc = sum(sigmoid(at(n, e, row, col)) for e in (1, 3, 5, 7)) / 4.0
                        obj = sigmoid(at(n, 8, row, col))
                        scores = [sigmoid(at(n, 9 + j, row, col)) * (1.0 - uc) for j in range(classes)]
                    else:  # new_coords: values are already logistic
                        bx = (col + at(n, 0, row, col) * s - 0.5 * (s - 1)) / width
                        by = (row + at(n, 1, row, col) * s - 0.5 * (s - 1)) / height
                        bw = at(n, 2, row, col) ** 2 * 4 * aw / net_w
                        bh = at(n, 3, row, col) ** 2 * 4 * ah / net_h
                        obj = at(n, 4, row, col)
                        scores = [at(n, 5 + j, row, col) for j in range(classes)]
                rows.append([bx * net_w, by * net_h, bw * net_w, bh * net_h, obj, *scores])
    return rows


SECTIONS = {
    "region": RegionSection(anchors=(1.0, 1.5, 2.5, 0.5), classes=3, num=2, softmax=1),
    "gaussian": GaussianYoloSection(mask=(1, 2), anchors=(4, 6, 10, 12, 20, 24), num=3, classes=2, scale_x_y=1.1),
    "new_coords": YoloSection(mask=(0, 1), anchors=(4, 6, 10, 12), num=2, classes=2, scale_x_y=2.0, new_coords=1),
}


@pytest.mark.parametrize("name", list(SECTIONS))
def test_decode_matches_darknets_box_code(name: str) -> None:
    section = SECTIONS[name]
    anchors = section.num if isinstance(section, RegionSection) else len(section.anchor_indices)
    per_anchor = section.classes + (9 if isinstance(section, GaussianYoloSection) else 5)
    generator = torch.Generator().manual_seed(0)
    raw = torch.randn(2, anchors * per_anchor, 3, 4, generator=generator, dtype=torch.float64)
    if name == "new_coords":
        raw = raw.sigmoid()
    decoded = decode_special_head(section, raw, (48, 64))
    for image in range(2):
        expected = torch.tensor(reference_rows(section, raw[image], 48, 64), dtype=torch.float64)
        torch.testing.assert_close(decoded[image], expected, rtol=1e-10, atol=1e-10)


def test_a_cfg_with_region_heads_decodes_but_does_not_train() -> None:
    text = (
        "[net]\nwidth=32\nheight=32\nchannels=3\n[convolutional]\nfilters=16\nsize=1\nstride=4\nactivation=linear\n"
        "[region]\nanchors=1,1,2,2\nclasses=3\nnum=2\nsoftmax=1\n"
    )
    cfg = parse_cfg_text(text, source="v2.cfg")
    model = Darknet(cfg).eval()
    with torch.no_grad():
        outputs = model(torch.rand(1, 3, 32, 32))
    decoded = decode_head_sections([cfg.layers[1]], outputs, (32, 32))
    assert decoded.shape == (1, 2 * 8 * 8, 8)
    with pytest.raises(ValueError, match=r"v2\.cfg:10: \[region\] layer 1: only \[yolo\] heads"):
        model.head_specs  # noqa: B018 - the trainer and the [yolo] decoder start here


BOX_CFGS = ("sam_scale_channels_pools_gaussian", "yolo_new_coords", "yolo_strides_and_training_keys")


def test_detections_match_darknets_get_network_boxes(alexeyab_darknet, tmp_path) -> None:
    """Darknet's own boxes (objectness > 0.01, prob = objectness * class score zeroed below 0.01) for
    [Gaussian_yolo], new_coords [yolo] and plain [yolo] heads equal our decoded rows."""
    import numpy as np
    from darknet_harness import NET, DarknetJob, compile_harness, run_darknet
    from test_darknet_layers import CFGS, write_random_weights

    from yolov3.darknet.graph import HEAD_SECTIONS

    executable = compile_harness(alexeyab_darknet, tmp_path)
    jobs, prepared = [], []
    for seed, name in enumerate(BOX_CFGS):
        size, layers = CFGS[name]
        cfg_path, weights_path = tmp_path / f"{name}.cfg", tmp_path / f"{name}.weights"
        cfg_path.write_text(NET.format(size=size) + layers)
        cfg = parse_cfg_text(cfg_path.read_text(), source=str(cfg_path))
        write_random_weights(cfg, weights_path, seed)
        image = np.random.default_rng(seed).random((3, size, size), dtype=np.float32)
        jobs.append(DarknetJob(cfg_path, weights_path, image, boxes=True))
        prepared.append((cfg, weights_path, image, size))
    results = run_darknet(executable, jobs, tmp_path / "out")
    for (cfg, weights_path, image, size), result in zip(prepared, results, strict=True):
        model = Darknet(cfg).eval()
        model.load_darknet_weights(weights_path)
        with torch.no_grad():
            outputs = model(torch.from_numpy(image)[None])
        heads = [section for section in cfg.layers if isinstance(section, HEAD_SECTIONS)]
        rows = decode_head_sections(heads, outputs, (size, size))[0].double().numpy()
        rows = rows[rows[:, 4] > 0.01]
        boxes = rows[:, :4] / size
        probabilities = rows[:, 4:5] * rows[:, 5:]
        probabilities[probabilities <= 0.01] = 0
        reference = np.array(result.detections)
        assert len(reference) == len(rows) > 0, cfg.source
        for detection in reference:
            distance = np.abs(boxes - detection[:4]).sum(1)
            match = int(distance.argmin())
            assert distance[match] < 1e-4, cfg.source
            np.testing.assert_allclose(rows[match, 4], detection[4], rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(probabilities[match], detection[5:], rtol=1e-4, atol=1e-6)
