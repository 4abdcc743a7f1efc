"""TensorBoard panels of a training run: losses, learning rate, mAP, images with boxes, histograms, PR curves.

Only rank 0 writes; on other ranks every method is a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from yolov3.data.transforms import Normalization, tensor_to_image
from yolov3.evaluation.coco import CocoReport
from yolov3.evaluation.plots import pr_curves
from yolov3.inference.draw import draw_detections

logger = logging.getLogger(__name__)
TRUTH_COLOUR = (255, 255, 255)


class TrainingBoard:
    """A ``SummaryWriter`` with the panels this library logs."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.writer = SummaryWriter(log_dir=str(run_dir)) if enabled else None

    def scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(f"{prefix}{name}", value, step)

    def detections(
        self,
        samples: Sequence[tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]],
        class_names: Sequence[str],
        step: int,
        normalization: Normalization = "darknet",
        score_threshold: float = 0.25,
    ) -> None:
        """Validation images in network pixels: true boxes in white, predictions above the threshold coloured."""
        if self.writer is None or not samples:
            return
        panels = []
        for image, result, truth in samples:
            canvas = tensor_to_image(image, normalization)
            height, width = canvas.shape[:2]
            for _, cx, cy, w, h in truth.tolist():
                top_left = (round((cx - w / 2) * width), round((cy - h / 2) * height))
                bottom_right = (round((cx + w / 2) * width), round((cy + h / 2) * height))
                canvas = _rectangle(canvas, top_left, bottom_right)
            keep = result["scores"] >= score_threshold
            canvas = draw_detections(canvas, {key: value[keep] for key, value in result.items()}, class_names)
            panels.append(torch.from_numpy(canvas).permute(2, 0, 1))  # (H, W, 3) -> (3, H, W)
        self.writer.add_images("val/detections", torch.stack(panels), step)

    def pr_curves(self, report: CocoReport, step: int) -> None:
        """Per-class precision-recall at IoU 0.5 (COCO's 101 recall points)."""
        if self.writer is None:
            return
        curves = pr_curves(report, iou_threshold=0.5)
        rows = [("mean", curves.mean_precision), *zip(curves.names, curves.precision, strict=True)]
        zeros = np.zeros_like(curves.recall)
        for name, precision in rows:
            if np.isnan(precision).all():
                continue
            precision = np.nan_to_num(precision)
            self.writer.add_pr_curve_raw(
                f"pr/{name}", zeros, zeros, zeros, zeros, precision, curves.recall, step, len(curves.recall)
            )

    def histograms(self, model: nn.Module, batch: torch.Tensor, step: int) -> None:
        """Weight histograms, and activation histograms with the share of dead units per activation layer.

        A unit is dead when its pre-activation is negative for every pixel of every image of the batch.
        """
        if self.writer is None:
            return
        for name, parameter in model.named_parameters():
            self.writer.add_histogram(f"weights/{name}", parameter.detach().float().cpu(), step)
        captured: dict[str, torch.Tensor] = {}
        hooks = [
            module.register_forward_hook(lambda _m, inputs, _o, name=name: captured.__setitem__(name, inputs[0]))
            for name, module in model.named_modules()
            if isinstance(module, (nn.LeakyReLU, nn.ReLU, nn.SiLU, nn.Mish))
        ]
        was_training = model.training
        try:
            model.eval()
            with torch.no_grad():
                model(batch)
        finally:
            model.train(was_training)
            for hook in hooks:
                hook.remove()
        dead = {}
        for name, pre_activation in captured.items():
            channels = pre_activation.transpose(0, 1).flatten(1)  # (B, C, H, W) -> (C, B*H*W)
            dead[name] = float((channels.max(dim=1).values < 0).float().mean())
            self.writer.add_histogram(f"activations/{name}", pre_activation.float().cpu(), step)
        if dead:
            self.writer.add_scalar("activations/dead_fraction_mean", float(np.mean(list(dead.values()))), step)
            self.writer.add_histogram("activations/dead_fraction_per_layer", np.array(list(dead.values())), step)

    def hparams(self, hyper_parameters: dict[str, float | int | str | bool], metrics: dict[str, float]) -> None:
        if self.writer is not None:
            self.writer.add_hparams(hyper_parameters, metrics, run_name=".")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _rectangle(canvas: np.ndarray, top_left: tuple[int, int], bottom_right: tuple[int, int]) -> np.ndarray:
    import cv2

    canvas = np.ascontiguousarray(canvas)
    cv2.rectangle(canvas, top_left, bottom_right, TRUTH_COLOUR, 1)
    return canvas
