"""``jaxbp predict`` / ``jaxbp evaluate``: a trained run used on data it never saw."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import jaxbp.cli
from jaxbp.cli import main
from jaxbp.experiment import TrainConfig, load_run, run

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """``predict`` registered as a subcommand (a no-op once cli/__init__.py lists it)."""
    if "predict" not in jaxbp.cli.SUBCOMMANDS:
        monkeypatch.setattr(jaxbp.cli, "SUBCOMMANDS", (*jaxbp.cli.SUBCOMMANDS, "predict"))


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """Iris as CSV files: 120 rows to train on, 30 held out (named classes); a run on the 120."""
    from sklearn.datasets import load_iris

    d = tmp_path_factory.mktemp("iris")
    iris = load_iris()
    rng = np.random.default_rng(1)
    order = rng.permutation(len(iris.target))
    names = np.asarray(iris.target_names)[iris.target]

    def write(path, rows, labels=True):
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["sl", "sw", "pl", "pw", *(["species"] if labels else [])])
            for i in rows:
                w.writerow([*iris.data[i], *([names[i]] if labels else [])])

    write(d / "train.csv", order[:120])
    write(d / "held.csv", order[120:])
    write(d / "features.csv", order[120:], labels=False)
    np.savez(d / "held.npz", x=iris.data[order[120:]], y=names[order[120:]])
    out = d / "run"
    config = TrainConfig(data=str(d / "train.csv"), hidden=(8,), epochs=30, seeds=(0, 1))
    run(config, out)
    truth = [str(s) for s in names[order[120:]]]
    return d, out, truth


def test_evaluate_prints_the_accuracy_load_run_predicts(held_out, capsys):
    d, out, truth = held_out
    model = load_run(out)
    x = np.loadtxt(d / "held.csv", delimiter=",", skiprows=1, usecols=range(4))
    accuracy = np.mean(model.predict(x) == np.asarray(truth))
    assert main(["evaluate", str(out), "--data", str(d / "held.csv")]) == 0
    printed = capsys.readouterr().out
    assert f"accuracy {100 * accuracy:.2f} %" in printed and "30 rows" in printed
    assert "precision" in printed and "setosa" in printed
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["train.csv", "held.csv", "features.csv", "held.npz", "run"]
    )  # nothing written without --out
    assert main(["evaluate", str(out), "--data", str(d / "held.npz"), "--out", str(d / "ev")]) == 0
    report = json.loads((d / "ev" / "evaluation.json").read_text())
    assert report["accuracy"] == pytest.approx(accuracy) and report["n"] == 30
    assert np.sum(report["confusion_matrix"]) == 30
    assert (d / "ev" / "confusion_matrix.png").read_bytes().startswith(PNG)


def test_predict_writes_one_label_per_input_row(held_out, tmp_path, capsys):
    d, out, truth = held_out
    model = load_run(out)
    target = tmp_path / "labels.csv"
    assert main(["predict", str(out), "--data", str(d / "held.csv"), "--out", str(target)]) == 0
    assert "wrote 30 predictions" in capsys.readouterr().out
    rows = list(csv.reader(target.read_text().splitlines()))
    assert rows[0] == ["label"] and len(rows) == 1 + 30
    assert set(r[0] for r in rows[1:]) <= set(model.class_names)
    # features only, to stdout, with probabilities: the same labels
    assert main(["predict", str(out), "--data", str(d / "features.csv"), "--proba"]) == 0
    printed = list(csv.reader(capsys.readouterr().out.splitlines()))
    assert printed[0] == ["label", "p_setosa", "p_versicolor", "p_virginica"]
    assert [r[0] for r in printed[1:]] == [r[0] for r in rows[1:]]
    assert all(abs(sum(map(float, r[1:])) - 1) < 1e-4 for r in printed[1:])


def test_predict_seed_selects_a_seed(held_out, capsys):
    d, out, _ = held_out
    assert main(["predict", str(out), "--data", str(d / "held.csv"), "--seed", "1"]) == 0
    labels = capsys.readouterr().out.splitlines()[1:]
    x = np.loadtxt(d / "held.csv", delimiter=",", skiprows=1, usecols=range(4))
    assert labels == list(load_run(out, seed=1).predict(x))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["predict", "{d}/nowhere", "--data", "{d}/held.csv"], "RUN_DIR: {d}/nowhere: no such run"),
        (["predict", "{d}", "--data", "{d}/held.csv"], "RUN_DIR: {d}/model.npz: no such file"),
        (["predict", "{run}", "--data", "{d}/none.csv"], "--data: {d}/none.csv: no such file"),
        (["predict", "{run}", "--data", "{d}/held.csv", "--seed", "x"], "--seed: expected an integer, got 'x'"),
        (["predict", "{run}", "--data", "{d}/held.csv", "--seed", "5"], "--seed: 5 is not a seed"),
        (["predict", "{run}", "--data", "{d}/held.csv", "--out", "{d}/no/where.csv"], "--out: no folder"),
        (["predict", "{run}", "--data", "{d}/bad.csv"], "--data: {d}/bad.csv: 2 features a row, but the run was trained on 4"),
        (["evaluate", "{run}", "--data", "{d}/features.csv"], "--data: {d}/features.csv: 4 fields a row, the features alone; evaluating needs a label"),
        (["evaluate", "{run}", "--data", "{d}/other.csv"], "label 'daisy' is not a class of the run"),
        (["evaluate", "{run}", "--data", "{d}/held.csv", "--o", "x"], "unrecognized arguments: --o"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    held_out, tmp_path, capsys, argv, message
):
    d, out, _ = held_out
    (tmp_path / "bad.csv").write_text("1,2,setosa\n3,4,virginica\n")
    (tmp_path / "held.csv").write_text((d / "held.csv").read_text())
    (tmp_path / "features.csv").write_text((d / "features.csv").read_text())
    (tmp_path / "other.csv").write_text("1,2,3,4,daisy\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = [a.format(d=tmp_path, run=out) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert message.format(d=tmp_path) in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def write_idx(path, array):
    """An IDX file of unsigned bytes (LeCun's MNIST format)."""
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    path.write_bytes(header + array.tobytes())


@pytest.mark.slow
def test_idx_and_mat_files(tmp_path, capsys):
    import scipy.io

    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    images = rng.integers(0, 60, (90, 3, 3)) + 60 * y[:, None, None]  # separable classes
    write_idx(tmp_path / "train-images-idx3-ubyte", images[:60])
    write_idx(tmp_path / "train-labels-idx1-ubyte", y[:60])
    write_idx(tmp_path / "t-images-idx3-ubyte", images[60:])
    write_idx(tmp_path / "t-labels-idx1-ubyte", y[60:])
    config = TrainConfig(
        data=str(tmp_path / "train-images-idx3-ubyte"),
        labels=str(tmp_path / "train-labels-idx1-ubyte"),
        hidden=(4,),
        epochs=5,
        batch_size=8,
        test_fraction=0.25,
    )
    run(config, tmp_path / "idx-run")
    model = load_run(tmp_path / "idx-run")
    images_t = str(tmp_path / "t-images-idx3-ubyte")
    assert main(["predict", str(tmp_path / "idx-run"), "--data", images_t]) == 0
    labels = capsys.readouterr().out.splitlines()[1:]
    assert labels == [str(v) for v in model.predict(images[60:].reshape(30, 9))]
    argv = ["evaluate", str(tmp_path / "idx-run"), "--data", images_t]
    assert main([*argv, "--labels", str(tmp_path / "t-labels-idx1-ubyte")]) == 0
    accuracy = np.mean(model.predict_index(images[60:].reshape(30, 9)) == y[60:])
    assert f"accuracy {100 * accuracy:.2f} %" in capsys.readouterr().out
    assert main(argv) == 2  # evaluating IDX images needs their labels
    assert "--labels" in capsys.readouterr().err

    # the course's .mat: labels 1..10, 10 meaning digit 0
    x = rng.normal(size=(200, 5))
    digit = np.arange(200) % 10
    x[:, 0] += 3 * digit
    scipy.io.savemat(tmp_path / "d.mat", {"X": x, "y": np.where(digit == 0, 10, digit)[:, None]})
    run(TrainConfig(data=str(tmp_path / "d.mat"), hidden=(8,), epochs=5), tmp_path / "mat-run")
    model = load_run(tmp_path / "mat-run")
    assert main(["evaluate", str(tmp_path / "mat-run"), "--data", str(tmp_path / "d.mat")]) == 0
    accuracy = np.mean(model.predict(x) == digit)
    assert f"accuracy {100 * accuracy:.2f} %" in capsys.readouterr().out
