"""``jaxbp train``: the end-to-end default run, the run directory, resume, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from jaxbp.cli import main

TINY = ["--dataset", "iris", "--hidden", "8", "--batch-size", "16", "--epochs", "3"]
SUMMARY_KEYS = {
    "dataset", "test_accuracy", "final_train_loss", "epochs", "grad", "wall_time_s", "devices",
    "jax_version", "per_class_accuracy", "confusion_matrix",
}  # fmt: skip
PNG = b"\x89PNG\r\n\x1a\n"


def train(*argv):
    return main(["train", *map(str, argv)])


def snapshot(root: Path) -> dict:
    """Every file under ``root`` with its bytes and mtime: 'nothing written' means equal."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_default_run_reaches_97_percent_on_digits(tmp_path):
    """The README's first command, as a user runs it: no arguments."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "jaxbp", "train"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("digits-")
    assert f"outputs went to {Path('runs') / run_dir.name}/" in proc.stdout
    assert "test accuracy" in proc.stdout and "Traceback" not in proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test_accuracy"] >= 0.97
    assert summary["dataset"] == "digits" and summary["grad"] == "manual"
    assert SUMMARY_KEYS <= set(summary) and summary["devices"] == 1
    for name in ("loss.png", "accuracy.png", "confusion_matrix.png"):
        assert (run_dir / name).read_bytes().startswith(PNG)
    config = tomllib.loads((run_dir / "config.toml").read_text())
    assert config["dataset"] == "digits" and config["lr"] == 0.003 and config["batch_size"] == 64
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == config["epochs"] == summary["epochs"]


def test_run_directory_contents(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(*TINY, "--seeds", "0,1", "--shadow-every", "2", "--out", out) == 0
    stdout = capsys.readouterr().out
    assert f"outputs went to {out}/" in stdout and "± " in stdout
    assert sorted(os.listdir(out)) == sorted(
        ["config.toml", "metrics.jsonl", "summary.json", "loss.png", "accuracy.png",
         "confusion_matrix.png", "checkpoint.npz", "best.npz", "model.npz"]
    )  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert len(summary["test_accuracies"]) == 2 and summary["seeds"] == [0, 1]
    assert summary["test_accuracy"] == pytest.approx(np.mean(summary["test_accuracies"]))
    assert np.sum(summary["confusion_matrix"]) == 2 * summary["n_test"]
    assert set(summary["per_class_accuracy"]) == {"setosa", "versicolor", "virginica"}
    metrics = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    for key in ("train_loss", "train_accuracy", "val_accuracy", "grad_norm", "seconds"):
        assert all(np.isfinite(m[key]) for m in metrics)
    assert len(metrics[0]["per_seed"]["train_loss"]) == 2
    shadow = metrics[1]["shadow_rel_error"]
    assert set(shadow) == {"J", "[0].W", "[0].b", "[1].W", "[1].b"}
    assert metrics[1]["shadow_max_rel_error"] < 3.5e-4 and "shadow_rel_error" not in metrics[0]
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["seeds"] == [0, 1] and config["optimizer"] == "adam" and config["init"] == "he"


def test_default_run_directory_and_no_overwrite(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert train(*TINY, "--no-plots") == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("iris-") and not (run_dir / "loss.png").exists()
    before = snapshot(tmp_path)
    assert train(*TINY, "--out", run_dir) == 2
    err = capsys.readouterr().err
    assert "already exists; pass --overwrite" in err and snapshot(tmp_path) == before
    assert train(*TINY, "--out", run_dir, "--overwrite", "--epochs", "1") == 0
    assert json.loads((run_dir / "summary.json").read_text())["epochs"] == 1


def test_config_file_and_flag_precedence(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('dataset = "wine"\nhidden = [6]\nepochs = 1\nbatch_size = "all"\nlr = 0.05\n')
    out = tmp_path / "run"
    assert train("--config", cfg, "--epochs", "2", "--out", out) == 0
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["dataset"] == "wine" and config["hidden"] == [6] and config["epochs"] == 2
    assert config["batch_size"] == "all" and config["lr"] == 0.05


def read_summary(out):
    return json.loads((out / "summary.json").read_text())


def params_bytes(out):
    with np.load(out / "checkpoint.npz") as z:
        return [z[k].tobytes() for k in sorted(z.files) if k != "__meta__"]


@pytest.mark.slow
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    common = [*TINY[:-1], "4", "--schedule", "constant", "--seeds", "0,1"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train(*common, "--out", straight) == 0
    assert train(*common[:-5], "2", *common[-4:], "--out", split) == 0  # --epochs 2
    assert read_summary(split)["epochs"] == 2
    assert train("--resume", "--out", split, "--epochs", "4") == 0
    a, b = read_summary(straight), read_summary(split)
    assert b["epochs"] == 4
    assert a["final_train_loss"] == b["final_train_loss"]  # to the last bit
    assert a["final_train_losses"] == b["final_train_losses"]
    assert a["test_accuracies"] == b["test_accuracies"]
    assert params_bytes(straight) == params_bytes(split)
    ma = [json.loads(s) for s in (straight / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(s) for s in (split / "metrics.jsonl").read_text().splitlines()]
    for x, y in zip(ma, mb, strict=True):
        x.pop("seconds"), y.pop("seconds")
        assert x == y


@pytest.mark.slow
def test_resume_after_an_interruption_with_a_schedule(tmp_path, monkeypatch):
    """A run killed after epoch 2 (cosine schedule over 4 epochs) resumes to the same end."""
    import jaxbp.train as T

    straight, cut = tmp_path / "straight", tmp_path / "cut"
    args = [*TINY[:-1], "4"]
    assert train(*args, "--out", straight) == 0
    real_fit = T.fit

    def interrupted(*a, **kw):
        for i, item in enumerate(real_fit(*a, **kw)):
            if i == 2:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(T, "fit", interrupted)
    assert train(*args, "--out", cut) == 130
    monkeypatch.setattr(T, "fit", real_fit)
    assert len((cut / "metrics.jsonl").read_text().splitlines()) == 2
    assert not (cut / "summary.json").exists()
    assert train("--resume", "--out", cut) == 0
    assert read_summary(cut)["final_train_loss"] == read_summary(straight)["final_train_loss"]
    assert params_bytes(cut) == params_bytes(straight)


def test_nan_loss_stops_with_the_epoch_keeps_the_checkpoint_and_says_how_to_restart(
    tmp_path, capsys
):
    out = tmp_path / "run"
    code = train(*TINY, "--optimizer", "sgd", "--lr", "1e30", "--out", out)
    err = capsys.readouterr().err
    assert code == 1 and "epoch 1: the training loss is nan" in err
    assert "the last checkpoint is" in err and "(epoch 0)" in err
    assert "to start again: jaxbp train --config" in err and "--lr 1e+29" in err
    with np.load(out / "checkpoint.npz") as z:
        assert json.loads(z["__meta__"].tobytes())["meta"]["epoch"] == 0


@pytest.mark.slow
def test_grad_graph_source_trains_like_manual(tmp_path):
    finals = {}
    for grad in ("manual", "graph"):
        out = tmp_path / grad
        assert (
            train(*TINY, "--hidden", "4", "--grad", grad, "--dtype", "float64", "--out", out) == 0
        )
        assert read_summary(out)["grad"] == grad
        finals[grad] = read_summary(out)["final_train_loss"]
    assert finals["graph"] == pytest.approx(finals["manual"], rel=1e-12)


@pytest.mark.slow
def test_lbfgs_and_early_stopping_from_the_cli(tmp_path):
    out = tmp_path / "lbfgs"
    assert train("--dataset", "iris", "--hidden", "6", "--optimizer", "lbfgs", "--epochs", "30",
                 "--patience", "3", "--out", out) == 0  # fmt: skip
    s = read_summary(out)
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["batch_size"] == "all" and config["schedule"] == "constant"
    assert s["stopped_early"] and s["epochs"] == s["best_epochs"][0] + 3 < 30  # patience 3
    assert s["test_accuracy"] >= 0.8


@pytest.mark.slow
def test_progress_bar_only_on_a_terminal(tmp_path, capsys, monkeypatch):
    assert train(*TINY, "--out", tmp_path / "a") == 0
    plain = capsys.readouterr().out
    assert "epoch 3/3" in plain and "it/s" not in plain and "|" not in plain.split("\n")[0]
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    assert train(*TINY, "--out", tmp_path / "b") == 0
    bar = capsys.readouterr().out
    assert "3/3" in bar and "loss" in bar and "acc" in bar and "epoch/s" in bar


def test_python_dash_m_help():
    proc = subprocess.run(
        [sys.executable, "-m", "jaxbp", "train", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "--shadow-every" in proc.stdout and "--seeds" in proc.stdout


# --- bad input: exit code 2, one line naming the problem, no traceback, nothing written ---------


@pytest.fixture
def files(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "bad_row.csv").write_text("1,2,0\n3,4,1\n5,x,0\n")
    (d / "nonfinite.csv").write_text("a,b,label\n1,2,0\n3,inf,1\n")
    (d / "train.csv").write_text("1,2,a\n3,4,b\n5,6,a\n7,8,b\n")
    (d / "test.csv").write_text("1,2,a\n3,4,c\n")
    scipy.io.savemat(d / "range.mat", {"X": np.ones((3, 2)), "y": np.array([[1], [12], [3]])})
    scipy.io.savemat(d / "few.mat", {"X": np.ones((3, 2)), "y": np.array([[1], [2], [3]])})
    (d / "typo.toml").write_text('dataset = "iris"\nhiden = [8]\n')
    return d


BAD = {
    "missing file": (["--data", "{d}/nope.csv"], "{d}/nope.csv: no such file"),
    "unparsable row": (["--data", "{d}/bad_row.csv"], "bad_row.csv, line 3, column 2: cannot parse 'x'"),
    "non-finite": (["--data", "{d}/nonfinite.csv"], "nonfinite.csv, line 3, column 2: non-finite"),
    "label out of range": (["--data", "{d}/range.mat"], "label y[1] = 12 is out of range 1..10"),
    "class without training examples": (
        ["--data", "{d}/train.csv", "--test-data", "{d}/test.csv"],
        "class 'c' has no training examples (it occurs at {d}/test.csv, line 2)",
    ),
    "fewer examples than classes": (["--data", "{d}/few.mat"], "3 training example(s) but 10 classes"),
    "unknown dataset": (["--dataset", "imagenet"], "unknown 'imagenet'; valid values are iris, wine, digits"),
    "unknown optimizer": (["--optimizer", "rmsprop"], "valid values are sgd, momentum, adam, adamw, lbfgs"),
    "unknown activation": (["--activation", "gelu"], "valid values are sigmoid, tanh, relu"),
    "negative lr": (["--lr", "-0.1"], "--lr: the learning rate must be > 0, got -0.1"),
    "negative epochs": (["--epochs", "-3"], "--epochs: must be ≥ 1, got -3"),
    "not a number": (["--epochs", "many"], "--epochs: expected an integer, got 'many'"),
    "unknown config key": (["--config", "{d}/typo.toml"], "unknown key 'hiden'; did you mean 'hidden'?"),
    "missing config": (["--config", "{d}/none.toml"], "--config: no such file"),
    "batch too large": (["--dataset", "iris", "--batch-size", "500"], "--batch-size: 500 is more than"),
    "two sources": (["--dataset", "iris", "--data", "{d}/train.csv"], "give one data source"),
    "unknown flag": (["--hidden-size", "3"], "unrecognized arguments: --hidden-size"),
    "resume without checkpoint": (["--resume"], "no checkpoint"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    case, files, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    argv, expected = BAD[case]
    argv = [a.format(d=files) for a in argv]
    before = snapshot(tmp_path)
    assert train(*argv, "--out", tmp_path / "out") == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert expected.format(d=files) in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()
    assert not (tmp_path / "runs").exists()


def test_config_hash_mismatch_on_resume_changes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(*TINY, "--out", out) == 0
    capsys.readouterr()
    before = snapshot(tmp_path)
    assert train("--resume", "--out", out, "--lr", "0.5") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config hash mismatch" in err[0] and "lr 0.003 → 0.5" in err[0]
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("where", ["under a file", "unwritable"])
def test_an_out_that_cannot_hold_the_run_is_one_line_exit_2(where, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = blocker / "run" if where == "under a file" else Path("/proc/jaxbp-run")
    assert main(["train", "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --out:") and "\n" not in err and "Traceback" not in err
    assert not out.exists() and blocker.read_text() == "x"


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume_and_resume_says_where_it_starts(tmp_path, monkeypatch, capsys):
    from helpers import raise_after_epoch

    out = tmp_path / "cut"
    raise_after_epoch(monkeypatch, 2, KeyboardInterrupt)
    assert train(*TINY[:-1], "3", "--out", out) == 130
    err = capsys.readouterr().err
    assert err == (
        f"interrupted after epoch 2; {out / 'checkpoint.npz'} holds epoch 2; continue with: "
        f"jaxbp train --out {out} --resume\n"
    )
    monkeypatch.undo()
    assert train("--out", out, "--resume") == 0
    assert capsys.readouterr().out.startswith(f"resuming {out} from its checkpoint at epoch 2\n")


def test_resume_says_nothing_about_resuming_before_it_is_refused(tmp_path, capsys):
    """'resuming …' is printed once the run has decided to resume, never before a refusal."""
    out = tmp_path / "run"
    assert train(*TINY, "--out", out) == 0
    capsys.readouterr()
    before = snapshot(tmp_path)
    for argv in (["--lr", "0.5"], ["--epochs", "5"], ["--seed", "4294967296"]):
        assert train("--resume", "--out", out, *argv) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and "resuming" not in captured.err, argv
        assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert snapshot(tmp_path) == before
