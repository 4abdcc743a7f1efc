"""What a checkpoint holds: :class:`Checkpoint`, the typed form of the plain dict stored on disk.

On disk a checkpoint is a dict of tensors and Python primitives (so ``torch.load(weights_only=True)`` reads it
and no pickled code runs), with ``format: "yolov3-checkpoint"`` and ``version: 1`` beside these keys, each
optional (a resumable training checkpoint has them all, a plain inference one ``model`` and ``model_state``):

- ``model``: ``{"name": registered builder, "kwargs": builder arguments}`` (:class:`ModelSpec`) and
  ``model_state``: the weights; ``ema_state``: the EMA weights (evaluation and ``best.pt`` use these when
  present). A pruned model's state holds ``<module>.weight_orig`` and ``<module>.weight_mask``
  (``torch.nn.utils.prune``), which :func:`yolov3.checkpoint.load_model_state` re-creates before loading;
- ``class_names``, ``input_size`` (height, width), ``preprocessing`` (the fields of
  :class:`yolov3.inference.Preprocessing`) and ``normalization``: what ``detect --weights best.pt`` needs;
- ``optimizer``, ``scheduler``, ``runner`` (step counters and the gradient scaler), ``amp``, ``epoch``,
  ``best_map50``, ``history``, ``callbacks``, ``rng`` and ``config``: what ``--resume`` needs;
- ``pruning`` (method, sparsity, scope of a pruned model) and ``rewind_iteration`` (a lottery ticket's rewind
  point): what the compression workflows record.

Keys this version does not know are kept in :attr:`Checkpoint.extra` and written back as they were.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from yolov3.models import create_model

CHECKPOINT_FORMAT = "yolov3-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit; the message names the file."""


@dataclass(frozen=True)
class ModelSpec:
    """Which model a checkpoint's weights belong to: a registered builder and its arguments."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def build(self) -> nn.Module:
        """A fresh model (``create_model(name, **options)``); a ``KeyError`` names an unknown builder."""
        return create_model(self.name, **self.options)

    def to_dict(self) -> dict[str, Any]:
        """The on-disk form, ``{"name", "kwargs"}`` (also what ``.yolov3c`` headers store)."""
        return {"name": self.name, "kwargs": dict(self.options)}

    @classmethod
    def from_dict(cls, value: object, source: str = "checkpoint") -> ModelSpec:
        kwargs = value.get("kwargs", {}) if isinstance(value, Mapping) else None
        if not isinstance(value, Mapping) or not isinstance(value.get("name"), str) or not isinstance(kwargs, Mapping):
            raise CheckpointError(f"{source}: checkpoint lacks 'model' {{name, kwargs}}, got {_describe(value)}")
        return cls(value["name"], dict(kwargs))

    def __str__(self) -> str:
        return str(self.to_dict())


@dataclass(frozen=True)
class TrainingState:
    """The entries ``--resume`` needs, all present (:meth:`Checkpoint.training_state`)."""

    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    runner: dict[str, Any]
    epoch: int
    best_map50: float
    history: list[dict[str, float]]
    callbacks: list[dict[str, Any]]
    rng: dict[str, Any]


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint; every entry is optional (see the module docstring for which workflow needs which)."""

    model: ModelSpec | None = None
    model_state: dict[str, torch.Tensor] | None = None
    ema_state: dict[str, torch.Tensor] | None = None
    class_names: tuple[str, ...] | None = None
    input_size: tuple[int, int] | None = None
    preprocessing: dict[str, Any] | None = None
    normalization: str | None = None
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    runner: dict[str, Any] | None = None
    amp: dict[str, Any] | None = None
    epoch: int | None = None
    best_map50: float | None = None
    history: list[dict[str, float]] | None = None
    callbacks: list[dict[str, Any]] | None = None
    rng: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    pruning: dict[str, Any] | None = None
    rewind_iteration: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def inference_state(self) -> dict[str, torch.Tensor] | None:
        """The weights inference uses: the EMA's when present, else the model's."""
        return self.ema_state if self.ema_state is not None else self.model_state

    def training_state(self, source: str = "checkpoint") -> TrainingState:
        """What ``--resume`` needs; a :class:`CheckpointError` names the entries an inference checkpoint lacks."""
        optimizer, scheduler, runner, epoch, best_map50, rng = (
            self.optimizer, self.scheduler, self.runner, self.epoch, self.best_map50, self.rng
        )  # fmt: skip
        if (optimizer is None or scheduler is None or runner is None or epoch is None or best_map50 is None
                or rng is None):  # fmt: skip
            required = ("optimizer", "scheduler", "runner", "epoch", "best_map50", "rng")
            missing = ", ".join(repr(name) for name in required if getattr(self, name) is None)
            raise CheckpointError(f"{source}: cannot resume from it: it has no {missing} (an inference checkpoint?)")
        return TrainingState(
            optimizer, scheduler, runner, epoch, best_map50, list(self.history or []), list(self.callbacks or []), rng
        )

    def without_training_state(self) -> Checkpoint:
        """This checkpoint without what only ``--resume`` reads (optimizer, scheduler, runner, callbacks, rng)."""
        return dataclasses.replace(self, optimizer=None, scheduler=None, runner=None, callbacks=None, rng=None)

    def to_dict(self) -> dict[str, Any]:
        """The on-disk dict: the format marker, the entries that are set, then :attr:`extra`."""
        payload: dict[str, Any] = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION}
        for entry in dataclasses.fields(self):
            value = getattr(self, entry.name)
            if entry.name != "extra" and value is not None:
                payload[entry.name] = value.to_dict() if isinstance(value, ModelSpec) else value
        return {**payload, **{key: value for key, value in self.extra.items() if key not in payload}}

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any], source: str = "checkpoint") -> Checkpoint:
        """Check and convert the entries of an on-disk dict (its format marker, if any, is skipped); an entry of
        the wrong type is a :class:`CheckpointError` naming ``source`` and the key."""
        entries: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in payload.items():
            if key in ("format", "version"):
                continue
            if key not in _CONVERTERS:
                extra[key] = value
            elif value is not None:
                entries[key] = _CONVERTERS[key](value, key, source)
        return cls(**entries, extra=extra)


def _describe(value: object) -> str:
    text = repr(value) if isinstance(value, (str, int, float, bool)) else type(value).__name__
    return text if len(text) <= 60 else f"{text[:57]}..."


def _wrong(key: str, expected: str, value: object, source: str) -> CheckpointError:
    return CheckpointError(f"{source}: '{key}' must be {expected}, got {_describe(value)}")


def _mapping(value: object, key: str, source: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _wrong(key, "a mapping", value, source)
    return dict(value)


def _state(value: object, key: str, source: str) -> dict[str, torch.Tensor]:
    if not isinstance(value, Mapping) or not all(
        isinstance(name, str) and isinstance(tensor, torch.Tensor) for name, tensor in value.items()
    ):
        raise _wrong(key, "a mapping of parameter names to tensors", value, source)
    return dict(value)


def _names(value: object, key: str, source: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(name, str) for name in value):
        raise _wrong(key, "a list of strings", value, source)
    return tuple(value)


def _size(value: object, key: str, source: str) -> tuple[int, int]:
    sides = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(sides, (list, tuple)) or len(sides) != 2 or not all(_is_int(side) for side in sides):
        raise _wrong(key, "(height, width) integers", value, source)
    return int(sides[0]), int(sides[1])


def _string(value: object, key: str, source: str) -> str:
    if not isinstance(value, str):
        raise _wrong(key, "a string", value, source)
    return value


def _integer(value: object, key: str, source: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _wrong(key, "an integer", value, source)
    return value


def _number(value: object, key: str, source: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise _wrong(key, "a number", value, source)
    return float(value)


def _list_of_mappings(value: object, key: str, source: str) -> list[dict[str, Any]]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, Mapping) for item in value):
        raise _wrong(key, "a list of mappings", value, source)
    return [dict(item) for item in value]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _model(value: object, key: str, source: str) -> ModelSpec:
    return ModelSpec.from_dict(value, source)


_CONVERTERS: dict[str, Callable[[object, str, str], Any]] = {
    "model": _model,
    "model_state": _state,
    "ema_state": _state,
    "class_names": _names,
    "input_size": _size,
    "preprocessing": _mapping,
    "normalization": _string,
    "optimizer": _mapping,
    "scheduler": _mapping,
    "runner": _mapping,
    "amp": _mapping,
    "epoch": _integer,
    "best_map50": _number,
    "history": _list_of_mappings,
    "callbacks": _list_of_mappings,
    "rng": _mapping,
    "config": _mapping,
    "pruning": _mapping,
    "rewind_iteration": _integer,
}
