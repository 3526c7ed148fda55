"""A run directory belongs to one run: its lock (held, stale, taken over), default names unique
across processes, two real processes into one directory, leftovers of killed writes, ``epochs``
on resume, ``run()``'s arguments, and ``predict`` / ``evaluate`` that never write into a run
directory or over their input."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxbp.cli import main
from jaxbp.experiment import TrainConfig, run
from jaxbp.experiment.plan import LOCK
from jaxbp.files import LockError, LockOwner, acquire_lock, inspect_lock
from test_cli_faults import TINY, assert_same_run, start_cli, train

IRIS = TrainConfig(dataset="iris", hidden=(8,), batch_size=16, epochs=3, plots=False)


def dead_pid() -> int:
    """The pid of a process of this host that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(folder: Path, pid: int, host: str | None = None, ticks=None) -> Path:
    """A lock file as a process ``pid`` of ``host`` (default: this one) left it."""
    owner = LockOwner(pid, host or socket.gethostname(), "2026-12-08T10:00:00+00:00", ticks)
    (folder / LOCK).write_bytes(owner.to_bytes())
    return folder / LOCK


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def listing(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# --- the lock itself --------------------------------------------------------------------------


def test_lock_states_and_who_may_take_them(tmp_path):
    path = tmp_path / LOCK
    assert inspect_lock(path) == ("free", None)
    with acquire_lock(path) as lock:
        state, owner = inspect_lock(path)
        assert state == "held" and owner == lock.owner and owner.pid == os.getpid()
        for take_stale in (False, True):  # a held lock is never taken, not even by this process
            with pytest.raises(LockError) as e:
                acquire_lock(path, take_stale=take_stale)
            assert e.value.state == "held" and e.value.owner == lock.owner
    assert not path.exists() and inspect_lock(path) == ("free", None)

    gone = dead_pid()
    write_lock(tmp_path, gone)
    assert inspect_lock(path)[0] == "stale"
    with pytest.raises(LockError, match="stale lock"):
        acquire_lock(path)
    with acquire_lock(path, take_stale=True) as lock:
        assert lock.replaced.pid == gone and lock.owner.pid == os.getpid()
    # this process's pid, but not this process: a later process that was given the pid
    write_lock(tmp_path, os.getpid(), ticks=1)
    assert inspect_lock(path)[0] == "stale"
    write_lock(tmp_path, gone, host="another-host")
    assert inspect_lock(path)[0] == "elsewhere"
    with pytest.raises(LockError):
        acquire_lock(path, take_stale=True)
    path.write_text("")  # created this instant, or damaged: never taken
    assert inspect_lock(path) == ("unreadable", None)
    with pytest.raises(LockError):
        acquire_lock(path, take_stale=True)


# --- one run per directory --------------------------------------------------------------------


@pytest.mark.parametrize("flags", [[], ["--overwrite"]])
def test_a_directory_in_use_is_refused_naming_it(flags, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with acquire_lock(out / LOCK):
        assert train(*TINY, "--out", out, *flags) == 2
        line = one_error_line(capsys)
    assert line.startswith(f"error: --out: run directory {out} is in use by process {os.getpid()} ")
    assert line.endswith("; wait for that run to finish, or choose another --out")
    assert os.listdir(out) == []


def test_two_processes_into_one_directory_one_is_refused_and_the_other_intact(tmp_path):
    """Two real ``jaxbp train`` processes, started together into one directory: one trains, the
    other is refused naming the directory and its owner; the winner's files are all its own."""
    out = tmp_path / "conc"
    procs = {
        seed: start_cli(argv=[*TINY, "--seed", str(seed), "--out", str(out)], sleep_each=1.0)
        for seed in (1, 2)
    }
    done = {seed: (p.wait(timeout=300), *p.communicate()) for seed, p in procs.items()}
    codes = sorted(code for code, _, _ in done.values())
    assert codes == [0, 2], done
    (winner,) = [s for s, (code, _, _) in done.items() if code == 0]
    (loser,) = [s for s, (code, _, _) in done.items() if code == 2]
    err = done[loser][2].strip().splitlines()
    assert len(err) == 1, done[loser][2]
    assert err[0].startswith(
        f"error: --out: run directory {out} is in use by process {procs[winner].pid} on "
    )
    assert f"outputs went to {out}/" in done[winner][1]
    config = (out / "config.toml").read_text()
    assert f"seeds = [{winner}]" in config or f"seed = {winner}" in config
    metrics = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_train_loss"] == metrics[-1]["train_loss"]
    assert not (out / LOCK).exists()
    assert train("--resume", "--out", out) == 0  # whole: its own run resumes it


def test_default_names_are_reserved_atomically(tmp_path, monkeypatch):
    """Runs planned in the same second get the same default name; the runner reserves it for
    one and the next free one for the other (as for processes started together)."""
    from jaxbp.experiment.plan import plan
    from jaxbp.experiment.runner import _claim

    monkeypatch.chdir(tmp_path)
    first, second = (plan(IRIS, resume=False, overwrite=False) for _ in range(2))
    if first.run_dir != second.run_dir:  # the clock ticked into the next second in between
        second = first
    dirs, locks = [], []
    for p in (first, second):
        run_dir, lock = _claim(p)
        dirs.append(run_dir)
        locks.append(lock)
    assert dirs[1] == dirs[0].with_name(dirs[0].name + "-2")
    assert [os.listdir(d) for d in dirs] == [[LOCK], [LOCK]]
    for lock in locks:
        lock.release()


def test_a_killed_run_leaves_a_stale_lock_resume_takes_it_over(tmp_path, capsys):
    """``kill -9`` of a real run after epoch 2: a fresh run is refused naming the dead process;
    ``--resume`` takes the directory over, says so in one line, removes the temporary file of
    the checkpoint write the kill interrupted, and finishes bit-identical."""
    out, paused = tmp_path / "run", tmp_path / "paused"
    proc = start_cli(argv=[*TINY, "--out", str(out)], after=2, pause=str(paused))
    deadline = time.monotonic() + 300
    while not paused.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    leftover = out / ".checkpoint.npz.k9k9k9k9.tmp"  # a checkpoint write the kill cut short
    leftover.write_bytes(b"PK\x03\x04 half a checkpoint")
    before = listing(out)

    assert train(*TINY, "--out", out) == 2
    line = one_error_line(capsys)
    assert re.fullmatch(
        rf"error: --out: run directory {re.escape(str(out))} was left by process {proc.pid} on "
        rf".* \(started .*\), which is no longer running \(stale lock .*\); pass --resume to "
        r"continue it from its checkpoint or --overwrite to start it again",
        line,
    ), line
    assert listing(out) == before

    assert train("--resume", "--out", out) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith(f"note: {out} was left by process {proc.pid} on ")
    assert captured.out.startswith(f"resuming {out} from its checkpoint at epoch 2\n")
    assert not leftover.exists() and not (out / LOCK).exists()
    straight = tmp_path / "straight"
    assert train(*TINY, "--out", straight) == 0
    assert_same_run(out, straight)


def test_overwrite_accepts_what_jaxbp_leaves_behind_and_nothing_else(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    write_lock(out, dead_pid())
    for name in (".checkpoint.npz.abcd1234.tmp", ".jaxbp-write-check.x_y0z9ab", "config.toml"):
        (out / name).write_text("left behind")
    (out / "notes.txt").write_text("mine")
    assert train(*TINY, "--out", out, "--overwrite") == 2
    assert one_error_line(capsys) == (
        f"error: --overwrite: {out} holds files a run does not write (notes.txt); refusing to "
        "replace it"
    )
    (out / "notes.txt").unlink()
    assert train(*TINY, "--epochs", "1", "--out", out, "--overwrite") == 0
    assert "note: " in capsys.readouterr().err
    assert sorted(os.listdir(out)) == sorted(
        ["config.toml", "metrics.jsonl", "summary.json", "checkpoint.npz", "best.npz", "model.npz"]
    )


# --- epochs on resume -------------------------------------------------------------------------


def test_epochs_on_resume_what_may_change_and_what_is_refused(tmp_path, capsys):
    """A decaying schedule spans the run's length: another --epochs is refused in one line,
    before anything says it resumes. A constant schedule lets it grow, not below the checkpoint;
    a run that stopped early trains no further, and resuming it changes nothing."""
    cosine = tmp_path / "cosine"
    assert train(*TINY, "--epochs", "2", "--out", cosine) == 0
    capsys.readouterr()
    assert train("--resume", "--out", cosine, "--epochs", "5") == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing about resuming before it is decided
    assert one_error_line_of(captured.err) == (
        f"error: --epochs: 5: the run in {cosine} decays its learning rate over its 2 epochs "
        f"(--schedule cosine), so another length would change every step from the first; resume "
        f"with --epochs 2, or train on from its weights in a new run (--init-from {cosine}); only "
        "a constant schedule lets a resumed run change its epochs"
    )

    stopped = tmp_path / "stopped"
    flags = ["--schedule", "constant", "--lr", "0.05", "--patience", "1", "--epochs", "60"]
    assert train(*TINY[:-3], *flags, "--out", stopped) == 0
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["stopped_early"], summary["epochs"]
    done = summary["epochs"]
    before = listing(stopped)
    capsys.readouterr()
    assert train("--resume", "--out", stopped, "--epochs", "100") == 2
    assert one_error_line(capsys) == (
        f"error: --epochs: 100: the run in {stopped} stopped early at epoch {done} (no "
        f"validation gain in 1 epochs), so more epochs would not train it; train on from its "
        f"weights in a new run (--init-from {stopped})"
    )
    assert train("--resume", "--out", stopped, "--epochs", "1") == 2
    assert one_error_line(capsys) == (
        f"error: --epochs: 1 is fewer than the {done} epochs the checkpoint in {stopped} has "
        "completed"
    )
    assert listing(stopped) == before
    assert train("--resume", "--out", stopped) == 0  # nothing left to train: the same run
    after = listing(stopped)
    for name in ("metrics.jsonl", "checkpoint.npz", "model.npz"):
        assert after[name] == before[name], name


def one_error_line_of(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# --- run()'s arguments ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda out: run("iris", out), "config: expected a TrainConfig, got str 'iris'"),
        (lambda out: run(IRIS, 3), r"out: expected a path \(str or os.PathLike\), got int 3"),
        (lambda out: run(IRIS, out, resume="yes"), "resume: expected True or False, got str 'yes'"),
        (lambda out: run(IRIS, out, overwrite=1), "overwrite: expected True or False, got int 1"),
        (lambda out: run(IRIS, out, callbacks=[print, 3]), r"callbacks\[1\]: expected a callable, got int 3"),
        (lambda out: run(IRIS, out, callbacks=print), "callbacks: expected a sequence of callables, got builtin"),
        (lambda out: run(IRIS, out, on_start="x"), "on_start: expected a callable, got str 'x'"),
        (lambda out: __import__("jaxbp.experiment").experiment.load_data({"dataset": "iris"}),
         r"config: expected a TrainConfig, got dict \{'dataset': 'iris'\}"),
        (lambda out: __import__("jaxbp.experiment").experiment.resume_config(None),
         r"run_dir: expected a path \(str or os.PathLike\), got NoneType None"),
    ],
)  # fmt: skip
def test_run_names_the_bad_argument_and_what_it_received(call, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where run(config, 3) would have trained, into ./3
    with pytest.raises(TypeError, match=f"^{message}"):
        call(tmp_path / "run")
    assert os.listdir(tmp_path) == []


def test_run_on_start_sees_the_final_directory_before_the_first_epoch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen = []
    summary = run(
        dataclasses.replace(IRIS, epochs=1),
        on_start=seen.append,
        callbacks=[lambda e: seen.append(e.epoch)],
    )
    (start,) = [s for s in seen if not isinstance(s, int)]
    assert seen.index(start) == 0 and seen[1:] == [1]
    assert start.run_dir == summary.run_dir and start.run_dir.parent == Path("runs")
    assert (start.start, start.epochs, start.resumed, start.took_over) == (0, 1, False, None)


# --- predict / evaluate never write into a run directory or over their input ----------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("trained")
    run(IRIS, d / "run")
    from sklearn.datasets import load_iris

    iris = load_iris()
    with open(d / "held.csv", "w", newline="") as f:
        w = csv.writer(f)
        for row, label in zip(iris.data[::10], iris.target[::10], strict=True):
            w.writerow([*row, iris.target_names[label]])
    return d / "run", d / "held.csv"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["predict", "{run}", "--out", "{run}/model.npz"], "--out: {run}/model.npz is inside the run directory {run}"),
        (["predict", "{run}", "--out", "{run}/labels.csv"], "--out: {run}/labels.csv is inside the run directory {run}"),
        (["predict", "{run}", "--out", "{data}", "--overwrite"], "--out: {data} is the --data file; jaxbp predict never writes over its input"),
        (["predict", "{run}", "--out", "{tmp}/old.csv"], "--out: {tmp}/old.csv already exists; pass --overwrite to replace it"),
        (["evaluate", "{run}", "--out", "{run}"], "--out: {run} is inside the run directory {run}"),
        (["evaluate", "{run}", "--out", "{run}/eval"], "--out: {run}/eval is inside the run directory {run}"),
        (["evaluate", "{run}", "--out", "{tmp}/ev"], "--out: {tmp}/ev/evaluation.json and {tmp}/ev/confusion_matrix.png already exist; pass --overwrite to replace them"),
    ],
)  # fmt: skip
def test_predict_and_evaluate_never_write_into_a_run_or_over_an_input(
    argv, message, trained, tmp_path, capsys
):
    run_dir, data = trained
    (tmp_path / "old.csv").write_text("label\nmine\n")
    (tmp_path / "ev").mkdir()
    for name in ("evaluation.json", "confusion_matrix.png"):
        (tmp_path / "ev" / name).write_text("an earlier evaluation")
    before = listing(run_dir), data.read_bytes(), listing(tmp_path), listing(tmp_path / "ev")
    fill = {"run": run_dir, "data": data, "tmp": tmp_path}
    assert main([a.format(**fill) for a in argv[:2]] + ["--data", str(data)] +
                [a.format(**fill) for a in argv[2:]]) == 2  # fmt: skip
    assert one_error_line(capsys).startswith(f"error: {message.format(**fill)}")
    after = listing(run_dir), data.read_bytes(), listing(tmp_path), listing(tmp_path / "ev")
    assert after == before


def test_predict_and_evaluate_replace_an_output_with_overwrite(trained, tmp_path, capsys):
    run_dir, data = trained
    old = tmp_path / "old.csv"
    old.write_text("label\nmine\n")
    argv = ["predict", str(run_dir), "--data", str(data), "--out", str(old), "--overwrite"]
    assert main(argv) == 0
    assert old.read_text().startswith("label\n") and "mine" not in old.read_text()
    ev = tmp_path / "ev"
    argv = ["evaluate", str(run_dir), "--data", str(data), "--out", str(ev)]
    assert main(argv) == 0
    first = (ev / "evaluation.json").read_text()
    assert main(argv) == 2
    assert "already exist; pass --overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    assert (ev / "evaluation.json").read_text() == first
