"""Benchmark scripts rewrite only their own section of docs/benchmarks.md, keeping hand-written notes."""

from __future__ import annotations

from pathlib import Path

from docs_section import DOCS_HEADER, record_section

MARKER = "<!-- notes -->"


def test_record_section_replaces_appends_and_keeps_notes(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    record_section(docs, "## A", "first figures", MARKER)
    assert docs.read_text() == DOCS_HEADER + "\n## A\n\nfirst figures\n"
    record_section(docs, "## B", "other figures")
    docs.write_text(docs.read_text().replace("first figures\n", f"first figures\n\n{MARKER}\nhand-written note\n"))
    record_section(docs, "## A", "new figures", MARKER)
    text = docs.read_text()
    assert "first figures" not in text and "new figures" in text
    assert f"{MARKER}\nhand-written note" in text and text.index("## A") < text.index("## B")
    assert "\n## B\n\nother figures\n" in text
