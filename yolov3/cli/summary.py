"""``python -m yolov3.summary``: print a model's layer table, parameters and BFLOPs, as Darknet does.

Examples::

    python -m yolov3.summary --model yolov3 --img-size 416
    python -m yolov3.summary --cfg darknet/yolov3-tiny.cfg
    python -m yolov3.summary --model yolov3_mobilenet_v3_large --num-classes 20
"""

from __future__ import annotations

import argparse

from torch import nn

from yolov3.cli.runner import command
from yolov3.models import Darknet, create_model, list_models
from yolov3.models.summary import summarize


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m yolov3.summary", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", default="yolov3", help=f"registered model: {', '.join(list_models())}")
    source.add_argument("--cfg", help="a Darknet .cfg file")
    parser.add_argument("--num-classes", type=int, help="classes (registered models only)")
    parser.add_argument("--img-size", type=int, nargs="+", help="input size: one number, or height width")
    return parser.parse_args(argv)


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model: nn.Module
    if args.cfg:
        darknet = Darknet(args.cfg)
        default_size = (darknet.cfg.net.height, darknet.cfg.net.width)
        model = darknet
    else:
        kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
        model = create_model(args.model, **kwargs)
        default_size = (416, 416)
    size = args.img_size or default_size
    height, width = (size[0], size[0]) if len(size) == 1 else (size[0], size[1])
    print(summarize(model, (height, width)).format())
    return 0
