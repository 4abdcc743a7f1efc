"""Weights from a checkpoint into a model: plain and pruned states, and the model a checkpoint describes."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import prune

from yolov3.checkpoint.layout import Checkpoint, CheckpointError


def model_from_checkpoint(checkpoint: Checkpoint, use_ema: bool = True, keep_pruning: bool = False) -> nn.Module:
    """Rebuild the model a checkpoint describes and load its (EMA, if present) weights.

    A pruned state's masks are made permanent (``prune.remove``: a plain model with exact zeros, ready for
    inference, BN fusion and export) unless ``keep_pruning``, which keeps the reparametrization to train on.
    """
    if checkpoint.model is None or checkpoint.model_state is None:
        raise CheckpointError("checkpoint lacks 'model' {name, kwargs} or 'model_state': it cannot build a model")
    model = checkpoint.model.build()
    load_model_state(model, checkpoint.inference_state if use_ema else checkpoint.model_state)
    if not keep_pruning:
        for module in model.modules():
            for hook in list(module._forward_pre_hooks.values()):
                if isinstance(hook, prune.BasePruningMethod):
                    prune.remove(module, hook._tensor_name)
    return model


def load_model_state(model: nn.Module, state: Mapping[str, torch.Tensor] | None) -> None:
    """``model.load_state_dict(state)`` (strict), for pruned states too.

    For every ``<module>.<tensor>_orig`` / ``<module>.<tensor>_mask`` pair in ``state`` that ``model`` does not
    yet have, the pruning reparametrization is created first (``prune.identity``, which keeps the parameter
    object, so an optimizer built on the model still holds it); after loading, pruned tensors are recomputed
    from ``orig * mask``, as the pruning pre-hooks would before a forward.
    """
    if state is None:
        raise CheckpointError(f"no weights to load into {type(model).__name__}: the checkpoint's state is missing")
    modules = dict(model.named_modules())
    for key in state:
        if not key.endswith("_mask") or f"{key.removesuffix('_mask')}_orig" not in state:
            continue
        module_name, _, tensor = key.removesuffix("_mask").rpartition(".")
        module = modules.get(module_name)
        if module is not None and not hasattr(module, f"{tensor}_orig"):
            prune.identity(module, tensor)
    model.load_state_dict(state)
    with torch.no_grad():
        for module in model.modules():
            for hook in list(module._forward_pre_hooks.values()):
                if isinstance(hook, prune.BasePruningMethod):
                    hook(module, ())  # weight = weight_orig * weight_mask, now
