"""Bounds of a TrainConfig and of ``jaxbp train`` / ``jaxbp demo``: every value the run, the
machine or config.toml cannot represent is refused before anything is written, naming the
field (the flag at the CLI), the value received and the limit; options of another data source
or model are refused, not ignored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jaxbp.cli import main
from jaxbp.data.builtin import machine_memory
from jaxbp.experiment import ConfigError, TrainConfig

HUGE = 99999999999999999999  # beyond TOML's int64

# --- Python: TrainConfig.resolve names the field ------------------------------------------------

BAD = {
    "seed too large": (dict(seed=2**32), "seed", "must be in [0, 4294967295]", "got 4294967296"),
    "seed negative": (dict(seed=-1), "seed", "must be in [0, 4294967295]", "got -1"),
    "seeds too large": (dict(seeds=(0, 2**32)), "seeds", "[0, 4294967295]", "got 4294967296"),
    "seeds negative": (dict(seeds=(-1, 2)), "seeds", "non-negative", "got [-1, 2]"),
    "epochs huge": (dict(epochs=HUGE), "epochs", "at most 107374182", f"got {HUGE}"),
    "epochs iris": (dict(dataset="iris", epochs=2**28), "epochs", "at most 268435455", "8 steps"),
    "epochs all": (dict(dataset="iris", batch_size="all", epochs=2**31), "epochs", "at most 2147483647", "got 2147483648"),
    "data_seed": (dict(data_seed=HUGE), "data_seed", "9223372036854775807", f"got {HUGE}"),
    "patience": (dict(patience=2**31), "patience", "at most 2147483647", "got 2147483648"),
    "shadow_every": (dict(shadow_every=HUGE), "shadow_every", "TOML", f"got {HUGE}"),
    "checkpoint_every": (dict(checkpoint_every=HUGE), "checkpoint_every", "TOML", f"got {HUGE}"),
    "test_rows": (dict(data="x.csv", test_rows=HUGE), "test_rows", "TOML", f"got {HUGE}"),
    "hidden": (dict(hidden=(64, 10**11)), "hidden", "a width of 100000000000", "memory; at most"),
    "channels": (dict(model="cnn", channels=(16, 10**9)), "channels", "a block of 1000000000", "at most"),
    "kernel": (dict(model="cnn", kernel_size=10**6), "kernel_size", "a kernel of 1000000", "at most"),
    "classes 1": (dict(dataset="spirals", classes=1), "classes", "need at least 2", "got 1"),
    "samples": (dict(dataset="blobs", samples=10**13), "samples", "this machine", "got 10000000000000"),
    "batch > rows": (dict(dataset="wine", batch_size=500), "batch_size", "500 is more than the 128", "'all'"),
    "lr nan": (dict(lr=float("nan")), "lr", "a finite number", "got nan"),
    "l2 inf": (dict(l2=float("inf")), "l2", "a finite number", "got inf"),
    "l2 negative": (dict(l2=-1.0), "l2", "must be ≥ 0", "got -1.0"),
    "momentum nan": (dict(momentum=float("nan")), "momentum", "a finite number", "got nan"),
    "val_fraction": (dict(val_fraction=-0.1), "val_fraction", "[0, 1)", "got -0.1"),
    "dropout": (dict(model="cnn", dropout=1.0), "dropout", "[0, 1)", "got 1.0"),
    "kernel 0": (dict(model="cnn", kernel_size=0), "kernel_size", "≥ 1", "got 0"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_resolve_refuses_what_cannot_be_represented(case):
    fields, field, limit, received = BAD[case]
    with pytest.raises(ConfigError) as info:
        TrainConfig(**fields).resolve()
    assert info.value.field == field and str(info.value).startswith(f"{field}: ")
    assert limit in str(info.value) and received in str(info.value)


def test_the_limits_are_the_largest_values_that_work():
    c = TrainConfig(seed=2**32 - 1).resolve()
    assert c.seeds == (2**32 - 1,)
    assert TrainConfig(dataset="iris", epochs=268435455).resolve().epochs == 268435455
    assert TrainConfig(patience=2**31 - 1).resolve().patience == 2**31 - 1
    with pytest.raises(ConfigError, match=r"at most (\d+) here") as info:
        TrainConfig(hidden=(10**11,)).resolve()
    most = int(info.value.reason.rsplit("at most ", 1)[1].split(" ")[0])
    assert TrainConfig(hidden=(most,)).resolve().hidden == (most,)
    with pytest.raises(ConfigError):
        TrainConfig(hidden=(most + 1,)).resolve()
    per_param = 4 * 4  # float32, parameters + gradient + Adam's two moments

    def digits_network(w):  # 64 features → w → 10 classes
        return ((64 + 1) * w + (w + 1) * 10) * per_param

    assert digits_network(most) <= machine_memory() < digits_network(most + 1)


def test_a_file_run_is_bounded_by_one_step_an_epoch_before_it_is_read():
    with pytest.raises(ConfigError, match="^epochs: at most 2147483647: .* at least one step"):
        TrainConfig(data="x.csv", epochs=2**31).resolve()
    c = TrainConfig(data="x.csv").resolve(training_rows=100)
    assert (c.batch_size, c.epochs, c.l2) == (12, 200, 0.25)
    with pytest.raises(ConfigError, match="^epochs: at most 268435455: .* 8 steps an epoch"):
        TrainConfig(data="x.csv", epochs=2**28).resolve(training_rows=100)
    with pytest.raises(ConfigError, match="^batch_size: 101 is more than the 100 training"):
        TrainConfig(data="x.csv", batch_size=101).resolve(training_rows=100)


OTHER_SOURCE = {
    "label_column with a built-in": (dict(dataset="iris", label_column="3"), "label_column", "'3' with the built-in dataset 'iris'"),
    "label_column with an npz": (dict(data="x.npz", label_column="2"), "label_column", "'2' with the npz file"),
    "classes with iris": (dict(dataset="iris", classes=3), "classes", "got 3 with the built-in dataset 'iris'"),
    "samples with a file": (dict(data="x.csv", samples=30), "samples", "got 30 with the data file"),
    "test_rows with a built-in": (dict(dataset="wine", test_rows=5), "test_rows", "got 5 with wine"),
    "test_rows with test_data": (dict(data="x.csv", test_data="t.csv", test_rows=5), "test_rows", "got 5"),
    "test_labels without test_data": (dict(data="x-ubyte", labels="l-ubyte", test_labels="t-ubyte"), "test_labels", "'t-ubyte'"),
    "channels with mlp": (dict(channels=(8,)), "channels", "got (8,) for model mlp"),
    "shift with mlp": (dict(shift=1), "shift", "got 1 for model mlp"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(OTHER_SOURCE))
def test_options_of_another_source_or_model_are_refused(case):
    fields, field, detail = OTHER_SOURCE[case]
    with pytest.raises(ConfigError) as info:
        TrainConfig(**fields).resolve()
    assert info.value.field == field and detail in str(info.value)


# --- the CLI: exit 2, one line naming the flag and the value, nothing written -----------------


def snapshot(root: Path) -> dict:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


CLI = {
    "--seed 2**32": (["--seed", "4294967296"], "error: --seed: must be in [0, 4294967295] (a uint32 seed of jax.random.key), got 4294967296"),
    "--seed -1": (["--seed", "-1"], "error: --seed: must be in [0, 4294967295] (a uint32 seed of jax.random.key), got -1"),
    "--seeds": (["--seeds", "0,4294967296"], "error: --seeds: each must be in [0, 4294967295]"),
    "--epochs huge": (["--epochs", str(HUGE)], "error: --epochs: at most 107374182: the optimizer counts its steps in an int32"),
    "--hidden": (["--hidden", "100000000000"], "error: --hidden: a width of 100000000000 makes a network of"),
    "--channels": (["--model", "cnn", "--channels", "16,1000000000"], "error: --channels: a block of 1000000000"),
    "--classes 1": (["--dataset", "spirals", "--classes", "1"], "error: --classes: need at least 2, got 1"),
    "--samples": (["--dataset", "spirals", "--samples", "1000000000000"], "error: --samples: at most"),
    "--label-column": (["--dataset", "iris", "--label-column", "3"], "error: --label-column: only used with a CSV data file (--data), got '3'"),
    "--classes with iris": (["--dataset", "iris", "--classes", "3"], "error: --classes: only the synthetic datasets"),
    "--test-rows with iris": (["--dataset", "iris", "--test-rows", "5"], "error: --test-rows: only used with a data file (--data), got 5"),
    "--data-seed": (["--data-seed", str(HUGE)], f"error: --data-seed: at most 9223372036854775807 in magnitude (a TOML integer, as config.toml stores it), got {HUGE}"),
    "--patience": (["--patience", str(HUGE)], "error: --patience: at most 2147483647"),
    "--lr nan": (["--lr", "nan"], "error: --lr: expected a finite number, got 'nan'"),
    "--momentum inf": (["--momentum", "inf"], "error: --momentum: expected a finite number, got 'inf'"),
    "--dropout mlp": (["--dropout", "0.5"], "error: --dropout: only used with --model cnn, got 0.5"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CLI))
def test_cli_bounds_exit_2_with_one_line_naming_the_flag(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv, expected = CLI[case]
    before = snapshot(tmp_path)
    assert main(["train", *argv, "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), captured.err
    assert "Traceback" not in captured.err + captured.out and captured.out == ""
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()


def test_cli_data_errors_name_the_flag(tmp_path, capsys):
    """A jaxbp.data error that starts with a field's name is said with its flag."""
    path = tmp_path / "small.csv"
    rows = [f"{i},{i % 2}" for i in range(20)]
    path.write_text("\n".join(rows) + "\n")
    argv = ["train", "--data", str(path), "--test-rows", "25", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --test-rows: must be between 1 and 19") and "got 25" in err
    assert err.count("\n") == 1 and not (tmp_path / "o").exists()


DEMO = {
    "--steps": (["--steps", "-1"], "error: --steps: the number of steps must be ≥ 0, got -1\n"),
    "--lr nan": (["--lr", "nan"], "error: --lr: the learning rate must be a finite number > 0, got nan\n"),
    "--lr 0": (["--lr", "0"], "error: --lr: the learning rate must be a finite number > 0, got 0.0\n"),
    "--batch": (["--batch", "0"], "error: --batch: the number of examples must be ≥ 1, got 0\n"),
    "--l2": (["--l2", "-1"], "error: --l2: the L2 coefficient must be a finite number ≥ 0, got -1.0\n"),
    "--seed": (["--seed", "4294967296"], "error: --seed: must be in [0, 4294967295] (a uint32 seed of jax.random.key), got 4294967296\n"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(DEMO))
def test_demo_names_each_flag_and_its_value(case, capsys):
    argv, expected = DEMO[case]
    assert main(["demo", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err == expected and captured.out == ""


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--batch", "100000000000000", "--steps", "0"], "error: --batch: 100000000000000 examples need"),
        (["--sizes", "100000000000,4"], "error: --sizes: a network of widths 100000000000,4 needs"),
    ],
)  # fmt: skip
def test_demo_refuses_what_does_not_fit_in_memory(argv, expected, capsys):
    assert main(["demo", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and "of memory" in err and err.count("\n") == 1


def test_int64_bound_is_toml_s():
    import tomllib

    edge = TrainConfig(data_seed=2**63 - 1).resolve()
    assert tomllib.loads(edge.to_toml())["data_seed"] == 2**63 - 1
    assert np.iinfo(np.int64).max == 2**63 - 1
