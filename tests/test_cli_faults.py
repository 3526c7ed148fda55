"""Faults of the machine during ``jaxbp train``: a full disk, a file system made read-only, a
permission lost mid-run, a torn metrics line, an unreadable input. Each ends in one line naming
the file, what it was to hold and the ``--resume`` command — exit code 74 for a fault, 2 for bad
input, never a traceback — and ``--resume`` afterwards finishes bit-identical to a run that was
never interrupted."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxbp.cli import EXIT_IO, main

TINY = ["--dataset", "iris", "--hidden", "8", "--batch-size", "16", "--epochs", "4", "--no-plots"]
ENV = dict(os.environ, JAX_PLATFORMS="cpu", JAX_ENABLE_X64="1")  # as tests/conftest.py sets it

FAULT_AFTER_EPOCH = """
import json, subprocess, sys, time
from pathlib import Path

import jaxbp.train as T
from jaxbp.cli import main

o = json.loads(sys.argv[1])
real_fit = T.fit


def fit(*a, **kw):  # after epoch `after` is written: run `command`, or touch `pause` and wait
    for item in real_fit(*a, **kw):
        yield item
        time.sleep(o.get("sleep_each", 0))
        if item[0] == o.get("after"):
            if o.get("command"):
                subprocess.run(o["command"], capture_output=True)
            if o.get("pause"):
                Path(o["pause"]).touch()
                time.sleep(600)


T.fit = fit
sys.exit(main(["train", *o["argv"]]))
"""
"""A real ``jaxbp train ARGV`` process whose epoch loop lets the test break the machine under it."""


def start_cli(**options) -> subprocess.Popen:
    """``jaxbp train`` in a process of its own (:data:`FAULT_AFTER_EPOCH`'s options)."""
    return subprocess.Popen(
        [sys.executable, "-c", FAULT_AFTER_EPOCH, json.dumps(options)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cli(**options) -> tuple[int, str, str]:
    proc = start_cli(**options)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def train(*argv):
    return main(["train", *map(str, argv)])


def params_bytes(out):
    with np.load(out / "checkpoint.npz") as z:
        return [z[k].tobytes() for k in sorted(z.files) if k != "__meta__"]


def metrics(out):
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("seconds")
    return lines


def assert_same_run(a: Path, b: Path) -> None:
    """Two run directories with the same training, to the last bit."""
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sa["epochs"] == sb["epochs"] == 4
    assert sa["final_train_loss"] == sb["final_train_loss"]
    assert sa["test_accuracies"] == sb["test_accuracies"]
    assert params_bytes(a) == params_bytes(b)
    assert metrics(a) == metrics(b)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The run the faults interrupt, never interrupted."""
    out = tmp_path_factory.mktemp("straight") / "run"
    assert train(*TINY, "--out", out) == 0
    return out


def fault_line(err: str, out: Path, what: str, reason: str) -> str:
    """The one line a fault ends in (exit 74), with the checkpoint of epoch 2 to resume from."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    pattern = (
        rf"error: could not write {re.escape(str(out))}/\S+ \({what}\): {reason}; the last "
        rf"checkpoint is epoch 2 — resume with: jaxbp train --out {re.escape(str(out))} --resume"
    )
    assert re.fullmatch(pattern, lines[0]), lines[0]
    return lines[0]


def resume_and_compare(out: Path, straight: Path, capsys, *, took_over: bool) -> None:
    capsys.readouterr()
    assert train("--resume", "--out", out) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"resuming {out} from its checkpoint at epoch 2\n")
    note = re.compile(rf"note: {re.escape(str(out))} was left by process \d+ on .*, which is no")
    assert bool(note.match(captured.err)) == took_over, captured.err
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # lock, temps
    assert_same_run(out, straight)


# --- the real faults ------------------------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path):
    """A 300 KB tmpfs mounted for the test (root only), unmounted after it."""
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "fs"
    where.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(where)]
    done = subprocess.run(mount, capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield where
    subprocess.run(["umount", str(where)], check=True)


def test_disk_full_mid_run_is_one_line_and_resume_finishes_bit_identical(tmpfs, straight, capsys):
    out, filler = tmpfs / "run", tmpfs / "filler"
    fill = ["dd", "if=/dev/zero", f"of={filler}", "bs=4k"]  # until the disk is full
    code, stdout, err = run_cli(argv=[*TINY, "--out", str(out)], after=2, command=fill)
    assert code == EXIT_IO, err
    fault_line(err, out, r"the (metrics|checkpoint) of epoch 3", "No space left on device")
    assert "outputs went to" not in stdout
    assert sorted(os.listdir(out)) == ["best.npz", "checkpoint.npz", "config.toml", "metrics.jsonl"]
    filler.unlink()
    resume_and_compare(out, straight, capsys, took_over=False)


def test_file_system_made_read_only_mid_run(tmpfs, straight, capsys):
    out = tmpfs / "run"
    read_only = ["mount", "-o", "remount,ro", str(tmpfs)]
    code, _, err = run_cli(argv=[*TINY, "--out", str(out)], after=2, command=read_only)
    assert code == EXIT_IO, err
    fault_line(err, out, "the metrics of epoch 3", "Read-only file system")
    subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    assert (out / ".jaxbp-run.lock").is_file()  # it could not be removed: a stale lock now
    resume_and_compare(out, straight, capsys, took_over=True)


def _can_make_immutable(folder: Path) -> bool:
    probe = folder / "probe"
    probe.mkdir()
    try:
        return subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode == 0
    except FileNotFoundError:  # no chattr
        return False
    finally:
        subprocess.run(["chattr", "-i", str(probe)], capture_output=True)
        probe.rmdir()


def test_permission_lost_mid_run(tmp_path, straight, capsys):
    """Root ignores permission bits, so as root the run directory is made immutable
    (``chattr +i``: creating a file there is 'Operation not permitted'); else read-only."""
    out = tmp_path / "run"
    if os.geteuid() != 0:
        take, give, reason = (
            ["chmod", "555", str(out)],
            ["chmod", "755", str(out)],
            "Permission denied",
        )
    elif _can_make_immutable(tmp_path):
        take, give, reason = (
            ["chattr", "+i", str(out)],
            ["chattr", "-i", str(out)],
            "Operation not permitted",
        )
    else:
        pytest.skip("root, and chattr +i does not work on this file system: no permission to lose")
    try:
        code, _, err = run_cli(argv=[*TINY, "--out", str(out)], after=2, command=take)
    finally:
        subprocess.run(give, capture_output=True)
    assert code == EXIT_IO, err
    fault_line(err, out, "the checkpoint of epoch 3", reason)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3  # epoch 3's, dropped later
    resume_and_compare(out, straight, capsys, took_over=True)


# --- the same errors injected into each writer, in-process ------------------------------------


def _fail_on(monkeypatch, module, name: str, file: str, error: OSError, nth: int = 1):
    """Makes ``module.name(path, …)`` raise ``error`` on its ``nth`` call for ``file``."""
    real = getattr(module, name)
    calls = []

    def failing(path, *args, **kwargs):
        if Path(path).name == file:
            calls.append(path)
            if len(calls) == nth:
                raise error
        return real(path, *args, **kwargs)

    monkeypatch.setattr(module, name, failing)


FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
DENIED = PermissionError(errno.EACCES, os.strerror(errno.EACCES))


@pytest.mark.parametrize("where", ["config", "metrics", "summary"])
def test_an_oserror_in_any_writer_is_one_line_naming_the_file(where, tmp_path, monkeypatch, capsys):
    import jaxbp.experiment.runner as R

    out = tmp_path / "run"
    if where == "config":  # before the first checkpoint: nothing to resume
        _fail_on(monkeypatch, R, "write_atomic", "config.toml", FULL)
        expected = (
            f"error: could not write {out}/config.toml (the run's configuration): No space left on "
            "device; no checkpoint was written, so the run cannot be resumed"
        )
    elif where == "metrics":
        _fail_on(monkeypatch, R, "append_line", "metrics.jsonl", DENIED, nth=3)
        expected = (
            f"error: could not write {out}/metrics.jsonl (the metrics of epoch 3): Permission "
            f"denied; the last checkpoint is epoch 2 — resume with: jaxbp train --out {out} --resume"
        )
    else:
        _fail_on(monkeypatch, R, "write_atomic", "summary.json", FULL)
        expected = (
            f"error: could not write {out}/summary.json (the summary): No space left on device; "
            f"the last checkpoint is epoch 4 — resume with: jaxbp train --out {out} --resume"
        )
    assert train(*TINY, "--out", out) == EXIT_IO
    captured = capsys.readouterr()
    assert captured.err == expected + "\n"
    assert not (out / ".jaxbp-run.lock").exists()  # released however the run ends


def test_a_torn_metrics_line_is_dropped_on_resume(tmp_path, straight, monkeypatch, capsys):
    """A process killed (or a disk filled) while appending to metrics.jsonl leaves a torn last
    line: resume drops it and finishes bit-identical; a damaged line before the last is refused."""
    from helpers import raise_after_epoch

    out = tmp_path / "run"
    raise_after_epoch(monkeypatch, 2, KeyboardInterrupt)
    assert train(*TINY, "--out", out) == 130
    monkeypatch.undo()
    path = out / "metrics.jsonl"
    good = path.read_text()
    path.write_text(good.replace("\n", "\nnot json\n", 1) + '{"epoch": 3, "train_lo')
    capsys.readouterr()
    assert train("--resume", "--out", out) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --resume: {path}, line 2: not a metrics record (")
    assert len(err.splitlines()) == 1 and "the file is damaged" in err
    path.write_text(good + '{"epoch": 3, "train_lo')  # torn: no newline, cut mid-record
    resume_and_compare(out, straight, capsys, took_over=False)


# --- input that cannot be read; OSErrors of other subcommands ---------------------------------


def test_unreadable_data_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    """Root reads any file, so as root the denial is injected where jaxbp opens the file."""
    import builtins

    import jaxbp.data.files

    data = tmp_path / "d.csv"
    data.write_text("1,2,a\n3,4,b\n5,6,a\n7,8,b\n" * 10)
    if os.geteuid() == 0:

        def deny(path, *args, **kwargs):
            if Path(path) == data:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return builtins.open(path, *args, **kwargs)

        monkeypatch.setattr(jaxbp.data.files, "open", deny, raising=False)
    else:
        data.chmod(0)
    assert train("--data", data, "--out", tmp_path / "run") == 2
    assert capsys.readouterr().err == f"error: {data}: cannot read it (Permission denied)\n"
    assert not (tmp_path / "run").exists()


def test_an_oserror_escaping_any_subcommand_is_one_line_exit_74(monkeypatch, capsys):
    import jaxbp.cli.verify

    def fail(args):
        raise OSError(errno.EIO, os.strerror(errno.EIO), "/dev/sdz")

    monkeypatch.setattr(jaxbp.cli.verify, "run", fail)
    assert main(["verify"]) == EXIT_IO
    assert capsys.readouterr().err == "error: /dev/sdz: Input/output error\n"


def test_train_help_gives_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "exit codes:" in text and "74   a file could not be written" in text
