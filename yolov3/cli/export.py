"""``python -m yolov3.export``: a trained detector to ONNX (fp32, fp16 or int8, optionally with NMS) or Darknet.

Examples::

    python -m yolov3.export --weights best.pt --format onnx --out model.onnx
    python -m yolov3.export --cfg yolov3-tiny.cfg --weights yolov3-tiny.weights --format onnx --out tiny.onnx \\
        --with-nms --conf 0.25 --iou 0.45 --max-det 100
    python -m yolov3.export --weights best.pt --format onnx --out model-int8.onnx --int8 \\
        --calibration-data data/coco.yaml --calibration-per-class 4
    python -m yolov3.export --weights best.pt --format onnx --out model-qat.onnx --int8 --qat \\
        --train-cfg logs/<run>/args.yaml --qat-epochs 3
    python -m yolov3.export --weights best.pt --format darknet --out exported/model   # model.cfg + .weights

``--weights`` is a checkpoint of ours (``.pt``; it names its model), a compressed ``.yolov3c`` file or a
Darknet ``.weights`` file with ``--cfg`` or ``--model``. The ONNX metadata (head specs, input size,
preprocessing, class names) lets ``evaluate`` and ``detect`` run the file (``--weights model.onnx``). ONNX
graphs take ``images`` (B, 3, H, W) float32 RGB in 0..1, letterboxed as at inference, with a dynamic batch;
see :mod:`yolov3.export.onnx_export` for the outputs. ``--fp16`` and ``--int8`` write the converted model at
``--out`` (inputs and outputs stay float32). ``--int8`` calibrates activation ranges on training images
(post-training quantization); ``--int8 --qat`` instead fine-tunes the checkpoint with fake quantization on the
training config's ``train`` split (:mod:`yolov3.compression.qat_training`) and exports the ranges and weights it
learned (:mod:`yolov3.export.int8_qat`).

A killed ``--qat`` fine-tuning resumes: run the same command with ``--resume`` (``--qat-dir`` names the run
folder, default ``<out stem>-qat``; the settings are kept in ``<qat-dir>/qat.json`` and must be the same; a
folder without ``last.pt`` starts afresh). It continues from the last completed epoch and exports a file equal
to an uninterrupted run's. Ctrl-C or SIGTERM stop the fine-tuning at the next optimizer step and say how to
resume.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from yolov3.cli.runner import command, configure_logging
from yolov3.compression.qat import QatConfig
from yolov3.compression.qat_training import DEFAULT_EPOCHS, DEFAULT_LEARNING_RATE_FACTOR, QatFineTune, fine_tune_qat
from yolov3.export.darknet_export import export_darknet
from yolov3.export.int8_qat import export_qat_onnx
from yolov3.export.nms_graph import NmsOptions
from yolov3.export.onnx_export import (
    DEFAULT_OPSET,
    INPUT_NAME,
    ExportError,
    attach_postprocess,
    export_onnx,
    export_postprocess,
    inference_metadata,
    write_metadata,
)
from yolov3.export.quantize import CalibrationImages, convert_to_fp16, quantize_int8, select_calibration_images
from yolov3.inference.model_loading import LoadedModel, load_inference_model
from yolov3.models import list_models
from yolov3.train.config import load_train_config
from yolov3.train.interrupt import InterruptHandler, TrainingInterruptedError, report_interruption

logger = logging.getLogger(__name__)

# The fp32 graph must reproduce PyTorch to this relative error (max |difference| / max |PyTorch|).
FP32_TOLERANCE = 1e-4
VERIFY_BATCH = 2
VERIFY_SEED = 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m yolov3.export", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="a checkpoint (.pt) or a Darknet .weights file")
    model_group = parser.add_mutually_exclusive_group()
    model_group.add_argument("--cfg", help="the Darknet .cfg of Darknet --weights")
    model_group.add_argument("--model", help=f"the registered model of Darknet --weights: {', '.join(list_models())}")
    parser.add_argument("--num-classes", type=int, help="classes of --model (default: the model's own)")
    parser.add_argument("--format", choices=("onnx", "darknet"), required=True, help="what to write")
    parser.add_argument("--out", required=True, help="output file (darknet: a stem; .cfg and .weights are written)")
    parser.add_argument("--img-size", type=int, nargs="+", help="input size: one number, or height width")
    parser.add_argument(
        "--dynamic-batch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ONNX: a dynamic batch axis (default: on)",
    )
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--with-nms", action="store_true", help="ONNX: decoding and NMS in the graph")
    parser.add_argument("--conf", type=float, default=0.25, help="--with-nms score threshold (default 0.25)")
    parser.add_argument("--iou", type=float, default=0.45, help="--with-nms IoU threshold (default 0.45)")
    parser.add_argument("--max-det", type=int, default=300, help="--with-nms detections per image (default 300)")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="ONNX: convert to float16 (float32 inputs/outputs)")
    precision.add_argument("--int8", action="store_true", help="ONNX: int8 static quantization (needs calibration)")
    parser.add_argument("--calibration-data", help="--int8: a dataset YAML or a directory of images")
    parser.add_argument(
        "--calibration-per-class",
        type=int,
        default=4,
        help="--int8: images per class from a dataset, or images in total from a directory (default 4)",
    )
    parser.add_argument("--reduce-range", action="store_true", help="--int8: 7-bit weights, for CPUs without VNNI")
    qat = parser.add_argument_group("quantization-aware training (--int8 --qat)")
    qat.add_argument("--qat", action="store_true", help="--int8: fine-tune with fake quantization, then export")
    qat.add_argument("--train-cfg", type=Path, help="--qat: the training config of --weights (logs/<run>/args.yaml)")
    qat.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="--qat: override a training config value (repeatable)")  # fmt: skip
    qat.add_argument("--qat-epochs", type=int, default=DEFAULT_EPOCHS, help=f"--qat: epochs (default {DEFAULT_EPOCHS})")
    qat.add_argument("--qat-lr-factor", type=float, default=DEFAULT_LEARNING_RATE_FACTOR,
                     help=f"--qat: times the config's learning rate ({DEFAULT_LEARNING_RATE_FACTOR})")  # fmt: skip
    qat.add_argument("--keep-float", nargs="+", default=[], metavar="PATTERN",
                     help="--qat: convs left in float: first, heads, fnmatch module names (default none)")  # fmt: skip
    qat.add_argument("--qat-dir", type=Path, help="--qat: the fine-tuning run folder (default <out stem>-qat)")
    qat.add_argument("--resume", action="store_true",
                     help="--qat: continue the killed fine-tuning in --qat-dir (same arguments)")  # fmt: skip
    qat.add_argument("--no-progress", action="store_true", help="--qat: no progress bars")
    args = parser.parse_args(argv)
    if args.img_size is not None and len(args.img_size) not in (1, 2):
        parser.error(f"--img-size takes one number or height width, got {len(args.img_size)} numbers")
    if args.format == "darknet" and (args.with_nms or args.fp16 or args.int8):
        parser.error("--with-nms, --fp16 and --int8 apply to --format onnx only")
    if args.qat and not (args.int8 and args.train_cfg):
        parser.error("--qat needs --int8 and --train-cfg (the training config of --weights)")
    if not args.qat and (args.train_cfg or args.overrides or args.keep_float or args.qat_dir or args.resume):
        parser.error("--train-cfg, --set, --keep-float, --qat-dir and --resume go with --int8 --qat")
    if args.int8 and not args.qat and not args.calibration_data:
        parser.error("--int8 needs --calibration-data (a dataset YAML or a directory of images), or --qat")
    if args.calibration_data and not (args.int8 and not args.qat):
        parser.error("--calibration-data goes with --int8 (--qat learns its ranges in training)")
    return args


def input_size_of(args: argparse.Namespace, loaded: LoadedModel) -> tuple[int, int]:
    if args.img_size is None:
        return loaded.input_size
    return args.img_size[0], args.img_size[-1]


def export_onnx_file(args: argparse.Namespace, loaded: LoadedModel) -> Path:
    """Export to ONNX at ``args.out`` in the requested precision; returns the path written.

    fp32 is traced in one piece. fp16 and int8 convert the raw-heads graph; with ``--with-nms`` the float32
    decoding and NMS graph is then appended to it.
    """
    out = Path(args.out)
    input_size = input_size_of(args, loaded)
    nms = NmsOptions(args.conf, args.iou, args.max_det) if args.with_nms else None
    source_format = "darknet" if loaded.darknet_weights else "checkpoint"
    metadata = inference_metadata(
        loaded.head_specs, input_size, loaded.preprocessing, loaded.class_names, nms, loaded.normalization,
        source_format,
    )  # fmt: skip
    model, specs, dynamic, opset = loaded.model, loaded.head_specs, args.dynamic_batch, args.opset
    if not (args.fp16 or args.int8):
        export_onnx(model, specs, out, input_size, nms, dynamic, opset, metadata)
        verify(out, loaded, input_size, nms, dynamic, compare=True)
        return out
    with tempfile.TemporaryDirectory(prefix="yolov3-export-") as directory:
        fp32_path, reduced_path = Path(directory) / "fp32.onnx", Path(directory) / "reduced.onnx"
        reduced = reduced_path if nms else out
        if args.qat:  # fine-tuned from the checkpoint, exported from the fake-quantized model
            qat_int8(args, input_size, reduced)
        else:
            export_onnx(model, specs, fp32_path, input_size, None, dynamic, opset)
            if args.fp16:
                convert_to_fp16(fp32_path, reduced)
            else:
                paths = select_calibration_images(args.calibration_data, args.calibration_per_class)
                reader = CalibrationImages(paths, INPUT_NAME, input_size, loaded.preprocessing)
                quantize_int8(fp32_path, reduced, reader, reduce_range=args.reduce_range)
        if nms is not None:
            postprocess_path = Path(directory) / "postprocess.onnx"
            export_postprocess(specs, postprocess_path, input_size, nms, dynamic, opset)
            attach_postprocess(reduced_path, postprocess_path, out)
    write_metadata(out, metadata)
    verify(out, loaded, input_size, nms, dynamic, compare=False)
    return out


def qat_dir(args: argparse.Namespace) -> Path:
    """The QAT fine-tuning folder: ``--qat-dir``, or ``<out stem>-qat`` beside ``--out``."""
    out = Path(args.out)
    return Path(args.qat_dir) if args.qat_dir else out.with_name(f"{out.stem}-qat")


def qat_int8(args: argparse.Namespace, input_size: tuple[int, int], destination: Path) -> Path:
    """Fine-tune ``args.weights`` with fake quantization (``--train-cfg``; continuing the run in the QAT folder
    with ``--resume``), then write its int8 raw-heads graph. A signal raises :class:`TrainingInterruptedError`."""
    if Path(args.weights).suffix != ".pt":
        raise ExportError(f"{args.weights}: --qat fine-tunes a checkpoint of ours (.pt), got {Path(args.weights).name}")
    request = QatFineTune(
        config=load_train_config(args.train_cfg, args.overrides),
        weights=Path(args.weights),
        run_dir=qat_dir(args),
        epochs=args.qat_epochs,
        learning_rate_factor=args.qat_lr_factor,
        quantization=QatConfig(keep_float=tuple(args.keep_float)),
        progress=not args.no_progress,
        resume=args.resume,
    )
    logger.info("QAT run folder %s (continue a killed run with the same arguments and --resume)", request.run_dir)
    with InterruptHandler() as interrupt:
        result = fine_tune_qat(dataclasses.replace(request, callbacks=(interrupt,)))
    return export_qat_onnx(result.model, destination, input_size, args.dynamic_batch, args.opset)


def verify(
    path: Path,
    loaded: LoadedModel,
    input_size: tuple[int, int],
    nms: NmsOptions | None,
    dynamic_batch: bool,
    compare: bool,
) -> None:
    """Run the ONNX file in ONNX Runtime on a random batch; for fp32 raw heads, require PyTorch's outputs."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = VERIFY_BATCH if dynamic_batch else 1
    generator = np.random.default_rng(VERIFY_SEED)
    images = generator.random((batch, 3, *input_size), dtype=np.float32)  # (B, 3, H, W)
    outputs = session.run(None, {INPUT_NAME: images})
    shapes = ", ".join(
        f"{output.name} {list(array.shape)}" for output, array in zip(session.get_outputs(), outputs, strict=True)
    )
    logger.info("ONNX Runtime ran %s at batch %d: %s", path, batch, shapes)
    if not compare or nms is not None:
        return
    with torch.inference_mode():
        reference = [head.numpy() for head in loaded.model(torch.from_numpy(images))]
    scale = max(float(np.abs(head).max()) for head in reference) or 1.0
    difference = max(float(np.abs(ours - head).max()) for ours, head in zip(outputs, reference, strict=True)) / scale
    if difference > FP32_TOLERANCE:
        raise ExportError(
            f"{path}: ONNX Runtime differs from PyTorch by {difference:.1e} (relative), over {FP32_TOLERANCE}"
        )
    logger.info("ONNX Runtime matches PyTorch to %.1e (max |difference| / max |output|)", difference)


def describe_size(path: Path) -> str:
    return f"{path} ({path.stat().st_size / 1e6:.1f} MB)"


@command
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns a process exit code (2 on bad input)."""
    args = parse_args(argv)
    configure_logging()
    loaded = load_inference_model(args.weights, args.cfg, args.model, args.num_classes)
    if loaded.runtime != "pytorch":
        raise ExportError(f"{args.weights}: is already an ONNX graph; export a checkpoint, .yolov3c or .weights")
    if args.format == "darknet":
        header = f"Exported by `python -m yolov3.export` from {loaded.source}."
        size = None if args.img_size is None else input_size_of(args, loaded)
        files = export_darknet(loaded.model, args.out, size, loaded.class_names, header)
        written = [describe_size(files.cfg), describe_size(files.weights)]
        written += [] if files.names is None else [describe_size(files.names)]
    else:
        try:
            written = [describe_size(export_onnx_file(args, loaded))]
        except TrainingInterruptedError as stop:  # --qat only
            return report_interruption(
                stop,
                f"{qat_dir(args) / 'last.pt'} keeps the last completed epoch of the QAT fine-tuning; "
                "continue with the same arguments and --resume",
            )
    print(f"exported {loaded.source}: {', '.join(written)}")
    return 0
