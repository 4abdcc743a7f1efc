"""Inference: decode raw head outputs, threshold and NMS, preprocess images, predict, draw.

- :func:`~yolov3.inference.decode.decode_outputs` turns raw heads (B, A*(5+C), H, W) into (B, N, 5+C) rows
  (cx, cy, w, h in input pixels, objectness, class probabilities), exactly as Darknet's [yolo] layer.
- :func:`~yolov3.inference.postprocess.postprocess` keeps rows whose objectness * class probability passes a
  threshold and runs torchvision's NMS: one ``{"boxes", "scores", "labels"}`` dict per image.
- :class:`~yolov3.inference.predictor.Predictor` does it all for a list of RGB images, boxes in their pixels.
"""

from yolov3.inference.decode import decode_head, decode_outputs
from yolov3.inference.draw import draw_detections
from yolov3.inference.postprocess import postprocess
from yolov3.inference.predictor import Predictor
from yolov3.inference.preprocess import Preprocessing, preprocess

__all__ = [
    "Predictor",
    "Preprocessing",
    "decode_head",
    "decode_outputs",
    "draw_detections",
    "postprocess",
    "preprocess",
]
