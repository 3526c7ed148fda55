"""jaxbp.experiment.warmstart and ``init_from``: a run started from the weights of a run
directory, a model / checkpoint file or the course's .mat; best.npz without a validation split;
after a divergence, the best state and the command that restarts from it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from jaxbp.cli import main
from jaxbp.experiment import ConfigError, TrainConfig, TrainingStopped, run
from jaxbp.experiment.warmstart import initial_params, read_params

TINY = TrainConfig(dataset="iris", hidden=(8,), batch_size=16, epochs=3, plots=False)
EX4 = Path(__file__).resolve().parents[2] / "shared" / "data" / "ex4" / "ex4weights.mat"


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished 2-seed iris run."""
    out = tmp_path_factory.mktemp("warm") / "a"
    run(dataclasses.replace(TINY, seeds=(0, 1)), out)
    return out


def final_params(out, name="model.npz"):
    return read_params(out / name).params


@pytest.mark.parametrize("where", ["", "model.npz", "checkpoint.npz"])
def test_read_params_from_a_run_directory_model_and_checkpoint(source, where):
    w = read_params(source / where if where else source)
    assert w.sizes == (4, 8, 3) and w.seeds == (0, 1)
    assert w.source.name == (where or "model.npz")
    for a, b in zip(w.params, final_params(source), strict=True):  # last epoch: same params
        np.testing.assert_array_equal(a.W, b.W)
        np.testing.assert_array_equal(a.b, b.b)


def test_a_run_starts_from_the_weights_seed_by_seed(source, tmp_path):
    # Seeds in the other order, and a learning rate too small to move them: the first epoch's
    # training cost of each seed is the source's final one, seed for seed.
    c = dataclasses.replace(TINY, seeds=(1, 0), epochs=1, lr=1e-12, init_from=str(source))
    run(c, tmp_path / "b")
    before = metrics(source)[-1]["per_seed"]["train_loss"]
    after = metrics(tmp_path / "b")[-1]["per_seed"]["train_loss"]
    assert after == pytest.approx(before[::-1], rel=1e-5)
    config = (tmp_path / "b" / "config.toml").read_text()
    assert f'init_from = "{source.resolve()}"' in config


@pytest.mark.slow
def test_the_start_is_part_of_the_config_hash(source, tmp_path):
    plain = run(dataclasses.replace(TINY, epochs=1), tmp_path / "plain")
    warm = run(dataclasses.replace(TINY, epochs=1, init_from=str(source)), tmp_path / "warm")
    assert plain["config_hash"] != warm["config_hash"]
    # Resuming with other starting weights is refused, naming the difference.
    other = tmp_path / "other"
    run(dataclasses.replace(TINY, epochs=1, seed=5), other)
    c = dataclasses.replace(TINY, epochs=2, init_from=str(other))
    with pytest.raises(ConfigError, match="resume: config hash mismatch.*init_fingerprint"):
        run(c, tmp_path / "warm", resume=True)


def test_one_seed_source_starts_every_seed(source, tmp_path):
    one = tmp_path / "one"
    run(dataclasses.replace(TINY, epochs=1), one)
    params, _ = initial_params(one, (4, 8, 3), (3, 4, 5), "float64")
    assert params[0].W.shape == (3, 8, 4) and params[0].W.dtype == np.float64
    np.testing.assert_array_equal(params[0].W[0], params[0].W[2])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hidden": (5,)}, "holds a 4-8-3 network; this run trains 4-5-3"),
        ({"seeds": (7,)}, r"seeds \[0, 1\]; this run trains seeds \[7\]"),
    ],
)
def test_mismatches_are_refused_before_anything_is_written(source, tmp_path, change, message):
    c = dataclasses.replace(TINY, init_from=str(source), **change)
    with pytest.raises(ConfigError, match=f"^init_from: .*{message}"):
        run(c, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_bad_sources_exit_2_naming_the_flag_and_file(tmp_path, capsys):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    (tmp_path / "empty").mkdir()
    cases = {
        str(tmp_path / "missing"): "no such file or run directory",
        str(junk): "junk.npz: damaged or incomplete checkpoint",
        str(tmp_path / "empty"): "holds no model.npz, best.npz or checkpoint.npz",
    }
    argv = ["train", "--dataset", "iris", "--hidden", "8", "--epochs", "1", "--no-plots"]
    for i, (path, message) in enumerate(cases.items()):
        out = tmp_path / f"out{i}"
        assert main([*argv, "--init-from", path, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --init-from: ") and message in err, err
        assert not out.exists()


def test_course_mat_theta_matrices_are_read_in_jaxbp_class_order(tmp_path):
    import scipy.io

    rng = np.random.default_rng(0)
    t1, t2 = rng.normal(size=(5, 4)), rng.normal(size=(10, 6))
    scipy.io.savemat(tmp_path / "w.mat", {"Theta1": t1, "Theta2": t2})
    w = read_params(tmp_path / "w.mat")
    assert w.sizes == (3, 5, 10) and w.seeds is None
    np.testing.assert_array_equal(w.params[0].W[0], t1[:, 1:])
    np.testing.assert_array_equal(w.params[0].b[0], t1[:, 0])
    # The course's output unit 10 is the digit 0, jaxbp's class 0: it comes first.
    np.testing.assert_array_equal(w.params[1].W[0][0], t2[9, 1:])
    np.testing.assert_array_equal(w.params[1].W[0][1:], t2[:9, 1:])
    scipy.io.savemat(tmp_path / "gap.mat", {"Theta1": t1, "Theta3": t2})
    with pytest.raises(ConfigError, match=r"are not numbered 1 … 2"):
        read_params(tmp_path / "gap.mat")
    scipy.io.savemat(tmp_path / "none.mat", {"X": t1})
    with pytest.raises(ConfigError, match="no Theta1, Theta2, …; found X"):
        read_params(tmp_path / "none.mat")


@pytest.mark.skipif(not EX4.is_file(), reason=f"{EX4} absent (../shared/data is not here)")
def test_the_course_weights_are_a_400_25_10_network(tmp_path):
    w = read_params(EX4)
    assert w.sizes == (400, 25, 10)
    with pytest.raises(ConfigError, match="holds a 400-25-10 network; this run trains 64-256-10"):
        run(TrainConfig(init_from=str(EX4), epochs=1), tmp_path / "x")


def test_best_without_validation_is_the_lowest_training_cost(tmp_path):
    from jaxbp import checkpoint

    out = tmp_path / "r"
    run(dataclasses.replace(TINY, val_fraction=0.0, epochs=4), out)
    losses = [m["train_loss"] for m in metrics(out)]
    meta = checkpoint.read_meta(out / "best.npz")
    assert meta["criterion"] == "train_loss" and meta["score"] == -min(losses)
    assert meta["epoch"] == 1 + int(np.argmin(losses))


def diverge_at(monkeypatch, epoch):
    from jaxbp import train as T

    real_fit = T.fit

    def fit(*a, **kw):
        for item in real_fit(*a, **kw):
            if item[0] == epoch:
                raise T.TrainingDiverged(f"epoch {epoch}: the training loss is nan")
            yield item

    monkeypatch.setattr(T, "fit", fit)


@pytest.mark.slow
def test_divergence_names_the_best_state_and_the_restart(tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    diverge_at(monkeypatch, 3)
    with pytest.raises(TrainingStopped) as info:
        run(dataclasses.replace(TINY, epochs=5, lr=0.01), out)
    e = info.value
    assert e.epoch == 2 and e.best is not None and e.best[0] == out / "best.npz"
    assert e.restart == {"lr": 0.001, "init_from": str(out / "best.npz")}
    text = str(e)
    assert "epoch 3: the training loss is nan" in text
    assert f"the best state is {out / 'best.npz'} (epoch {e.best[1]}, training cost" in text
    assert "init_from=" in text and "lr=0.001" in text
    # The CLI prints the command; run as printed, it starts from the best state.
    argv = ["train", "--dataset", "iris", "--hidden", "8", "--batch-size", "16", "--epochs", "5",
            "--lr", "0.01", "--no-plots", "--out", str(tmp_path / "cli")]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("to start again: "))
    words = line.removeprefix("to start again: ").split()
    assert words[:2] == ["jaxbp", "train"] and "--init-from" in words and "--lr" in words
    monkeypatch.undo()
    assert main(words[1:]) == 0
    restarted = tmp_path / "cli-restart"
    assert json.loads((restarted / "summary.json").read_text())["epochs"] == 5
    config = (restarted / "config.toml").read_text()
    assert "lr = 0.001" in config and f'init_from = "{tmp_path / "cli" / "best.npz"}"' in config


def test_shadow_failure_suggests_no_restart(tmp_path, monkeypatch):
    from jaxbp import shadow

    def failing(errors, dtype, *, epoch):
        raise shadow.ShadowError(f"epoch {epoch}: manual and autodiff disagree")

    monkeypatch.setattr(shadow, "check_shadow", failing)
    with pytest.raises(TrainingStopped) as info:
        run(dataclasses.replace(TINY, shadow_every=1), tmp_path / "r")
    assert info.value.restart is None and "to start again" not in str(info.value)


@pytest.mark.slow
def test_resume_with_a_damaged_best_checkpoint_continues_and_replaces_it(tmp_path):
    from jaxbp import checkpoint

    out = tmp_path / "r"
    run(dataclasses.replace(TINY, schedule="constant", epochs=2), out)
    (out / "best.npz").write_bytes(b"torn")
    summary = run(dataclasses.replace(TINY, schedule="constant", epochs=4), out, resume=True)
    assert summary["epochs"] == 4
    assert checkpoint.read_meta(out / "best.npz")["epoch"] in (3, 4)


@pytest.mark.slow
def test_resume_from_a_checkpoint_of_other_arrays_is_a_resume_error(tmp_path):
    from jaxbp import checkpoint

    out = tmp_path / "r"
    run(dataclasses.replace(TINY, schedule="constant", epochs=1), out)
    meta = checkpoint.read_meta(out / "checkpoint.npz")
    checkpoint.save(out / "checkpoint.npz", {"w": np.zeros(3)}, meta=meta)  # same hash, other state
    before = (out / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match=r"^resume: .*checkpoint.npz: 1 arrays, but the run's"):
        run(dataclasses.replace(TINY, schedule="constant", epochs=2), out, resume=True)
    assert (out / "metrics.jsonl").read_text() == before
