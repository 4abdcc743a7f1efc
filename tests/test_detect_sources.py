"""``detect --source`` with several paths and a video; the preprocessing and output options of ``detect``."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolov3.cli.detect import build_predictor, parse_args
from yolov3.detect import main as detect_main
from yolov3.inference.sources import SourceError, resolve_sources
from yolov3.models import yolov3_tiny_test


@pytest.fixture(scope="module")
def test_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny-test.weights"
    yolov3_tiny_test(num_classes=3).save_darknet_weights(path)
    return path


def model_arguments(weights: Path, out: Path) -> list[str]:
    model = ["--model", "yolov3_tiny_test", "--num-classes", "3", "--weights", str(weights)]
    return [*model, "--img-size", "64", "96", "--conf", "0.05", "--out", str(out)]


def write_image(path: Path, seed: int, size: tuple[int, int] = (40, 60)) -> None:
    assert cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8))


def write_video(path: Path, frames: int = 5, size: tuple[int, int] = (48, 64)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (size[1], size[0]))
    assert writer.isOpened()
    for index in range(frames):
        writer.write(np.random.default_rng(index).integers(0, 256, (*size, 3), dtype=np.uint8))
    writer.release()


def test_several_sources_files_folders_and_globs(test_weights: Path, tmp_path: Path) -> None:
    folder, other = tmp_path / "folder", tmp_path / "other"
    folder.mkdir(), other.mkdir()
    write_image(folder / "a.png", 0), write_image(folder / "b.jpg", 1), write_image(other / "c.png", 2)
    write_image(tmp_path / "d.png", 3)
    sources = [str(tmp_path / "d.png"), str(folder), str(other / "*.png"), str(folder / "a.png")]  # a.png twice
    assert resolve_sources(sources) == [tmp_path / "d.png", folder / "a.png", folder / "b.jpg", other / "c.png"]
    out = tmp_path / "out"
    assert detect_main([*model_arguments(test_weights, out), "--source", *sources]) == 0
    assert sorted(path.name for path in (out / "labels").iterdir()) == ["a.txt", "b.txt", "c.txt", "d.txt"]
    assert {path.name for path in out.iterdir()} >= {"a.png", "b.jpg", "c.png", "d.png", "detections.json"}
    with pytest.raises(SourceError, match=r"missing\.png: no such file"):
        resolve_sources([str(folder), str(tmp_path / "missing.png")])


def test_a_video_is_written_back_annotated_with_a_label_file_per_frame(test_weights: Path, tmp_path: Path, capsys):
    write_video(tmp_path / "clip.avi")
    write_image(tmp_path / "still.png", 7)
    out = tmp_path / "out"
    arguments = [*model_arguments(test_weights, out), "--save-conf", "--batch-size", "2"]
    assert detect_main([*arguments, "--source", str(tmp_path / "clip.avi"), str(tmp_path / "still.png")]) == 0
    assert capsys.readouterr().out.startswith("6 images,")  # 1 image + 5 frames
    labels = sorted(path.name for path in (out / "labels").iterdir())
    assert labels == ["clip_0.txt", "clip_1.txt", "clip_2.txt", "clip_3.txt", "clip_4.txt", "still.txt"]
    capture = cv2.VideoCapture(str(out / "clip.avi"))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == 5 and frames[0].shape == (48, 64, 3)
    line_counts = [len((out / "labels" / f"clip_{index}.txt").read_text().splitlines()) for index in range(5)]
    assert sum(line_counts) > 0  # a low --conf on random weights finds boxes: the frames went through the model
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    assert detect_main([*arguments, "--source", str(tmp_path / "broken.mp4"), str(tmp_path / "still.png")]) == 0
    assert "1 skipped as unreadable" in capsys.readouterr().out


def test_darknet_weights_default_to_darknets_letterbox_and_output(test_weights: Path, tmp_path: Path) -> None:
    arguments = [*model_arguments(test_weights, tmp_path / "out"), "--source", str(tmp_path)]
    predictor = build_predictor(parse_args(arguments))
    assert predictor.preprocessing.mode == "darknet" and predictor.output == "darknet"
    modes = {
        ("--letterbox", "ours"): "letterbox",
        ("--resize", "stretch"): "darknet-stretch",  # AlexeyAB's default: resize_image to the input
        ("--no-letterbox",): "darknet-stretch",
        ("--resampling", "opencv"): "letterbox",
        ("--resize", "stretch", "--resampling", "opencv"): "stretch",
    }
    for extra, mode in modes.items():
        assert build_predictor(parse_args([*arguments, *extra])).preprocessing.mode == mode, extra
    assert build_predictor(parse_args([*arguments, "--output", "standard"])).output == "standard"
    with pytest.raises(SystemExit):
        parse_args([*arguments, "--letterbox", "darknet", "--no-letterbox"])
