"""Numbers in bad-data messages are plain decimals, never float notation."""

from __future__ import annotations

import numpy as np
import pytest

from yolov3.data.bad_data import BadDataError, BadDataPolicy, format_number


@pytest.mark.parametrize(
    ("value", "expected"),
    [(8858730.0, "8,858,730"), (12.5, "12.5"), (0.004, "0"), (-3.0, "-3"), (1e12, "1,000,000,000,000"), (2.25, "2.25")],
)
def test_format_number(value: float, expected: str) -> None:
    assert format_number(value) == expected


def test_box_message_has_no_exponent() -> None:
    policy = BadDataPolicy("raise")
    with pytest.raises(BadDataError) as caught:
        policy.check_boxes(np.array([[8858730, 10, 8858740, 20]], dtype=np.float32), (20, 40), lambda i: "x.txt")
    assert "8,858,730" in str(caught.value) and "e+" not in str(caught.value)
