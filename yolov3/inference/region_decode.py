"""Decoding the heads :mod:`yolov3.inference.decode` does not: [region] (YOLOv2), [Gaussian_yolo] and
[yolo] with ``new_coords=1`` (scaled-YOLOv4, YOLOv7), into the same (B, N, 5+C) rows, so that the same
postprocessing and NMS work on every head type.

Columns: cx, cy, w, h in network-input pixels, objectness, and C class scores; a detection's score is
objectness times a class score, as for [yolo]. Per head (t = raw outputs, (col, row) the cell, (W, H) the grid):

- [region] (pjreddie's ``get_region_box``): cx = (col + sigmoid(tx)) / W, w = exp(tw) * anchor_w / W (anchors
  in grid cells), objectness sigmoid(to), classes softmax (``softmax=1``) or logistic (pjreddie; the fork
  leaves them raw). The fork's CPU ``get_region_detections`` reads the buffer its forward has transposed
  with the untransposed index, so its own CPU detections are not a reference; its forward output is.
  With a class ``tree=`` (YOLO9000), :func:`region_tree_scores`, checked against the fork's ``get_network_boxes``
  (its ``get_region_boxes`` reads the transposed buffer correctly). ``classfix=-1``: an objectness below 0.5 is
  0 (``get_region_boxes``), so every class score of that box is 0 too.
- [Gaussian_yolo] (``get_gaussian_yolo_box``): x, y, sigma_x..sigma_h logistic, w = exp(tw) * anchor_w (pixels),
  ``yolo_point`` shifts the centre; class scores are sigmoid(tc) * (1 - mean of the 4 sigmas).
- [detection] (YOLOv1, ``get_detection_detections``): :mod:`yolov3.inference.detection_decode`.
- [yolo] ``new_coords=1``: the conv before is logistic already; cx = (col + t_x * s - (s - 1) / 2) / W,
  w = 4 * t_w^2 * anchor_w; objectness and classes as given.

:func:`inference_head_specs` gives a cfg-built model one spec per head: a
:class:`~yolov3.models.yolo_head.YoloHeadSpec` for a plain [yolo], a :class:`DarknetHeadSpec` for the others.
:func:`~yolov3.inference.decode.decode_outputs` decodes a :class:`DarknetHeadSpec` with its own ``decode``, so
``Predictor``, ``detect``, ``evaluate`` (validation) and the ONNX NMS graph take either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from yolov3.darknet.cfg import DetectionSection, GaussianYoloSection, RegionSection, Section, YoloSection
from yolov3.darknet.class_tree import (
    ClassTree,
    hierarchy_predictions,
    last_class_above_half,
    load_class_tree,
    tree_softmax,
)
from yolov3.darknet.graph import HEAD_SECTIONS, head_stride
from yolov3.inference.decode import decode_head
from yolov3.inference.detection_decode import decode_detection_head
from yolov3.models.yolo_head import YoloHeadSpec

if TYPE_CHECKING:
    from yolov3.models.darknet import Darknet


def _grid(height: int, width: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.arange(height, device=like.device, dtype=like.dtype)
    columns = torch.arange(width, device=like.device, dtype=like.dtype)
    grid_rows, grid_columns = torch.meshgrid(rows, columns, indexing="ij")  # (H, W) each
    return grid_rows, grid_columns


def decode_special_head(section: Section, output: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
    """One [region] / [Gaussian_yolo] / new_coords [yolo] output (B, A*(K+C), H, W) -> (B, A*H*W, 5+C); a
    [detection] (YOLOv1) output (B, N, 1, 1) -> (B, S*S*num, 5+C) by :mod:`yolov3.inference.detection_decode`."""
    if isinstance(section, DetectionSection):
        return decode_detection_head(section, output, input_size)
    input_height, input_width = input_size
    batch, channels, grid_height, grid_width = output.shape
    if isinstance(section, RegionSection):
        classes = section.classes
        anchors, per_anchor = section.num, 5 + classes
        anchor_wh = torch.tensor(section.anchors_cells, dtype=output.dtype, device=output.device)
        anchor_wh = anchor_wh / torch.tensor([grid_width, grid_height], dtype=output.dtype, device=output.device)
    elif isinstance(section, YoloSection):
        classes = section.classes
        anchors = len(section.anchor_indices)
        per_anchor = classes + (9 if isinstance(section, GaussianYoloSection) else 5)
        anchor_wh = torch.tensor(section.anchors_px, dtype=output.dtype, device=output.device)
        anchor_wh = anchor_wh / torch.tensor([input_width, input_height], dtype=output.dtype, device=output.device)
    else:
        raise TypeError(f"{section.where()} is not a detection head")
    if channels != anchors * per_anchor:
        raise ValueError(f"{section.where()} expects {anchors}*{per_anchor} channels, got {channels}")
    # (B, A*(K+C), H, W) -> (B, A, H, W, K+C)
    t = output.reshape(batch, anchors, per_anchor, grid_height, grid_width).permute(0, 1, 3, 4, 2)
    grid_rows, grid_columns = _grid(grid_height, grid_width, output)
    anchor_wh = anchor_wh.reshape(1, anchors, 1, 1, 2)  # (A, 2) -> (1, A, 1, 1, 2), fraction of the input
    if isinstance(section, RegionSection):
        offset_x, offset_y = t[..., 0].sigmoid(), t[..., 1].sigmoid()
        size_wh = t[..., 2:4].exp() * anchor_wh
        objectness = t[..., 4].sigmoid()
        if section.classfix == -1:  # the fork's get_region_boxes: an objectness below 0.5 becomes 0
            objectness = torch.where(objectness < 0.5, 0.0, objectness)
        tree = load_class_tree(section)
        if tree is not None:
            scores = region_tree_scores(t[..., 5:], objectness, tree)
        else:
            scores = t[..., 5:].softmax(-1) if section.softmax else t[..., 5:].sigmoid()
    elif isinstance(section, GaussianYoloSection):
        scale = section.scale_x_y
        offset_x = t[..., 0].sigmoid() * scale - 0.5 * (scale - 1)
        offset_y = t[..., 2].sigmoid() * scale - 0.5 * (scale - 1)
        size_wh = torch.stack((t[..., 4], t[..., 6]), -1).exp() * anchor_wh
        uncertainty = t[..., [1, 3, 5, 7]].sigmoid().mean(-1, keepdim=True)  # (B, A, H, W, 1)
        objectness = t[..., 8].sigmoid()
        scores = t[..., 9:].sigmoid() * (1.0 - uncertainty)
    else:
        if not section.new_coords:
            raise ValueError(f"{section.where()} is a plain [yolo] head: decode it with yolov3.inference.decode")
        scale = section.scale_x_y
        offset_x = t[..., 0] * scale - 0.5 * (scale - 1)
        offset_y = t[..., 1] * scale - 0.5 * (scale - 1)
        size_wh = 4.0 * t[..., 2:4] ** 2 * anchor_wh
        objectness, scores = t[..., 4], t[..., 5:]
    centers_x = (grid_columns + offset_x) / grid_width  # (B, A, H, W), fraction of the input
    centers_y = (grid_rows + offset_y) / grid_height
    if isinstance(section, GaussianYoloSection) and section.yolo_point != "center":
        sign = 1.0 if section.yolo_point == "left_top" else -1.0
        centers_x = centers_x + sign * size_wh[..., 0] / 2
        centers_y = centers_y + sign * size_wh[..., 1] / 2
    pixels = torch.tensor([input_width, input_height], dtype=output.dtype, device=output.device)
    boxes = torch.cat((torch.stack((centers_x, centers_y), -1) * pixels, size_wh * pixels), -1)  # (B, A, H, W, 4)
    decoded = torch.cat((boxes, objectness.unsqueeze(-1), scores), -1)  # (B, A, H, W, 5+C)
    # (B, A, H, W, 5+C) -> (B, A*H*W, 5+C)
    return decoded.reshape(batch, anchors * grid_height * grid_width, 5 + classes)


def region_tree_scores(logits: torch.Tensor, objectness: torch.Tensor, tree: ClassTree) -> torch.Tensor:
    """A [region] head with a class tree, as the fork's ``get_region_boxes`` (no ``map``): the tree softmax, each
    class times its ancestors (``hierarchy_predictions``), only the last class above 0.5 kept. Darknet's
    probability is that product alone, kept where the objectness passes the threshold; as a class score here
    (``objectness * score`` is the detection's score) it is the product divided by the objectness.
    (..., C) logits and (...) objectness -> (..., C)."""
    products = last_class_above_half(hierarchy_predictions(tree_softmax(logits, tree), tree))
    objectness = objectness.unsqueeze(-1)  # (...) -> (..., 1)
    return torch.where(objectness > 0, products / objectness.clamp(min=torch.finfo(objectness.dtype).tiny), 0.0)


def needs_special_decode(section: Section) -> bool:
    """True for the heads this module decodes (everything but a plain [yolo])."""
    if isinstance(section, (RegionSection, GaussianYoloSection, DetectionSection)):
        return True
    return isinstance(section, YoloSection) and bool(section.new_coords)


@dataclass(frozen=True)
class DarknetHeadSpec:
    """A [region], [Gaussian_yolo], new_coords [yolo] or [detection] head at ``stride`` (network pixels per
    cell), as a :class:`~yolov3.models.yolo_head.YoloHeadSpec` describes a plain [yolo] head; ``decode`` is
    :func:`decode_special_head`. For inference only: the trainer's loss takes plain [yolo] heads.

    A [detection] head's output is flat, (B, N, 1, 1): its stride is the whole [net] size (square), its
    ``out_channels`` N and its ``num_anchors`` the boxes per cell."""

    section: RegionSection | YoloSection | DetectionSection
    stride: int

    def __post_init__(self) -> None:
        if not needs_special_decode(self.section):
            raise ValueError(f"{self.section.where()} is a plain [yolo] head: describe it with a YoloHeadSpec")

    @property
    def kind(self) -> str:
        """``region``, ``Gaussian_yolo``, ``detection`` or ``yolo_new_coords``."""
        if isinstance(self.section, (RegionSection, GaussianYoloSection, DetectionSection)):
            return self.section.KIND
        return "yolo_new_coords"

    @property
    def num_classes(self) -> int:
        return self.section.classes

    @property
    def num_anchors(self) -> int:
        if isinstance(self.section, (RegionSection, DetectionSection)):
            return self.section.num
        return len(self.section.anchor_indices)

    @property
    def out_channels(self) -> int:
        if isinstance(self.section, DetectionSection):
            return self.section.inputs
        per_anchor = 9 if isinstance(self.section, GaussianYoloSection) else 5
        return self.num_anchors * (per_anchor + self.num_classes)

    def decode(self, output: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
        """(B, A*(K+C), H, W) -> (B, A*H*W, 5+C), as :func:`decode_special_head`."""
        return decode_special_head(self.section, output, input_size)

    def describe(self) -> dict[str, Any]:
        """JSON-ready: kind, stride, classes, anchors (grid cells for [region], input pixels otherwise), and the
        keys that steer decoding."""
        section = self.section
        description: dict[str, Any] = {"kind": self.kind, "stride": self.stride, "num_classes": self.num_classes}
        if isinstance(section, RegionSection):
            description.update(anchors_cells=[list(pair) for pair in section.anchors_cells], softmax=section.softmax)
            if section.classfix == -1:
                description["classfix"] = section.classfix
        elif isinstance(section, DetectionSection):
            description.update(side=section.side, num=section.num, softmax=section.softmax, sqrt=section.sqrt)
        else:
            description.update(anchors_px=[list(pair) for pair in section.anchors_px], scale_x_y=section.scale_x_y)
            if isinstance(section, GaussianYoloSection):
                description["yolo_point"] = section.yolo_point
        return description


def inference_head_specs(model: Darknet) -> list[YoloHeadSpec | DarknetHeadSpec]:
    """One spec per head of a cfg-built model, in cfg order, with its stride at the cfg's [net] size.

    Plain [yolo] heads get a ``YoloHeadSpec`` (what :attr:`Darknet.head_specs` gives), the others a
    :class:`DarknetHeadSpec`; raises ``CfgError`` (a ``ValueError``) naming the layer when a grid does not
    divide the input by one integer stride.
    """
    net_height, net_width = model.cfg.net.height, model.cfg.net.width
    specs: list[YoloHeadSpec | DarknetHeadSpec] = []
    for node in model.nodes:
        section = node.section
        if not isinstance(section, HEAD_SECTIONS):
            continue
        stride = head_stride(node, net_height, net_width)
        if needs_special_decode(section):
            specs.append(DarknetHeadSpec(section, stride))
        else:
            assert isinstance(section, YoloSection)  # every [region] needs the special decode
            specs.append(YoloHeadSpec(section.anchors_px, stride, section.classes, section.scale_x_y))
    return specs


def decode_head_sections(
    sections: list[Section], outputs: list[torch.Tensor], input_size: tuple[int, int]
) -> torch.Tensor:
    """Every head of a cfg-built model (sections in cfg order, paired with its outputs) -> (B, N, 5+C);
    plain [yolo] heads go through :func:`yolov3.inference.decode.decode_head`."""
    if len(sections) != len(outputs):
        raise ValueError(f"{len(outputs)} head outputs but {len(sections)} head sections")
    decoded = []
    for section, output in zip(sections, outputs, strict=True):
        if needs_special_decode(section):
            decoded.append(decode_special_head(section, output, input_size))
        else:
            if not isinstance(section, YoloSection):
                raise TypeError(f"{section.where()} is not a detection head")
            spec = YoloHeadSpec(
                section.anchors_px, input_size[0] // output.shape[2], section.classes, section.scale_x_y
            )
            decoded.append(decode_head(output, spec, input_size))
    return torch.cat(decoded, dim=1)
