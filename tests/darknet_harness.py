"""Test helpers: AlexeyAB's Darknet itself as the reference, through the C harness ``tests/darknet_forward.c``.

:func:`compile_harness` links the harness against the built ``libdarknet.so``; :func:`run_darknet` feeds it
many (cfg, weights, input) jobs in ONE process and returns, per job, the float32 output of each layer written
(``{layer index: array (C, H, W)}``) and the ``.weights`` bytes Darknet's own writer saves after loading
(so a test can check the layout Darknet reads, byte for byte).

Darknet's head layers activate in place: [yolo] applies the logistic to x, y, objectness and classes
(then ``scale_x_y``); [region] the logistic to x, y, objectness and a softmax over classes. Tests compare
those outputs with the same activations applied to our raw head outputs.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HARNESS_SOURCE = Path(__file__).with_name("darknet_forward.c")


def compile_harness(darknet_binary: Path, destination: Path) -> Path:
    """Compile the harness against the libdarknet.so beside ``darknet_binary``; returns the executable."""
    root = darknet_binary.parent
    executable = destination / "darknet_forward"
    command = [
        "gcc",
        "-O2",
        "-o",
        str(executable),
        str(HARNESS_SOURCE),
        f"-I{root / 'include'}",
        f"-L{root}",
        "-ldarknet",
        f"-Wl,-rpath,{root}",
        "-lm",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"compiling {HARNESS_SOURCE.name} failed:\n{result.stderr[-3000:]}")
    return executable


@dataclass
class DarknetJob:
    """One network to run: cfg and weights files, the input (C, H, W) or None, and which layers to write."""

    cfg: Path
    weights: Path
    input: np.ndarray | None = None
    all_layers: bool = False
    boxes: bool = False  # also Darknet's get_network_boxes detections (threshold 0.01)


@dataclass
class DarknetResult:
    outputs: dict[int, np.ndarray] = field(default_factory=dict)
    layer_types: dict[int, int] = field(default_factory=dict)
    saved_weights: bytes = b""
    detections: list[list[float]] = field(default_factory=list)  # x, y, w, h (relative), objectness, probs


def run_darknet(executable: Path, jobs: list[DarknetJob], work: Path, timeout: float = 300) -> list[DarknetResult]:
    """Run every job in one harness process; raises with Darknet's stderr if it stops early."""
    work.mkdir(parents=True, exist_ok=True)
    lines, prefixes = [], []
    for number, job in enumerate(jobs):
        prefix = work / f"job{number}"
        input_path = "-"
        if job.input is not None:
            input_path = str(work / f"job{number}.input.bin")
            np.ascontiguousarray(job.input, dtype="<f4").tofile(input_path)
        mode = "all" if job.all_layers else "boxes" if job.boxes else "heads"
        lines.append(f"{job.cfg} {job.weights} {input_path} {prefix} {mode}")
        prefixes.append(prefix)
    result = subprocess.run(
        [str(executable)],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=work,
    )
    results = [DarknetResult() for _ in jobs]
    current = -1
    for line in result.stdout.splitlines():
        words = line.split()
        if words[:1] == ["job"]:
            current = int(words[1])
        elif words[:1] == ["layer"] and current >= 0:
            index, kind, channels, height, width = map(int, words[1:6])
            data = np.fromfile(f"{prefixes[current]}.{index}.bin", dtype="<f4")
            results[current].outputs[index] = data.reshape(channels, height, width)
            results[current].layer_types[index] = kind
        elif words[:1] == ["det"] and current >= 0:
            results[current].detections.append([float(word) for word in words[1:]])
        elif words[:1] == ["done"]:
            number = int(words[1])
            results[number].saved_weights = Path(f"{prefixes[number]}.saved.weights").read_bytes()
    finished = sum(line.startswith("done ") for line in result.stdout.splitlines())
    if result.returncode != 0 or finished != len(jobs):
        raise RuntimeError(
            f"darknet_forward stopped after {finished} of {len(jobs)} jobs (exit {result.returncode}); job "
            f"{finished}: {lines[finished] if finished < len(lines) else '?'}\n{result.stderr[-3000:]}"
        )
    return results
