"""``python -m yolov3.weights``: download and verify the official Darknet YOLOv3 weight files.

Usage::

    python -m yolov3.weights list [--dir DIR]
    python -m yolov3.weights download NAME [--dir DIR] [--force] [--no-progress]

Files are stored in ``$YOLOV3_WEIGHTS_DIR`` if set, else ``${XDG_CACHE_HOME:-~/.cache}/yolov3/weights``
(:mod:`yolov3.darknet.official_weights`); every download is checked against its published size and sha256.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from yolov3.cli.runner import command, configure_logging
from yolov3.darknet.official_weights import (
    OFFICIAL_WEIGHTS,
    default_weights_directory,
    download_weights,
    format_weights_table,
)


@command
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns a process exit code."""
    parser = argparse.ArgumentParser(prog="python -m yolov3.weights", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    download_parser = commands.add_parser("download", help="download and verify one weights file")
    download_parser.add_argument("name", help="one of: " + ", ".join(OFFICIAL_WEIGHTS))
    download_parser.add_argument("--force", action="store_true", help="download again even if present")
    download_parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    list_parser = commands.add_parser("list", help="list known weights files")
    for subparser in (download_parser, list_parser):
        subparser.add_argument("--dir", type=Path, default=None, help="weights directory")
    arguments = parser.parse_args(argv)
    configure_logging()
    directory = arguments.dir if arguments.dir is not None else default_weights_directory()
    if arguments.command == "list":
        print(f"Weights directory: {directory}")
        print(format_weights_table(directory))
        return 0
    print(download_weights(arguments.name, directory, force=arguments.force, progress=not arguments.no_progress))
    return 0
