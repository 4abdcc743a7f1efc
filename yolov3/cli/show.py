"""``python -m yolov3.data.show``: look at a dataset as the network will see it, and at its statistics.

Writes into ``--out``:

- ``batch.png``: a grid of one augmented training batch (``--no-augment``: letterbox only) with its boxes
  and class names, exactly as the training loader produces it (mosaic, multi-scale off, ``--image-size``);
- ``statistics.png``: boxes per class as a log-scale bar plot and the histogram of box widths and heights in
  pixels of the original images;
- ``statistics.md``: the same numbers as a table, also printed.

See :mod:`yolov3.data.inspection`. Usage::

    python -m yolov3.data.show --data data/shapes/data.yaml --augment augment.yaml --out logs/show
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from yolov3.cli.runner import command, configure_logging
from yolov3.data.inspection import format_statistics, load_dataset, show
from yolov3.data.transforms import load_augment_config


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m yolov3.data.show", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="dataset YAML")
    parser.add_argument("--split", default="train", choices=("train", "val"), help="split to show (default: train)")
    parser.add_argument("--augment", default=None, help="augmentation YAML (default: the built-in augmentation)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="augmentation key=value")
    parser.add_argument("--out", default="logs/show", help="output folder (default: logs/show)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=416)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-augment", action="store_true", help="show the validation letterbox only")
    parser.add_argument("--stats-limit", type=int, default=None, help="count statistics over the first N images")
    return parser.parse_args(argv)


@command
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    augment = load_augment_config(args.augment, args.overrides)
    dataset = load_dataset(args.data, args.split)
    statistics, paths = show(
        dataset,
        augment,
        args.out,
        args.batch_size,
        args.image_size,
        not args.no_augment,
        args.seed,
        args.stats_limit,
    )
    print(format_statistics(statistics))
    print("\n" + "\n".join(f"wrote {path}" for path in paths.values()))
    return 0
