"""Export for deployment: ONNX (raw heads or with NMS in the graph; fp32, fp16, int8) and back to Darknet.

- :func:`~yolov3.export.onnx_export.export_onnx` writes the raw heads ``head_0 ..``, or with
  :class:`~yolov3.export.nms_graph.NmsOptions` the whole pipeline with fixed-shape outputs ``boxes``,
  ``scores``, ``labels``, ``num_detections``; dynamic batch; checked with ``onnx.checker``.
- :func:`~yolov3.export.quantize.convert_to_fp16` and :func:`~yolov3.export.quantize.quantize_int8` (onnxruntime's
  converter and static quantizer; calibration images from :func:`~yolov3.export.quantize.select_calibration_images`)
  convert raw-heads graphs; :func:`~yolov3.export.onnx_export.attach_postprocess` then appends the float32
  decoding and NMS of :func:`~yolov3.export.onnx_export.export_postprocess`.
- :func:`~yolov3.export.darknet_export.export_darknet` writes ``.cfg`` + ``.weights`` (+ ``.names``).
- ``python -m yolov3.export`` (:mod:`yolov3.cli.export`) does any of these from a checkpoint or Darknet weights.
"""

from yolov3.export.darknet_export import DarknetFiles, export_darknet
from yolov3.export.nms_graph import DetectionGraph, DetectionPostprocess, NmsOptions
from yolov3.export.onnx_export import (
    ExportError,
    attach_postprocess,
    export_onnx,
    export_postprocess,
    inference_metadata,
)
from yolov3.export.quantize import CalibrationImages, convert_to_fp16, quantize_int8, select_calibration_images

__all__ = [
    "CalibrationImages",
    "DarknetFiles",
    "DetectionGraph",
    "DetectionPostprocess",
    "ExportError",
    "NmsOptions",
    "attach_postprocess",
    "convert_to_fp16",
    "export_darknet",
    "export_onnx",
    "export_postprocess",
    "inference_metadata",
    "quantize_int8",
    "select_calibration_images",
]
