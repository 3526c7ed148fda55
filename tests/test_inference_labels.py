"""load_run / Run / jaxbp predict: labels as the user gave them (integers stay integers), old
model files still read, arguments and damaged files named, inputs beyond float32's range after
the run's scaling refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxbp import checkpoint
from jaxbp.cli import main
from jaxbp.data import DataError
from jaxbp.experiment import TrainConfig, load_run, run
from jaxbp.experiment.inference import classes_meta

LABELS = np.array([3, 5, 7])
"""Iris' species as the integers 3, 5, 7: labels that are not class indices 0, 1, 2."""


def iris_rows():
    from sklearn.datasets import load_iris

    iris = load_iris()
    return iris.data, LABELS[iris.target], np.asarray(iris.target_names)[iris.target]


def write_csv(path, x, labels) -> None:
    path.write_text(
        "".join(
            ",".join([*(repr(float(v)) for v in row), str(s)]) + "\n"
            for row, s in zip(x, labels, strict=True)
        )
    )


@pytest.fixture(scope="module")
def numbered(tmp_path_factory):
    """A run on iris with the integer labels 3, 5, 7 (a CSV), and its data."""
    d = tmp_path_factory.mktemp("numbered")
    x, y, _ = iris_rows()
    write_csv(d / "train.csv", x, y)
    out = d / "run"
    run(TrainConfig(data=str(d / "train.csv"), hidden=(8,), batch_size=16, epochs=3), out)
    return d, out, x, y


def rewrite_header(model_path, **changes) -> None:
    """model.npz again, its arrays unchanged and its header's keys ``changes`` set (None:
    removed) — a file as another version of the runner wrote it."""
    leaves, meta = checkpoint.load_leaves(model_path)
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    checkpoint.save(model_path, leaves, meta=meta)


def copy_run(out, target):
    import shutil

    shutil.copytree(out, target)
    return target


def test_integer_labels_come_back_as_integers(numbered):
    """The runner records the classes' own type (classes_meta): predict(x) == y compares like
    with like, as scikit-learn's classes_ — before, it returned '3', '5', '7'."""
    _, out, x, y = numbered
    meta = checkpoint.read_meta(out / "model.npz")
    assert meta["classes"] == [3, 5, 7] and meta["class_names"] == ["3", "5", "7"]
    model = load_run(out)
    assert model.classes == (3, 5, 7) and model.class_names == ("3", "5", "7")
    labels = model.predict(x)
    assert labels.dtype.kind == "i" and set(labels.tolist()) <= {3, 5, 7}
    assert np.array_equal(labels, LABELS[model.predict_index(x)])
    assert np.mean(labels == y) > 0  # before: '3' == 3 nowhere, a measured accuracy of 0


def test_a_header_with_integer_classes_predicts_integers(numbered, tmp_path, capsys):
    """The reading side, on a header as the runner writes it with classes_meta; the CLI prints
    the integers as the user wrote them."""
    d, out, x, y = numbered
    out = copy_run(out, tmp_path / "run")
    rewrite_header(out / "model.npz", **classes_meta((3, 5, 7)))
    model = load_run(out)
    assert model.classes == (3, 5, 7) and all(type(c) is int for c in model.classes)
    labels = model.predict(x)
    assert labels.dtype.kind == "i" and np.array_equal(labels, LABELS[model.predict_index(x)])
    assert main(["predict", str(out), "--data", str(d / "train.csv")]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == ["label", *map(str, labels.tolist())] and set(printed[1:]) <= {"3", "5", "7"}
    assert main(["evaluate", str(out), "--data", str(d / "train.csv")]) == 0
    assert f"accuracy {100 * np.mean(labels == y):.2f} %" in capsys.readouterr().out


def test_an_old_model_file_with_string_class_names_still_loads(numbered, tmp_path, capsys):
    """A model.npz written before the classes' type was recorded: class_names as strings
    only. It loads, predicts what it recorded (strings), and evaluates integer-labelled data."""
    d, out, x, y = numbered
    out = copy_run(out, tmp_path / "old")
    rewrite_header(out / "model.npz", classes=None, class_names=["3", "5", "7"])
    assert "classes" not in checkpoint.read_meta(out / "model.npz")
    model = load_run(out)
    assert model.classes == ("3", "5", "7")
    labels = model.predict(x)
    assert labels.dtype.kind == "U" and np.array_equal(
        labels, LABELS.astype(str)[model.predict_index(x)]
    )
    assert main(["evaluate", str(out), "--data", str(d / "train.csv")]) == 0
    accuracy = np.mean(labels == y.astype(str))
    assert f"accuracy {100 * accuracy:.2f} %" in capsys.readouterr().out


def test_named_labels_stay_strings(tmp_path):
    x, _, names = iris_rows()
    write_csv(tmp_path / "named.csv", x, names)
    out = tmp_path / "run"
    run(TrainConfig(data=str(tmp_path / "named.csv"), hidden=(8,), batch_size=16, epochs=3), out)
    model = load_run(out)
    assert model.classes == ("setosa", "versicolor", "virginica")
    labels = model.predict(x)
    assert labels.dtype.kind == "U" and set(labels.tolist()) <= set(model.classes)


def test_evaluate_reads_labels_of_declared_integer_classes(numbered, tmp_path, capsys):
    """An NPZ whose class_names are integers, y holding indices into them: its labels map to
    the run's classes (before, the integer names were looked up among strings and refused)."""
    _, out, x, y = numbered
    index = np.searchsorted(LABELS, y)
    np.savez(tmp_path / "held.npz", x=x, y=index, class_names=LABELS)
    model = load_run(out)
    got_x, got_y = model.read_data(tmp_path / "held.npz")
    assert np.array_equal(got_x, x) and np.array_equal(model.class_names, np.array(["3", "5", "7"]))
    assert np.array_equal(np.asarray(model.class_names)[got_y], y.astype(str))
    assert main(["evaluate", str(out), "--data", str(tmp_path / "held.npz")]) == 0
    assert "150 rows" in capsys.readouterr().out


def test_classes_meta_keeps_the_type_and_refuses_a_mix():
    assert classes_meta((np.int64(1), 2)) == {"classes": [1, 2], "class_names": ["1", "2"]}
    assert classes_meta(("a", np.str_("b"))) == {"classes": ["a", "b"], "class_names": ["a", "b"]}
    assert json.loads(json.dumps(classes_meta([0, 9])))["classes"] == [0, 9]
    with pytest.raises(
        ValueError, match=r"^classes: expected all integers or all strings, got str 'a'$"
    ):
        classes_meta([1, "a"])
    with pytest.raises(ValueError, match=r"^classes: .* got bool True$"):
        classes_meta([True, False])
    with pytest.raises(ValueError, match=r"^classes: .* got float 1.5$"):
        classes_meta([1.5])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"classes": [3, 5]}, r"header's classes should be 3 integers or 3 strings.*got \[3, 5\]"),
        ({"classes": [3, "5", 7]}, r"header's classes should be 3 integers .*got \[3, '5', 7\]"),
        ({"classes": None, "class_names": None}, "its header records no classes"),
        ({"sizes": None}, r"a damaged header, KeyError 'sizes'"),
    ],
)
def test_a_damaged_model_header_is_named(numbered, tmp_path, changes, message):
    _, out, _, _ = numbered
    out = copy_run(out, tmp_path / "run")
    rewrite_header(out / "model.npz", **changes)
    with pytest.raises(ValueError, match=f"^{out / 'model.npz'}: .*{message}"):
        load_run(out)


def test_load_run_names_run_dir_and_the_value(tmp_path, monkeypatch, numbered):
    _, out, _, _ = numbered
    for bad, shown in ((None, "NoneType None"), (123, "int 123"), (["a"], r"list \['a'\]")):
        with pytest.raises(
            ValueError, match=rf"^run_dir: expected a run directory's path .*got {shown}$"
        ) as e:
            load_run(bad)
        assert not isinstance(e.value, TypeError)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        FileNotFoundError, match=r"^nonexistent: no such run directory \(run_dir 'nonexistent'\)$"
    ):
        load_run("nonexistent")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"^file: not a directory \(run_dir 'file'\)$"):
        load_run("file")
    for seed, shown in (("1", "str '1'"), (True, "bool True"), (1.0, "float 1.0")):
        with pytest.raises(ValueError, match=f"^seed: expected an integer or None, got {shown}$"):
            load_run(out, seed=seed)
    assert load_run(out, seed=np.int64(0)).seed == 0


def test_a_damaged_summary_json_is_named(numbered, tmp_path, capsys):
    d, out, _, _ = numbered
    out = copy_run(out, tmp_path / "run")
    (out / "summary.json").write_text("{bad")
    pattern = rf"^{out / 'summary.json'}: not valid JSON \(Expecting property name .* at line 1, column 2\)"
    with pytest.raises(ValueError, match=pattern):
        load_run(out)
    assert main(["predict", str(out), "--data", str(d / "train.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and err[0].startswith("error: ")
        and f"{out / 'summary.json'}: not valid JSON" in err[0]
    )
    (out / "summary.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"summary.json: expected a JSON object, got a list$"):
        load_run(out)
    (out / "summary.json").unlink()
    assert load_run(out).summary is None  # a run that did not write it still loads


def test_repr_is_one_short_line_without_weights(numbered):
    _, out, _, _ = numbered
    model = load_run(out)
    text = repr(model)
    assert text == str(model) and "\n" not in text and len(text) < 200
    assert text.startswith(f"Run({str(out)!r}, mlp 4-8-3, seed {model.seed}, classes (")
    assert text.endswith(", scaling 'capped')") and "array" not in text
    for c in model.classes:
        assert repr(c) in text


def test_predict_refuses_values_beyond_float32_after_scaling(numbered, tmp_path, capsys):
    """A feature that the run's scaling takes beyond ±3.4e38 is named, not predicted from an
    infinite input: in Python as x[i, j], at the CLI as file, line, column and value."""
    d, out, x, y = numbered
    model = load_run(out)
    bad = x[:3].copy()
    bad[1, 2] = 1e300
    with pytest.raises(
        DataError, match=r"^x\[1, 2\]: value 1e\+300 is .* beyond ±3.4e\+38, float32's range"
    ):
        model.predict(bad)
    ok = x[:3].copy()
    ok[1, 2] = 1e30  # large, but within float32 after scaling: predicted
    assert model.predict(ok).shape == (3,)
    (tmp_path / "row.csv").write_text("5.1,3.5,1.4,0.2\n5.1,3.5,1e300,0.2\n")
    write_csv(tmp_path / "labelled.csv", bad, y[:3])
    np.savez(tmp_path / "rows.npz", x=bad, y=y[:3])
    for command, name, where in (
        ("predict", "row.csv", "line 2, column 3"),
        ("evaluate", "labelled.csv", "line 2, column 3"),
        ("predict", "rows.npz", "example 1, feature 2"),
    ):
        assert main([command, str(out), "--data", str(tmp_path / name)]) == 2
        captured = capsys.readouterr()
        err = captured.err.strip().splitlines()
        assert len(err) == 1 and captured.out == ""
        assert err[0].startswith(f"error: --data: {tmp_path / name}, {where}: value 1e+300 is ")
        assert "beyond ±3.4e+38" in err[0]


@pytest.mark.parametrize(
    ("x", "message"),
    [
        ([["a", "b", "c", "d"]], r"^x: expected an \(m, 4\) array of numbers, got list"),
        (None, r"^x: expected an \(m, 4\) array of features, got NoneType None$"),
        ([[1.0, np.nan, 1.0, 1.0]], r"^x\[0, 1\]: non-finite feature value nan \(1 in all\)$"),
        ([[1.0, 1.0, 1.0]], r"^x: expected \(m, 4\) features as in the training data, got shape \(1, 3\)$"),
    ],
)  # fmt: skip
def test_predict_names_a_bad_x(numbered, x, message):
    _, out, _, _ = numbered
    with pytest.raises(ValueError, match=message):
        load_run(out).predict(x)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: checkpoint.read_meta(None), "path: expected a checkpoint file's path (str or os.PathLike), got NoneType None"),
        (lambda p: checkpoint.load(3, {}), "path: expected a checkpoint file's path (str or os.PathLike), got int 3"),
        (lambda p: checkpoint.load_leaves([p]), "path: expected a checkpoint file's path (str or os.PathLike), got list"),
        (lambda p: checkpoint.save(None, {}), "path: expected a checkpoint file's path (str or os.PathLike), got NoneType None"),
        (lambda p: checkpoint.save(p, {"a": np.ones(2)}, meta={"s": {1}}), "meta: not JSON-serialisable (Object of type set is not JSON serializable)"),
        (lambda p: checkpoint.save(p, {"a": np.ones(2)}, meta=[1]), "meta: expected a dict or None, got list"),
        (lambda p: checkpoint.save(p, {"a": np.array([None])}), "tree: leaf ['a'] is ndarray of dtype object; a checkpoint holds arrays of numbers, booleans or PRNG keys"),
        (lambda p: checkpoint.save(p, {"w": [np.ones(1), "x"]}), "tree: leaf ['w'][1] is str of dtype <U1; a checkpoint holds arrays of numbers, booleans or PRNG keys"),
    ],
)  # fmt: skip
def test_checkpoint_functions_name_a_bad_argument(tmp_path, call, message):
    """Before: Python's TypeError from Path(None), json's TypeError, and an object array saved
    as its pointers' bytes without a word."""
    with pytest.raises(checkpoint.CheckpointError) as e:
        call(tmp_path / "c.npz")
    assert str(e.value).startswith(message)
    assert not (tmp_path / "c.npz").exists()


def test_checkpoint_keeps_bfloat16_keys_and_python_numbers(tmp_path):
    import jax
    import jax.numpy as jnp

    tree = {"b": jnp.ones(2, jnp.bfloat16), "k": jax.random.key(3), "n": 3, "f": 2.5}
    checkpoint.save(tmp_path / "c.npz", tree, meta={"epoch": 1})
    back, meta = checkpoint.load(tmp_path / "c.npz", tree)
    assert meta == {"epoch": 1} and back["b"].dtype == jnp.bfloat16 and back["n"] == 3
    assert back["f"] == 2.5
    assert np.array_equal(jax.random.key_data(back["k"]), jax.random.key_data(tree["k"]))
