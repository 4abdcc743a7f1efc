"""The CLIs' shared runner: a user error is one ``error:`` line and exit code 2, an internal error keeps its
traceback; one logging format."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from yolov3.cli.runner import LOG_FORMAT, USER_ERROR_EXIT_CODE, command, describe_user_error, run
from yolov3.config_loading import ConfigError
from yolov3.models.registry import UnknownModelError, create_model


def test_user_errors_are_one_line_and_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    @command
    def main(argv: list[str] | None = None) -> int:
        raise ConfigError(f"config.yaml: unknown key 'eval.conf' (argv {argv})")

    assert USER_ERROR_EXIT_CODE == 2
    assert main(["--x"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "error: config.yaml: unknown key 'eval.conf' (argv ['--x'])\n"


def test_missing_files_name_the_file_and_the_reason(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.yaml"

    def main(argv: list[str] | None = None) -> int:
        missing.read_text()  # FileNotFoundError(2, 'No such file or directory', 'missing.yaml')
        return 0

    assert run(main) == 2
    assert capsys.readouterr().err == f"error: {missing}: No such file or directory\n"


def test_unknown_model_is_a_user_error_without_quotes() -> None:
    with pytest.raises(UnknownModelError) as raised:
        create_model("yolov3_tni")
    assert isinstance(raised.value, KeyError) and isinstance(raised.value, ValueError)
    message = describe_user_error(raised.value)
    assert message.startswith("unknown model 'yolov3_tni'; did you mean 'yolov3_tiny'?")
    assert str(raised.value) == message  # KeyError's str() would quote it
    assert describe_user_error(KeyError("plain")) == "plain"


def test_internal_errors_propagate() -> None:
    @command
    def main(argv: list[str] | None = None) -> int:
        return {}["a bug"]  # KeyError: a look-up that failed in our code, not bad input

    with pytest.raises(KeyError, match="a bug"):
        main([])

    @command
    def stopped(argv: list[str] | None = None) -> int:
        raise SystemExit(3)  # argparse's usage errors and --help pass through untouched

    with pytest.raises(SystemExit) as raised:
        stopped([])
    assert raised.value.code == 3


SCRIPT = textwrap.dedent(
    """
    import logging, sys
    from yolov3.cli.runner import command, configure_logging

    @command
    def main(argv=None):
        configure_logging()
        logging.getLogger("yolov3.example").info("starting %s", argv[0])
        if argv[0] == "user":
            raise ValueError("weights.pt: not a checkpoint")
        raise ZeroDivisionError("internal")

    raise SystemExit(main(sys.argv[1:]))
    """
)


@pytest.mark.parametrize("kind", ["user", "internal"])
def test_as_a_process(kind: str) -> None:
    """In a process of its own (nothing but the runner imported): the exit code, stderr, the log format."""
    result = subprocess.run([sys.executable, "-c", SCRIPT, kind], capture_output=True, text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert lines[0] == LOG_FORMAT % {"levelname": "INFO", "name": "yolov3.example", "message": f"starting {kind}"}
    if kind == "user":
        assert result.returncode == 2
        assert lines[1:] == ["error: weights.pt: not a checkpoint"]
    else:
        assert result.returncode == 1
        assert lines[1] == "Traceback (most recent call last):"
        assert lines[-1] == "ZeroDivisionError: internal"
