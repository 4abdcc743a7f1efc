"""A training run's folder: where it goes, what a resume may change, and the ``args.yaml`` that repeats it."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from yolov3.atomic import remove_stale_temporaries, write_text_atomic
from yolov3.checkpoint import load_checkpoint
from yolov3.config_loading import ConfigError, to_dict
from yolov3.hardware import resolve_amp
from yolov3.train.config import TrainConfig, flatten_config

logger = logging.getLogger(__name__)

# A resumed run must keep these sections (they define the model and the data it learns from) ...
RESUME_LOCKED_SECTIONS = ("model", "data")
# ... except keys that do not change what is computed.
RESUME_FREE_KEYS = frozenset({"data.workers"})
# What the run writes into its folder (atomically): partial temporaries of these left by a kill -9 are removed.
RUN_FILES = ("args.yaml", "last.pt", "best.pt")


def run_directory(config: TrainConfig, cfg_path: Path) -> Path:
    """``logging.log_dir / run_name``, the name defaulting to the config file's stem and the start time."""
    name = config.logging.run_name or f"{cfg_path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    return config.logging.log_dir / name


def check_resume_config(checkpoint_path: Path, current: dict[str, Any]) -> None:
    """Refuse to resume when the config changes the model or the data the run in ``last.pt`` was trained on.

    Raises :class:`ConfigError` naming the first changed key (``--force`` skips this check). Other sections
    (epochs, logging, evaluation) may change on resume. A missing ``last.pt`` is left to the trainer.
    """
    if not checkpoint_path.is_file():
        return
    saved = load_checkpoint(checkpoint_path).config
    if not isinstance(saved, dict):
        return
    changed = changed_keys(saved, current, RESUME_LOCKED_SECTIONS)
    if changed:
        key, (before, after) = next(iter(changed.items()))
        others = f" (and {len(changed) - 1:,} more: {', '.join(list(changed)[1:])})" if len(changed) > 1 else ""
        raise ConfigError(
            f"{checkpoint_path.parent / 'args.yaml'}: {key} is {after!r} but the run in {checkpoint_path} was "
            f"trained with {before!r}{others}; the model or data of a run cannot change on resume "
            "(start a new run, or pass --force to accept)"
        )


def changed_keys(saved: dict[str, Any], current: dict[str, Any], sections: tuple[str, ...]) -> dict[str, tuple]:
    """``{dotted key: (saved value, current value)}`` for every leaf under ``sections`` that differs."""
    flat_saved, flat_current = flatten_config(saved), flatten_config(current)
    keys = sorted(key for key in flat_saved.keys() | flat_current.keys() if key.split(".")[0] in sections)
    return {
        key: (flat_saved.get(key), flat_current.get(key))
        for key in keys
        if key not in RESUME_FREE_KEYS and flat_saved.get(key) != flat_current.get(key)
    }


def prepare_run_folder(run_dir: Path, config: TrainConfig, device: torch.device) -> None:
    """Make ``run_dir``, remove the partial files a killed write left there, and write the resolved config as
    ``args.yaml`` (atomically), so that ``--cfg run_dir/args.yaml`` repeats the run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    stale = remove_stale_temporaries(run_dir, RUN_FILES)
    if stale:
        logger.info("%s: removed %d partial file(s) that killed writes left", run_dir, len(stale))
    write_text_atomic(run_dir / "args.yaml", args_yaml_text(config, device))


def args_yaml_text(config: TrainConfig, device: torch.device) -> str:
    """The resolved config as YAML, headed by a comment saying what ``auto`` settings chose on this machine."""
    choice = resolve_amp(config.train.amp, device)
    header = f"# train.amp: {config.train.amp} -> {choice.mode} on {device.type} ({choice.reason})\n"
    return header + yaml.safe_dump(to_dict(config), sort_keys=False)
