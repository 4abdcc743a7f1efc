"""Recording benchmark figures: each ``bench/`` script owns one ``## `` section of ``docs/benchmarks.md``.

``record_section`` replaces that section (or appends it) and leaves every other section alone; hand-written
notes placed after the script's ``notes_marker`` line survive re-recording.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

DOCS_HEADER = (
    "# Benchmarks\n\n"
    "Every figure here comes from a script under `bench/`; each section names machine, command and date.\n"
)


def record_section(docs_path: Path, title: str, body: str, notes_marker: str | None = None) -> None:
    """Write ``title`` + ``body`` as a section of ``docs_path`` (created with a header if missing)."""
    text = docs_path.read_text() if docs_path.exists() else DOCS_HEADER
    lines = text.splitlines(keepends=True)
    start = next((index for index, line in enumerate(lines) if line.rstrip() == title), None)
    notes = ""
    if start is None:
        before, after = text.rstrip("\n") + "\n\n", ""
    else:
        end = next((index for index in range(start + 1, len(lines)) if lines[index].startswith("## ")), len(lines))
        old_section = lines[start:end]
        marker = next((i for i, line in enumerate(old_section) if notes_marker and line.rstrip() == notes_marker), None)
        if marker is not None:
            notes = "\n" + "".join(old_section[marker:]).rstrip() + "\n"
        before, after = "".join(lines[:start]), "".join(lines[end:])
    section = f"{title}\n\n{body.rstrip()}\n{notes}"
    docs_path.parent.mkdir(parents=True, exist_ok=True)
    docs_path.write_text(before + section + ("\n" + after if after else ""))


def print_and_record(report: str, record: bool, docs_path: Path, title: str, notes_marker: str | None = None) -> None:
    """Print a script's ``report``; with ``record`` (its ``--record``) also write it as its section of ``docs_path``."""
    print(report)
    if record:
        record_section(docs_path, title, report, notes_marker)
        logger.info("recorded in %s", docs_path)
