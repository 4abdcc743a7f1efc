"""A comment after a number on a cfg line, as in AlexeyAB's efficientnet-lite3.cfg (``filters=40\t#32``):
Darknet's ``strip`` removes the blanks and ``atoi`` / ``atof`` stop at the ``#``, so the number before it is
read; a word followed by a comment stays an error."""

from __future__ import annotations

import pytest

from yolov3.darknet.cfg import CfgError, ConvolutionalSection, YoloSection, parse_cfg_text

CFG = """[net]
width=32
height=32
channels=3
[convolutional]
filters=14\t#12
size=1
activation=linear
[yolo]
mask=0,1 # the first two
anchors=4,4,8,8
classes=2
num=2
ignore_thresh=.7\t\t#.5
"""


def test_numbers_followed_by_a_comment_read_as_darknet_reads_them() -> None:
    cfg = parse_cfg_text(CFG)
    conv, yolo = cfg.layers
    assert isinstance(conv, ConvolutionalSection) and conv.filters == 14
    assert isinstance(yolo, YoloSection) and yolo.mask == (0, 1) and yolo.ignore_thresh == pytest.approx(0.7)


def test_a_word_followed_by_a_comment_stays_an_error() -> None:
    with pytest.raises(CfgError, match=r"activation='linear#x'"):
        parse_cfg_text(CFG.replace("activation=linear", "activation=linear #x"), source="c.cfg")
