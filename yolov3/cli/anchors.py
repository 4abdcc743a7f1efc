"""``python -m yolov3.anchors``: anchor boxes for a dataset by k-means on box shapes (YOLOv2's method).

Box shapes (width, height) are taken as each image is letterboxed into ``--img-size``, and clustered with
the distance ``1 - IoU`` of boxes aligned at a corner, so large and small boxes weigh alike
(:mod:`yolov3.loss.anchors`). Prints the anchors sorted by area and the mean best IoU of the boxes with the
current anchors (Darknet's COCO ones by default) and with the new ones; writes an ``anchors_px:`` YAML
snippet, a Darknet ``anchors=`` line and a plot of the box shapes with the centroids to ``--out``::

    python -m yolov3.anchors --data data/shapes.yaml -n 9 --img-size 416 --out runs/anchors
"""

from __future__ import annotations

import argparse
from pathlib import Path

from yolov3.cli.runner import command, configure_logging
from yolov3.data.dataset_config import build_dataset, load_dataset_config
from yolov3.loss.anchors import anchors_for_dataset, read_current_anchors, write_anchor_files


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m yolov3.anchors", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="dataset YAML")
    parser.add_argument("-n", "--num-anchors", type=int, default=9)
    parser.add_argument("--img-size", type=int, default=416, help="network input size the anchors are for")
    parser.add_argument("--split", choices=("train", "val"), default="train")
    parser.add_argument("--anchors", help="current anchors: 'w,h, w,h, ...' or a YAML with anchors_px")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--max-boxes", type=int, default=500000, help="cluster a random subset of this size")
    parser.add_argument("--out", type=Path, default=Path("anchors"), help="output folder")
    return parser.parse_args(argv)


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    current = read_current_anchors(args.anchors)
    dataset = build_dataset(load_dataset_config(args.data), args.split)
    result = anchors_for_dataset(
        dataset, args.num_anchors, args.img_size, current, args.seed, args.restarts, args.max_boxes
    )
    written = write_anchor_files(result, args.out, args.data, args.img_size)
    print(f"{len(result.boxes_wh)} boxes from {len(dataset)} images, letterboxed into {args.img_size}x{args.img_size}")
    print("anchors (w, h), smallest first: " + "  ".join(f"{w:g}x{h:g}" for w, h in result.anchors))
    print(f"mean best IoU: current anchors {result.mean_iou_current:.4f} -> k-means anchors {result.mean_iou_new:.4f}")
    print(result.yaml_snippet.rstrip())
    print(result.darknet_line)
    print(f"wrote {', '.join(str(path) for path in written)}")
    return 0
