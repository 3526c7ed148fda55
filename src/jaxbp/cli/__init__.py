"""The ``jaxbp`` command line: argument parsing and rendering only, no maths.

Each subcommand lives in its own module ``jaxbp.cli.<name>`` exposing
``add_parser(subparsers)`` and ``run(args) -> int``. Bad arguments raise :class:`UsageError`,
which :func:`main` turns into one line on stderr and exit code 2; an output that cannot be
written (:class:`WriteFailed`, or any ``OSError`` that escapes a subcommand) is one line and exit
code :data:`EXIT_IO` — never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

SUBCOMMANDS = ("demo", "bench", "verify", "train", "predict")
"""Subcommand modules, in the order ``jaxbp --help`` lists them."""


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""


class WriteFailed(Exception):
    """An output that could not be written after the work (disk full, permission or file system
    lost): reported as one line, exit code :data:`EXIT_IO`."""


EXIT_IO = 74
"""Exit code of an output that could not be written: ``EX_IOERR`` of BSD's sysexits.h."""


_ROLE = re.compile(r":(?:[a-z]+:)?[a-z]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")  # :func:`x`, :class:`~a.B`
_LITERAL = re.compile(r"``(.+?)``")


def strip_markup(text: str) -> str:
    """Help text without reStructuredText markup, for docstrings used as ``--help``.

    ``x`` → x and :func:`jaxbp.verify.check` → jaxbp.verify.check (a ``~`` prefix keeps the last
    part only, as Sphinx shows it); any other text is unchanged.

    Example:
      >>> strip_markup("``jaxbp verify`` calls :func:`~jaxbp.verify.check`")
      'jaxbp verify calls check'
    """

    def role(match):
        target = match.group(1).strip()
        if match.group(0).split("`", 1)[1].startswith("~"):
            target = target.rsplit(".", 1)[-1]
        return target

    return _LITERAL.sub(r"\1", _ROLE.sub(role, text))


def choices_and_default(choices=(), default=None) -> str:
    """`` (one of a, b, c; default a)`` for a flag's help, the parts that apply; '' if none."""
    parts = []
    if choices:
        parts.append(f"one of {', '.join(str(c) for c in choices)}")
    if default is not None:
        parts.append(f"default {default}")
    return f" ({'; '.join(parts)})" if parts else ""


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter without reST markup, adding a flag's argparse ``choices`` and
    ``default`` to its help unless the text already names them (``default`` / every choice)."""

    def _format_text(self, text):
        return super()._format_text(strip_markup(text))

    def _expand_help(self, action):
        text = strip_markup(super()._expand_help(action))
        lower = text.lower()
        choices = list(action.choices) if action.choices is not None else []
        if choices and all(str(c) in text for c in choices):
            choices = []
        default = action.default
        if (
            "default" in lower
            or default is None
            or default is False
            or default == argparse.SUPPRESS
            or not action.option_strings
            or action.nargs == 0
        ):
            default = None
        return text + choices_and_default(choices, default) if text else text


class RawDescriptionHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """:class:`HelpFormatter` keeping the description's line breaks."""


_UPGRADE = {
    argparse.HelpFormatter: HelpFormatter,
    argparse.RawDescriptionHelpFormatter: RawDescriptionHelpFormatter,
}


class _Parser(argparse.ArgumentParser):
    """Every ``jaxbp`` parser (the subcommands' too, through ``add_subparsers``): no abbreviated
    flags (``--epoch`` is not ``--epochs``), descriptions and help without reST markup, and
    choices and defaults in the help — argparse's plain and raw-description formatters are
    replaced by :class:`HelpFormatter` and :class:`RawDescriptionHelpFormatter`."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        formatter = kwargs.get("formatter_class", HelpFormatter)
        kwargs["formatter_class"] = _UPGRADE.get(formatter, formatter)
        super().__init__(*args, **kwargs)
        if self.description:
            self.description = strip_markup(self.description)
        if self.epilog:
            self.epilog = strip_markup(self.epilog)

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
        args, extra = parser.parse_known_args(argv)
        if extra:  # named under the subcommand they were given to, not under "jaxbp"
            where = f"jaxbp {args.command}" if args.command else "jaxbp"
            raise UsageError(f"{where}: unrecognized arguments: {' '.join(extra)}")
        if args.command is None:
            parser.print_help()
            return 2
        if hasattr(args, "compile_cache"):  # subcommands that compile: before any compilation
            from jaxbp.cli import cache

            cache.enable(args)
        return int(args.run(args) or 0)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except WriteFailed as e:
        print(f"error: {_one_line(str(e))}", file=sys.stderr)
        return EXIT_IO
    except BrokenPipeError:
        raise  # the reader of stdout went away: main's quiet exit
    except OSError as e:  # a file a subcommand failed to read or write: a fault, not a bug
        print(f"error: {_one_line(describe_os_error(e))}", file=sys.stderr)
        return EXIT_IO
    except ValueError as e:
        if not is_input_error(e):
            raise  # a bug: keep its traceback
        print(f"error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


INPUT_ERRORS = (("jaxbp.data.files", "DataError"), ("jaxbp.checkpoint", "CheckpointError"))
"""Library errors that always describe bad input (a data file, a checkpoint) and name it: a
subcommand that lets one escape still ends with one line and exit 2, not a traceback."""


def is_input_error(e: BaseException) -> bool:
    """Whether ``e`` is one of :data:`INPUT_ERRORS` (checked without importing their modules)."""
    for module, name in INPUT_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(e, cls):
            return True
    return False


def describe_os_error(e: OSError) -> str:
    """``PATH: strerror`` (``PATH -> OTHER: …`` for a rename) of an ``OSError``; its own text
    when it names no file."""
    if e.filename is None:
        return str(e)
    path = str(e.filename)
    if e.filename2 is not None:
        path += f" -> {e.filename2}"
    return f"{path}: {e.strerror or e}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


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
