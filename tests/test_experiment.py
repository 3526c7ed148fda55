"""jaxbp.experiment: TrainConfig (typed, every rule in resolve), run (the same bits as
``jaxbp train``), load_run (predictions with the training split's scaling inside)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from jaxbp.cli import main
from jaxbp.experiment import ConfigError, EpochEnd, TrainConfig, load_run, run

TINY = TrainConfig(dataset="iris", hidden=(8,), batch_size=16, epochs=3)
TINY_ARGV = ["--dataset", "iris", "--hidden", "8", "--batch-size", "16", "--epochs", "3"]


# --- TrainConfig ----------------------------------------------------------------------------


def test_one_field_per_train_option():
    from jaxbp.cli import build_parser

    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    dests = {a.dest for a in train._actions} - {"help", "config", "resume", "overwrite"}
    dests -= {"coordinator_address", "num_processes", "process_id", "compile_cache"}
    assert dests == {f.name for f in dataclasses.fields(TrainConfig)}


def test_resolve_fills_derived_defaults_and_is_idempotent():
    c = TINY.resolve()
    assert (c.lr, c.init, c.schedule, c.seeds, c.seed) == (0.003, "he", "cosine", (0,), 0)
    assert TrainConfig(optimizer="lbfgs").resolve().batch_size == "all"
    assert TrainConfig(activation="tanh").resolve().init == "glorot"
    assert TrainConfig().resolve().dataset == "digits"
    assert c.resolve() == c
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.lr = 1.0  # type: ignore[misc]


def test_toml_round_trip(tmp_path):
    c = TrainConfig(dataset="wine", hidden=(6, 4), activation=("tanh", "relu"), seeds=(3, 4))
    c = c.resolve()
    assert TrainConfig.from_toml(c.to_toml()).resolve() == c
    path = tmp_path / "c.toml"
    path.write_text(c.to_toml("a header"))
    assert TrainConfig.from_toml(path).resolve() == c
    assert TrainConfig.from_toml(str(path)).resolve() == c


def test_toml_data_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "c.toml"
    path.write_text('data = "x.csv"\n')
    c = TrainConfig.from_toml(path)
    assert c.data == str(tmp_path / "sub" / "x.csv") and c.dataset is None


BAD_FIELDS = {
    "lr": (dict(lr=-0.1), "lr: the learning rate must be > 0, got -0.1"),
    "lr string": (dict(lr="0.01"), "lr: expected a number, got '0.01'"),
    "hidden bool": (dict(hidden=(True, 8)), "hidden: expected a list of integers"),
    "epochs float": (dict(epochs=2.0), "epochs: expected an integer, got 2.0"),
    "epochs": (dict(epochs=0), "epochs: must be ≥ 1, got 0"),
    "optimizer": (dict(optimizer="rmsprop"), "optimizer: unknown 'rmsprop'; valid values are"),
    "seeds": (dict(seeds=(1, 1)), "seeds: need distinct non-negative integers"),
    "two sources": (dict(dataset="iris", data="x.csv"), "dataset: give one data source"),
    "lbfgs batch": (dict(optimizer="lbfgs", batch_size=8), "batch_size: lbfgs is full-batch"),
    "precision": (dict(precision="bf16", grad="autodiff"), "precision: bf16 needs grad manual"),
    "activations": (dict(hidden=(4,), activation=("tanh", "relu")), "activation: 2 names for 1"),
    "plots": (dict(plots=1), "plots: expected true or false, got 1"),
    "patience": (dict(patience=2, val_fraction=0.0), "patience: early stopping needs"),
    "test_rows": (dict(test_rows=3), "test_rows: only used with a data file"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_FIELDS))
def test_resolve_errors_start_with_the_field(case):
    fields, message = BAD_FIELDS[case]
    with pytest.raises(ConfigError) as info:
        TrainConfig(**fields).resolve()
    assert str(info.value).startswith(message)
    assert isinstance(info.value, ValueError) and info.value.field == message.split(":")[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hidden = [true, 8]\n", "key 'hidden': expected a list of integers, got [True, 8]"),
        ('lr = "0.01"\n', "key 'lr': expected a number, got '0.01'"),
        ("epochs = 2.0\n", "key 'epochs': expected an integer"),
        ("hiden = [8]\n", "unknown key 'hiden'; did you mean 'hidden'?"),
    ],
)
def test_toml_types_are_strict(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"^{path}: ") as info:
        TrainConfig.from_toml(path)
    assert message in str(info.value)


def test_toml_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.toml: no such file"):
        TrainConfig.from_toml(tmp_path / "nope.toml")


def test_updated_clears_the_other_data_source_and_seed():
    c = TrainConfig(data="x.csv", test_rows=5, seeds=(1, 2))
    d = c.updated(dataset="iris", seed=7)
    assert (d.dataset, d.data, d.test_rows, d.seeds, d.seed) == ("iris", None, None, None, 7)
    assert d.updated(data="y.csv").dataset is None
    with pytest.raises(ConfigError, match="^hiden: unknown field; did you mean 'hidden'"):
        c.updated(hiden=(3,))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--hidden", ""], "--hidden: expected comma-separated integers; say 'none' for no hidden"),
        (["--epoch", "2"], "unrecognized arguments: --epoch"),
        (["--lr", "fast"], "--lr: expected a number, got 'fast'"),
    ],
)
def test_cli_refuses_what_was_silently_accepted(tmp_path, capsys, argv, message):
    assert main(["train", *TINY_ARGV, *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "o").exists()


def test_cli_toml_string_for_a_number_exits_2(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text('lr = "0.01"\n')
    assert main(["train", *TINY_ARGV, "--config", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"--config {path}: key 'lr': expected a number, got '0.01'" in err


# --- run and load_run -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 2-seed run through the library, with the events its callback saw."""
    out = tmp_path_factory.mktemp("lib") / "run"
    events = []
    summary = run(dataclasses.replace(TINY, seeds=(0, 1)), out, callbacks=[events.append])
    return out, summary, events


def params_bytes(out, name="model.npz"):
    with np.load(out / name) as z:
        return [z[k].tobytes() for k in sorted(z.files) if k != "__meta__"]


def test_run_and_the_cli_give_the_same_bits(trained, tmp_path, capsys):
    out, summary, _ = trained
    cli_out = tmp_path / "cli"
    assert main(["train", *TINY_ARGV, "--seeds", "0,1", "--out", str(cli_out)]) == 0
    capsys.readouterr()
    from_cli = json.loads((cli_out / "summary.json").read_text())
    from_lib = json.loads((out / "summary.json").read_text())
    assert from_lib == summary.values
    for s in (from_cli, from_lib):
        s.pop("wall_time_s")
    assert from_cli == from_lib
    assert params_bytes(cli_out) == params_bytes(out)
    assert params_bytes(cli_out, "checkpoint.npz") == params_bytes(out, "checkpoint.npz")


def test_callbacks_see_every_epoch(trained):
    _, summary, events = trained
    assert [e.epoch for e in events] == [1, 2, 3]
    assert all(isinstance(e, EpochEnd) and e.epochs == 3 and e.start == 0 for e in events)
    assert events[-1].metrics["train_loss"] == summary["final_train_loss"]
    assert len(events[0].metrics["per_seed"]["train_loss"]) == 2


def test_run_refuses_an_existing_directory_and_writes_nothing(trained):
    out, _, _ = trained
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(ConfigError, match="^out: run directory .* already exists"):
        run(TINY, out)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def raw_test_split():
    """The run's test split before scaling: the same split as load_dataset's with 'none'."""
    from jaxbp.data import load_dataset

    ds = load_dataset("iris", scaling="none")
    return ds.x_test, ds.y_test, ds.class_names


def test_load_run_predicts_the_test_accuracy_from_raw_features(trained):
    out, summary, _ = trained
    x, y, names = raw_test_split()
    for i, seed in enumerate((0, 1)):
        model = load_run(out, seed=seed)
        accuracy = np.mean(model.predict_index(x) == y)
        assert accuracy == pytest.approx(summary["test_accuracies"][i], abs=1e-12)
        assert model.seed == seed and model.class_names == names
        assert list(model.predict(x[:3])) == [names[c] for c in model.predict_index(x[:3])]
        proba = model.predict_proba(x)
        assert proba.shape == (len(y), 3) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    model = load_run(out)
    assert model.config == TrainConfig.from_toml(out / "config.toml")
    assert model.summary == summary.values and model.params[0].W.shape == (8, 4)
    meta = json.loads(np.load(out / "model.npz")["__meta__"].tobytes())["meta"]
    assert model.seed == (0, 1)[int(np.argmax(meta["val_accuracies"]))]


def test_load_run_errors_name_the_path(trained, tmp_path):
    out, _, _ = trained
    with pytest.raises(FileNotFoundError, match="nowhere: no such run directory"):
        load_run(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"model\.npz: no such file"):
        load_run(tmp_path)
    with pytest.raises(ValueError, match=r"^seed: 7 is not a seed of .* \(seeds \[0, 1\]\)"):
        load_run(out, seed=7)
    model = load_run(out)
    with pytest.raises(ValueError, match=r"^x: expected \(m, 4\) features"):
        model.predict(np.ones((2, 5)))


# --- experiments/run_all.py: RESULTS.md rows merged, never dropped ---------------------------


@pytest.fixture(scope="module")
def run_all():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "experiments" / "run_all.py"
    spec = importlib.util.spec_from_file_location("run_all", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_results(accuracy):
    summary = {
        "final_train_losses": [0.5, 0.6], "n_train": 108, "n_val": 12, "n_test": 30,
        "sizes": [4, 16, 3], "activation": "tanh", "test_accuracies": [accuracy, accuracy],
        "wall_time_s": 1.0,
    }  # fmt: skip
    return {"manual": summary, "autodiff": summary, "sklearn": {"accuracies": [0.9, 0.9]}}


def test_report_only_without_results_keeps_every_row(run_all, tmp_path):
    existing = (run_all.HERE / "RESULTS.md").read_text(encoding="utf-8")
    rows = run_all.table_rows(existing)
    assert {"iris", "digits", "mnist"} <= set(rows)
    text, kept = run_all.merge(existing, {}, [0, 1, 2, 3, 4])
    assert run_all.table_rows(text) == rows and set(kept) == set(rows)
    assert text == existing  # byte for byte


def test_merge_replaces_only_regenerated_rows(run_all, tmp_path):
    path = tmp_path / "RESULTS.md"
    first, _ = run_all.merge("", {"iris": fake_results(0.5), "wine": fake_results(0.5)}, [0, 1])
    path.write_text(first + "| custom | kept by hand |\n")
    text, kept = run_all.merge(path.read_text(), {"wine": fake_results(0.75)}, [0, 1])
    rows = run_all.table_rows(text)
    assert list(rows) == ["iris", "wine", "custom"] and kept == ["iris", "custom"]
    assert rows["iris"] == run_all.table_rows(first)["iris"]
    assert "75.00 ± 0.00" in rows["wine"] and "50.00" not in rows["wine"]
    assert text.count("| dataset |") == 1 and "Notes" in text


def test_run_all_trains_in_process_through_experiment_run(run_all, tmp_path, monkeypatch):
    """No subprocess: train() is experiment.run on the experiment's config with seeds/grad."""
    import jaxbp.experiment as E

    seen = {}

    def fake_run(config, out, **kw):
        seen.update(config=config, out=out, **kw)
        return E.Summary({"test_accuracy": 1.0}, out, ())

    monkeypatch.setattr(E, "run", fake_run)
    assert run_all.train("iris", "autodiff", [0, 1], tmp_path) == {"test_accuracy": 1.0}
    c = seen["config"]
    assert (c.dataset, c.grad, c.seeds, seen["overwrite"]) == ("iris", "autodiff", (0, 1), True)
    assert c.hidden == run_all.config("iris").hidden and seen["out"] == tmp_path / "iris-autodiff"
    assert "subprocess" not in run_all.__dict__


def test_bf16_rows_are_their_float32_config_with_bf16_and_compared_with_it(run_all):
    for name, (base, changes) in run_all.VARIANTS.items():
        c, b = run_all.config(name), run_all.config(base)
        assert c.precision == "bf16" == changes["precision"] and b.precision == "float32"
        assert c.updated(precision="float32") == b
        assert run_all.grads(name) == ("manual",) and run_all.grads(base) == run_all.GRADS
        assert run_all.SPLITS[name] == run_all.SPLITS[base] and name in run_all.DATASETS
    f32 = fake_results(0.90)
    bf16 = {"manual": dict(f32["manual"], test_accuracies=[0.8925, 0.8925], precision="bf16")}
    row = run_all.row("digits-bf16", bf16, {"digits": f32})
    assert "89.25 ± 0.00 (float32 -0.75)" in row and "— (bf16: manual only)" in row
    assert "bf16 products" in row and "vs float32 manual: 0.0e+00" in row
    assert "(float32" not in run_all.row("digits-bf16", bf16, {})  # no float32 row to compare


def test_cv_probe_folds_only_the_training_and_validation_rows(tmp_path):
    """cv_probe's data are the experiment's training + validation rows in original units; its
    test rows take no part."""
    import importlib.util
    from pathlib import Path

    from jaxbp.experiment import load_data

    path = Path(__file__).resolve().parent.parent / "experiments" / "cv_probe.py"
    spec = importlib.util.spec_from_file_location("cv_probe", path)
    cv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cv)
    cv.training_rows("digits", tmp_path / "rows.npz")
    rows = np.load(tmp_path / "rows.npz")
    ds = load_data(cv.config("digits").resolve())
    raw = np.concatenate([ds.x_train, ds.x_val]) * ds.scale + ds.mean
    assert rows["x"].shape == (len(raw), 8, 8)  # images keep their shape
    np.testing.assert_allclose(rows["x"].reshape(len(raw), -1), raw, atol=1e-6)
    np.testing.assert_array_equal(rows["y"], np.concatenate([ds.y_train, ds.y_val]))
    assert cv.parse('scaling=max channels=[8,16] lr=0.01') == {
        "scaling": "max", "channels": [8, 16], "lr": 0.01,
    }  # fmt: skip
    assert cv.held_out({"test": 0.9, "n_test": 90, "val": 1.0, "n_val": 10}) == pytest.approx(0.91)
    nan = float("nan")  # a run without a validation split has no validation accuracy
    assert cv.held_out({"test": 0.99, "n_test": 288, "val": nan, "n_val": 0}) == 0.99


def test_best_checkpoint_is_the_highest_mean_validation_accuracy(trained):
    out, summary, events = trained
    from jaxbp import checkpoint

    val = [e.metrics["val_accuracy"] for e in events]
    meta = checkpoint.read_meta(out / "best.npz")
    assert meta["epoch"] == 1 + int(np.argmax(val)) and meta["score"] == max(val)
    assert meta["criterion"] == "val_accuracy"
    assert meta["config_hash"] == summary["config_hash"] and "best.npz" in summary.outputs


def test_errors_spell_other_fields_as_names_in_python_and_flags_on_the_cli(tmp_path, capsys):
    with pytest.raises(ConfigError, match="^precision: bf16 needs grad manual") as info:
        TrainConfig(precision="bf16", grad="autodiff").resolve()
    assert info.value.render(lambda n: "--" + n) == "bf16 needs --grad manual, got 'autodiff'"
    argv = ["train", *TINY_ARGV, "--patience", "2", "--val-fraction", "0", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "--patience: early stopping needs a validation split (--val-fraction > 0)" in (
        capsys.readouterr().err
    )


@pytest.mark.slow
@pytest.mark.parametrize("grad", ["scan", "custom_vjp", "vmap"])
def test_every_registered_source_trains_like_manual(grad, tmp_path):
    # float64: the sources agree to rounding, so do a few epochs of training on each
    c = dataclasses.replace(TINY, hidden=(4,), dtype="float64", plots=False, shadow_every=1)
    manual = run(c, tmp_path / "manual")
    other = run(dataclasses.replace(c, grad=grad), tmp_path / grad)
    assert other["grad"] == grad
    assert other["final_train_loss"] == pytest.approx(manual["final_train_loss"], rel=1e-10)
    assert other["shadow_max_rel_error"] < 1e-10
