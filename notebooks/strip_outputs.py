"""Strip the outputs of notebooks before committing them: ``python notebooks/strip_outputs.py [NOTEBOOK ...]``.

Notebooks live in git without outputs (``tests/test_notebooks.py`` checks it), so that diffs show code and
text only and no rendered image or local path is committed. With no arguments every ``notebooks/*.ipynb`` is
stripped in place: code cells lose their outputs, execution counts and execution timings. The file is written
in nbformat's own layout (one-space indent, sorted keys), so a notebook without outputs comes out unchanged.
Only the standard library is used; no nbstripout or git filter is needed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent
VOLATILE_CELL_METADATA = ("execution", "collapsed", "scrolled")


def strip_notebook(notebook: dict) -> dict:
    """The notebook (a parsed ``.ipynb``) with every code cell's outputs, count and timings removed, in place."""
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        for key in VOLATILE_CELL_METADATA:
            cell.get("metadata", {}).pop(key, None)
    return notebook


def notebook_text(notebook: dict) -> str:
    """The ``.ipynb`` text as nbformat writes it."""
    return json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def strip_file(path: Path) -> bool:
    """Strip ``path`` in place; returns whether it changed."""
    text = path.read_text(encoding="utf-8")
    stripped = notebook_text(strip_notebook(json.loads(text)))
    if stripped == text:
        return False
    path.write_text(stripped, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python notebooks/strip_outputs.py", description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to strip (default: notebooks/*.ipynb)")
    arguments = parser.parse_args(argv)
    for path in arguments.notebooks or sorted(NOTEBOOKS.glob("*.ipynb")):
        print(f"{path}: {'stripped' if strip_file(path) else 'already clean'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
