"""Conv + BatchNorm folding for inference: one conv with a bias instead of a conv and a BatchNorm.

In eval mode a BatchNorm is a fixed per-channel affine map, so it folds into the conv before it::

    scale = gamma / sqrt(running_var + eps)
    w' = w * scale                      (per output channel)
    b' = beta + (b - running_mean) * scale   (b = the conv bias, 0 if it has none)

The fused network computes the same function (up to float rounding) with one pass over each feature
map fewer. It is for inference only: the BatchNorms are gone, so there is nothing left to train them,
and training the fused convs would not be the same as training the original network.
"""

from __future__ import annotations

import copy
import dataclasses
import logging

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.nn.utils.prune import BasePruningMethod
from torch.nn.utils.prune import remove as remove_pruning

from yolov3.darknet.cfg import ConvolutionalSection
from yolov3.darknet.graph import build_graph
from yolov3.models.darknet import Darknet
from yolov3.models.layers import ConvBNAct

logger = logging.getLogger(__name__)


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """A deep copy of ``model``, in eval mode, with every :class:`ConvBNAct`'s BatchNorm folded into its conv.

    Each fused block's ``conv`` gets the folded weights and a bias, and its ``bn`` becomes ``None``, so
    the block exports as a ``[convolutional]`` with ``batch_normalize=0``. A cfg-built :class:`Darknet`
    gets its ``cfg`` rewritten to match, so the fused copy's cfg text and ``.weights`` agree with each
    other. BatchNorms outside a ``ConvBNAct`` (e.g. in a torchvision MobileNet backbone) are left as
    they are. ``model`` itself is not modified.

    Unstructured pruning masks (``torch.nn.utils.prune``) are made permanent in the copy first.

    The result is for inference only: it has no BatchNorm left to train (fine-tune the original and
    fuse again instead).
    """
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():  # pruning masks become permanent zeros first (torch.nn.utils.prune)
        hooks = [hook for hook in module._forward_pre_hooks.values() if isinstance(hook, BasePruningMethod)]
        for name in [hook._tensor_name for hook in hooks]:
            remove_pruning(module, name)
    fused_count = 0
    for module in fused.modules():
        if isinstance(module, ConvBNAct) and module.bn is not None:
            module.conv = fuse_conv_bn_eval(module.conv, module.bn)
            module.bn = None
            fused_count += 1
    for module in fused.modules():
        if isinstance(module, Darknet):
            _drop_batch_normalize(module)
    remaining = sum(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in fused.modules())
    logger.info("fused %d conv+BatchNorm pairs; %d BatchNorm layers left unfused", fused_count, remaining)
    return fused


def _drop_batch_normalize(model: Darknet) -> None:
    """Set ``batch_normalize=0`` in ``model.cfg`` for every conv layer whose BatchNorm was folded."""
    layers = [
        dataclasses.replace(section, batch_normalize=0)
        if isinstance(section, ConvolutionalSection) and isinstance(layer, ConvBNAct) and layer.bn is None
        else section
        for section, layer in zip(model.cfg.layers, model.layers, strict=True)
    ]
    model.cfg = dataclasses.replace(model.cfg, layers=layers)
    model.nodes = build_graph(model.cfg)
