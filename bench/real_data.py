"""Fine-tuning on real data (BCCD) on this machine: test mAP against training minutes, by initialisation.

Trains ``configs/bccd.yaml`` (yolov3-tiny, BCCD train 205 / val 87 / test 72 images) once per variant, in
sequence, in this process, with the same config, seed and ``--set`` overrides:

- (a) ``model.weights``: the whole COCO detector (yolov3-tiny.weights; the two output convs re-initialised);
- (b) ``model.backbone_weights`` of the same file with ``model.backbone_cutoff`` 15 (Darknet layers 0-14, what
  ``darknet partial ... 15`` keeps as ``yolov3-tiny.conv.15``), the rest from scratch;
- (c) from scratch;
- (a32) as (a) in plain fp32 and NCHW memory order (``train.amp=none``, ``train.channels_last=false``), the
  baseline of ``train.amp: auto`` + ``channels_last`` (issue 12).

Before training and after every ``--test-every`` epochs (and the last) the EMA model is scored on the **test**
split as ``python -m yolov3.evaluate --weights W --data CFG --split test`` would
(:class:`yolov3.train.held_out.HeldOutEvaluation`), against training wall-clock minutes that exclude these test
evaluations (the trainer's own validation on val, every ``eval.every_epochs``, is counted: it picks
``best.pt``). After training, ``best.pt`` (best on val) is scored on test too. Runs go to
``logs/real_data-<variant>-<date>``, the raw results to ``logs/real_data-<date>.json`` (rewritten after every
evaluation), from which ``--from-json`` re-renders the tables without training.

Usage::

    python bench/real_data.py                                  # a, b, c; print the tables
    python bench/real_data.py --record                         # and write them into docs/benchmarks.md
    python bench/real_data.py --epochs 1 --variants a,c --set data.image_size=128   # a smoke run
    python bench/real_data.py --from-json logs/real_data-20261124-101500.json --record
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from common import command_line, cpu_name
from docs_section import record_section
from yolov3.atomic import write_text_atomic
from yolov3.checkpoint import load_checkpoint
from yolov3.config_loading import load_yaml, to_dict
from yolov3.evaluation.dataset_run import DatasetEvaluationSettings, evaluate_on_dataset
from yolov3.inference.model_loading import load_inference_model
from yolov3.train.builder import build_parts, trainer_from_parts
from yolov3.train.config import load_train_config
from yolov3.train.held_out import HeldOutEvaluation, HeldOutRecord, data_source_from_config, record_from_evaluation

SECTION = "## Real data: BCCD, whole detector vs backbone vs scratch (issue 10)"
NOTES_MARKER = "<!-- notes: kept when bench/real_data.py --record rewrites this section -->"
ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
DEFAULT_WEIGHTS = "~/.cache/yolov3/weights/yolov3-tiny.weights"
LABELS = {"a": "(a) COCO detector", "b": "(b) COCO backbone", "c": "(c) scratch", "a32": "(a) in fp32, NCHW"}
METRICS = (("map50", "mAP@0.5"), ("map", "mAP@[.5:.95]"))


def variant_overrides(variant: str, weights: str, cutoff: int) -> list[str]:
    """The ``--set`` overrides that give ``variant`` its initialisation (and nothing else)."""
    return {
        "a": [f"model.weights={weights}", "model.backbone_weights=null"],
        "b": ["model.weights=null", f"model.backbone_weights={weights}", f"model.backbone_cutoff={cutoff}"],
        "c": ["model.weights=null", "model.backbone_weights=null"],
        # (a) without mixed precision or channels_last: what train.amp auto + channels_last buy (issue 12)
        "a32": [
            f"model.weights={weights}",
            "model.backbone_weights=null",
            "train.amp=none",
            "train.channels_last=false",
        ],
    }[variant]


def save_results(results: dict[str, Any], path: Path) -> None:
    write_text_atomic(path, json.dumps(results, indent=1) + "\n")


def run_variant(variant: str, arguments: argparse.Namespace, results: dict[str, Any], json_path: Path) -> None:
    """Train one variant with test evaluations along the way, then score its best-on-val checkpoint on test."""
    stamp, overrides = results["stamp"], list(results["overrides"])
    overrides += variant_overrides(variant, results["weights"], arguments.cutoff)
    overrides.append(f"logging.run_name=real_data-{variant}-{stamp}")
    config = load_train_config(arguments.cfg, overrides)
    run_dir = Path(config.logging.log_dir) / config.logging.run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "args.yaml", yaml.safe_dump(to_dict(config), sort_keys=False))
    entry: dict[str, Any] = {"label": LABELS[variant], "overrides": overrides, "run_dir": str(run_dir), "records": []}
    results["variants"][variant] = entry

    def keep(record: HeldOutRecord) -> None:
        entry["records"].append(record.to_dict())
        save_results(results, json_path)

    print(f"\n=== {LABELS[variant]}: {run_dir}", flush=True)
    held_out = HeldOutEvaluation("test", arguments.test_every, at_start=True, on_record=keep)
    parts = build_parts(config, progress=not arguments.no_progress)
    trainer = trainer_from_parts(parts, config, run_dir, callbacks=[held_out], progress=not arguments.no_progress)
    entry["images"] = {"train": len(parts.train_set), "val": len(parts.val_set)}
    amp = getattr(trainer, "amp", None)  # what train.amp resolved to (auto: by the hardware)
    entry["precision"] = (
        f"{amp.mode if amp else config.train.amp}, channels_last {getattr(config.train, 'channels_last', False)}"
    )
    started = time.perf_counter()
    trainer.fit()
    entry["fit_minutes"] = (time.perf_counter() - started) / 60.0  # with the test evaluations
    best_epoch = int(load_checkpoint(run_dir / "best.pt").epoch or 0) + 1
    loaded = load_inference_model(run_dir / "best.pt")  # the EMA weights, as evaluate --weights best.pt reads them
    settings = DatasetEvaluationSettings(split="test", device=str(trainer.device))
    evaluation = evaluate_on_dataset(loaded, data_source_from_config(config), settings)
    entry["images"]["test"] = evaluation.num_images
    best = record_from_evaluation(evaluation, best_epoch, float("nan"), trainer.best_map50).to_dict()
    best.pop("minutes")
    best.pop("evaluation_seconds")
    entry["best"] = best
    save_results(results, json_path)
    print(variant_table(entry), flush=True)


# -- rendering ---------------------------------------------------------------------------------------------


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"


def variant_table(entry: dict[str, Any]) -> str:
    lines = [
        f"{entry['label']} (`{entry['run_dir']}`)",
        "",
        "| epoch | training minutes | test mAP@0.5 | test mAP@[.5:.95] | val mAP@0.5 |",
        "|---:|---:|---:|---:|---:|",
    ]
    for record in entry["records"]:
        lines.append(
            f"| {record['epoch']} | {record['minutes']:.1f} | {record['map50']:.3f} | {record['map']:.3f} | "
            f"{_value(record['val_map50'])} |"
        )
    return "\n".join(lines)


def latest_at(records: list[dict[str, Any]], minutes: float) -> dict[str, Any] | None:
    """The last record of ``records`` taken at or before ``minutes`` of training."""
    earlier = [record for record in records if record["minutes"] <= minutes]
    return earlier[-1] if earlier else None


def _summary(metric: str, reference: str, other: str, matching: str, values: list[float | None]) -> str:
    known = [value for value in values if value is not None]
    if not known:
        return f"- {metric}, {reference} − {other} ({matching}): no comparable points."
    ahead = sum(value > 0 for value in known)
    missing = len(values) - len(known)
    return (
        f"- {metric}, {reference} − {other} ({matching}, {len(values)} points after training started): min "
        f"{min(known):+.3f}, mean {sum(known) / len(known):+.3f}, max {max(known):+.3f}; ahead at {ahead} of "
        f"{len(values)}" + (f" ({missing} without a value to compare)" if missing else "")
        + (" — **at every one**." if ahead == len(values) else ".")
    )  # fmt: skip


def comparison_tables(variants: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Per metric, a table at the reference variant's time points; and summary lines per compared variant.

    Each other variant is compared twice: with its latest score at or before that minute (the time-matched
    comparison the issue asks for) and with its score after the same number of epochs (robust to clock noise).
    """
    names = list(variants)
    reference, others = names[0], names[1:]
    label = variants[reference]["label"]
    lines: list[str] = []
    summary: list[str] = []
    for key, metric in METRICS:
        header = f"| minutes | {reference} epoch | {reference} |"
        header += "".join(
            f" {o} at that minute (epoch) | {reference} − {o} | {reference} − {o}, same epoch |" for o in others
        )
        lines += [f"Test {metric} at the time points of {label}:", "", header, "|" + "---:|" * (3 + 3 * len(others))]
        timed: dict[str, list[float | None]] = {o: [] for o in others}
        same_epoch: dict[str, list[float | None]] = {o: [] for o in others}
        for record in variants[reference]["records"]:
            cells = [f"{record['minutes']:.1f}", str(record["epoch"]), f"{record[key]:.3f}"]
            for other in others:
                match = latest_at(variants[other]["records"], record["minutes"])
                twin = next((r for r in variants[other]["records"] if r["epoch"] == record["epoch"]), None)
                delta = None if match is None else record[key] - match[key]
                twin_delta = None if twin is None else record[key] - twin[key]
                cells += [
                    "-" if match is None else f"{match[key]:.3f} ({match['epoch']})",
                    _signed(delta),
                    _signed(twin_delta),
                ]
                if record["epoch"] > 0:
                    timed[other].append(delta)
                    same_epoch[other].append(twin_delta)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        for other in others:
            other_label = variants[other]["label"]
            summary.append(_summary(metric, label, other_label, "at the same minute", timed[other]))
            summary.append(_summary(metric, label, other_label, "after the same epochs", same_epoch[other]))
    return lines, summary


def per_class_table(variants: dict[str, dict[str, Any]]) -> list[str]:
    first = next(iter(variants.values()))
    classes = list(first["records"][-1]["per_class"])
    header = "| variant | checkpoint | epoch |" + "".join(f" {name} AP50 | {name} AP |" for name in classes)
    lines = [header + " mAP@0.5 | mAP@[.5:.95] |", "|---|---|---:|" + "---:|" * (2 * len(classes) + 2)]
    for entry in variants.values():
        rows = [("final", entry["records"][-1])] + ([("best on val", entry["best"])] if "best" in entry else [])
        for checkpoint, record in rows:
            cells = [entry["label"], checkpoint, str(record["epoch"])]
            for name in classes:
                scores = record["per_class"].get(name, {})
                cells += [_value(scores.get("ap50")), _value(scores.get("ap"))]
            cells += [f"{record['map50']:.3f}", f"{record['map']:.3f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def render(results: dict[str, Any]) -> str:
    variants = {name: entry for name, entry in results["variants"].items() if entry["records"]}
    load_after = results.get("load_after")
    images = next((entry["images"] for entry in variants.values() if "images" in entry), {})
    precisions = " / ".join(sorted({entry.get("precision", "?") for entry in variants.values()}))
    lines = [
        f"- Machine: {results['machine']}; Python {results['python']}, torch {results['torch']}",
        f"- Command: `{results['command']}`",
        f"- Date: {results['date']}; load average (1, 5, 15 min) before "
        + ", ".join(f"{value:.2f}" for value in results["load_before"])
        + (" / after " + ", ".join(f"{value:.2f}" for value in load_after) if load_after else " (run incomplete)"),
        f"- Config `{results['cfg']}` with `--set` {', '.join(results['overrides']) or 'none'}; "
        f"train.epochs {results['epochs']}; images "
        + ", ".join(f"{split} {count}" for split, count in images.items())
        + f"; training precision {precisions}; COCO weights `{results['weights']}`; backbone cutoff "
        f"{results['cutoff']} (Darknet layers 0-{results['cutoff'] - 1}).",
        "- Test scores: the EMA model on the test split, as `python -m yolov3.evaluate --weights W --data CFG "
        f"--split test` (COCO mAP; the config's image size and eval thresholds), before training and every "
        f"{results['test_every']} epochs and the last. Minutes: training wall-clock without these test evaluations "
        "(the trainer's validation on val, which picks best.pt, is counted).",
        "",
    ]
    comparison, summary = comparison_tables(variants) if len(variants) > 1 else ([], [])
    lines += comparison
    if summary:
        lines += [
            "At that minute: the other variant's latest test score at or before that many training minutes (its "
            "epoch in brackets); same epoch: its score after as many epochs. The 0-minute point (before training) "
            "is left out of the counts below.",
            "",
            *summary,
            "",
        ]
    for entry in variants.values():
        minutes = entry.get("fit_minutes")
        lines += [variant_table(entry)]
        lines += [f"\nWall-clock of `fit()` with the test evaluations: {minutes:.1f} min.", ""] if minutes else [""]
    lines += [
        "Per class, on test (final = the last epoch's EMA; best on val = `best.pt`):",
        "",
        *per_class_table(variants),
    ]
    return "\n".join(lines) + "\n"


# -- the program -------------------------------------------------------------------------------------------


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", type=Path, default=Path("configs/bccd.yaml"))
    parser.add_argument("--variants", default="a,b,c", help="comma-separated, the first is the reference (a,b,c)")
    parser.add_argument("--epochs", type=int, help="train.epochs (default: the config's)")
    parser.add_argument("--test-every", type=int, default=5, help="test evaluation every N epochs (and the last)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to every variant (repeatable)")  # fmt: skip
    parser.add_argument("--weights", help=f"the COCO Darknet weights (default: the config's model.weights, "
                        f"else {DEFAULT_WEIGHTS})")  # fmt: skip
    parser.add_argument("--cutoff", type=int, default=15, help="model.backbone_cutoff of variant b")
    parser.add_argument("--json", type=Path, help="results file (default: <log_dir>/real_data-<date>.json)")
    parser.add_argument("--from-json", type=Path, help="re-render (and --record) a results file; no training")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--record", action="store_true", help=f"write the report into {DOCS.name}")
    arguments = parser.parse_args(argv)
    arguments.variants = [name.strip() for name in arguments.variants.split(",") if name.strip()]
    unknown = [name for name in arguments.variants if name not in LABELS]
    if unknown or not arguments.variants or len(set(arguments.variants)) != len(arguments.variants):
        parser.error(f"--variants takes distinct names from {', '.join(LABELS)}, got {','.join(arguments.variants)}")
    if arguments.test_every < 1:
        parser.error("--test-every must be at least 1")
    return arguments


def new_results(arguments: argparse.Namespace, argv: Sequence[str] | None) -> dict[str, Any]:
    overrides = list(arguments.overrides) + ([f"train.epochs={arguments.epochs}"] if arguments.epochs else [])
    base = load_train_config(arguments.cfg, overrides)  # checks the config and overrides before any training
    weights = arguments.weights or (str(load_yaml(arguments.cfg).get("model", {}).get("weights") or DEFAULT_WEIGHTS))
    if {"a", "a32", "b"} & set(arguments.variants) and not Path(weights).expanduser().is_file():
        raise SystemExit(f"error: {weights}: no such weights file (bash ../shared/fetch-yolov3-tiny-weights)")
    now = datetime.datetime.now(datetime.UTC)
    return {
        "stamp": time.strftime("%Y%m%d-%H%M%S"),
        "machine": f"{cpu_name()}, {os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "command": command_line("bench/real_data.py", argv if argv is not None else sys.argv[1:]),
        "date": f"{now:%Y-%m-%d %H:%M} UTC",
        "load_before": list(os.getloadavg()),
        "cfg": str(arguments.cfg),
        "overrides": overrides,
        "epochs": base.train.epochs,
        "test_every": arguments.test_every,
        "weights": weights,
        "cutoff": arguments.cutoff,
        "log_dir": str(base.logging.log_dir),
        "variants": {},
    }


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if arguments.from_json:
        results = json.loads(arguments.from_json.read_text())
    else:
        results = new_results(arguments, argv)
        json_path = arguments.json or Path(results["log_dir"]) / f"real_data-{results['stamp']}.json"
        print(f"results: {json_path}", flush=True)
        for variant in arguments.variants:
            run_variant(variant, arguments, results, json_path)
        results["load_after"] = list(os.getloadavg())
        save_results(results, json_path)
    body = render(results)
    print(f"\n{SECTION}\n\n{body}")
    if arguments.record:
        has_marker = DOCS.exists() and NOTES_MARKER in DOCS.read_text()  # hand-written notes below it are kept
        record_section(DOCS, SECTION, body if has_marker else f"{body}\n{NOTES_MARKER}\n", NOTES_MARKER)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
