"""``jaxbp train`` — train a classifier on a real dataset with hand-derived gradients.

Loads a built-in dataset (default: digits) or your files, trains an MLP with the δ recursion
(--grad manual, the default; autodiff or graph to compare), shows a progress bar, and writes a
run directory: config.toml (fully resolved), metrics.jsonl, summary.json, PNG plots,
checkpoint.npz and model.npz (for jaxbp predict / evaluate). Every option can also be set in a
TOML file (--config); flags win. The same run from Python: jaxbp.experiment.run.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys

from jaxbp.cli import UsageError, cache
from jaxbp.cli import train_report as report
from jaxbp.experiment.config import (
    FIELD,
    FIELD_DEFAULT,
    ConfigError,
    TrainConfig,
    parse_text,
    read_toml,
)

EPILOG = """\
A run directory belongs to one run: a second jaxbp train into it is refused while the first
runs. A run killed there (kill -9, a power cut) leaves a stale lock: --resume continues it from
its checkpoint, --overwrite starts it again. --epochs may grow on --resume with --schedule
constant; a decaying schedule spans the run's length, so there it must stay.

exit codes:
  0    the run finished
  1    training stopped: a NaN loss or a failed shadow check (the message says how to restart)
  2    bad input, a run directory in use or not this run's: one line, nothing written
  74   a file could not be written or read mid-run (disk full, permission or file system lost):
       one line naming it and the --resume command that continues from the last checkpoint
  130  interrupted (Ctrl-C): the --resume command that continues it
"""
"""What ``jaxbp train --help`` says after the options: who owns a run directory, exit codes."""


def flag(name: str) -> str:
    """The command-line flag of a config field or run argument: ``batch_size`` → ``--batch-size``."""
    return "--" + name.replace("_", "-")


def usage_error(e: ConfigError, what: str = "--config") -> UsageError:
    """A library :class:`ConfigError` as the CLI says it: the field as its flag."""
    if e.source is not None:
        return UsageError(f"{what} {e.source}: {e.render(flag)}")
    return UsageError(f"{flag(e.field)}: {e.render(flag)}")


def data_error(e) -> str:
    """A :class:`jaxbp.data.DataError` as the CLI says it: a message that starts with a
    field's name (``label_column: …``) starts with its flag (``--label-column: …``)."""
    text = str(e)
    name, sep, rest = text.partition(": ")
    if sep and name in FIELD:
        return f"{flag(name)}: {rest}"
    return text


METAVAR = {
    "str": "NAME",
    "path": "PATH",
    "column": "COLUMN",
    "int": "N",
    "float": "X",
    "ints": "N,N,…",
    "batch": "N|all",
    "activation": "NAME[,NAME…]",
}
"""The placeholder of a field's value in ``--help``, by its kind."""


def field_help(name: str) -> str:
    """A field's help with its valid values and its default, unless the text gives them."""
    from jaxbp.cli import choices_and_default
    from jaxbp.experiment.rules import choices

    text = FIELD[name].help
    valid = [c for c in choices(name) if c not in text] and choices(name)
    default = FIELD_DEFAULT[name]
    if "default" in text or default is None:
        default = None
    elif isinstance(default, tuple):
        default = ",".join(map(str, default))
    extra = choices_and_default(valid, default)
    if extra and text.endswith(")"):  # one parenthesis: "(default cosine; one of …)"
        return f"{text[:-1]}; {extra.strip()[1:]}"
    return text + extra


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a classifier on a real dataset with hand-derived gradients",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    p.add_argument("--config", metavar="FILE.toml", help="read options from a TOML file")
    for name, meta in FIELD.items():
        if meta.kind == "bool" and FIELD_DEFAULT[name]:
            p.add_argument(
                f"--no-{name.replace('_', '-')}",
                dest=name,
                action="store_false",
                default=argparse.SUPPRESS,
                help=f"do not {meta.help[0].lower()}{meta.help[1:]}",
            )
        elif meta.kind == "bool":
            p.add_argument(
                flag(name),
                dest=name,
                action="store_true",
                default=argparse.SUPPRESS,
                help=meta.help,
            )
        else:
            p.add_argument(
                flag(name),
                dest=name,
                default=argparse.SUPPRESS,
                metavar=METAVAR[meta.kind],
                help=field_help(name),
            )
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    cache.add_flag(p)
    multi = p.add_argument_group(
        "multi-host (docs/distributed.md; each falls back to its JAX_* environment variable)"
    )
    multi.add_argument("--coordinator-address", metavar="HOST:PORT", help="process 0's address")
    multi.add_argument("--num-processes", type=int, metavar="N", help="number of processes")
    multi.add_argument("--process-id", type=int, metavar="I", help="this process's index")
    p.set_defaults(run=run)


def config_from_args(args) -> TrainConfig:
    """The layered config of a command line — defaults, the run directory's config.toml (with
    --resume), --config FILE.toml, then the flags — unresolved. Raises UsageError."""
    from jaxbp.experiment import resume_config

    try:
        flags = {
            k: v if FIELD[k].kind == "bool" else parse_text(k, v)
            for k, v in vars(args).items()
            if k in FIELD
        }
    except ConfigError as e:
        raise usage_error(e) from None
    try:
        file_layer = read_toml(args.config) if args.config else {}
    except FileNotFoundError:
        raise UsageError(f"--config: no such file {args.config!r}") from None
    except ConfigError as e:
        raise usage_error(e) from None
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite: choose one")
    try:
        config = TrainConfig()
        if args.resume:
            out = flags.get("out", file_layer.get("out"))
            if out is None:
                raise UsageError("--resume: name the run directory to continue with --out DIR")
            config = resume_config(out)
        return config.updated(**file_layer).updated(**flags)
    except ConfigError as e:
        raise usage_error(e) from None


def restart_command(e) -> str:
    """The ``jaxbp train`` command line that starts a new run from a stopped run's best state
    with :attr:`TrainingStopped.restart`'s settings, beside the stopped run."""
    from jaxbp.experiment.plan import CONFIG

    words = ["jaxbp", "train", "--config", str(e.run_dir / CONFIG)]
    for name, value in e.restart.items():
        words += [flag(name), str(value)]
    words += ["--out", f"{e.run_dir}-restart"]
    return shlex.join(words)


def announce(event) -> None:
    """``on_start`` of the run: once it holds its directory, the stale lock it took over (a
    note on stderr) and 'resuming DIR from its checkpoint at epoch N'."""
    if event.took_over is not None:
        print(
            f"note: {event.run_dir} was left by {event.took_over.describe()}, which is no longer "
            "running; this run takes it over",
            file=sys.stderr,
            flush=True,
        )
    if event.resumed:
        print(f"resuming {event.run_dir} from its checkpoint at epoch {event.start}", flush=True)


def resume_command(run_dir) -> str:
    """The command line that continues the run in ``run_dir`` from its checkpoint."""
    return shlex.join(["jaxbp", "train", "--out", str(run_dir), "--resume"])


class Progress:
    """The progress bar on a terminal (tqdm), else a line every tenth of the run: a callback
    of :func:`jaxbp.experiment.run`."""

    def __init__(self):
        self.bar = None
        self.tty = sys.stdout.isatty()

    def __call__(self, event) -> None:
        from tqdm import tqdm

        if self.bar is None:
            # A terminal that reports a 0×0 size (some pseudo-terminals) would hide the bar.
            size = shutil.get_terminal_size((100, 24))
            self.bar = tqdm(
                total=event.epochs,
                initial=event.start,
                desc=event.name,
                unit="epoch",
                file=sys.stdout,
                disable=not self.tty,
                ncols=min(size.columns, 120),
                nrows=size.lines,
            )
        m = event.metrics
        status = f"loss {m['train_loss']:.4f}  acc {m['train_accuracy']:.4f}" + (
            f"  val {m['val_accuracy']:.4f}" if m["val_accuracy"] is not None else ""
        )
        self.bar.set_postfix_str(status, refresh=False)
        self.bar.update(1)
        every = max(1, event.epochs // 10)
        if not self.tty and (event.epoch % every == 0 or event.epoch == event.epochs):
            print(f"epoch {event.epoch}/{event.epochs}  {status}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args) -> int:
    from jaxbp.cli import WriteFailed
    from jaxbp.data import DataError
    from jaxbp.distributed import initialize
    from jaxbp.experiment import RunInterrupted, TrainingStopped
    from jaxbp.experiment import run as run_experiment
    from jaxbp.experiment.runner import RunWriteError

    try:  # before anything starts JAX
        info = initialize(args.coordinator_address, args.num_processes, args.process_id)
    except ValueError as e:  # "num_processes: …" → "--num-processes: …"
        name, _, rest = str(e).partition(":")
        raise UsageError(f"--{name.replace('_', '-')}:{rest}") from None
    overwrite = args.overwrite
    if info.process_id > 0 and not args.resume:
        overwrite = True  # process 0 owns --out; the others write to a scratch directory
    config = config_from_args(args)
    progress = Progress()
    try:
        summary = run_experiment(
            config,
            callbacks=[progress],
            resume=args.resume,
            overwrite=overwrite,
            on_start=announce,
        )
    except ConfigError as e:
        raise usage_error(e) from None
    except DataError as e:
        raise UsageError(data_error(e)) from None
    except RunWriteError as e:
        progress.close()
        if e.epoch is None:
            raise WriteFailed(str(e)) from None
        raise WriteFailed(f"{e} — resume with: {resume_command(e.run_dir)}") from None
    except RunInterrupted as e:
        progress.close()
        print(f"{e}; continue with: {resume_command(e.run_dir)}", file=sys.stderr)
        return 130
    except TrainingStopped as e:
        progress.close()
        print(f"error: {e}", file=sys.stderr)
        if e.restart is not None:
            print(f"to start again: {restart_command(e)}", file=sys.stderr)
        return 1
    finally:
        progress.close()
    if summary.primary:
        report.print_summary(summary.values, summary.run_dir, list(summary.outputs))
    return 0
