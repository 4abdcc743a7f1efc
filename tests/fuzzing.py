"""Shared pieces of the property-based fuzz tests (``test_fuzz*.py``): settings and input mutations.

Every fuzz test is derandomized: CI runs the same cases every time. ``YOLOV3_FUZZ_SCALE=20`` runs 20 times as
many cases, freshly random, for a longer hunt (a failure prints the input that caused it).
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


def fuzz_settings(examples: int) -> settings:
    """``examples`` deterministic cases (``YOLOV3_FUZZ_SCALE`` times as many random ones), no deadline."""
    scale = float(os.environ.get("YOLOV3_FUZZ_SCALE", "0"))
    return settings(
        max_examples=int(examples * scale) if scale else examples,
        deadline=None,
        derandomize=not scale,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )


@pytest.fixture()
def quiet_logs() -> Iterator[None]:
    """Thousands of expected warnings (bad labels, ignored cfg keys) are not worth formatting."""
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


# --- values --------------------------------------------------------------------------------------------

EXTREME_NUMBERS = (
    "0", "-1", "1", "2", "3", "65536", "65537", "4096", "1024", "2147483647", "2147483648", "-2147483649",
    str(2**63), str(2**64), "1e30", "-1e30", "1e400", "nan", "-nan", "inf", "-inf", "0.5", "-0.0", "1e-30",
    "0x10", "1_000", "9" * 5000, "", ",", "1,", ",1", "1,,2", "1,2,3,4,5,6", "-1,-2", "0,0", "\x00",
)  # fmt: skip
EXTREME_TEXT = ("x" * 100_000, "é", "\ufeff", "[", "]", "=", "#", ";", "[net]", "[yolo]", "a=b=c", "\u2028")


def integer_lists(low: int, high: int, min_size: int = 0, max_size: int = 12) -> st.SearchStrategy[str]:
    """``"3,-1,7"``: comma-separated integers."""
    items = st.lists(st.integers(low, high), min_size=min_size, max_size=max_size)
    return items.map(lambda values: ",".join(map(str, values)))


numbers = st.one_of(
    st.sampled_from(EXTREME_NUMBERS),
    st.integers(-3, 12).map(str),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    integer_lists(-5, 40),
)
# Any value of a key=value line: mostly numbers, some extreme or random text.
values = st.one_of(numbers, numbers, numbers, st.sampled_from(EXTREME_TEXT), st.text(max_size=20))
# Values a network can mostly be built with: small numbers and lists, sometimes an extreme one.
plausible_values = st.one_of(
    st.integers(0, 8).map(str),
    st.integers(-12, 40).map(str),
    integer_lists(-12, 40, min_size=1, max_size=4),
    st.sampled_from(EXTREME_NUMBERS),
)
# Label fields: numbers of every kind, a few characters.
fields = st.one_of(
    st.sampled_from(EXTREME_NUMBERS),
    st.integers(-2, 4).map(str),
    st.floats(-0.5, 1.5).map(str),
    st.floats().map(repr),
    st.text(max_size=4),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=4),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=6,
)
json_numbers = st.sampled_from((0, -1, 1, 2, 2**31, 2**63, 10**30, 10**400, 1.5, 1e300, math.nan, math.inf, True))


# --- text mutations ------------------------------------------------------------------------------------

JUNK_ACTIONS = ("value", "value", "value", "value", "key", "key", "section", "section", "drop", "duplicate", "swap",
                "garble", "cut")  # fmt: skip
PLAUSIBLE_ACTIONS = ("value", "value", "value", "key", "section", "section", "section", "drop")


def _is_header(line: str) -> bool:
    return line.strip().startswith("[")


@st.composite
def mutated_lines(
    draw: st.DrawFn,
    lines: list[str],
    keys_by_section: dict[str, tuple[str, ...]] | None = None,
    sections: st.SearchStrategy[str] | None = None,
    max_mutations: int = 3,
    plausible: bool = False,
) -> str:
    """``lines`` with 1..``max_mutations`` edits: new values (mostly), new keys of the line's ``[section]``,
    whole new ``sections``, dropped, duplicated, swapped and garbled lines, a cut. ``plausible`` edits keep the
    text mostly parseable. Lines are picked uniformly (hypothesis would favour the first ones)."""
    lines = list(lines)
    keys_by_section = keys_by_section or {}
    pick = random.Random(draw(st.integers(0, 2**32 - 1)))
    all_keys = tuple(sorted({key for keys in keys_by_section.values() for key in keys})) or ("key",)
    for _ in range(draw(st.integers(1, max_mutations))):
        if not lines:
            lines.append(draw(st.text(max_size=20)))
            continue
        index = pick.randrange(len(lines))
        line = lines[index]
        action = draw(st.sampled_from(PLAUSIBLE_ACTIONS if plausible else JUNK_ACTIONS))
        value = draw(plausible_values if plausible else values)
        if action == "value" and "=" in line:
            lines[index] = f"{line.split('=', 1)[0]}={value}"
        elif action == "key":  # a key the section does not have yet
            start = next((i for i in range(index, -1, -1) if _is_header(lines[i])), 0)
            end = next((i for i in range(index + 1, len(lines)) if _is_header(lines[i])), len(lines))
            present = {entry.split("=", 1)[0] for entry in lines[start:end]}
            known = keys_by_section.get(lines[start].strip()[1:-1], ()) or all_keys
            choices = [key for key in known if key not in present]
            if choices:
                lines.insert(index + 1, f"{draw(st.sampled_from(choices))}={value}")
        elif action == "section":  # before the next section header (or at the end)
            header = next((i for i in range(index + 1, len(lines)) if _is_header(lines[i])), len(lines))
            lines.insert(header, draw(sections if sections is not None else st.text(max_size=20)))
        elif action == "drop":
            del lines[index]
        elif action == "duplicate":
            lines.insert(pick.randrange(len(lines) + 1), line)
        elif action == "swap":
            other = pick.randrange(len(lines))
            lines[index], lines[other] = lines[other], lines[index]
        elif action == "cut":
            lines = lines[:index]
        elif action == "garble" or not plausible:  # a few characters replaced
            position = pick.randrange(len(line) + 1)
            lines[index] = line[:position] + draw(st.text(min_size=1, max_size=3)) + line[position + 1 :]
    return "\n".join(lines)
