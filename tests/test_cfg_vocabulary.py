"""AlexeyAB's parser.c vocabulary: training-only keys warned once, refused keys and values that cannot build."""

from __future__ import annotations

import logging

import pytest
import torch

from yolov3.darknet.cfg import CfgError, DarknetCfg, parse_cfg_text
from yolov3.darknet.cfg_vocabulary import NOT_IMPLEMENTED, REFUSED_SECTIONS
from yolov3.models.darknet import Darknet

NET = "[net]\nwidth=32\nheight=32\nchannels=3\n"
CONV = "[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=leaky\n"


def parse_with_one_warning(text: str, source: str, caplog: pytest.LogCaptureFixture, *fragments: str) -> DarknetCfg:
    """Parse ``text``; exactly one warning is logged, and it contains every one of ``fragments``."""
    with caplog.at_level(logging.WARNING, logger="yolov3.darknet.cfg"):
        cfg = parse_cfg_text(text, source=source)
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1
    for fragment in fragments:
        assert fragment in warnings[0]
    return cfg


def test_training_only_keys_are_accepted_and_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    text = (
        "[net]\nwidth=32\nheight=32\nchannels=3\nema_alpha=0.9998\nsgdr_cycle=1000\nbatch=64\nbatch=32\n"
        + CONV
        + "stopbackward=1\n"
        + "[convolutional]\nfilters=21\nsize=1\nactivation=linear\n"
        + "[yolo]\nmask=0,1,2\nanchors=1,2,3,4,5,6\nnum=3\nclasses=2\nobjectness_smooth=1\n"
    )
    cfg = parse_with_one_warning(
        text, "fork.cfg", caplog, "fork.cfg", "ema_alpha (line 5)", "sgdr_cycle", "stopbackward", "objectness_smooth",
        "batch",
    )  # fmt: skip
    assert cfg.net.batch == 64  # Darknet's option_find returns the first value
    Darknet(cfg)


def test_a_key_darknet_does_not_read_stays_an_error_with_a_suggestion() -> None:
    with pytest.raises(CfgError, match=r"x\.cfg:6: \[convolutional\] unknown key 'filtres'; did you mean 'filters'"):
        parse_cfg_text(NET + "[convolutional]\nfiltres=4\n", source="x.cfg")


def test_a_net_key_darknet_never_reads_is_accepted_and_reported_with_the_training_keys(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """AlexeyAB's Gaussian_yolov3_BDD.cfg has ``max_epochs`` in [net]: parser.c never reads it (Darknet prints
    "Unused field" and carries on), and it is no typo of a key [net] reads; so is pjreddie's own ``clip``."""
    text = NET + "max_epochs=300\nclip=1\nema_alpha=0.9998\n" + CONV
    cfg = parse_with_one_warning(
        text, "bdd.cfg", caplog, "bdd.cfg", "max_epochs (line 5, not read by Darknet either)",
        "clip (line 6, read by pjreddie's Darknet only)", "ema_alpha (line 7)",
    )  # fmt: skip
    assert cfg.net.width == 32


@pytest.mark.parametrize(
    ("option", "suggestion"),
    [("widht=416", "width"), ("max_batchs=500", "max_batches"), ("hye=0.1", "hue"), ("sgdr_cylce=2", "sgdr_cycle")],
)
def test_a_net_key_that_looks_like_a_typo_stays_an_error_with_the_suggestion(option: str, suggestion: str) -> None:
    key = option.split("=")[0]
    with pytest.raises(CfgError, match=rf"x\.cfg:5: \[net\] unknown key '{key}'; did you mean '{suggestion}'"):
        parse_cfg_text(NET + option + "\n" + CONV, source="x.cfg")


YOLO = (
    "[convolutional]\nfilters=21\nsize=1\nactivation=linear\n"
    "[yolo]\nmask=0,1,2\nanchors=1,2,3,4,5,6\nnum=3\nclasses=2\n"
)


def test_a_layer_key_darknet_does_not_read_is_accepted_and_reported_as_darknet_does(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """AlexeyAB's yolov4-sam-mish.cfg has ``uc_normalizer`` (a [Gaussian_yolo] key) and ``beta1`` in its [yolo]
    sections: parse_yolo reads neither, Darknet prints "Unused field" and builds the network."""
    text = NET + CONV + YOLO + "uc_normalizer=1.0\nbeta1=0.6\n" + CONV + "max_epochs=300\n"
    cfg = parse_with_one_warning(
        text, "sam.cfg", caplog, "[yolo] uc_normalizer (line 19, read by [Gaussian_yolo] only)",
        "[yolo] beta1 (line 20, not read by Darknet either)",
        "[convolutional] max_epochs (line 26, not read by Darknet either)",
    )  # fmt: skip
    Darknet(cfg)


@pytest.mark.parametrize(
    ("section", "option", "suggestion"),
    [
        (CONV, "filtres=4", "filters"),
        (YOLO, "ignore_tresh=0.7", "ignore_thresh"),
        (YOLO, "clases=2", "classes"),
        ("[maxpool]\nsize=2\n", "strid=2", "stride"),
    ],
)
def test_a_layer_key_that_looks_like_a_typo_stays_an_error_with_the_suggestion(
    section: str, option: str, suggestion: str
) -> None:
    key = option.split("=")[0]
    with pytest.raises(CfgError, match=rf"unknown key '{key}'; did you mean '{suggestion}'"):
        parse_cfg_text(NET + CONV + section + option + "\n", source="x.cfg")


def test_keys_that_change_the_forward_but_are_not_built_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # a made-up entry: the keys actually refused change as they are built
    monkeypatch.setitem(NOT_IMPLEMENTED, "convolutional", {"notbuilt": ("0", "a reason")})
    with pytest.raises(CfgError, match=r"x\.cfg:10: \[convolutional\] notbuilt=2 is read by Darknet but a reason"):
        parse_cfg_text(NET + CONV + "notbuilt=2\n", source="x.cfg")
    parse_cfg_text(NET + CONV + "notbuilt=0\n", source="x.cfg")  # Darknet's default: accepted


def test_such_keys_at_darknets_default_are_accepted() -> None:
    parse_cfg_text(NET + CONV + "xnor=0\nantialiasing=0\n")


def test_sections_darknet_reads_but_not_built_here_say_why(monkeypatch: pytest.MonkeyPatch) -> None:
    # a made-up entry: the sections actually refused change as they are built
    monkeypatch.setitem(REFUSED_SECTIONS, "notbuilt", "a reason")
    with pytest.raises(CfgError, match=r"x\.cfg:5: section \[notbuilt\] is read by Darknet but not supported here: a"):
        parse_cfg_text(NET + "[notbuilt]\noutput=4\n", source="x.cfg")


@pytest.mark.parametrize(
    ("option", "fragment"),
    [
        ("size=2147483648", "size=2147483648 is out of range; allowed: 1..1024"),
        ("filters=-4", "filters=-4 is out of range; allowed: 1..65536"),
        ("stride=0", "stride=0 is out of range; allowed: 1..1024"),
    ],
)
def test_values_that_parse_but_cannot_build_name_file_line_key_and_range(option: str, fragment: str) -> None:
    text = NET + "[convolutional]\n" + option + "\n"
    with pytest.raises(CfgError, match=r"x\.cfg:5: \[convolutional\] " + fragment):
        Darknet(parse_cfg_text(text, source="x.cfg"))


def test_a_huge_layer_is_a_cfg_error_not_an_allocation() -> None:
    text = NET + "[convolutional]\nfilters=65536\nsize=3\n[convolutional]\nfilters=65536\nsize=1024\n"
    with pytest.raises(CfgError, match=r"x\.cfg:8: \[convolutional\] filters=65536 .* allowed: at most"):
        Darknet(parse_cfg_text(text, source="x.cfg"))


def test_shortcut_weights_need_a_normalization_as_in_darknet() -> None:
    text = NET + CONV + CONV + "[shortcut]\nfrom=-2\nweights_type=per_channel\n"
    with pytest.raises(CfgError, match="weights_type=per_channel needs weights_normalization"):
        parse_cfg_text(text)


@pytest.mark.parametrize(
    ("options", "line", "fragment"),
    [
        ("xnor=1\n", 8, "xnor=1 is read by Darknet but binary \\(XNOR\\) recurrent convolutions are not implemented"),
        ("stride=2\npad=1\n", 5, "size=3, stride=2 and padding 1 change the 32x32 input's size; Darknet's \\[crnn\\]"),
        ("pad=0\n", 5, "size=3, stride=1 and padding 0 change the 32x32 input's size"),
    ],
)
def test_crnn_is_built_for_one_step_at_the_input_size_only(options: str, line: int, fragment: str) -> None:
    text = NET + "[crnn]\noutput=4\nhidden=4\n" + options
    with pytest.raises(CfgError, match=rf"x\.cfg:{line}: \[crnn\] " + fragment):
        Darknet(parse_cfg_text(text, source="x.cfg"))


@pytest.mark.parametrize(
    ("options", "line", "fragment"),
    [
        ("xnor=1\n", 8, "xnor=1 is read by Darknet but binary \\(XNOR\\) recurrent convolutions are not implemented"),
        ("bottleneck=1\n", 8, "bottleneck=1 is read by Darknet but the bottleneck ConvLSTM"),
        ("lstm_activation=relu\n", 8, "lstm_activation=relu is read by Darknet but an LSTM activation other than tanh"),
        ("stride=2\n", 5, "size=3, stride=2 and padding 1 change the 32x32 input's size; Darknet's \\[conv_lstm\\]"),
        ("groups=3\n", 5, "output=4 must be divisible by groups=3"),
    ],
)
def test_conv_lstm_is_built_for_one_step_at_the_input_size_only(options: str, line: int, fragment: str) -> None:
    text = NET + "[conv_lstm]\noutput=4\npad=1\n" + options
    with pytest.raises(CfgError, match=rf"x\.cfg:{line}: \[conv_lstm\] " + fragment):
        Darknet(parse_cfg_text(text, source="x.cfg"))


def test_conv_lstm_keys_without_effect_on_one_step_are_accepted() -> None:
    text = NET + "[conv_lstm]\noutput=4\npad=1\nlstm_activation=tanh\nxnor=0\nbottleneck=0\n"
    Darknet(parse_cfg_text(text + "shortcut=1\npeephole=1\n"))


def test_reorg3d_reverse_needs_output_channels_darknet_can_permute() -> None:
    """Darknet's [reorg3d] reverse=1 runs reorg_cpu over its output: 24 -> 6 channels divides 6 by 4 (found by
    tests/test_fuzz.py: Darknet reads outside the buffer; we built a half-initialized gather index)."""
    text = NET + "[convolutional]\nfilters=24\nsize=1\n[reorg3d]\nstride=2\nreverse=1\n"
    with pytest.raises(CfgError, match=r"x\.cfg:8: \[reorg3d\] reverse=1 gives 6 channels, not divisible by"):
        Darknet(parse_cfg_text(text, source="x.cfg"))
    Darknet(parse_cfg_text(text.replace("filters=24", "filters=32")))


@pytest.mark.parametrize(
    ("layers", "fragment"),
    [
        (CONV + "antialiasing=3\n", r"x\.cfg:5: \[convolutional\] antialiasing=3 is not one of 0, 1"),
        (CONV + "xnor=1\nantialiasing=1\n", r"x\.cfg:5: \[convolutional\] xnor=1 with antialiasing is refused"),
        ("[maxpool]\nmaxpool_depth=1\nantialiasing=1\n", r"x\.cfg:5: \[maxpool\] maxpool_depth=1 with antialiasing"),
        (CONV + "[maxpool]\nmaxpool_depth=1\nout_channels=5\n", r"x\.cfg:10: \[maxpool\] out_channels=5 is more than"),
        (CONV + "antialiasing=1\n" + CONV + "[route]\nlayers=-2\n", r"x\.cfg:16: \[route\] reads layer 0, an anti-al"),
        (
            CONV + "stride=2\nantialiasing=2\n" + CONV + "[shortcut]\nfrom=-2\n",
            r"x\.cfg:17: \[shortcut\] reads layer 0",
        ),
        ("[activation]\nactivation=mish\n", r"x\.cfg:5: \[activation\] activation=mish is refused: .* outputs 0"),
        ("[connected]\noutput=4\nactivation=swish\n", r"x\.cfg:5: \[connected\] activation=swish is refused"),
        (
            CONV + "[avgpool]\n[scale_channels]\nfrom=-2\nactivation=swish\n",
            r"x\.cfg:11: \[scale_channels\] activation=sw",
        ),
    ],
)
def test_fork_layers_darknet_cannot_compute_as_written_are_cfg_errors(layers: str, fragment: str) -> None:
    with pytest.raises(CfgError, match=fragment):
        Darknet(parse_cfg_text(NET + layers, source="x.cfg"))


def test_antialiasing_pooling_over_channels_and_dense_layers_build_with_darknets_shapes() -> None:
    """Shapes as Darknet's make_*_layer gives them (the values are compared with Darknet in test_darknet_layers)."""
    text = NET + CONV + "stride=2\nantialiasing=1\n"  # conv at stride 1, then a 3x3 blur with stride 2: 16x16
    text += "[maxpool]\nsize=2\nstride_x=2\nstride_y=1\n"  # 16x8
    text += "[maxpool]\nsize=2\nstride=2\nantialiasing=2\n"  # pool at stride 1 (16x8), 2x2 blur stride 2: 8x4
    text += "[maxpool]\nmaxpool_depth=1\nout_channels=3\n"  # 3 channels
    text += "[implicit]\nfilters=6\natoms=2\n[batchnorm]\n[activation]\nactivation=leaky\n"
    text += "[connected]\noutput=7\nbatch_normalize=1\n"
    model = Darknet(parse_cfg_text(text)).eval()
    shapes = [node.output_shape for node in model.nodes]
    assert shapes == [(4, 16, 16), (4, 16, 8), (4, 8, 4), (3, 8, 4), (6, 2, 1), (6, 2, 1), (6, 2, 1), (7, 1, 1)]
    floats = sum(parameters.num_floats for parameters in model.darknet_conv_parameters())
    assert floats == (4 + 4 * 27) + 6 * 2 + 4 * 6 + (7 + 7 * 12 + 3 * 7)  # no floats for the blurs
    (logits,) = model(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 7)


def test_anchor_pairs_past_num_that_masks_use_build_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """cspx-p7-mish.cfg: num=16 but 20 anchor pairs, masks up to 19. Darknet reads 16 pairs and decodes masks
    16..19 from past its array (undefined); the listed pairs are the cfg's intent."""
    head = "[convolutional]\nfilters=14\nsize=1\nactivation=linear\n[yolo]\nmask=1,2\nanchors=1,2,3,4,5,6\nnum=2\n"
    with caplog.at_level(logging.WARNING, logger="yolov3.darknet.cfg_sections"):
        cfg = parse_cfg_text(NET + CONV + head + "classes=2\n", source="p7.cfg")
    assert any("mask indices [2] are past num=2" in record.getMessage() for record in caplog.records)
    assert cfg.layers[-1].anchors_px == ((3.0, 4.0), (5.0, 6.0))
    with pytest.raises(CfgError, match="anchors has 6 numbers but num=4 needs 8"):
        parse_cfg_text(NET + CONV + head.replace("num=2", "num=4") + "classes=2\n", source="p7.cfg")
