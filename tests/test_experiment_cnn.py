"""``jaxbp train --model cnn``: the LeNet-style network trained by the runner on images (digits
8×8, IDX, image NPZ, square CSV rows) with the layers' hand-derived backward, beside
``--grad autodiff``; its run directory read back by load_run / predict / evaluate; resume,
shadow checks and --init-from on layer pytrees; non-images and mlp-only options refused."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from jaxbp.cli import main
from jaxbp.experiment import ConfigError, TrainConfig, load_data, load_run, run

# a small cnn: 4 and 8 channels of 3×3, one dense layer of 16; two epochs of digits
SMALL = TrainConfig(
    dataset="digits", model="cnn", channels=(4, 8), kernel_size=3, hidden=(16,), lr=0.02,
    epochs=2,
)  # fmt: skip
SMALL_ARGV = ["--dataset", "digits", "--model", "cnn", "--channels", "4,8", "--kernel-size", "3",
              "--hidden", "16", "--lr", "0.02", "--epochs", "2"]  # fmt: skip
F32_RTOL = 1000 * float(np.finfo(np.float32).eps)
"""manual vs autodiff after two epochs of float32 Adam: the trajectories differ by rounding."""


def train(*argv):
    return main(["train", *map(str, argv)])


def params_bytes(out, name="model.npz"):
    with np.load(out / name) as z:
        return [z[k].tobytes() for k in sorted(z.files) if k != "__meta__"]


def snapshot(root: Path) -> dict:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --- TrainConfig rules ----------------------------------------------------------------------


def test_cnn_defaults_resolve():
    c = TrainConfig(model="cnn").resolve()
    assert (c.channels, c.kernel_size, c.hidden, c.init) == ((16, 32), 5, (120, 84), "he")
    assert c.dropout == 0.0 and c.shift == 0
    # shift came after cnn runs existed: at its default it leaves their hashes as they were
    assert "shift" not in c.hashed("fp") and "dropout" in c.hashed("fp")
    assert TrainConfig(model="cnn", shift=1).resolve().hashed("fp")["shift"] == 1
    m = TrainConfig().resolve()
    assert (m.model, m.channels, m.kernel_size, m.hidden) == ("mlp", None, None, (256,))
    assert TrainConfig.from_toml(c.to_toml()).resolve() == c


BAD = {
    "channels on an mlp": (dict(channels=(4,)), "channels", "only used with model cnn"),
    "kernel on an mlp": (dict(kernel_size=3), "kernel_size", "only used with model cnn"),
    "mlp-only source": (dict(model="cnn", grad="graph"), "grad", "'graph' is a source for"),
    "bf16 cnn": (dict(model="cnn", precision="bf16"), "precision", "model cnn"),
    "no blocks": (dict(model="cnn", channels=()), "channels", "at least one block"),
    "zero channels": (dict(model="cnn", channels=(4, 0)), "channels", "[4, 0]"),
    "zero kernel": (dict(model="cnn", kernel_size=0), "kernel_size", "must be ≥ 1, got 0"),
    "per-layer activations": (
        dict(model="cnn", activation=("relu", "tanh")), "activation", "one activation"
    ),
    "glorot cnn": (dict(model="cnn", init="glorot"), "init", "initialises its layers with he"),
    "dropout on an mlp": (dict(dropout=0.5), "dropout", "only used with model cnn"),
    "dropout 1": (dict(model="cnn", dropout=1.0), "dropout", "must be in [0, 1), got 1.0"),
    "dropout lbfgs": (
        dict(model="cnn", dropout=0.2, optimizer="lbfgs"), "dropout", "L-BFGS's line search"
    ),
    "shift on an mlp": (dict(shift=1), "shift", "only used with model cnn"),
    "negative shift": (dict(model="cnn", shift=-1), "shift", "must be ≥ 0 pixels, got -1"),
    "shift lbfgs": (dict(model="cnn", shift=1, optimizer="lbfgs"), "shift", "L-BFGS's line"),
    "unknown model": (dict(model="rnn"), "model", "valid values are mlp, cnn"),
    "unknown loop": (dict(loop="while"), "loop", "valid values are scan, steps"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_cnn_rules_name_the_field(case):
    changes, field, needle = BAD[case]
    with pytest.raises(ConfigError) as e:
        TrainConfig(**changes).resolve()
    assert e.value.field == field and needle in str(e.value), str(e.value)


# --- the image shape a cnn reads rows as ----------------------------------------------------


def test_image_shapes_from_the_data():
    assert load_data(SMALL.resolve()).image_shape == (8, 8, 1)
    with pytest.raises(ConfigError, match="iris has 4 features per example") as e:
        run(dataclasses.replace(SMALL, dataset="iris"), "/nonexistent/never-written")
    assert e.value.field == "model"


def test_a_shift_as_large_as_the_image_is_refused():
    with pytest.raises(ConfigError, match="8×8 image out") as e:
        run(dataclasses.replace(SMALL, shift=8), "/nonexistent/never-written")
    assert e.value.field == "shift"


def _write_idx(path: Path, array: np.ndarray) -> None:
    code = {1: 0x08}[array.dtype.itemsize]
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def test_idx_npz_and_square_csv_rows_are_images(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 7, 5), dtype=np.uint8)
    labels = np.repeat(np.arange(3, dtype=np.uint8), 20)
    _write_idx(tmp_path / "x-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "y-idx1-ubyte.gz", labels)
    c = TrainConfig(data=str(tmp_path / "x-idx3-ubyte.gz"), labels=str(tmp_path / "y-idx1-ubyte.gz"), model="cnn",
                    kernel_size=3).resolve()  # fmt: skip
    ds = load_data(c)
    assert ds.image_shape == (7, 5, 1) and ds.num_features == 35
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(60, 6, 6, 2)), y=labels.astype(int))
    c = TrainConfig(data=str(tmp_path / "d.npz"), model="cnn", kernel_size=3).resolve()
    assert load_data(c).image_shape == (6, 6, 2)
    rows = np.column_stack([rng.integers(0, 16, (60, 36)), labels])
    np.savetxt(tmp_path / "s.csv", rows, fmt="%d", delimiter=",")
    out = tmp_path / "csv-run"
    assert train("--data", tmp_path / "s.csv", "--model", "cnn", "--channels", "2",
                 "--kernel-size", "3", "--hidden", "none", "--epochs", "1", "--batch-size", "16",
                 "--no-plots", "--out", out) == 0  # fmt: skip
    assert json.loads((out / "summary.json").read_text())["network"].startswith("cnn 6x6x1")
    # 16 features are a 4×4 image: narrower than a 5×5 kernel, so not taken as one
    np.savetxt(tmp_path / "f.csv", rows[:, -17:], fmt="%d", delimiter=",")
    with pytest.raises(ConfigError, match=r"at least 5×5 \(kernel_size\)"):
        run(
            TrainConfig(data=str(tmp_path / "f.csv"), model="cnn", batch_size=16),
            tmp_path / "never",
        )
    assert not (tmp_path / "never").exists()


# --- a trained cnn run ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two-seed cnn runs on digits with the hand-derived backward and with jax.grad."""
    root = tmp_path_factory.mktemp("cnn")
    out = {}
    for grad in ("manual", "autodiff"):
        c = dataclasses.replace(SMALL, seeds=(0, 1), grad=grad, plots=False)
        out[grad] = (root / grad, run(c, root / grad).values)
    return out


def test_manual_trains_like_autodiff(runs):
    (_, manual), (_, autodiff) = runs["manual"], runs["autodiff"]
    assert manual["model"] == "cnn" and manual["loop"] == "steps"
    assert manual["network"] == "cnn 8x8x1 conv 4,8 k3 dense 16 relu"
    np.testing.assert_allclose(
        manual["final_train_losses"], autodiff["final_train_losses"], rtol=F32_RTOL
    )
    # two epochs (40 steps) of a small network learn: each seed at least twice chance
    assert min(manual["test_accuracies"]) > 0.2


def test_load_run_predicts_the_test_accuracy_from_raw_pixels(runs):
    from jaxbp.data import load_dataset

    out, summary = runs["manual"]
    ds = load_dataset("digits", scaling="none")
    for i, seed in enumerate((0, 1)):
        model = load_run(out, seed=seed)
        accuracy = np.mean(model.predict_index(ds.x_test) == ds.y_test)
        assert accuracy == pytest.approx(summary["test_accuracies"][i], abs=1e-12)
    model = load_run(out)
    assert model.config.model == "cnn" and model.params[0]["W"].shape == (3, 3, 1, 4)
    proba = model.predict_proba(ds.x_test[:5])
    assert proba.shape == (5, 10) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match=r"^x: expected \(m, 64\) features"):
        model.predict(np.ones((2, 63)))


def test_predict_and_evaluate_cli_on_a_cnn_run(runs, tmp_path, capsys):
    from jaxbp.data import load_dataset

    out, summary = runs["manual"]
    ds = load_dataset("digits", scaling="none")
    rows = np.column_stack([ds.x_test, ds.y_test]).astype(int)
    np.savetxt(tmp_path / "test.csv", rows, fmt="%d", delimiter=",")
    best = load_run(out)
    assert main(["predict", str(out), "--data", str(tmp_path / "test.csv")]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == ["label", *map(str, best.predict(ds.x_test))]
    assert main(["evaluate", str(out), "--data", str(tmp_path / "test.csv")]) == 0
    text = capsys.readouterr().out
    accuracy = np.mean(best.predict_index(ds.x_test) == ds.y_test)
    assert f"{100 * accuracy:.2f} %" in text


def test_init_from_a_cnn_run_and_its_refusals(runs, tmp_path, capsys):
    out, _ = runs["manual"]
    warm = tmp_path / "warm"
    c = dataclasses.replace(SMALL, seeds=(1,), epochs=1, plots=False, init_from=str(out))
    assert run(c, warm).values["network"] == "cnn 8x8x1 conv 4,8 k3 dense 16 relu"
    mlp = tmp_path / "mlp"
    assert train("--dataset", "digits", "--hidden", "8", "--epochs", "1", "--no-plots",
                 "--out", mlp) == 0  # fmt: skip
    capsys.readouterr()
    cases = {
        str(mlp): "holds an mlp; this run trains --model cnn",
        str(out / "model.npz") + "-x": "no such file",
    }
    for source, needle in cases.items():
        before = snapshot(tmp_path)
        assert train(*SMALL_ARGV, "--init-from", source, "--out", tmp_path / "x") == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, err
        assert snapshot(tmp_path) == before
    assert train(*SMALL_ARGV[:-6], "--channels", "3,4", "--kernel-size", "3", "--hidden", "8",
                 "--epochs", "1", "--init-from", out, "--out", tmp_path / "x") == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "does not hold this run's cnn" in err and "--channels" in err, err


def test_cnn_cli_errors_exit_2_and_write_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cases = {
        ("--dataset", "iris", "--model", "cnn"): "--model: cnn needs images, but iris has 4",
        ("--model", "cnn", "--grad", "per_sample"): "--grad: 'per_sample' is a source for",
        ("--channels", "4,8"): "--channels: only used with --model cnn",
    }
    for argv, needle in cases.items():
        assert train(*argv, "--out", tmp_path / "out") == 2
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
        assert "Traceback" not in captured.err + captured.out
        assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_resume_and_shadow_checks_on_a_cnn_run(tmp_path):
    """Resuming a cnn run gives the uninterrupted run's bits, dropout masks and shifts
    included; the shadow check compares the layers' backward with jax.grad every epoch (same
    draws on both sides) and records the worst error."""
    common = [*SMALL_ARGV[:-1], "3", "--dropout", "0.3", "--shift", "1", "--schedule",
              "constant", "--seeds", "0,1", "--no-plots"]  # fmt: skip
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train(*common, "--shadow-every", "1", "--out", straight) == 0
    assert train(*common[:-10], "1", *common[-9:], "--out", split) == 0  # --epochs 1
    assert train("--resume", "--out", split, "--epochs", "3") == 0
    a = json.loads((straight / "summary.json").read_text())
    b = json.loads((split / "summary.json").read_text())
    assert a["final_train_losses"] == b["final_train_losses"]
    assert params_bytes(straight) == params_bytes(split)
    assert 0 <= a["shadow_max_rel_error"] < 1e-3


@pytest.mark.slow
def test_custom_vjp_source_and_scan_loop_train_like_manual(runs, tmp_path):
    _, manual = runs["manual"]
    for changes in (dict(grad="custom_vjp"), dict(loop="scan")):
        c = dataclasses.replace(SMALL, seeds=(0, 1), plots=False, **changes)
        values = run(c, tmp_path / "-".join(map(str, changes.values()))).values
        np.testing.assert_allclose(
            values["final_train_losses"], manual["final_train_losses"], rtol=F32_RTOL
        )


def test_mnist_idx_is_28_by_28(shared_data):
    d = shared_data / "mnist"
    c = TrainConfig(data=str(d / "t10k-images-idx3-ubyte.gz"),
                    labels=str(d / "t10k-labels-idx1-ubyte.gz"), model="cnn").resolve()  # fmt: skip
    ds = load_data(c)
    assert ds.image_shape == (28, 28, 1) and ds.num_features == 784
