"""Every ``python -m yolov3.<name>`` that the README, docs, notebooks and config comments show answers ``--help``,
in-process through :mod:`runpy` as ``python -m`` runs it; and the entry points stay thin."""

from __future__ import annotations

import ast
import importlib.util
import re
import runpy
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "notebooks").glob("*.ipynb")),
             *sorted((ROOT / "configs").glob("*.yaml"))]  # fmt: skip
COMMAND = re.compile(r"-m (yolov3(?:\.[a-z_0-9]+)+)")
# The commands users know; the documents must show each (a command missing from them is a test to update).
KNOWN = {
    "yolov3.anchors", "yolov3.compress", "yolov3.darknet.write_cfg", "yolov3.data.show", "yolov3.data.synthetic",
    "yolov3.detect", "yolov3.evaluate", "yolov3.export", "yolov3.lr", "yolov3.prune", "yolov3.summary",
    "yolov3.train", "yolov3.weights",
}  # fmt: skip


def documented_commands() -> set[str]:
    return {match for path in DOCUMENTS for match in COMMAND.findall(path.read_text(encoding="utf-8"))}


def test_the_documents_show_every_known_command() -> None:
    assert documented_commands() == KNOWN


@pytest.mark.parametrize("module", sorted(KNOWN))
def test_help(module: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [module, "--help"])  # what python -m module --help gives argparse
    with warnings.catch_warnings():  # runpy warns when an earlier test imported the module already
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(SystemExit) as raised:
            runpy.run_module(module, run_name="__main__")
    assert raised.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m {module}"), out[:200]


@pytest.mark.parametrize("module", sorted(KNOWN))
def test_entry_points_only_call_the_cli_package(module: str) -> None:
    """``yolov3/<name>.py`` (or a package's ``__main__.py``) imports ``main`` from ``yolov3.cli`` and runs it."""
    spec = importlib.util.find_spec(module)
    path = Path(spec.origin)
    if path.name == "__init__.py":
        path = path.with_name("__main__.py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imports = [node for node in tree.body if isinstance(node, ast.ImportFrom)]
    assert [(node.module, [alias.name for alias in node.names]) for node in imports] == [
        (f"yolov3.cli.{module.split('.')[-1]}", ["main"])
    ]
    assert not [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Assign))]
