"""Python, NumPy and torch generator states in a form ``torch.load(weights_only=True)`` reads back."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch generator states in a ``weights_only``-safe form."""
    numpy_state = np.random.get_state(legacy=True)
    if not isinstance(numpy_state, tuple):  # legacy=True gives the tuple; numpy's stubs allow its dict form too
        raise TypeError(f"numpy's legacy generator state should be a tuple, got {type(numpy_state).__name__}")
    return {
        "python": random.getstate(),
        "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back the generator states :func:`rng_state` recorded."""
    random.setstate(_as_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """``random.setstate`` wants nested tuples; a checkpoint may hand back lists."""
    return tuple(_as_tuples(item) for item in value) if isinstance(value, (list, tuple)) else value
