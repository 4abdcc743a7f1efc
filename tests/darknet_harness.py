"""Test helpers: AlexeyAB's Darknet itself as the reference, through the C harness ``tests/darknet_forward.c``.

:func:`compile_harness` links the harness against the built ``libdarknet.so``; :func:`run_darknet` feeds it
many (cfg, weights, input) jobs in ONE process and returns, per job, the float32 output of each layer written
(``{layer index: array (C, H, W)}``) and the ``.weights`` bytes Darknet's own writer saves after loading
(so a test can check the layout Darknet reads, byte for byte).

:func:`run_random_networks` is the usual test setup on top: small cfgs written out with random weights and a
random input each, every layer of every cfg (and, where asked, its ``get_network_boxes`` detections) from one
harness process.

Darknet's head layers activate in place: [yolo] applies the logistic to x, y, objectness and classes
(then ``scale_x_y``); [region] the logistic to x, y, objectness and a softmax over classes. Tests compare
those outputs with the same activations applied to our raw head outputs.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from darknet_testing import write_random_weights

from yolov3.darknet.cfg import DarknetCfg, parse_cfg_text

HARNESS_SOURCE = Path(__file__).with_name("darknet_forward.c")
# The [net] section of the test cfgs: a square input of ``size`` and 3 channels, batch 1
NET = "[net]\nwidth={size}\nheight={size}\nchannels=3\n"


def compile_harness(darknet_binary: Path, destination: Path, source: Path = HARNESS_SOURCE) -> Path:
    """Compile the harness (``source``: another one with the same job protocol, such as pjreddie's
    ``darknet_pjreddie_forward.c``) against the libdarknet.so beside ``darknet_binary``; returns the executable."""
    root = darknet_binary.parent
    executable = destination / source.stem
    command = [
        "gcc",
        "-O2",
        "-o",
        str(executable),
        str(source),
        f"-I{root / 'include'}",
        f"-L{root}",
        "-ldarknet",
        f"-Wl,-rpath,{root}",
        "-lm",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"compiling {source.name} failed:\n{result.stderr[-3000:]}")
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
            if channels * height * width == 0 < data.size:  # make_gru_layer, make_detection_layer leave out_c/h/w 0
                channels, height, width = data.size, 1, 1
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


# name -> (cfg, weights path, input (C, H, W), Darknet's result)
RandomRuns = dict[str, tuple[DarknetCfg, Path, np.ndarray, DarknetResult]]


def signed_input(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """``image`` (values in [0, 1)) with random signs and magnitudes in [0.05, 1): an input XNOR layers binarize
    both ways."""
    signs = rng.choice([-1.0, 1.0], image.shape)
    return (signs * rng.uniform(0.05, 1.0, image.shape)).astype(np.float32)


def run_random_networks(
    darknet_binary: Path,
    work: Path,
    cfgs: Mapping[str, tuple[int, str]],
    input_seed: int,
    *,
    boxes: Collection[str] = (),
    signed_inputs: Collection[str] = (),
    write_weights: Callable[[DarknetCfg, Path, int], object] = write_random_weights,
) -> tuple[RandomRuns, dict[str, DarknetResult]]:
    """Every cfg of ``cfgs`` (name -> (input size, the sections after :data:`NET`)) through one harness process.

    The cfg at position ``seed`` is written to ``work`` with ``write_weights(cfg, path, seed)`` and gets the
    input ``default_rng(input_seed + seed).random((3, size, size))`` (names in ``signed_inputs``: turned into
    :func:`signed_input` by the same generator). Returns name -> (cfg, weights path, input, every layer's output)
    and, for the names in ``boxes``, name -> a second job's result with Darknet's ``get_network_boxes``
    detections.
    """
    unknown = sorted(set(boxes) - set(cfgs))
    if unknown:
        raise ValueError(f"boxes names {unknown} are not among the cfgs")
    executable = compile_harness(darknet_binary, work)
    prepared, jobs = {}, []
    for seed, (name, (size, layers)) in enumerate(cfgs.items()):
        cfg_path, weights_path = work / f"{name}.cfg", work / f"{name}.weights"
        cfg_path.write_text(NET.format(size=size) + layers)
        cfg = parse_cfg_text(cfg_path.read_text(), source=str(cfg_path))
        write_weights(cfg, weights_path, seed)
        rng = np.random.default_rng(input_seed + seed)
        image = rng.random((3, size, size), dtype=np.float32)
        if name in signed_inputs:
            image = signed_input(rng, image)
        prepared[name] = (cfg, weights_path, image)
        jobs.append(DarknetJob(cfg_path, weights_path, image, all_layers=True))
    box_names = [name for name in cfgs if name in boxes]
    jobs += [DarknetJob(work / f"{name}.cfg", *prepared[name][1:], boxes=True) for name in box_names]
    results = run_darknet(executable, jobs, work / "out")
    runs = {name: (*prepared[name], result) for name, result in zip(cfgs, results, strict=False)}
    return runs, dict(zip(box_names, results[len(cfgs) :], strict=True))
