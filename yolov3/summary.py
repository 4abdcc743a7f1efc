"""``python -m yolov3.summary``: print a model's layer table, parameters and BFLOPs, as Darknet does.

Examples::

    python -m yolov3.summary --model yolov3 --img-size 416
    python -m yolov3.summary --cfg darknet/yolov3-tiny.cfg
    python -m yolov3.summary --model yolov3_mobilenet_v3_large --num-classes 20
"""

from __future__ import annotations

import argparse
import sys

from yolov3.darknet.cfg import CfgError
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.cfg:
            model = Darknet(args.cfg)
            default_size = (model.cfg.net.height, model.cfg.net.width)
        else:
            kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
            model = create_model(args.model, **kwargs)
            default_size = (416, 416)
    except (CfgError, KeyError, ValueError) as error:
        print(f"error: {error.args[0] if isinstance(error, KeyError) else error}", file=sys.stderr)
        return 1
    size = args.img_size or default_size
    height, width = (size[0], size[0]) if len(size) == 1 else (size[0], size[1])
    print(summarize(model, (height, width)).format())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
