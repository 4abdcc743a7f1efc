"""One optimization step out of ``accumulate`` micro-batches, with mixed precision done right.

Following PyTorch's AMP notes: each micro-batch's loss is divided by ``accumulate`` and backpropagated
through the ``GradScaler``; after the last micro-batch the gradients are unscaled *before* clipping, the
scaler steps the optimizer (skipping steps with inf/NaN gradients), the scheduler and the EMA advance.
A non-finite loss is never backpropagated: the whole accumulation window is dropped, the weights, the
batch-norm statistics the bad forward pass touched and the optimizer state stay as they were, and the event
is logged with the loss part and batch that caused it.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel

from yolov3.loss.yolo_loss import LossOutput, YoloLoss

logger = logging.getLogger(__name__)

AMP_DTYPES = {"none": None, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class MicroStep:
    """What one micro-batch did: its loss, and whether it completed (or dropped) an optimizer step."""

    loss: LossOutput
    stepped: bool
    dropped: bool


class StepRunner:
    """Runs micro-batches and steps the optimizer every ``accumulate`` of them."""

    def __init__(
        self,
        model: nn.Module,
        criterion: YoloLoss,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        *,
        accumulate: int = 1,
        amp: str = "none",
        grad_clip_norm: float | None = None,
        ema: AveragedModel | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.model, self.criterion, self.optimizer, self.scheduler = model, criterion, optimizer, scheduler
        self.accumulate, self.grad_clip_norm, self.ema = accumulate, grad_clip_norm, ema
        self.device = torch.device(device)
        if amp not in AMP_DTYPES:
            raise ValueError(f"amp must be one of {', '.join(AMP_DTYPES)} (resolve 'auto' first), got {amp!r}")
        self.amp_dtype = AMP_DTYPES[amp]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")
        self.pending = 0  # micro-batches accumulated since the last optimizer step
        self.optimizer_steps = 0
        self.frozen_parameters: list[nn.Parameter] = []  # not updated (e.g. a backbone frozen for N epochs)
        self.after_step: list = []  # callables run after every optimizer step, given the step count

    def micro_step(self, images: torch.Tensor, targets: torch.Tensor, where: str = "", last: bool = False) -> MicroStep:
        """Forward and backward one micro-batch; step after ``accumulate`` of them or when ``last``."""
        input_size = (images.shape[2], images.shape[3])
        closes_window = last or self.pending + 1 >= self.accumulate
        buffers = [buffer.detach().clone() for buffer in self.model.buffers()]  # BN statistics, restored on NaN
        model = self.model
        gradient_sync = (
            model.no_sync()  # DDP: gradients are reduced only on the micro-batch that closes the window
            if isinstance(model, DistributedDataParallel) and not closes_window
            else contextlib.nullcontext()
        )
        with gradient_sync:
            with torch.autocast(
                self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
            ):
                outputs = self.model(images)
            loss = self.criterion([output.float() for output in outputs], targets, input_size)
            if not _finite_everywhere(loss.total):
                self._drop_window(loss, where)
                with torch.no_grad():
                    for buffer, saved in zip(self.model.buffers(), buffers, strict=True):
                        buffer.copy_(saved)
                return MicroStep(loss, stepped=False, dropped=True)
            self.scaler.scale(loss.total / self.accumulate).backward()
        self.pending += 1
        if closes_window:
            self._step()
            return MicroStep(loss, stepped=True, dropped=False)
        return MicroStep(loss, stepped=False, dropped=False)

    def _step(self) -> None:
        for parameter in self.frozen_parameters:
            parameter.grad = None  # optimizers skip parameters without a gradient: no update, no decay
        if self.grad_clip_norm is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(getattr(self.model, "module", self.model))  # unwrap DDP
        self.pending = 0
        self.optimizer_steps += 1
        for hook in self.after_step:
            hook(self.optimizer_steps)

    def _drop_window(self, loss: LossOutput, where: str) -> None:
        parts = {"box": loss.box, "obj": loss.obj, "cls": loss.cls}
        bad = [name for name, value in parts.items() if not torch.isfinite(value)] or ["total"]
        logger.error(
            "non-finite loss (%s) %s: dropping this step (%d accumulated micro-batch(es)); weights unchanged",
            ", ".join(f"{name}={float(parts.get(name, loss.total))}" for name in bad),
            where,
            self.pending,
        )
        self.optimizer.zero_grad(set_to_none=True)
        self.pending = 0

    def gradient_scale(self) -> float:
        """The factor the backward pass applies to a loss: the AMP loss scale (1.0 without fp16) / ``accumulate``."""
        return float(self.scaler.get_scale()) / self.accumulate

    def state_dict(self) -> dict:
        return {"scaler": self.scaler.state_dict(), "optimizer_steps": self.optimizer_steps}

    def load_state_dict(self, state: dict) -> None:
        if state["scaler"] or not self.scaler.is_enabled():  # a run saved without fp16 has no scaler state
            self.scaler.load_state_dict(state["scaler"])
        self.optimizer_steps = state["optimizer_steps"]


def _finite_everywhere(value: torch.Tensor) -> bool:
    """Whether ``value`` is finite on every rank (so that all ranks drop a step together under DDP)."""
    finite = torch.isfinite(value.detach()).to(torch.int32)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    return bool(finite.item())
