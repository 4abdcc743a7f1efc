"""The notebooks: committed without outputs, each asserts its results, and each runs top to bottom headless."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
CELL_TIMEOUT_SECONDS = 600


def load_strip_outputs() -> types.ModuleType:
    """``notebooks/strip_outputs.py`` as a module (``notebooks/`` is not a package; no ``__pycache__`` left there)."""
    path = NOTEBOOKS_DIR / "strip_outputs.py"
    module = types.ModuleType("strip_outputs")
    module.__file__ = str(path)
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), module.__dict__)
    return module


def code_cells(path: Path) -> list[dict]:
    return [cell for cell in json.loads(path.read_text(encoding="utf-8"))["cells"] if cell["cell_type"] == "code"]


def test_the_four_notebooks_are_there() -> None:
    assert [path.name for path in NOTEBOOKS] == [
        "01_model_tour.ipynb",
        "02_data.ipynb",
        "03_training.ipynb",
        "04_compression.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    for index, cell in enumerate(code_cells(path)):
        where = f"{path.name}, code cell {index}: run `python notebooks/strip_outputs.py` before committing"
        assert cell["outputs"] == [], where
        assert cell["execution_count"] is None, where
        assert "execution" not in cell.get("metadata", {}), where
    strip_outputs = load_strip_outputs()
    text = path.read_text(encoding="utf-8")
    assert strip_outputs.notebook_text(strip_outputs.strip_notebook(json.loads(text))) == text, (
        f"{path.name} is not in stripped form: run `python notebooks/strip_outputs.py`"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_asserts_its_results(path: Path) -> None:
    sources = ["".join(cell["source"]) for cell in code_cells(path)]
    assert sum(source.count("assert ") for source in sources) >= 3, f"{path.name} checks too little"


def test_strip_outputs_removes_outputs_counts_and_timings(tmp_path: Path) -> None:
    strip_outputs = load_strip_outputs()
    notebook = json.loads(NOTEBOOKS[0].read_text(encoding="utf-8"))
    executed = json.loads(json.dumps(notebook))
    cell = next(cell for cell in executed["cells"] if cell["cell_type"] == "code")
    cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hello\n"]}]
    cell["execution_count"] = 3
    cell["metadata"]["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
    path = tmp_path / "executed.ipynb"
    path.write_text(json.dumps(executed))
    assert strip_outputs.strip_file(path) is True
    assert path.read_text(encoding="utf-8") == strip_outputs.notebook_text(notebook)
    assert strip_outputs.strip_file(path) is False


@pytest.fixture(scope="module")
def kernel_environment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for the notebook kernels: a ``python3`` kernelspec of *this* interpreter first on JUPYTER_PATH
    (a user-level kernelspec of another Python must not be picked up), and one OpenMP thread per kernel."""
    kernelspec = pytest.importorskip("ipykernel.kernelspec")
    jupyter_path = tmp_path_factory.mktemp("jupyter")
    kernelspec.write_kernel_spec(jupyter_path / "kernels" / "python3")
    kernel = json.loads((jupyter_path / "kernels" / "python3" / "kernel.json").read_text())
    assert kernel["argv"][0] == sys.executable
    environment = dict(os.environ)
    environment["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(jupyter_path), os.environ.get("JUPYTER_PATH")]))
    # On a busy 2-core machine, two OpenMP threads that wait for each other at every layer made the training
    # notebooks 10-20 times slower than one thread; the notebooks test behaviour, not speed.
    environment["OMP_NUM_THREADS"] = "1"
    return environment


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_headless(path: Path, kernel_environment: dict[str, str], monkeypatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("JUPYTER_PATH", kernel_environment["JUPYTER_PATH"])  # read by the kernelspec lookup
    notebook = nbformat.read(path, as_version=4)
    files_before = sorted(NOTEBOOKS_DIR.rglob("*"))
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_SECONDS,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},  # the kernel's working directory
    )
    client.execute(env=kernel_environment)  # raises CellExecutionError on the first failing cell
    errors = [output for cell in notebook.cells for output in cell.get("outputs", []) if output.output_type == "error"]
    assert not errors
    assert sorted(NOTEBOOKS_DIR.rglob("*")) == files_before, "a notebook wrote into notebooks/; use a temporary folder"
