"""AlexeyAB's parser.c vocabulary: training-only keys warned once, refused keys and values that cannot build."""

from __future__ import annotations

import logging

import pytest

from yolov3.darknet.cfg import CfgError, parse_cfg_text
from yolov3.models.darknet import Darknet

NET = "[net]\nwidth=32\nheight=32\nchannels=3\n"
CONV = "[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=leaky\n"


def test_training_only_keys_are_accepted_and_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    text = (
        "[net]\nwidth=32\nheight=32\nchannels=3\nema_alpha=0.9998\nsgdr_cycle=1000\nbatch=64\nbatch=32\n"
        + CONV
        + "stopbackward=1\n"
        + "[convolutional]\nfilters=21\nsize=1\nactivation=linear\n"
        + "[yolo]\nmask=0,1,2\nanchors=1,2,3,4,5,6\nnum=3\nclasses=2\nobjectness_smooth=1\n"
    )
    with caplog.at_level(logging.WARNING, logger="yolov3.darknet.cfg"):
        cfg = parse_cfg_text(text, source="fork.cfg")
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1
    for fragment in ("fork.cfg", "ema_alpha (line 5)", "sgdr_cycle", "stopbackward", "objectness_smooth", "batch"):
        assert fragment in warnings[0]
    assert cfg.net.batch == 64  # Darknet's option_find returns the first value
    Darknet(cfg)


def test_a_key_darknet_does_not_read_stays_an_error_with_a_suggestion() -> None:
    with pytest.raises(CfgError, match=r"x\.cfg:6: \[convolutional\] unknown key 'filtres'; did you mean 'filters'"):
        parse_cfg_text(NET + "[convolutional]\nfiltres=4\n", source="x.cfg")


@pytest.mark.parametrize(
    ("option", "fragment"),
    [
        ("xnor=1", r"xnor=1 is read by Darknet but binary \(XNOR\) convolutions are not implemented"),
        ("antialiasing=1", "antialiasing=1 is read by Darknet but anti-aliased"),
    ],
)
def test_keys_that_change_the_forward_but_are_not_built_are_refused(option: str, fragment: str) -> None:
    with pytest.raises(CfgError, match=r"x\.cfg:10: \[convolutional\] " + fragment):
        parse_cfg_text(NET + CONV + option + "\n", source="x.cfg")


def test_such_keys_at_darknets_default_are_accepted() -> None:
    parse_cfg_text(NET + CONV + "xnor=0\nantialiasing=0\n")


def test_sections_darknet_reads_but_not_built_here_say_why() -> None:
    with pytest.raises(CfgError, match=r"x\.cfg:5: section \[conv_lstm\] is read by Darknet but not supported"):
        parse_cfg_text(NET + "[conv_lstm]\noutput=4\n", source="x.cfg")


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
