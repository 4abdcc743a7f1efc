"""Every layer type against AlexeyAB's Darknet itself: small cfgs of our own with random weights, the forward
of every layer within 1e-4 relative, and ``.weights`` byte for byte what Darknet's own writer saves."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from darknet_harness import RandomRuns, run_random_networks

from yolov3.darknet.cfg import (
    BatchnormSection,
    ConnectedSection,
    ConvLstmSection,
    ConvolutionalSection,
    CrnnSection,
    ImplicitSection,
    ShortcutSection,
)
from yolov3.darknet.graph import HEAD_SECTIONS, build_graph
from yolov3.models.darknet import Darknet
from yolov3.models.darknet_layers import darknet_head_activation

CFGS = {
    "shortcut_multi_from_unequal_channels_weighted": (
        32,
        """
[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky
[convolutional]
filters=6
size=1
activation=mish
[convolutional]
filters=8
size=3
pad=1
activation=swish
[shortcut]
from=-2,-3
weights_type=per_channel
weights_normalization=softmax
activation=linear
[convolutional]
filters=4
size=1
activation=logistic
[shortcut]
from=-2, -4
weights_type=per_feature
weights_normalization=relu
[shortcut]
from=-5
weights_type=per_channel
weights_normalization=relu
[shortcut]
from=-2
activation=leaky
""",
    ),
    "route_groups_reorg_region": (
        32,
        """
[convolutional]
batch_normalize=1
filters=8
size=3
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[route]
layers=-1
groups=2
group_id=1
[reorg]
stride=2
[route]
layers=-3
[reorg3d]
stride=2
[route]
layers=-1,-3
[reorg3d]
stride=2
reverse=1
[reorg]
stride=2
[convolutional]
filters=14
size=1
activation=linear
[region]
anchors=1.0,1.5,2.0,0.5
classes=2
num=2
softmax=1
bias_match=1
""",
    ),
    "sam_scale_channels_pools_gaussian": (
        32,
        """
[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=mish
[local_avgpool]
size=3
stride=1
[avgpool]
[convolutional]
filters=8
size=1
activation=logistic
[scale_channels]
from=-3
[convolutional]
filters=1
size=3
pad=1
activation=logistic
[scale_channels]
from=-2
scale_wh=1
[convolutional]
filters=8
size=1
activation=logistic
[sam]
from=-2
[dropout]
probability=0.3
[local_avgpool]
size=2
stride=2
[empty]
[convolutional]
filters=22
size=1
activation=linear
[Gaussian_yolo]
mask=0,1
anchors=4,6,10,12,20,24
num=3
classes=2
scale_x_y=1.05
""",
    ),
    "yolo_strides_and_training_keys": (
        32,
        """
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
stride_x=2
stride_y=2
pad=1
activation=leaky
stopbackward=1
[convolutional]
filters=21
size=1
activation=linear
[yolo]
mask=0,1,2
anchors=4,6,10,12,20,24
num=3
classes=2
scale_x_y=1.2
objectness_smooth=1
""",
    ),
    "yolo_new_coords": (
        32,
        """
[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=logistic
[convolutional]
filters=14
size=1
activation=logistic
[yolo]
mask=0,1
anchors=4,6,10,12
num=2
classes=2
scale_x_y=2.0
new_coords=1
""",
    ),
    "xnor_convolutions": (
        32,
        """
[convolutional]
xnor=1
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky
[convolutional]
xnor=1
filters=32
size=3
pad=1
activation=mish
[convolutional]
xnor=1
batch_normalize=1
filters=32
size=3
stride=2
pad=1
activation=leaky
bin_output=1
[convolutional]
xnor=1
batch_normalize=1
filters=64
size=1
pad=1
activation=leaky
bin_output=1
[route]
layers=-1
[convolutional]
xnor=1
groups=2
batch_normalize=1
filters=32
size=3
pad=1
activation=leaky
[convolutional]
binary=1
batch_normalize=1
filters=8
size=3
pad=1
activation=leaky
[convolutional]
filters=21
size=1
activation=linear
[yolo]
mask=0,1,2
anchors=4,6,10,12,20,24
num=3
classes=2
""",
    ),
}
CFGS["crnn"] = (
    16,
    """
[convolutional]
batch_normalize=1
filters=8
size=3
pad=1
activation=leaky
[crnn]
batch_normalize=1
size=3
pad=1
output=8
hidden=6
activation=leaky
[crnn]
size=1
output=14
hidden=4
groups=2
shortcut=1
activation=logistic
[yolo]
mask=0,1
anchors=4,6,10,12
num=2
classes=2
""",
)
CFGS["conv_lstm"] = (
    16,
    """
[convolutional]
batch_normalize=1
filters=8
size=3
pad=1
activation=leaky
[conv_lstm]
batch_normalize=1
size=3
pad=1
output=6
peephole=1
activation=leaky
[conv_lstm]
size=1
output=8
groups=2
activation=logistic
[conv_lstm]
size=3
pad=1
output=14
peephole=1
[yolo]
mask=0,1
anchors=4,6,10,12
num=2
classes=2
""",
)
CFGS["maxpool_strides_depth_antialiasing"] = (
    32,
    """
[convolutional]
batch_normalize=1
filters=8
size=3
pad=1
activation=leaky
[maxpool]
size=2
stride_x=2
stride_y=1
[maxpool]
size=3
stride=1
stride_y=2
[maxpool]
maxpool_depth=1
out_channels=3
[route]
layers=-2
[maxpool]
size=2
stride=2
antialiasing=1
[maxpool]
size=3
stride_x=1
stride_y=2
antialiasing=2
[convolutional]
filters=14
size=1
activation=linear
[yolo]
mask=0,1
anchors=4,6,10,12
num=2
classes=2
""",
)
CFGS["conv_antialiasing_coordconv"] = (
    32,
    """
[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky
antialiasing=1
[convolutional]
filters=6
size=3
stride_x=2
stride_y=1
pad=1
activation=mish
antialiasing=2
[convolutional]
batch_normalize=1
filters=8
size=1
activation=linear
antialiasing=1
coordconv=1
[convolutional]
filters=14
size=1
activation=linear
[yolo]
mask=0,1
anchors=4,6,10,12
num=2
classes=2
""",
)
CFGS["implicit_connected_batchnorm_activation"] = (
    16,
    """
[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky
[batchnorm]
[activation]
activation=tanh
[implicit]
filters=8
[scale_channels]
from=-2
[implicit]
filters=8
atoms=2
mean=0.5
std=0.1
[route]
layers=-2
[connected]
output=10
batch_normalize=1
activation=leaky
[connected]
output=6
activation=gelu
[activation]
activation=elu
[connected]
output=5
""",
)
# Cfgs whose first layer binarizes the input: it gets signs at random and magnitudes in [0.05, 1], so no value
# sits near 0, where Darknet's sign and ours could round apart (later xnor layers read integer counts times a
# scale plus a bias, which land near 0 with probability about 1e-6 per filter).
SIGNED_INPUTS = {"xnor_convolutions"}


def _conv(filters: int, size: int = 3, stride: int = 1, activation: str = "leaky", bn: int = 1) -> str:
    return (
        f"[convolutional]\nbatch_normalize={bn}\nfilters={filters}\nsize={size}\nstride={stride}\npad=1\n"
        f"activation={activation}\n"
    )


def _yolo(mask: str, classes: int = 2) -> str:
    return (
        f"[yolo]\nmask={mask}\nanchors=10,14,23,27,37,58,81,82,135,169,344,319\nclasses={classes}\nnum=6\n"
        "jitter=.3\nscale_x_y=1.05\niou_normalizer=0.07\niou_loss=ciou\nignore_thresh=.7\nnms_kind=greedynms\n"
        "beta_nms=0.6\nrandom=1\n"
    )


def tiny_prn_structure() -> str:
    """The layer structure of the fork's yolov3-tiny-prn (partial residuals between unequal channel counts),
    with 1/16 of its filters."""
    backbone = "".join(_conv(f) + "[maxpool]\nsize=2\nstride=2\n" for f in (1, 2, 4, 8, 16))
    backbone += _conv(32) + "[maxpool]\nsize=2\nstride=1\n" + _conv(32) + "[shortcut]\nactivation=leaky\nfrom=-3\n"
    head = (
        _conv(16, 1) + _conv(16) + "[shortcut]\nactivation=leaky\nfrom=-2\n" + _conv(21, 1, activation="linear", bn=0)
    )
    head += _yolo("3,4,5") + "[route]\nlayers=-4\n" + _conv(8, 1) + "[upsample]\nstride=2\n"
    head += "[shortcut]\nactivation=leaky\nfrom=8\n" + _conv(8) + "[shortcut]\nactivation=leaky\nfrom=-3\n"
    head += "[shortcut]\nactivation=leaky\nfrom=8\n" + _conv(21, 1, activation="linear", bn=0) + _yolo("1,2,3")
    return backbone + head


def tiny_v4_structure() -> str:
    """The layer structure of the fork's yolov4-tiny (CSP route groups), with 1/16 of its filters."""
    text = _conv(2, stride=2) + _conv(4, stride=2)
    for filters in (4, 8, 16):
        text += (
            _conv(filters) + "[route]\nlayers=-1\ngroups=2\ngroup_id=1\n" + _conv(filters // 2) + _conv(filters // 2)
        )
        text += "[route]\nlayers=-1,-2\n" + _conv(filters, 1) + "[route]\nlayers=-6,-1\n[maxpool]\nsize=2\nstride=2\n"
    text += _conv(32) + _conv(16, 1) + _conv(32) + _conv(21, 1, activation="linear", bn=0) + _yolo("3,4,5")
    text += "[route]\nlayers=-4\n" + _conv(8, 1) + "[upsample]\nstride=2\n[route]\nlayers=-1,23\n" + _conv(16)
    return text + _conv(21, 1, activation="linear", bn=0) + _yolo("1,2,3")


# Dilated convolutions: im2col pads by padding * dilation (pad=1: size // 2), explicit padding too
CFGS["dilated_convolutions"] = (
    24,
    """
[convolutional]
batch_normalize=1
filters=6
size=3
pad=1
dilation=2
activation=leaky
[convolutional]
filters=4
size=5
padding=2
dilation=3
stride=2
activation=linear
[crnn]
size=3
pad=1
dilation=2
output=4
hidden=3
activation=leaky
""",
)
CFGS["yolov3_tiny_prn_structure"] = (64, tiny_prn_structure())
CFGS["yolov4_tiny_structure"] = (64, tiny_v4_structure())


def _random_conv(rng: np.random.Generator, filters: int, fan_in: int, batch_normalize: int) -> list[np.ndarray]:
    """One conv's floats as load_convolutional_weights reads them: biases, [scales, mean, variance], weights."""
    parts = [rng.normal(0.0, 0.1, filters)]
    if batch_normalize:
        parts += [rng.uniform(0.4, 0.9, filters), rng.normal(0, 0.1, filters), rng.uniform(0.5, 1.5, filters)]
    parts.append(rng.normal(0.0, fan_in**-0.5, filters * fan_in))
    return parts


def write_random_weights(cfg, path: Path, seed: int) -> None:
    """Random .weights for every conv, [crnn], [conv_lstm], weighted shortcut, [implicit], [batchnorm] and
    [connected] of ``cfg`` (layout from Darknet's parser.c load_weights_upto)."""
    rng = np.random.default_rng(seed)
    chunks = [struct.pack("<3iq", 0, 2, 5, 0)]
    for node in build_graph(cfg):
        section = node.section
        if isinstance(section, ConvolutionalSection):
            fan_in = node.in_channels // section.effective_groups * section.size**2
            parts = _random_conv(rng, section.filters, fan_in, section.batch_normalize)
        elif isinstance(section, CrnnSection):  # its input, self and output convolutions, in that order
            parts = []
            for inputs, outputs in ((node.in_channels, section.hidden), (section.hidden, section.hidden)):
                parts += _random_conv(rng, outputs, inputs // section.groups * section.size**2, section.batch_normalize)
            fan_in = section.hidden // section.groups * section.size**2
            parts += _random_conv(rng, section.output, fan_in, section.batch_normalize)
        elif isinstance(section, ConvLstmSection):  # vf, vi, vo (peephole), wf, wi, wg, wo, uf, ui, ug, uo
            recurrent = 7 if section.peephole else 4
            parts = []
            for inputs in (section.output,) * recurrent + (node.in_channels,) * 4:
                fan_in = inputs // section.groups * section.size**2
                parts += _random_conv(rng, section.output, fan_in, section.batch_normalize)
        elif isinstance(section, ImplicitSection):
            parts = [rng.normal(0.0, 1.0, section.filters * section.atoms)]
        elif isinstance(section, BatchnormSection):  # biases, scales, rolling mean, rolling variance
            channels = node.in_channels
            parts = [rng.normal(0, 0.1, channels), rng.uniform(0.4, 0.9, channels)]
            parts += [rng.normal(0, 0.1, channels), rng.uniform(0.5, 1.5, channels)]
        elif isinstance(section, ConnectedSection):  # biases, weights, [scales, rolling mean, rolling variance]
            inputs, outputs = math.prod(node.input_shape), section.output
            parts = [rng.normal(0.0, 0.1, outputs), rng.normal(0.0, inputs**-0.5, outputs * inputs)]
            if section.batch_normalize:
                parts += [rng.uniform(0.4, 0.9, outputs), rng.normal(0, 0.1, outputs), rng.uniform(0.5, 1.5, outputs)]
        elif isinstance(section, ShortcutSection) and section.weights_type != "none":
            per_input = node.in_channels if section.weights_type == "per_channel" else 1
            parts = [rng.normal(0.5, 0.5, (len(section.from_layer) + 1) * per_input)]
        else:
            continue
        chunks.append(np.concatenate(parts).astype("<f4").tobytes())
    path.write_bytes(b"".join(chunks))


def our_layer_outputs(model: Darknet, x: torch.Tensor) -> dict[int, np.ndarray]:
    outputs: dict[int, np.ndarray] = {}
    hooks = [
        layer.register_forward_hook(lambda _m, _i, out, index=index: outputs.__setitem__(index, out[0].numpy()))
        for index, layer in enumerate(model.layers)
    ]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return outputs


@pytest.fixture(scope="module")
def darknet_runs(alexeyab_darknet: Path, tmp_path_factory: pytest.TempPathFactory) -> RandomRuns:
    """All cfgs through one Darknet harness process: name -> (cfg, weights path, input, Darknet result)."""
    work = tmp_path_factory.mktemp("darknet_layers")
    runs, _ = run_random_networks(
        alexeyab_darknet, work, CFGS, 100, signed_inputs=SIGNED_INPUTS, write_weights=write_random_weights
    )
    return runs


@pytest.mark.parametrize("name", list(CFGS))
def test_every_layer_matches_darknet(darknet_runs: dict, name: str) -> None:
    cfg, weights_path, image, result = darknet_runs[name]
    model = Darknet(cfg).eval()
    model.load_darknet_weights(weights_path)  # must fit exactly
    ours = our_layer_outputs(model, torch.from_numpy(image)[None])
    assert sorted(result.outputs) == list(range(len(cfg.layers)))
    for index, section in enumerate(cfg.layers):
        reference = result.outputs[index].ravel()
        mine = ours[index]
        if isinstance(section, HEAD_SECTIONS):
            mine = darknet_head_activation(section, torch.from_numpy(mine)[None])[0].numpy()
        mine = mine.ravel()
        assert mine.shape == reference.shape, f"layer {index} [{section.KIND}]"
        error = np.abs(mine - reference).max() / max(np.abs(reference).max(), 1e-12)
        assert error < 1e-4, f"layer {index} [{section.KIND}]: relative error {error:.2e}"


@pytest.mark.parametrize("name", list(CFGS))
def test_weights_layout_is_what_darknet_reads(darknet_runs: dict, name: str) -> None:
    """Darknet loads our file and saves it back: the same floats, and the same length (header aside)."""
    _, weights_path, _, result = darknet_runs[name]
    ours = weights_path.read_bytes()
    assert len(result.saved_weights) == len(ours)
    assert result.saved_weights[20:] == ours[20:]


@pytest.mark.parametrize("dropped", ["w", "v"])
def test_conv_lstm_comparison_sees_a_dropped_term(darknet_runs: dict, dropped: str) -> None:
    """The comparison above is sharp enough to see the h-path convs (w(0): their bias or batch-norm shift) or
    the peepholes left out of [conv_lstm]."""
    cfg, weights_path, image, result = darknet_runs["conv_lstm"]
    model = Darknet(cfg).eval()
    model.load_darknet_weights(weights_path)
    first = next(index for index, section in enumerate(cfg.layers) if isinstance(section, ConvLstmSection))
    for block in getattr(model.layers[first], dropped).values():
        block.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out))
    mine = our_layer_outputs(model, torch.from_numpy(image)[None])[first].ravel()
    reference = result.outputs[first].ravel()
    assert np.abs(mine - reference).max() / np.abs(reference).max() > 1e-2
