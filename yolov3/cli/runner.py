"""What every command-line tool shares: user errors as one line and exit code 2, and one logging format.

A CLI's ``main(argv=None)`` parses its arguments, calls :func:`configure_logging` and then library
functions; decorated with :func:`command`, a *user error* raised on the way (bad input: the library's own
error types, which are ``ValueError`` subclasses, or an ``OSError`` such as a missing file) becomes::

    error: <the message, one line>

on standard error and exit code :data:`USER_ERROR_EXIT_CODE` (2, as argparse's own usage errors), without
a traceback. Any other exception is an internal error: it propagates with its traceback. Adopting the
runner in an existing CLI is three lines::

    from yolov3.cli.runner import command, configure_logging

    @command
    def main(argv=None) -> int:
        args = parse_args(argv)
        configure_logging()              # in place of logging.basicConfig(...)
        ...
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import ParamSpec

USER_ERROR_EXIT_CODE = 2
# Bad input: every error type of the library derives from ValueError (ConfigError, CfgError, ...), and files
# that cannot be read or written (and downloads that fail) are OSErrors.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"

# The parameters of a CLI's ``main`` (``argv: list[str] | None = None`` or ``argv: Sequence[str] | None = None``):
# :func:`command` keeps them, default included, so that ``main()`` and ``main(["--help"])`` type-check.
MainParameters = ParamSpec("MainParameters")


def describe_user_error(error: BaseException) -> str:
    """The one-line message of a user error: its text, or ``file: reason`` for an ``OSError`` that names one."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    if isinstance(error, KeyError) and error.args:  # str() of a KeyError quotes its message
        return str(error.args[0])
    return str(error)


def report_user_error(error: BaseException) -> int:
    """Print ``error: <message>`` to standard error; returns :data:`USER_ERROR_EXIT_CODE`."""
    print(f"error: {describe_user_error(error)}", file=sys.stderr)
    return USER_ERROR_EXIT_CODE


def run(
    main_function: Callable[MainParameters, int], *args: MainParameters.args, **kwargs: MainParameters.kwargs
) -> int:
    """``main_function(argv)``, with user errors reported in one line (exit code 2) and internal errors raised."""
    try:
        return main_function(*args, **kwargs)
    except USER_ERRORS as error:
        return report_user_error(error)


def command(main_function: Callable[MainParameters, int]) -> Callable[MainParameters, int]:
    """Decorate a CLI's ``main(argv=None)`` so that it reports user errors through :func:`run`; the decorated
    ``main`` has the same signature."""

    @functools.wraps(main_function)
    def main(*args: MainParameters.args, **kwargs: MainParameters.kwargs) -> int:
        return run(main_function, *args, **kwargs)

    return main


def configure_logging(verbose: bool = False, quiet: bool = False) -> None:
    """The one logging set-up of the CLIs: :data:`LOG_FORMAT` to standard error, INFO by default (``verbose``:
    DEBUG; ``quiet``: warnings only). Does nothing when logging is already configured (an application or a
    test harness that embeds the CLI keeps its own handlers)."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format=LOG_FORMAT)
