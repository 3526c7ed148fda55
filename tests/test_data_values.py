"""Data values that overflow: a feature whose scaling is not finite, or a value beyond float32's
range after scaling, refused at load naming file, line, column and value — not trained into an
infinite scale or a "loss is nan" that blames the learning rate."""

from __future__ import annotations

import numpy as np
import pytest

from jaxbp.cli import main
from jaxbp.data import FEATURE_LIMIT, DataError, load_dataset, standardiser
from jaxbp.data.split import check_scaling, scale_features


def iris_csv(path, *, value=None, line=11, column=3):
    """Iris as a CSV (species names last, no header), value ``value`` at ``line``, ``column``."""
    from sklearn.datasets import load_iris

    iris = load_iris()
    names = np.asarray(iris.target_names)[iris.target]
    rows = [[repr(float(v)) for v in r] + [str(n)] for r, n in zip(iris.data, names, strict=True)]
    if value is not None:
        rows[line - 1][column - 1] = value
    path.write_text("".join(",".join(r) + "\n" for r in rows))
    return path


def test_float32_limit_is_float32_max():
    assert FEATURE_LIMIT == float(np.finfo(np.float32).max)
    assert np.isfinite(np.float32(FEATURE_LIMIT))
    with np.errstate(over="ignore"):
        assert np.isinf(np.float32(FEATURE_LIMIT * 1.001))


@pytest.mark.parametrize("scaling", ["capped", "standard"])
@pytest.mark.parametrize("value", ["1e308", "-1e308", "1.7e308", "1e300", "1e160"])
def test_a_feature_whose_scaling_overflows_is_refused(tmp_path, scaling, value):
    """1e308: the mean's sum overflows; 1e160 … 1e300: the spread's squares do — before, the
    scale was inf and the whole column became zero."""
    path = iris_csv(tmp_path / "big.csv", value=value)
    with pytest.raises(DataError) as e:
        load_dataset(data=path, scaling=scaling)
    message = str(e.value)
    assert message.startswith(f"{path}, line 11, column 3: value {float(value):.6g} is")
    if "too large" in message:  # not finite scaling (unless the row fell into a held-out split)
        assert f"for the {scaling} scaling of its feature: its mean or spread overflows" in message
    else:
        assert "beyond ±3.4e+38, float32's range" in message


def test_the_overflowing_value_is_named_in_whichever_split_it_falls(tmp_path):
    """The same file, the value on each of several lines: the message names that line, whether
    it is fitted on (scale not finite) or held out (beyond float32 after scaling)."""
    kinds = set()
    for line in range(1, 151, 7):
        path = iris_csv(tmp_path / f"big{line}.csv", value="1e308", line=line, column=2)
        with pytest.raises(
            DataError, match=rf"^{path}, line {line}, column 2: value 1e\+308 is"
        ) as e:
            load_dataset(data=path)
        kinds.add("fitted" if "too large for the capped scaling" in str(e.value) else "held out")
    assert kinds == {"fitted", "held out"}


def test_values_beyond_float32_without_scaling(tmp_path):
    """1e39 fits float64 but not float32: with no scaling it would become inf in the cast."""
    path = iris_csv(tmp_path / "e39.csv", value="1e39", line=7, column=4)
    with pytest.raises(
        DataError,
        match=rf"^{path}, line 7, column 4: value 1e\+39 is 1e\+39 after the training split's none "
        r"scaling, beyond ±3.4e\+38, float32's range",
    ):
        load_dataset(data=path, scaling="none")
    ds = load_dataset(data=path, scaling="capped")  # scaled, it is small: trains
    for x in (ds.x_train, ds.x_val, ds.x_test):
        assert np.all(np.isfinite(x.astype(np.float32)))
    edge = iris_csv(tmp_path / "edge.csv", value=repr(FEATURE_LIMIT), line=7, column=4)
    assert np.max(load_dataset(data=edge, scaling="none").x_train) <= FEATURE_LIMIT


def test_a_test_file_value_beyond_float32_after_scaling_names_the_test_file(tmp_path):
    train = iris_csv(tmp_path / "train.csv")
    test = iris_csv(tmp_path / "test.csv", value="1e300", line=5, column=1)
    with pytest.raises(DataError, match=rf"^{test}, line 5, column 1: value 1e\+300 is .* beyond"):
        load_dataset(data=train, test_data=test)


def test_arrays_name_example_and_feature(tmp_path):
    x = np.random.default_rng(0).normal(size=(60, 3))
    x[17, 2] = 3e200
    np.savez(tmp_path / "big.npz", x=x, y=np.arange(60) % 3)
    with pytest.raises(
        DataError, match=rf"^{tmp_path / 'big.npz'}, example 17, feature 2: value 3e\+200 is"
    ):
        load_dataset(data=tmp_path / "big.npz")


def test_check_scaling_and_scale_features_directly():
    from jaxbp.data import Table

    x = np.array([[1.0, 2.0], [1e308, 3.0], [1e308, 4.0]])
    t = Table(x, np.array([0, 1, 1]), "f.csv", np.array([2, 3, 4]), columns=np.array([1, 3]))
    mean, scale = standardiser(x, "standard")
    assert not np.isfinite(mean[0]) and np.isfinite(scale[1])
    with pytest.raises(DataError, match=r"^f.csv, line 3, column 1: value 1e\+308 is too large"):
        check_scaling(t, mean, scale, "standard")
    with pytest.raises(DataError, match=r"^here 1 0: value nan is nan after"):
        scale_features(
            np.array([[0.0], [np.nan]]), np.zeros(1), np.ones(1), "none", "here {} {}".format
        )
    z = scale_features(np.array([[4.0]]), np.array([1.0]), np.array([3.0]), "x", "{}{}".format)
    assert z.tolist() == [[1.0]]


@pytest.mark.parametrize(
    ("value", "extra", "expected"),
    [
        ("1e308", [], "value 1e+308 is too large for the capped scaling of its feature"),
        ("1e39", ["--scaling", "none"], "value 1e+39 is 1e+39 after the training split's none"),
        (
            "1e39",
            ["--scaling", "none", "--dtype", "float64"],
            "float32's range, the limit for the features of every run (float64 runs too)",
        ),
        ("1.7e308", ["--dtype", "float64"], "its mean or spread overflows float64"),
    ],
)
def test_train_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, value, extra, expected):
    """Before: exit 0 with an infinite scale, or "training loss is nan … lower the learning
    rate" after a run directory was written. float64 runs are held to float32's range too
    (FEATURE_LIMIT), so that one dataset trains in both or in neither."""
    path = iris_csv(tmp_path / "big.csv", value=value)
    out = tmp_path / "run"
    assert main(["train", "--data", str(path), "--epochs", "1", "--out", str(out), *extra]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}, line 11, column 3: ")
    assert expected in err[0] and "nan" not in err[0]
    assert not out.exists()
