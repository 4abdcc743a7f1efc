"""``xnor=1`` convolutions without Darknet: a brute-force transliteration of Darknet's fused bit arithmetic, the
``bin_output`` rule, the cases Darknet cannot compute (refused), and BatchNorm fusing. The forward against the
built Darknet itself is in ``tests/test_darknet_layers.py`` (``xnor_convolutions``) and
``tests/test_darknet_official_cfgs.py`` (``yolov3-tiny_xnor.cfg``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yolov3.darknet.cfg import CfgError, parse_cfg_text
from yolov3.models.binary_conv import XnorConv
from yolov3.models.darknet import Darknet
from yolov3.models.fuse import fuse_conv_bn

NET = "[net]\nwidth=8\nheight=8\nchannels={channels}\n"


def darknet_xnor_reference(
    image: np.ndarray, weight: np.ndarray, bias: np.ndarray, bn: tuple | None, stride: int, padding: int
) -> np.ndarray:
    """Darknet's fuse_conv_batchnorm, then gemm_nn_custom_bin_mean_transposed, one output at a time: the
    padded cells are 0 bits (-1), each filter is scaled by mean |w'|; no activation."""
    if bn is not None:
        gamma, beta, mean, variance = (np.asarray(value, dtype=np.float64) for value in bn)
        scale = gamma / np.sqrt(variance + 1e-5)
        weight = weight * scale[:, None, None, None]
        bias = beta - scale * mean
    filters, channels, size, _ = weight.shape
    _, height, width = image.shape
    out_height = (height + 2 * padding - size) // stride + 1
    out_width = (width + 2 * padding - size) // stride + 1
    output = np.zeros((filters, out_height, out_width))
    for f in range(filters):
        scale_f = np.abs(weight[f]).mean()
        for y in range(out_height):
            for x in range(out_width):
                count = 0  # xnor bits: equal signs
                for c in range(channels):
                    for i in range(size):
                        for j in range(size):
                            row, column = y * stride + i - padding, x * stride + j - padding
                            inside = 0 <= row < height and 0 <= column < width
                            input_bit = inside and image[c, row, column] > 0
                            count += input_bit == (weight[f, c, i, j] > 0)
                output[f, y, x] = (2 * count - channels * size * size) * scale_f + bias[f]
    return output


@pytest.mark.parametrize(("stride", "batch_norm"), [(1, True), (2, True), (1, False)])
def test_xnor_forward_is_darknets_bit_arithmetic(stride: int, batch_norm: bool) -> None:
    torch.manual_seed(stride)
    block = XnorConv(3, 4, 3, stride, padding=1, batch_norm=batch_norm, activation="linear").eval()
    with torch.no_grad():
        if batch_norm:
            block.bn.weight.uniform_(-1.0, 1.0)  # negative scales flip the weights' signs in Darknet's fusing
            block.bn.bias.normal_()
            block.bn.running_mean.normal_()
            block.bn.running_var.uniform_(0.5, 1.5)
        else:
            block.conv.bias.normal_()
    image = torch.randn(1, 3, 7, 7)
    image[0, 0, 2, 3] = 0.0  # zero is a 0 bit (-1), as padding
    bn = block.bn
    reference = darknet_xnor_reference(
        image[0].numpy().astype(np.float64),
        block.conv.weight.detach().numpy().astype(np.float64),
        block.conv.bias.detach().numpy() if bn is None else None,
        None
        if bn is None
        else tuple(t.detach().numpy() for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var)),
        stride,
        1,
    )
    with torch.no_grad():
        ours = block(image)[0].numpy()
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)


def test_bin_output_makes_the_activation_linear_where_darknet_keeps_the_flag() -> None:
    """parse_network_cfg_custom clears use_bin_output on what a [route] reads and around a [shortcut]."""
    conv = "[convolutional]\nxnor=1\nbatch_normalize=1\nfilters=32\nsize=3\npad=1\nactivation=leaky\nbin_output=1\n"
    text = NET.format(channels=32) + conv * 5 + "[route]\nlayers=-2\n" + conv + "[shortcut]\nfrom=-6\n"
    model = Darknet(parse_cfg_text(text))
    linear = [index for index, layer in enumerate(model.layers) if getattr(layer, "linear_output", False)]
    # layer 3 is read by the route (5); 6 is the layer before the shortcut (7), 1 its `from`
    assert linear == [0, 2, 4]
    assert isinstance(model.layers[3].act, torch.nn.LeakyReLU)


def test_xnor_ignores_groups_as_darknet_does() -> None:
    text = NET.format(channels=32) + "[convolutional]\nxnor=1\ngroups=2\nfilters=3\nsize=3\npad=1\n"
    model = Darknet(parse_cfg_text(text))
    assert model.layers[0].conv.weight.shape == (3, 32, 3, 3)  # filters=3 with groups=2 is no error either


@pytest.mark.parametrize(
    ("channels", "options", "fragment"),
    [
        (16, "size=1\n", "xnor=1 on 16 input channels \\(not a multiple of 32\\) needs size=3, stride=1"),
        (16, "size=3\npad=1\nstride=2\n", "xnor=1 on 16 input channels \\(not a multiple of 32\\)"),
        (32, "size=3\npad=1\nstride_x=1\nstride_y=2\n", "xnor=1 with stride_x=1 != stride_y=2 is refused"),
        (32, "size=3\npad=1\ndilation=2\n", "xnor=1 with dilation=2 is refused"),
    ],
)
def test_what_darknets_xnor_forward_cannot_compute_is_refused(channels: int, options: str, fragment: str) -> None:
    text = NET.format(channels=channels) + "[convolutional]\nxnor=1\nfilters=4\n" + options
    with pytest.raises(CfgError, match=r"x\.cfg:5: \[convolutional\] " + fragment):
        Darknet(parse_cfg_text(text, source="x.cfg"))


def test_fused_copy_is_the_same_network_and_keeps_xnor() -> None:
    text = (
        NET.format(channels=3)
        + "[convolutional]\nxnor=1\nbatch_normalize=1\nfilters=8\nsize=3\npad=1\nactivation=leaky\n"
        + "[convolutional]\nxnor=1\nbatch_normalize=1\nfilters=4\nsize=3\npad=1\nactivation=linear\n"
    )
    model = Darknet(parse_cfg_text(text)).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(-1.0, 1.0)
                module.running_mean.normal_()
    fused = fuse_conv_bn(model)
    image = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fused(image)[0], model(image)[0], rtol=1e-5, atol=1e-5)
    assert all(layer.bn is None for layer in fused.layers)
    assert [section.xnor for section in fused.cfg.layers] == [1, 1]
    assert "xnor=1" in fused.to_darknet_cfg_text()
