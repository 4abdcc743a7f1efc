"""``python -m yolov3.compress``: Deep Compression of a trained detector, and back.

Compress (prune, fine-tune, share weights, fine-tune centroids, Huffman-code, write one file)::

    python -m yolov3.compress --weights best.pt --cfg train.yaml --sparsity 0.8 --bits 4 \\
        --finetune-epochs 10 --out model.yolov3c

``--cfg`` is the training config of the checkpoint (``logs/<run>/args.yaml``): its data and validation
settings score every stage (mAP@0.5, the trainer's validation) and its trainer fine-tunes. Pruning is
global magnitude pruning of all convs but the first and the heads' outputs, the masks held while
fine-tuning; weight sharing clusters every conv but the first and the detection heads' output convs
(``--share-skip``; those stay dense, in float16) into ``2 ** bits``
centroids, which the centroid fine-tuning trains (summed gradients). The per-layer size table, the stages'
sparsity and mAP are printed and logged to TensorBoard under ``--run-dir``.

A killed run resumes: run the same command with ``--run-dir RUN_DIR --resume`` (``RUN_DIR`` is printed at
the start; the arguments are kept in ``RUN_DIR/compress.json`` and must be the same). The steps before each
fine-tuning are deterministic and run again; a fine-tuning run continues from its ``last.pt`` (a finished one
just reads it back), exactly as ``python -m yolov3.train --resume`` does, so the file written equals an
uninterrupted run's. Ctrl-C or SIGTERM stop at the next optimizer step and say how to resume.

The work is done by :func:`yolov3.compression.pipelines_compress.compress_model` (call it from Python with a
:class:`~yolov3.compression.pipelines_compress.CompressSettings`); this module only parses arguments.

Decode back to a plain checkpoint or Darknet weights, or print a file's size report::

    python -m yolov3.compress decode model.yolov3c --out best.pt [--darknet model.weights]
    python -m yolov3.compress inspect model.yolov3c
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from yolov3.checkpoint import save_checkpoint
from yolov3.cli.runner import command, configure_logging
from yolov3.compression.pipelines_compress import CompressSettings, compress_model, decoded_checkpoint
from yolov3.compression.report import report_from_header
from yolov3.compression.storage import load_compressed
from yolov3.inference.compressed_file import read_header
from yolov3.models.darknet_io import DarknetIO
from yolov3.train.config import load_train_config
from yolov3.train.interrupt import InterruptHandler, TrainingInterruptedError, report_interruption

logger = logging.getLogger("yolov3.compress")


def parse_compress_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m yolov3.compress", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True, help="trained checkpoint (best.pt)")
    parser.add_argument("--cfg", type=Path, required=True, help="its training config (logs/<run>/args.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set data.batch_size=4 (repeatable)")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="compressed model file to write (.yolov3c)")
    parser.add_argument("--sparsity", type=float, default=0.8, help="global sparsity of the pruned convs (0: none)")
    parser.add_argument("--bits", type=int, default=4, help="bits per cluster index: k = 2**bits centroids")
    parser.add_argument("--finetune-epochs", type=int, default=0, help="epochs of fine-tuning after pruning")
    parser.add_argument("--centroid-epochs", type=int, help="epochs of centroid fine-tuning (default: as above)")
    parser.add_argument("--finetune-lr", type=float, help="fine-tuning learning rate (default: config's / 10)")
    parser.add_argument("--centroid-lr", type=float, help="centroid learning rate (default: --finetune-lr)")
    parser.add_argument("--share-skip", default="first,heads", help="convs left unshared: comma list of first, heads "
                        "and name patterns, or 'none'")  # fmt: skip
    parser.add_argument("--position-bits", type=int, default=4, help="bits of a relative position (with fillers)")
    parser.add_argument("--float-format", choices=("float16", "float32"), default="float16",
                        help="precision of codebooks, biases and batch norm (float16 rounds them first)")  # fmt: skip
    parser.add_argument("--run-dir", type=Path, help="TensorBoard / fine-tuning folder (default: under log_dir)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--resume", action="store_true", help="continue the killed run in --run-dir (same arguments)")
    arguments = parser.parse_args(argv)
    if arguments.resume and arguments.run_dir is None:
        parser.error("--resume needs --run-dir: the folder of the run to continue")
    if not 0.0 <= arguments.sparsity < 1.0 or not 1 <= arguments.bits <= 8:
        parser.error("--sparsity must be in [0, 1) and --bits in 1..8")
    if arguments.finetune_epochs < 0 or (arguments.centroid_epochs or 0) < 0:
        parser.error("epochs must be >= 0")
    return arguments


def _skip_list(text: str) -> tuple[str, ...]:
    return () if text.strip().lower() == "none" else tuple(part.strip() for part in text.split(",") if part.strip())


def compress(arguments: argparse.Namespace) -> int:
    config = load_train_config(arguments.cfg, arguments.overrides)
    run_dir = arguments.run_dir or config.logging.log_dir / f"compress-{time.strftime('%Y%m%d-%H%M%S')}"
    logger.info("run folder %s (continue a killed run with --run-dir %s --resume)", run_dir, run_dir)
    with InterruptHandler() as interrupt:
        settings = CompressSettings(
            config, arguments.weights, arguments.out, run_dir, sparsity=arguments.sparsity, bits=arguments.bits,
            finetune_epochs=arguments.finetune_epochs, centroid_epochs=arguments.centroid_epochs,
            finetune_lr=arguments.finetune_lr, centroid_lr=arguments.centroid_lr,
            share_skip=_skip_list(arguments.share_skip), position_bits=arguments.position_bits,
            float_format=arguments.float_format, progress=not arguments.no_progress, resume=arguments.resume,
            callbacks=(interrupt,),
        )  # fmt: skip
        try:
            result = compress_model(settings)
        except TrainingInterruptedError as stop:
            return report_interruption(
                stop,
                f"the fine-tuning under {run_dir} keeps its last completed epoch; "
                f"continue with the same arguments and --run-dir {run_dir} --resume",
            )
    report = result.report
    print(report.format_table())
    print()
    print(result.format_stages())
    print(f"wrote {result.out} ({report.file_bytes:,} bytes, {report.ratio:.1f}x smaller than fp32 .weights)")
    print(f"TensorBoard: tensorboard --logdir {run_dir}")
    return 0


def decode(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m yolov3.compress decode", description="compressed file -> plain")
    parser.add_argument("file", type=Path, help="compressed model file (.yolov3c)")
    parser.add_argument("--out", type=Path, help="checkpoint to write (loads with detect, evaluate, train)")
    parser.add_argument("--darknet", type=Path, help="Darknet .weights file to write")
    arguments = parser.parse_args(argv)
    if arguments.out is None and arguments.darknet is None:
        parser.error("give --out and/or --darknet")
    stored = load_compressed(arguments.file)
    if arguments.out is not None:
        save_checkpoint(arguments.out, decoded_checkpoint(stored, str(arguments.file)))
        print(f"wrote {arguments.out}")
    if arguments.darknet is not None:
        if not isinstance(stored.model, DarknetIO):
            raise ValueError(f"{arguments.file}: a {stored.model_spec['name']} model has no Darknet form")
        stored.model.save_darknet_weights(arguments.darknet)
        print(f"wrote {arguments.darknet}")
    return 0


def inspect(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m yolov3.compress inspect", description="print a size report")
    parser.add_argument("file", type=Path, help="compressed model file (.yolov3c)")
    arguments = parser.parse_args(argv)
    header, payload = read_header(arguments.file)
    size = arguments.file.stat().st_size
    print(f"{arguments.file}: {header['model']['name']} {header['model'].get('kwargs', {})}")
    print(report_from_header(header, size, size - len(payload)).format_table())
    return 0


@command
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    configure_logging()
    commands = {"decode": decode, "inspect": inspect}
    if argv and argv[0] in commands:
        return commands[argv[0]](argv[1:])
    return compress(parse_compress_args(argv))
