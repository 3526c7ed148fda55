"""The ``jaxbp`` command line: argument parsing and rendering only, no maths.

Each subcommand lives in its own module ``jaxbp.cli.<name>`` exposing
``add_parser(subparsers)`` and ``run(args) -> int``. Bad arguments raise :class:`UsageError`,
which :func:`main` turns into one line on stderr and exit code 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

SUBCOMMANDS = ("demo", "bench", "verify", "train")
"""Subcommand modules, in the order ``jaxbp --help`` lists them."""


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line, exit 2, no usage dump
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="jaxbp",
        description="Hand-derived backpropagation in JAX, verified against autodiff.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in SUBCOMMANDS:
        importlib.import_module(f"jaxbp.cli.{name}").add_parser(sub)
    return parser


def _version() -> str:
    from jaxbp import __version__

    return f"jaxbp {__version__}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jaxbp`` console script and ``python -m jaxbp``."""
    try:
        try:
            return _main(argv)
        finally:  # flushed here, not at exit, so that a closed pipe is caught below
            sys.stdout.flush()
    except BrokenPipeError:
        return _broken_pipe()


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return int(args.run(args) or 0)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _broken_pipe() -> int:
    """The reader of stdout went away (``jaxbp verify | head``): exit quietly, as Unix tools do.

    stdout is pointed at ``/dev/null`` so that the interpreter's final flush at exit does not
    fail again; the status is 128 + SIGPIPE, what a shell reports for a tool killed by it.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout already closed or not a real file
        pass
    return 128 + 13
