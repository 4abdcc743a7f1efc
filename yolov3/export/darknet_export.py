"""Export back to Darknet: a ``.cfg`` and its ``.weights`` (and a ``.names`` file when the classes are known).

Any model with a Darknet form (cfg-built :class:`~yolov3.models.Darknet`, native YOLOv3, YOLOv3-SPP,
YOLOv3-tiny) is written with :meth:`~yolov3.models.darknet_io.DarknetIO.save_darknet_cfg` and
:meth:`~yolov3.models.darknet_io.DarknetIO.save_darknet_weights`; the pair loads in Darknet, in OpenCV and in
``Darknet(cfg)`` here with the same outputs. Models without one (the MobileNetV3 backbones) are an error.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from yolov3.atomic import write_text_atomic
from yolov3.darknet.cfg import format_cfg
from yolov3.export.onnx_export import ExportError
from yolov3.models.darknet_io import DarknetIO

logger = logging.getLogger(__name__)

DARKNET_SUFFIXES = (".weights", ".cfg", ".names")


@dataclass(frozen=True)
class DarknetFiles:
    """The files of one Darknet export; ``names`` is None when no class names were written."""

    cfg: Path
    weights: Path
    names: Path | None


def darknet_paths(out: str | os.PathLike) -> tuple[Path, Path, Path]:
    """``model.weights``, ``model.cfg`` or plain ``model`` -> (model.cfg, model.weights, model.names)."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix.lower() in DARKNET_SUFFIXES else out
    return (stem.parent / f"{stem.name}.cfg", stem.parent / f"{stem.name}.weights", stem.parent / f"{stem.name}.names")


def export_darknet(
    model: nn.Module,
    out: str | os.PathLike,
    input_size: tuple[int, int] | None = None,
    class_names: Sequence[str] | None = None,
    header: str = "",
) -> DarknetFiles:
    """Write ``model`` as Darknet ``.cfg`` + ``.weights`` beside ``out`` (and ``.names`` with ``class_names``).

    ``input_size`` (height, width) replaces the [net] width and height; ``header`` becomes ``#`` comment lines
    at the top of the cfg. Raises :class:`ExportError` for a model without a Darknet form.
    """
    cfg_path, weights_path, names_path = darknet_paths(out)
    if not isinstance(model, DarknetIO):
        raise ExportError(f"{type(model).__name__} has no Darknet form; cannot write {cfg_path}")
    try:
        if input_size is None:
            model.save_darknet_cfg(cfg_path, header=header)
        else:
            cfg = model.to_darknet_cfg()
            height, width = input_size
            cfg = dataclasses.replace(cfg, net=dataclasses.replace(cfg.net, height=height, width=width))
            write_text_atomic(cfg_path, format_cfg(cfg, header=header))
    except NotImplementedError as error:
        raise ExportError(f"{error}; cannot write {cfg_path}") from error
    model.save_darknet_weights(weights_path)
    written_names = None
    if class_names is not None:
        write_text_atomic(names_path, "".join(f"{name}\n" for name in class_names))
        written_names = names_path
    logger.info("wrote %s and %s", cfg_path, weights_path)
    return DarknetFiles(cfg_path, weights_path, written_names)
