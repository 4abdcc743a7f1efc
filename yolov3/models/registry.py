"""Model builders by name, timm-style: ``create_model("yolov3", num_classes=20)``, ``list_models()``.

Every architecture has a ``*_test`` variant: the same code with a few channels and blocks, for tests
that must run in seconds on a CPU.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from torch import nn

from yolov3.models.darknet import Darknet
from yolov3.models.darknet53 import Darknet53Classifier, Darknet53Config
from yolov3.models.yolov3 import YOLOv3, YOLOv3Config
from yolov3.models.yolov3_tiny import YOLOv3Tiny, YOLOv3TinyConfig

_TEST_DARKNET53 = Darknet53Config(width_multiple=1 / 16, stage_depths=(1, 1, 1, 1, 1))


def darknet53(num_classes: int = 1000, **config: Any) -> Darknet53Classifier:
    """Darknet-53 ImageNet classifier (darknet53.cfg); ``forward`` returns ``[logits]``."""
    return Darknet53Classifier(num_classes, Darknet53Config(**config))


def darknet53_test(num_classes: int = 10, **config: Any) -> Darknet53Classifier:
    """Darknet-53 with 1/16 of the channels and one block per stage."""
    return Darknet53Classifier(num_classes, dataclasses.replace(_TEST_DARKNET53, **config))


def yolov3(num_classes: int = 80, **config: Any) -> YOLOv3:
    """YOLOv3 with a Darknet-53 backbone (yolov3.cfg; yolov3-voc.cfg with ``num_classes=20``)."""
    return YOLOv3(YOLOv3Config(num_classes=num_classes, **config))


def yolov3_spp(num_classes: int = 80, **config: Any) -> YOLOv3:
    """YOLOv3 with spatial pyramid pooling in the stride-32 block (yolov3-spp.cfg)."""
    return YOLOv3(YOLOv3Config(num_classes=num_classes, spp=True, **config))


def yolov3_mobilenet_v3_large(num_classes: int = 80, **config: Any) -> YOLOv3:
    """YOLOv3 neck and heads on torchvision's MobileNetV3-Large features."""
    return YOLOv3(YOLOv3Config(num_classes=num_classes, backbone="mobilenet_v3_large", **config))


def yolov3_mobilenet_v3_small(num_classes: int = 80, **config: Any) -> YOLOv3:
    """YOLOv3 neck and heads on torchvision's MobileNetV3-Small features."""
    return YOLOv3(YOLOv3Config(num_classes=num_classes, backbone="mobilenet_v3_small", **config))


def yolov3_test(num_classes: int = 3, **config: Any) -> YOLOv3:
    """YOLOv3 with 1/16 of the channels and one residual block per stage (about 0.3 M parameters)."""
    config.setdefault("darknet53", _TEST_DARKNET53)
    return YOLOv3(YOLOv3Config(num_classes=num_classes, **config))


def yolov3_tiny(num_classes: int = 80, **config: Any) -> YOLOv3Tiny:
    """YOLOv3-tiny (yolov3-tiny.cfg)."""
    return YOLOv3Tiny(YOLOv3TinyConfig(num_classes=num_classes, **config))


def yolov3_tiny_test(num_classes: int = 3, **config: Any) -> YOLOv3Tiny:
    """YOLOv3-tiny with 1/16 of the channels."""
    config.setdefault("width_multiple", 1 / 16)
    return YOLOv3Tiny(YOLOv3TinyConfig(num_classes=num_classes, **config))


def darknet_cfg(num_classes: int | None = None, cfg: str | None = None, weights: str | None = None) -> Darknet:
    """A detector from a Darknet ``cfg`` (a channel-pruned one, say), optionally with its ``.weights``.

    For training from a cfg: ``model: {name: darknet_cfg, options: {cfg: pruned.cfg, weights: pruned.weights}}``;
    ``num_classes`` (the trainer passes the dataset's) must match the cfg's [yolo] layers.
    """
    if cfg is None:
        raise ValueError("darknet_cfg needs cfg=<path to a Darknet .cfg>")
    model = Darknet(cfg)
    classes = sorted({section.classes for section in model.yolo_sections})
    if not classes:
        raise ValueError(f"{cfg}: has no [yolo] layer; darknet_cfg builds detectors")
    if num_classes is not None and classes != [num_classes]:
        raise ValueError(f"{cfg}: its [yolo] layers have classes={classes}, but num_classes={num_classes} was asked")
    if weights is not None:
        model.load_darknet_weights(weights)
    return model


MODELS: MappingProxyType[str, Callable[..., nn.Module]] = MappingProxyType(
    {
        builder.__name__: builder
        for builder in (
            darknet_cfg,
            darknet53,
            darknet53_test,
            yolov3,
            yolov3_spp,
            yolov3_mobilenet_v3_large,
            yolov3_mobilenet_v3_small,
            yolov3_test,
            yolov3_tiny,
            yolov3_tiny_test,
        )
    }
)


class UnknownModelError(KeyError, ValueError):
    """A model name that is not registered. A ``KeyError`` (a failed look-up) and a ``ValueError`` (bad input, as
    every error type of the library); its ``str()`` is the message, without ``KeyError``'s quotes."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def list_models() -> list[str]:
    return sorted(MODELS)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model; unknown names raise :class:`UnknownModelError` (a ``KeyError``) with the closest
    known name."""
    if name not in MODELS:
        hint = difflib.get_close_matches(name, list(MODELS), n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        raise UnknownModelError(f"unknown model {name!r}{suggestion} Known models: {', '.join(list_models())}")
    return MODELS[name](**kwargs)
