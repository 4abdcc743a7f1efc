"""Models: the cfg-built :class:`Darknet` and the native Darknet-53, YOLOv3 and YOLOv3-tiny.

Every model's ``forward(x)`` takes (B, 3, H, W) RGB in 0..1 and returns a list of raw head outputs,
one (B, A*(5+C), H/s, W/s) tensor per detection scale (classifiers: ``[logits]``), in train and eval
mode alike. Decoding, NMS and the loss live outside the models.
"""

from yolov3.models.darknet import Darknet
from yolov3.models.darknet53 import Darknet53, Darknet53Classifier, Darknet53Config
from yolov3.models.registry import (
    MODELS,
    create_model,
    darknet53,
    darknet53_test,
    darknet_cfg,
    list_models,
    yolov3,
    yolov3_mobilenet_v3_large,
    yolov3_mobilenet_v3_small,
    yolov3_spp,
    yolov3_test,
    yolov3_tiny,
    yolov3_tiny_test,
)
from yolov3.models.yolo_head import YoloHeadSpec
from yolov3.models.yolov3 import YOLOv3, YOLOv3Config
from yolov3.models.yolov3_tiny import YOLOv3Tiny, YOLOv3TinyConfig

__all__ = [
    "MODELS",
    "Darknet",
    "Darknet53",
    "Darknet53Classifier",
    "Darknet53Config",
    "YOLOv3",
    "YOLOv3Config",
    "YOLOv3Tiny",
    "YOLOv3TinyConfig",
    "YoloHeadSpec",
    "create_model",
    "darknet53",
    "darknet53_test",
    "darknet_cfg",
    "list_models",
    "yolov3",
    "yolov3_mobilenet_v3_large",
    "yolov3_mobilenet_v3_small",
    "yolov3_spp",
    "yolov3_test",
    "yolov3_tiny",
    "yolov3_tiny_test",
]
