"""jaxbp.data: file loaders (with errors naming file, line, column), built-in datasets, splits."""

from __future__ import annotations

import gzip
import random
import struct

import numpy as np
import pytest
import scipy.io

from jaxbp.data import (
    DataError,
    Table,
    encode_labels,
    file_format,
    fingerprint,
    load_builtin,
    load_csv,
    load_dataset,
    load_file,
    load_idx,
    load_mat,
    load_npz,
    one_hot,
    prepare,
    read_idx,
    split_counts,
    standardiser,
    stratified_split,
    take,
    training_rows,
)

# --- CSV ---------------------------------------------------------------------------------------


def write(path, text):
    path.write_text(text)
    return path


def test_csv_label_last_numeric(tmp_path):
    t = load_csv(write(tmp_path / "a.csv", "1,2,0\n3,4,1\n\n5,6,1\n"))
    np.testing.assert_array_equal(t.x, [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(t.labels, [0, 1, 1])
    np.testing.assert_array_equal(t.lines, [1, 2, 4])  # blank line 3 skipped, still counted


def test_csv_header_and_string_labels_first_column(tmp_path):
    t = load_csv(write(tmp_path / "a.csv", "cls,f1,f2\nB,1,2\nA,3,4\n"), label_column="first")
    np.testing.assert_array_equal(t.x, [[1, 2], [3, 4]])
    assert t.labels.tolist() == ["B", "A"]
    (y,), names = encode_labels(t)
    assert names == ("A", "B") and y.tolist() == [1, 0]


def test_csv_numbered_label_column_semicolons_and_whitespace(tmp_path):
    t = load_csv(write(tmp_path / "a.csv", "1;7;2\n3;8;4\n"), label_column="2")
    np.testing.assert_array_equal(t.x, [[1, 2], [3, 4]])
    assert t.labels.tolist() == [7, 8]
    t = load_csv(write(tmp_path / "b.txt", "1 2 0\n3  4 1\n"))
    np.testing.assert_array_equal(t.x, [[1, 2], [3, 4]])


def test_csv_gzip(tmp_path):
    path = tmp_path / "a.csv.gz"
    path.write_bytes(gzip.compress(b"1,2,0\n3,4,1\n"))
    assert load_csv(path).x.shape == (2, 2)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1,2,0\n3,x,1\n", "line 2, column 2: cannot parse 'x'"),
        ("f1,f2,y\n1,2,0\n3,nan,1\n", "line 3, column 2: non-finite value 'nan'"),
        ("1,2,0\n3,inf,1\n", "line 2, column 2: non-finite value 'inf'"),
        ("1,2,0\n3,4\n", "line 2: 2 fields, expected 3"),
        ("1,2,0\n3,,1\n", "line 2, column 2: cannot parse ''"),
        ("1,2,0\n3,4,\n", "line 2, column 3: empty label"),
    ],
)
def test_csv_bad_rows_name_line_and_column(tmp_path, text, expected):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError) as e:
        load_csv(path)
    assert str(path) in str(e.value) and expected in str(e.value)


def test_csv_missing_empty_and_bad_label_column(tmp_path):
    with pytest.raises(DataError, match="nope.csv: no such file"):
        load_csv(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="no data rows"):
        load_csv(write(tmp_path / "h.csv", "a,b,c\n"))
    with pytest.raises(DataError, match="label column 9 is out of range; the file has 3"):
        load_csv(write(tmp_path / "c.csv", "1,2,3\n"), label_column="9")


# --- NPZ, IDX, MAT -----------------------------------------------------------------------------


def test_npz_roundtrip_and_errors(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(6.0).reshape(3, 2), y=np.array([2, 0, 2]))
    t = load_npz(path)
    assert t.x.shape == (3, 2) and t.labels.tolist() == [2, 0, 2] and t.class_names is None
    np.savez(path, x=np.array([[1.0, np.nan]]), y=np.array([0]))
    with pytest.raises(DataError, match=r"non-finite value nan at x\[0, 1\]"):
        load_npz(path)
    np.savez(path, features=np.ones((2, 2)))
    with pytest.raises(DataError, match="missing array"):
        load_npz(path)
    np.savez(path, x=np.ones((2, 2)), y=np.array([0.5, 1.0]))
    with pytest.raises(DataError, match=r"label y\[0\] = 0.5 is not an integer"):
        load_npz(path)


def test_npz_declared_classes_label_out_of_range(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((4, 2)), y=np.array([0, 1, 2, 5]), class_names=np.array(list("abc")))
    with pytest.raises(DataError, match=r"example 3: label 5 is out of range for the 3 classes"):
        encode_labels(load_npz(path))


def idx_bytes(array: np.ndarray, type_byte: int = 0x08) -> bytes:
    header = bytes([0, 0, type_byte, array.ndim]) + b"".join(
        struct.pack(">I", n) for n in array.shape
    )
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def test_idx_plain_and_gzip(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 1], np.uint8)
    (tmp_path / "img-idx3-ubyte").write_bytes(idx_bytes(images))
    (tmp_path / "lab-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    np.testing.assert_array_equal(read_idx(tmp_path / "img-idx3-ubyte"), images)
    t = load_idx(tmp_path / "img-idx3-ubyte", tmp_path / "lab-idx1-ubyte.gz")
    assert t.x.shape == (2, 12) and t.labels.tolist() == [7, 1]
    floats = np.array([[1.5, -2.0]], np.float32)
    (tmp_path / "f.idx").write_bytes(idx_bytes(floats, 0x0D))
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx"), floats)


def test_idx_errors(tmp_path):
    (tmp_path / "bad-ubyte").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "bad-ubyte")
    (tmp_path / "short-ubyte").write_bytes(idx_bytes(np.zeros((3, 2), np.uint8))[:-1])
    with pytest.raises(DataError, match=r"header says shape \(3, 2\)"):
        read_idx(tmp_path / "short-ubyte")
    (tmp_path / "i-ubyte").write_bytes(idx_bytes(np.zeros((3, 2), np.uint8)))
    (tmp_path / "l-ubyte").write_bytes(idx_bytes(np.zeros(2, np.uint8)))
    with pytest.raises(DataError, match="3 examples but .* has 2 labels"):
        load_idx(tmp_path / "i-ubyte", tmp_path / "l-ubyte")
    with pytest.raises(DataError, match="needs its labels file"):
        load_file(tmp_path / "i-ubyte")


def test_mat_labels_ten_means_zero(tmp_path):
    path = tmp_path / "ex.mat"
    scipy.io.savemat(path, {"X": np.eye(3), "y": np.array([[10], [1], [9]])})
    t = load_mat(path)
    assert t.labels.tolist() == [0, 1, 9] and t.class_names == tuple(range(10))
    assert all(type(c) is int for c in t.class_names)  # the digits, not their spellings


def test_mat_label_out_of_range_and_missing_variables(tmp_path):
    path = tmp_path / "ex.mat"
    scipy.io.savemat(path, {"X": np.eye(3), "y": np.array([[10], [11], [1]])})
    with pytest.raises(DataError, match=r"label y\[1\] = 11 is out of range 1..10"):
        load_mat(path)
    scipy.io.savemat(path, {"Theta1": np.eye(2)})
    with pytest.raises(DataError, match="no variable X or y; found Theta1"):
        load_mat(path)


def test_file_format_dispatch():
    assert file_format("a/optdigits.tra") == "csv"
    assert file_format("t10k-images-idx3-ubyte.gz") == "idx"
    assert file_format("x.NPZ") == "npz" and file_format("ex4data1.mat") == "mat"


# --- splits, classes, scaling ------------------------------------------------------------------


def table(x, labels, path="mem", names=None):
    return Table(np.asarray(x, float), np.asarray(labels), path, None, names)


def test_stratified_split_keeps_class_shares():
    y = np.repeat(np.arange(3), [50, 30, 20])
    keep, take = stratified_split(y, 0.2, np.random.default_rng(0))
    assert len(take) == 20 and sorted(np.concatenate([keep, take])) == list(range(100))
    np.testing.assert_array_equal(np.bincount(y[take]), [10, 6, 4])
    keep2, _ = stratified_split(y, 0.2, np.random.default_rng(0))
    np.testing.assert_array_equal(keep, keep2)  # same seed, same split


def test_stratified_split_leaves_a_training_example_per_class():
    y = np.array([0, 0, 0, 0, 1])
    keep, take = stratified_split(y, 0.5, np.random.default_rng(1))
    assert 1 in y[keep]


def test_standardiser_fitted_on_training_split_only():
    x = np.arange(60.0).reshape(30, 2)
    y = np.tile([0, 1, 2], 10)
    ds = prepare("t", table(x, y), val_fraction=0.2, test_fraction=0.2, scaling="standard")
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(ds.x_train.std(axis=0), 1, atol=1e-12)
    raw_test = ds.x_test * ds.scale + ds.mean
    assert not np.allclose(ds.x_test.mean(axis=0), 0)  # test stats are not used
    assert set(map(tuple, raw_test)) <= set(map(tuple, x))


def test_capped_scaling_bounds_sparse_features():
    x = np.zeros((100, 2))
    x[:, 0] = np.random.default_rng(0).normal(size=100)
    x[3, 1] = 16.0  # a pixel lit once: σ ≈ 1.6, z-score ≈ 9.9
    mean, scale = standardiser(x, "capped")
    z = (x - mean) / scale
    assert np.max(np.abs(z)) <= 3.0 + 1e-12
    m2, s2 = standardiser(x, "standard")
    assert np.max(np.abs((x[:, 1] - m2[1]) / s2[1])) > 9
    mean0, scale0 = standardiser(np.ones((4, 1)), "capped")
    assert scale0[0] == 1.0  # constant feature


def test_max_scaling_divides_every_feature_by_the_brightest_value():
    """One scale for all features, no centering: a zero background stays zero and a pixel
    means the same at every position (what a translation of the image assumes)."""
    x = np.array([[0.0, 4.0, 16.0], [0.0, 0.0, 8.0], [0.0, -2.0, 1.0]])
    mean, scale = standardiser(x, "max")
    np.testing.assert_array_equal(mean, 0.0)
    np.testing.assert_array_equal(scale, 16.0)
    z = (x - mean) / scale
    assert z[0, 0] == 0.0 and np.max(np.abs(z)) == 1.0
    np.testing.assert_array_equal(z[:, 1:], x[:, 1:] / 16.0)
    _, scale0 = standardiser(np.zeros((4, 2)), "max")
    np.testing.assert_array_equal(scale0, 1.0)  # all-zero data: scale 1, not 0


def test_fewer_examples_than_classes_and_missing_class():
    names = ("a", "b", "c", "d")
    with pytest.raises(DataError, match="2 training example.* but 4 classes"):
        encode_labels(table([[0], [1]], [0, 1], names=names))
    with pytest.raises(DataError, match="class 'c' has no training examples"):
        encode_labels(table([[0], [1], [2], [3]], [0, 1, 3, 3], names=names))


def test_class_only_in_test_file_has_no_training_examples():
    train = Table(np.zeros((3, 1)), np.array(["x", "y", "x"]), "train.csv", np.array([1, 2, 3]))
    test = Table(np.zeros((2, 1)), np.array(["y", "z"]), "test.csv", np.array([5, 9]))
    with pytest.raises(DataError, match=r"class 'z' has no training examples \(it occurs at "
                       r"test.csv, line 9\)"):  # fmt: skip
        encode_labels(train, [test])


def test_one_hot():
    np.testing.assert_array_equal(one_hot(np.array([2, 0]), 3), [[0, 0, 1], [1, 0, 0]])


# --- built-in datasets --------------------------------------------------------------------------


@pytest.mark.parametrize("name, n, k", [("iris", 4, 3), ("wine", 13, 3), ("digits", 64, 10)])
def test_sklearn_builtins(name, n, k):
    ds = load_dataset(name)
    assert ds.num_features == n and ds.num_classes == k
    total = len(ds.y_train) + len(ds.y_val) + len(ds.y_test)
    assert len(ds.y_test) == round(0.2 * total)
    assert set(np.unique(ds.y_train)) == set(range(k))


def test_mnist1d_generated_locally_without_side_effects(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.random.seed(123)
    random.seed(123)
    before = np.random.random(), random.random()
    np.random.seed(123)
    random.seed(123)
    ds = load_dataset("mnist1d")
    assert (np.random.random(), random.random()) == before  # global RNGs untouched
    assert list(tmp_path.iterdir()) == []  # nothing cached or downloaded into the cwd
    assert ds.x_train.shape == (3600, 40) and ds.x_test.shape == (1000, 40)
    assert ds.num_classes == 10 and "own test split" in ds.split


@pytest.mark.parametrize("name", ["spirals", "blobs"])
def test_synthetic_seeded(name):
    a, _ = load_builtin(name, seed=1, classes=5, samples=103)
    b, _ = load_builtin(name, seed=1, classes=5, samples=103)
    c, _ = load_builtin(name, seed=2, classes=5, samples=103)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)
    assert a.x.shape == (103, 2) and np.bincount(a.labels).tolist() == [21, 21, 21, 20, 20]


def test_builtin_argument_errors():
    with pytest.raises(DataError, match="unknown 'mnist2d'; valid datasets are iris, wine"):
        load_builtin("mnist2d")
    with pytest.raises(DataError, match="classes: only the synthetic datasets"):
        load_builtin("iris", classes=3)
    with pytest.raises(
        DataError,
        match=r"^samples: need at least one example per class, 5 for blobs's 5 classes, got 3$",
    ):
        load_dataset("blobs", classes=5, samples=3)


def test_fingerprint_tracks_the_split():
    a, b = load_dataset("iris", seed=0), load_dataset("iris", seed=1)
    assert fingerprint(a) == fingerprint(load_dataset("iris", seed=0)) != fingerprint(b)


# --- the real files in ../shared/data -----------------------------------------------------------


@pytest.mark.data
def test_optdigits_standard_split(shared_data):
    d = shared_data / "optdigits"
    train = load_file(d / "optdigits.tra")
    assert train.x.shape == (3823, 64) and train.x.min() == 0 and train.x.max() == 16
    ds = load_dataset(data=d / "optdigits.tra", test_data=d / "optdigits.tes")
    assert ds.x_test.shape == (1797, 64) and len(ds.y_train) + len(ds.y_val) == 3823
    assert ds.class_names == tuple("0123456789")


@pytest.mark.data
def test_pendigits_fixed_width_csv(shared_data):
    d = shared_data / "pendigits"
    ds = load_dataset(data=d / "pendigits.tra", test_data=d / "pendigits.tes")
    assert ds.num_features == 16 and ds.x_test.shape == (3498, 16)
    assert len(ds.y_train) + len(ds.y_val) == 7494 and ds.num_classes == 10


@pytest.mark.data
def test_letter_first_16000_last_4000(shared_data):
    path = shared_data / "letter" / "letter-recognition.data"
    t = load_csv(path, label_column="first")
    assert t.x.shape == (20000, 16) and t.labels[0] == "T"
    ds = load_dataset(data=path, label_column="first", test_rows=4000)
    assert ds.class_names == tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    assert len(ds.y_test) == 4000 and len(ds.y_train) + len(ds.y_val) == 16000
    assert ds.class_names[ds.y_test[-1]] == t.labels[-1]


@pytest.mark.data
def test_mnist_idx_gzip(shared_data):
    d = shared_data / "mnist"
    t = load_idx(d / "t10k-images-idx3-ubyte.gz", d / "t10k-labels-idx1-ubyte.gz")
    assert t.x.shape == (10000, 784) and t.x.max() == 255 and t.labels[:3].tolist() == [7, 2, 1]
    ds = load_dataset(data=d / "t10k-images-idx3-ubyte.gz", labels=d / "t10k-labels-idx1-ubyte.gz")
    assert len(ds.y_test) == 2000 and len(ds.y_train) + len(ds.y_val) == 8000


@pytest.mark.data
def test_course_mat_file_without_data_names_its_variables(shared_data):
    path = shared_data / "ex4" / "ex4weights.mat"
    with pytest.raises(DataError, match="no variable X or y; found Theta1, Theta2"):
        load_mat(path)


# --- malformed files, single-class and continuous labels: one clear DataError each ---------------


@pytest.mark.parametrize(
    "content, expected",
    [(b"", "empty file, not a MATLAB .mat file"), (b"x" * 25, "not a MATLAB .mat file")],
)
def test_mat_junk_or_empty_is_a_data_error_naming_the_file(tmp_path, content, expected):
    path = tmp_path / "junk.mat"
    path.write_bytes(content)
    with pytest.raises(DataError, match=expected) as e:
        load_file(path)
    assert str(path) in str(e.value)


def test_mat_non_numeric_x_is_refused(tmp_path):
    path = tmp_path / "s.mat"
    scipy.io.savemat(path, {"X": np.array(["ab", "cd"]), "y": np.array([[1], [2]])})
    with pytest.raises(DataError, match="expected a numeric matrix"):
        load_mat(path)


def _single_class_npz(path):
    np.savez(path, x=np.arange(40.0).reshape(20, 2), y=np.full(20, 3))
    return path


def _single_class_idx(tmp_path):
    (tmp_path / "i-ubyte").write_bytes(idx_bytes(np.zeros((20, 2), np.uint8)))
    (tmp_path / "l-ubyte").write_bytes(idx_bytes(np.full(20, 3, np.uint8)))
    return {"data": tmp_path / "i-ubyte", "labels": tmp_path / "l-ubyte"}


@pytest.mark.parametrize("kind", ["csv", "npz", "idx"])
def test_single_class_dataset_is_refused_with_the_reason(tmp_path, kind):
    if kind == "csv":
        kwargs = {"data": write(tmp_path / "one.csv", "".join(f"{i},{i},3\n" for i in range(20)))}
    elif kind == "npz":
        kwargs = {"data": _single_class_npz(tmp_path / "one.npz")}
    else:
        kwargs = _single_class_idx(tmp_path)
    with pytest.raises(DataError, match=r"y: only one class \(3\) in .*; a classifier needs at "
                       "least two") as e:  # fmt: skip
        load_dataset(**kwargs)
    assert str(kwargs["data"]) in str(e.value)


def test_continuous_csv_labels_are_refused_not_made_into_classes(tmp_path):
    path = write(
        tmp_path / "reg.csv", "".join(f"{i},{2 * i},{i * 0.137:.3f}\n" for i in range(100))
    )
    with pytest.raises(DataError) as e:
        load_csv(path)
    message = str(e.value)
    assert f"{path}, line 2, column 3: label '0.137' is not a class label" in message
    assert "99 of the 100 labels are not integers" in message and "continuous" in message
    # integer-valued numbers ("3.0") are still integer classes
    assert load_csv(write(tmp_path / "i.csv", "1,2,3.0\n3,4,1\n")).labels.tolist() == [3, 1]


def test_continuous_npz_labels_say_they_are_not_class_labels(tmp_path):
    path = tmp_path / "reg.npz"
    np.savez(path, x=np.ones((3, 2)), y=np.array([0.25, 1.0, 2.5]))
    with pytest.raises(DataError, match=r"label y\[0\] = 0.25 .*2 of the 3 labels .*continuous"):
        load_npz(path)


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "empty file, not a .npz archive"),
        (b"PK\x03\x04" + b"\x00" * 30, "not a readable .npz archive — damaged or truncated"),
    ],
)
def test_npz_empty_or_truncated(tmp_path, content, expected):
    path = tmp_path / "d.npz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=expected) as e:
        load_npz(path)
    assert str(path) in str(e.value)


def test_npz_truncated_real_archive_and_missing_y_and_bad_y_shape(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((4, 2)), y=np.array([0, 1, 0, 1]))
    data = path.read_bytes()
    (tmp_path / "t.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="t.npz: not a readable .npz archive"):
        load_npz(tmp_path / "t.npz")
    np.savez(path, x=np.ones((4, 2)))
    with pytest.raises(DataError, match=r"d.npz: missing array\(s\) y; found x"):
        load_npz(path)
    np.savez(path, x=np.ones((4, 2)), y=np.zeros((2, 2)))
    with pytest.raises(DataError, match=r"x has 4 rows but y has shape \(2, 2\)"):
        load_npz(path)


def test_csv_truncated_gzip_names_the_file(tmp_path):
    path = tmp_path / "a.csv.gz"
    path.write_bytes(gzip.compress(b"1,2,0\n3,4,1\n" * 50)[:20])
    with pytest.raises(DataError, match="a.csv.gz: cannot read"):
        load_csv(path)


def test_idx_truncated_or_empty_labels_file(tmp_path):
    (tmp_path / "i-ubyte").write_bytes(idx_bytes(np.zeros((4, 2), np.uint8)))
    (tmp_path / "l-ubyte").write_bytes(idx_bytes(np.array([0, 1, 0, 1], np.uint8))[:-2])
    with pytest.raises(DataError, match=r"l-ubyte: IDX header says shape \(4,\)"):
        load_idx(tmp_path / "i-ubyte", tmp_path / "l-ubyte")
    (tmp_path / "l-ubyte").write_bytes(b"")
    with pytest.raises(DataError, match="l-ubyte: not an IDX file"):
        load_idx(tmp_path / "i-ubyte", tmp_path / "l-ubyte")


def test_files_without_examples_are_refused(tmp_path):
    np.savez(tmp_path / "z.npz", x=np.zeros((0, 2)), y=np.zeros(0, int))
    with pytest.raises(DataError, match=r"z.npz: no examples \(x has shape \(0, 2\)\)"):
        load_npz(tmp_path / "z.npz")
    (tmp_path / "i-ubyte").write_bytes(idx_bytes(np.zeros((0, 2, 2), np.uint8)))
    (tmp_path / "l-ubyte").write_bytes(idx_bytes(np.zeros(0, np.uint8)))
    with pytest.raises(DataError, match="i-ubyte: no examples"):
        load_idx(tmp_path / "i-ubyte", tmp_path / "l-ubyte")
    scipy.io.savemat(tmp_path / "z.mat", {"X": np.zeros((0, 3)), "y": np.zeros((0, 1))})
    with pytest.raises(DataError, match="z.mat: no examples"):
        load_mat(tmp_path / "z.mat")


# --- every public function names a bad argument and the value received ----------------------


def _iris_table():
    return load_builtin("iris")[0]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: load_builtin("blobs", seed="x"), "seed: expected an integer ≥ 0, got str 'x'"),
        (lambda: load_builtin("blobs", seed=-1), "seed: expected an integer ≥ 0, got -1"),
        (lambda: load_dataset("iris", val_fraction="a"), "val_fraction: expected a number in [0, 1), got str 'a'"),
        (lambda: load_dataset("iris", test_fraction=None), "test_fraction: expected a number in (0, 1), got NoneType None"),
        (lambda: load_dataset("iris", test_fraction=1), "test_fraction: must be in (0, 1), got 1"),
        (lambda: load_dataset("iris", val_fraction=float("nan")), "val_fraction: must be in [0, 1), got nan"),
        (lambda: load_dataset(data="x.csv", label_column=1.5), "label_column: expected first, last or a 1-based column number, got float 1.5"),
        (lambda: load_dataset(data="x.csv", label_column=True), "label_column: expected first, last or a 1-based column number, got bool True"),
        (lambda: load_dataset(data="x.csv", label_column=0), "label_column: expected first, last or a 1-based column number, got int 0"),
        (lambda: load_dataset(data="x.csv", label_column="middle"), "label_column: expected first, last or a 1-based column number, got str 'middle'"),
        (lambda: load_dataset(data="x.csv", test_rows="3"), "test_rows: expected an integer ≥ 1, got str '3'"),
        (lambda: load_dataset(data="x.csv", test_rows=3.5), "test_rows: expected an integer ≥ 1, got float 3.5"),
        (lambda: file_format(None), "path: expected a file path (str or os.PathLike), got NoneType None"),
        (lambda: load_file(7), "path: expected a file path (str or os.PathLike), got int 7"),
        (lambda: standardiser(np.ones(3)), "x: expected a 2-D array of numbers (examples × features), got ndarray of dtype float64 and shape (3,)"),
        (lambda: standardiser(np.array([["a"]])), "x: expected a 2-D array of numbers (examples × features), got ndarray of dtype <U1 and shape (1, 1)"),
        (lambda: standardiser(np.ones((2, 2)), "z"), "scaling: unknown 'z'; valid scalings are capped, standard, max, none"),
        (lambda: one_hot(np.array([0, 1]), 0), "num_classes: expected an integer ≥ 1, got 0"),
        (lambda: one_hot(np.array([0, 1]), "2"), "num_classes: expected an integer ≥ 1, got str '2'"),
        (lambda: one_hot(np.array([0, 5]), 2), "y: class index 5 at [1] is outside [0, 2)"),
        (lambda: one_hot(np.array([-1]), 2), "y: class index -1 at [0] is outside [0, 2)"),
        (lambda: one_hot(np.array([0.5]), 2), "y: expected integer class indices, got dtype float64"),
        (lambda: split_counts([3, 3], "a"), "fraction: expected a number in [0, 1), got str 'a'"),
        (lambda: split_counts([3, -1], 0.5), "counts: expected a 1-D array of class counts ≥ 0, got int64 [3, -1]"),
        (lambda: training_rows([3, 3], test_fraction=0, val_fraction=0.1, own_test=False), "test_fraction: must be in (0, 1), got 0"),
        (lambda: stratified_split(np.array([0, 1]), 0.5, 0), "rng: expected a numpy.random.Generator (numpy.random.default_rng(seed)), got int 0"),
        (lambda: stratified_split(np.array([0.0, 1.0]), 0.5, np.random.default_rng(0)), "y: expected 1-D integer class indices, got float64 of shape (2,)"),
        (lambda: take(_iris_table(), "a"), "index: expected a 1-D array of row indices, got <U1 of shape ()"),
        (lambda: take(_iris_table(), np.array([0, 150])), "index: row indices must lie in [0, 150), got 0 … 150"),
        (lambda: prepare("n", None), "train: expected a jaxbp.data.Table (a loaded file), got NoneType"),
        (lambda: prepare("n", _iris_table(), "x"), "test: expected a jaxbp.data.Table (a loaded file), got str"),
        (lambda: prepare("n", _iris_table(), seed=1.5), "seed: expected an integer ≥ 0, got float 1.5"),
        (lambda: encode_labels(_iris_table(), [None]), "others[0]: expected a jaxbp.data.Table (a loaded file), got NoneType"),
        (lambda: fingerprint(None), "dataset: expected a jaxbp.data.Dataset, got NoneType"),
    ],
)  # fmt: skip
def test_public_functions_name_the_argument_and_the_value(call, message):
    """Before, each raised NumPy's or Python's own TypeError/IndexError/AttributeError (or, for
    label_column=1.5 or True, silently read column 1)."""
    with pytest.raises(DataError) as e:
        call()
    assert str(e.value) == message


def test_label_column_as_the_command_line_gives_it(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("a,1,2\nb,3,4\n")
    assert load_csv(path, label_column="1").labels.tolist() == ["a", "b"]
    assert load_csv(path, label_column=np.int64(1)).x.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_errors_about_taken_rows_name_their_index_in_the_file():
    """A row taken out of a binary file (a split) is named by its index in the file."""
    t = Table(np.arange(10.0)[:, None], np.arange(10) % 2, "f.npz")
    part = take(take(t, np.array([9, 7, 5, 3])), np.array([2, 0]))
    assert part.x[:, 0].tolist() == [5.0, 9.0]
    assert (part.where(0), part.where_value(1, 0)) == (
        "f.npz, example 5",
        "f.npz, example 9, feature 0",
    )
