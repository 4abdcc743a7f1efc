"""``DetectionConfig``: the settings that turn decoded rows into detections, shared by every consumer.

One frozen dataclass, checked in one place, is what :func:`~yolov3.inference.postprocess.detect_rows`,
:class:`~yolov3.inference.predictor.Predictor`, the ONNX NMS graph (:mod:`yolov3.export.nms_graph`), the
training validation (:func:`yolov3.evaluation.validate.validate`, from a config's ``eval:`` section) and
``python -m yolov3.evaluate`` take. The rules:

- ``conf_threshold`` in [0, 1): a detection is kept when ``objectness * class probability > conf_threshold``
  (Darknet's ``prob > thresh``), so 1 or more would keep nothing;
- ``iou_threshold`` in [0, 1]: NMS suppresses a box whose IoU with a better one is above it;
- ``max_detections`` at least 1: the most detections kept per image, best first. Zero is refused rather
  than read as "none" or as "no cap" (tools disagree on which it means); ask for a large number for no cap;
- ``multi_label``: one detection per class that passes (what mAP evaluation uses), else the best class only;
- ``class_agnostic``: NMS across classes, else within each class;
- ``output``: ``"standard"`` (the above) or ``"darknet"``: Darknet's own output (every class over the
  threshold, NMS per class, no cap), which ignores ``max_detections``, ``multi_label`` and ``class_agnostic``.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any, Literal

OutputMode = Literal["standard", "darknet"]
OUTPUT_MODES: tuple[OutputMode, ...] = ("standard", "darknet")


@dataclass(frozen=True)
class DetectionConfig:
    """Score threshold, NMS IoU threshold, detections per image, multi-label, class-agnostic NMS, output mode.

    The defaults are ``detect``'s (0.25, 0.45, 300, best class, class-aware NMS); :data:`EVALUATION_DETECTION`
    holds those for mAP. Invalid values raise ``ValueError`` naming the field, the value and what is allowed.
    """

    conf_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 300
    multi_label: bool = False
    class_agnostic: bool = False
    output: OutputMode = "standard"

    def __post_init__(self) -> None:
        for name in ("conf_threshold", "iou_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"{name} must be a number, got {value!r}")
        if not 0.0 <= self.conf_threshold < 1.0:
            raise ValueError(
                f"conf_threshold must be in [0, 1) (a score passes when it is above it), got {self.conf_threshold}"
            )
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1], got {self.iou_threshold}")
        if isinstance(self.max_detections, bool) or not isinstance(self.max_detections, numbers.Integral):
            raise ValueError(f"max_detections must be an integer, got {self.max_detections!r}")
        if self.max_detections < 1:
            raise ValueError(
                f"max_detections must be at least 1 (the most detections kept per image), got {self.max_detections}"
            )
        for name in ("multi_label", "class_agnostic"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.output not in OUTPUT_MODES:
            raise ValueError(f"output must be one of {', '.join(OUTPUT_MODES)}, got {self.output!r}")
        # plain Python numbers from here on (numpy scalars from a sweep, ints from YAML), as JSON metadata needs
        object.__setattr__(self, "conf_threshold", float(self.conf_threshold))
        object.__setattr__(self, "iou_threshold", float(self.iou_threshold))
        object.__setattr__(self, "max_detections", int(self.max_detections))

    def with_values(self, **values: Any) -> DetectionConfig:
        """A copy with the given fields replaced, skipping those given as ``None`` (options left unset); the
        values are checked as the constructor's are."""
        return dataclasses.replace(self, **{name: value for name, value in values.items() if value is not None})


# What mAP is computed with (validation during training, python -m yolov3.evaluate): a low threshold, every
# class that passes, class-aware NMS at 0.6.
EVALUATION_DETECTION = DetectionConfig(conf_threshold=0.001, iou_threshold=0.6, max_detections=300, multi_label=True)
