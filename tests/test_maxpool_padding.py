"""DarknetMaxPool against a loop transcription of Darknet's forward_maxpool_layer (maxpool_layer.c).

The module lets max_pool2d pad where it can (symmetric padding; one more cell on the right at stride 2, as ceil
mode), so the test covers sizes, strides, paddings and odd / even inputs where those shortcuts do and do not
apply.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from yolov3.models.layers import DarknetMaxPool


def darknet_maxpool(x: np.ndarray, size: int, stride: int, padding: int) -> np.ndarray:
    """forward_maxpool_layer: out = (in + padding - size) / stride + 1, windows offset by -padding / 2, cells
    outside the input skipped (as if -inf)."""
    channels, height, width = x.shape
    out_height, out_width = (height + padding - size) // stride + 1, (width + padding - size) // stride + 1
    offset = -(padding // 2)
    out = np.full((channels, out_height, out_width), -np.inf, dtype=x.dtype)
    for k, i, j in itertools.product(range(channels), range(out_height), range(out_width)):
        for n, m in itertools.product(range(size), range(size)):
            row, column = offset + i * stride + n, offset + j * stride + m
            if 0 <= row < height and 0 <= column < width:
                out[k, i, j] = max(out[k, i, j], x[k, row, column])
    return out


POOLS = [
    (2, 2, None), (2, 1, None), (3, 2, None), (3, 1, None), (5, 1, None), (9, 1, None), (13, 1, None),
    (2, 2, 0), (3, 2, 1), (3, 3, 4), (4, 2, 2), (3, 1, 0), (6, 2, None), (4, 2, None), (2, 3, None),
]  # fmt: skip
CASES = [
    (size, stride, padding, height, width)
    for size, stride, padding in POOLS
    for height, width in [(7, 7), (8, 8), (8, 9), (13, 13), (14, 11)]
    if height + (size - 1 if padding is None else padding) >= size
]


@pytest.mark.parametrize(("size", "stride", "padding", "height", "width"), CASES)
def test_maxpool_equals_darknets_loop(size: int, stride: int, padding: int | None, height: int, width: int) -> None:
    generator = torch.Generator().manual_seed(size * 100 + height)
    x = torch.randn(2, height, width, generator=generator)
    pool = DarknetMaxPool(size, stride, padding)
    expected = darknet_maxpool(x.numpy(), size, stride, pool.padding)
    assert np.isfinite(expected).all()
    np.testing.assert_array_equal(pool(x[None])[0].numpy(), expected)


def test_the_unread_padding_of_stride_2_pools_is_left_out_of_the_exported_graph() -> None:
    """Darknet's 2x2 stride-2 pool pads one row and column on the right and bottom: ceil mode, no Pad node."""
    pytest.importorskip("onnx")
    import io

    import onnx

    def operators(pool: DarknetMaxPool) -> set[str]:
        buffer = io.BytesIO()
        torch.onnx.export(pool, (torch.randn(1, 3, 8, 8),), buffer, dynamo=False, do_constant_folding=True)
        return {node.op_type for node in onnx.load_from_string(buffer.getvalue()).graph.node}

    assert operators(DarknetMaxPool(2, 2)) == {"MaxPool"}
    assert "Pad" in operators(DarknetMaxPool(2, 1))  # tiny's stride-1 pool reads its right / bottom padding
