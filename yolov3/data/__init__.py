"""Data: image reading, letterboxing, datasets, augmentation, batching.

Conventions used everywhere:

- Images are ``numpy`` arrays (H, W, 3), ``uint8``, RGB, until they become tensors (3, H, W), float 0..1.
- A :class:`~yolov3.data.sample.DetectionSample` holds boxes as ``boxes_xyxy`` in pixels of its image.
- A batch's targets are one tensor (N, 6): (image index in batch, class, cx, cy, w, h), box coordinates
  normalized to 0..1 by the batch image's width and height.
"""
