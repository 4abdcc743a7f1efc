"""``python -m yolov3.data.synthetic``: write the synthetic shapes dataset as COCO JSON, Pascal VOC XML and YOLO txt.

Deterministic by seed; reuses a dataset under ``--out`` made with the same options (``--force`` regenerates).
See :mod:`yolov3.data.shapes_dataset` for the layout::

    python -m yolov3.data.synthetic --out data/shapes --num-train 512 --num-val 128 --image-size 256
"""

from __future__ import annotations

import argparse
from pathlib import Path

from yolov3.cli.runner import command, configure_logging
from yolov3.data.shapes import SHAPE_NAMES
from yolov3.data.shapes_dataset import (
    SYNTHETIC_FORMATS,
    SyntheticOptions,
    ensure_shapes_dataset,
    write_shapes_dataset,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m yolov3.data.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--num-train", type=int, default=256)
    parser.add_argument("--num-val", type=int, default=64)
    parser.add_argument("--image-size", type=int, nargs="+", default=[256], help="one number, or height width")
    parser.add_argument("--min-image-size", type=int, nargs="+", help="vary sizes between this and --image-size")
    parser.add_argument("--classes", nargs="+", default=["circle", "square", "triangle"], choices=SHAPE_NAMES)
    parser.add_argument("--min-objects", type=int, default=1)
    parser.add_argument("--max-objects", type=int, default=6)
    parser.add_argument("--background", choices=("textured", "plain"), default="textured")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--formats", nargs="+", default=list(SYNTHETIC_FORMATS), choices=SYNTHETIC_FORMATS)
    parser.add_argument("--force", action="store_true", help="regenerate even when the marker matches")
    return parser.parse_args(argv)


def _pair(values: list[int]) -> tuple[int, int]:
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    options = SyntheticOptions(
        num_train=args.num_train,
        num_val=args.num_val,
        image_size=_pair(args.image_size),
        min_image_size=None if args.min_image_size is None else _pair(args.min_image_size),
        classes=tuple(args.classes),
        min_objects=args.min_objects,
        max_objects=args.max_objects,
        background=args.background,
        seed=args.seed,
        formats=tuple(args.formats),
        read_as=args.formats[0],
    )
    write = write_shapes_dataset if args.force else ensure_shapes_dataset
    layout = write(args.out, options)
    print(f"{options.num_train} train + {options.num_val} val images in {layout.root} ({', '.join(options.formats)})")
    if "yolo" in options.formats:
        print(f"YOLO dataset YAML: {layout.yolo_yaml}")
    return 0
