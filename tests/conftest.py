"""Fixtures shared by the tests: the ../shared material and Darknet weights files made on the fly."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = PROJECT_ROOT.parent / "shared"


def _need_shared(what: str) -> None:
    message = f"{what} is missing (tests read it from {SHARED_DIR})"
    if os.environ.get("YOLOV3_REQUIRE_SHARED") == "1":
        pytest.fail(message + " and YOLOV3_REQUIRE_SHARED=1")
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_darknet() -> Path:
    """../shared/darknet: the official cfgs, names files and sample images."""
    path = SHARED_DIR / "darknet"
    if not (path / "yolov3.cfg").is_file():
        _need_shared("../shared/darknet")
    return path


@pytest.fixture(scope="session")
def tiny_weights(shared_darknet: Path) -> Path:
    """The official COCO yolov3-tiny.weights, fetched (and cached) by ../shared/fetch-yolov3-tiny-weights."""
    script = SHARED_DIR / "fetch-yolov3-tiny-weights"
    if not script.is_file():
        _need_shared("../shared/fetch-yolov3-tiny-weights")
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        pytest.fail(f"fetch-yolov3-tiny-weights failed:\n{result.stderr[-2000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def _build_darknet(flavor: str) -> Path:
    """Darknet itself (``pjreddie`` or ``alexeyab``), compiled for the CPU by ../shared/build-darknet (cached)."""
    script = SHARED_DIR / "build-darknet"
    if not script.is_file():
        _need_shared("../shared/build-darknet")
    result = subprocess.run(["bash", str(script), flavor], capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        pytest.fail(f"build-darknet {flavor} failed:\n{result.stderr[-2000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def pjreddie_darknet() -> Path:
    """The ``darknet`` binary of pjreddie/darknet (the YOLOv3 paper's); its folder also holds libdarknet.so."""
    return _build_darknet("pjreddie")


@pytest.fixture(scope="session")
def alexeyab_darknet() -> Path:
    """The ``darknet`` binary of AlexeyAB/darknet (the maintained fork); its folder also holds libdarknet.so."""
    return _build_darknet("alexeyab")


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread() -> None:
    """Tests use small models, for which one thread is as fast as two and immune to oversubscription
    (DataLoader workers, or a busy machine, make PyTorch's two threads wait on each other)."""
    import torch

    torch.set_num_threads(1)
