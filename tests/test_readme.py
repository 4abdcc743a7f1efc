"""The README's two commands are what a new user runs; CI runs the second one verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_has_two_commands_and_ci_runs_the_test_command() -> None:
    main_job, tests = readme_commands()
    assert "-m yolov3.train --cfg configs/shapes.yaml" in main_job
    assert (ROOT / "configs" / "shapes.yaml").is_file()
    assert "-m pytest" in tests
    assert tests in (ROOT / ".ci" / "run").read_text()
