"""docs/custom_data.md works as written: its files and commands, run in order on a small generated dataset.

The guide marks what a reader types or writes with HTML comments before the fenced blocks:
``<!-- test: run -->`` (a bash block: ``python -m ...`` lines, or a ``python - <<'EOF'`` script) and
``<!-- test: file PATH -->`` (a file to write at PATH). This test runs every marked block in order, in a
temporary folder, with the commands' own ``main`` functions. It changes only sizes, for speed: the generated
datasets are 16 + 8 images of 96 px, and training runs at 64 px, batch 4, a quarter of the channels, one
epoch, then ``--resume`` to a second epoch (as a stopped run is continued). It pastes the anchors that
``python -m yolov3.anchors`` wrote into the training config, as the guide says to.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml

from yolov3.checkpoint import load_checkpoint
from yolov3.data.dataset_config import build_dataset
from yolov3.train.config import load_train_config

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "custom_data.md"
BLOCK = re.compile(r"<!-- test: (?P<kind>run|file) ?(?P<path>\S*) -->\n```\w+\n(?P<body>.*?)\n```", re.DOTALL)
HEREDOC = re.compile(r"python - <<'EOF'\n(?P<script>.*?)\nEOF", re.DOTALL)

SMALL_DATASET = {"--num-train": "16", "--num-val": "8", "--image-size": "96"}
FAST_TRAINING = [
    "data.image_size=64",
    "data.batch_size=4",
    "data.workers=0",
    "model.options.width_multiple=0.25",
    "eval.every_epochs=1",
    "train.epochs=1",
]


def guide_blocks() -> list[tuple[str, str, str]]:
    """``(kind, path, body)`` of every marked block of the guide, in order."""
    return [(match["kind"], match["path"], match["body"]) for match in BLOCK.finditer(GUIDE.read_text())]


def run_module(module: str, arguments: list[str]) -> int:
    """``python -m module arguments``, in-process: the module's ``main`` (for a package such as ``yolov3.train``,
    whose ``__main__`` runs on import, the ``main`` of its command module ``yolov3.cli.<name>``)."""
    target = importlib.import_module(module)
    if not hasattr(target, "main"):
        target = importlib.import_module(f"yolov3.cli.{module.rsplit('.', 1)[-1]}")
    return target.main(arguments)


def with_test_sizes(module: str, arguments: list[str]) -> list[str]:
    """The command's arguments with this test's smaller sizes (see the module docstring)."""
    if module == "yolov3.data.synthetic":
        for option, value in SMALL_DATASET.items():
            arguments[arguments.index(option) + 1] = value
    elif module == "yolov3.train" and "--cfg" in arguments:
        arguments += [argument for setting in FAST_TRAINING for argument in ("--set", setting)]
    elif module == "yolov3.train" and "--resume" in arguments:
        arguments += ["--set", "train.epochs=2"]
    return arguments


def paste_anchors(config_path: Path, anchors_path: Path) -> None:
    """Step 5: copy the ``anchors_px`` list that ``python -m yolov3.anchors`` wrote into the training config."""
    config = yaml.safe_load(config_path.read_text())
    config["model"]["options"]["anchors_px"] = yaml.safe_load(anchors_path.read_text())["anchors_px"]
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture
def one_thread():
    """One torch thread while the guide runs: this machine is shared, and the steps are small."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_guide_marks_its_steps() -> None:
    blocks = guide_blocks()
    commands = " ".join(body for kind, _, body in blocks if kind == "run")
    for module in ("data.synthetic", "data.show", "anchors", "train --cfg", "train --resume", "detect", "evaluate"):
        assert f"yolov3.{module}" in commands, module
    assert [path for kind, path, _ in blocks if kind == "file"] == [
        "configs/my_dataset.yaml",
        "configs/my_voc_dataset.yaml",
    ]


@pytest.mark.slow
def test_custom_data_guide_runs_as_written(tmp_path: Path, monkeypatch, capsys, one_thread) -> None:
    monkeypatch.chdir(tmp_path)
    for kind, path, body in guide_blocks():
        if kind == "file":
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).write_text(body + "\n")
            continue
        script = HEREDOC.search(body)
        if script is not None:
            exec(compile(script["script"], "custom_data.md", "exec"), {"__name__": "__main__"})
            continue
        for line in body.splitlines():
            runs = sorted(path.name for path in (tmp_path / "logs").glob("my_dataset-*"))
            line = line.replace("logs/<run>", f"logs/{runs[-1]}" if runs else "logs/<run>")
            words = shlex.split(line)
            assert words[:2] == ["python", "-m"], f"not a python -m command: {line}"
            module, arguments = words[2], with_test_sizes(words[2], words[3:])
            assert run_module(module, arguments) == 0, f"failed: {line}\n{capsys.readouterr().err[-3000:]}"
            if module == "yolov3.anchors":
                paste_anchors(tmp_path / "configs" / "my_dataset.yaml", tmp_path / "logs" / "anchors" / "anchors.yaml")

    runs = sorted((tmp_path / "logs").glob("my_dataset-*"))
    assert len(runs) == 1, "--resume must continue in the run's folder, not start a new run"
    checkpoint = load_checkpoint(runs[0] / "last.pt")
    assert checkpoint.epoch == 1 and checkpoint.class_names == ("circle", "square", "triangle")
    anchors = yaml.safe_load((tmp_path / "logs" / "anchors" / "anchors.yaml").read_text())["anchors_px"]
    assert checkpoint.model.options["anchors_px"] == anchors and len(anchors) == 6
    assert (runs[0] / "best.pt").is_file()
    assert len(list((tmp_path / "logs" / "detect-val" / "labels").glob("*.txt"))) == 8
    output = capsys.readouterr().out
    assert "Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ]" in output
    assert "AP50 (VOC area)" in output
    for name in ("show", "show-voc"):
        assert (tmp_path / "logs" / name / "batch.png").is_file()

    voc_config = load_train_config(tmp_path / "configs" / "my_voc_dataset.yaml")
    for split, count in (("train", 16), ("val", 8)):
        dataset = build_dataset(voc_config.data.dataset, split, progress=False)
        assert len(dataset) == count and dataset.class_names == ("circle", "square", "triangle")
