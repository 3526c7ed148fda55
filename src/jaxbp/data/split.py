"""From loaded tables to a train/validation/test :class:`Dataset`: labels mapped to classes,
stratified splits by seed, standardisation fitted on the training split only, one-hot targets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from jaxbp.data.files import DataError, Table, check_count, check_number


class Dataset(NamedTuple):
    """A classification problem split three ways, features standardised.

    Attributes:
      name: the dataset's name (built-in) or its data file's path.
      x_train, x_val, x_test: (m_·, n) float64 features, standardised with the training split's
        mean and scale.
      y_train, y_val, y_test: (m_·,) int32 class indices in [0, K).
      classes: the K class labels in the data's own type — Python integers for integer labels
        (digits, MNIST-1D, a CSV of numbered classes), strings for named ones (iris' species, a
        CSV of names); class c is ``classes[c]``. ``class_names`` spells them as strings.
      mean, scale: (n,) the standardisation x ↦ (x − mean) / scale (scale 1 for a constant
        feature), fitted on the training split.
      split: how the test and validation splits were made, in words.
      image_shape: (H, W, C) of one example when the data are images (built-in digits, IDX
        files, image-shaped NPZ arrays): row i holds image i's pixels in row-major order; else
        None.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple
    mean: np.ndarray
    scale: np.ndarray
    split: str
    image_shape: tuple[int, ...] | None = None

    @property
    def class_names(self) -> tuple[str, ...]:
        """The K classes as strings, for display (plots, tables, summary.json)."""
        return tuple(str(c) for c in self.classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])


def take(table: Table, index: np.ndarray) -> Table:
    """The rows ``index`` of a table (labels, line numbers — or each example's index in its
    binary file —, declared classes and feature columns kept), so that an error about a taken
    row still names where it is in the file.

    Raises:
      DataError: ``table`` not a :class:`Table`, or ``index`` not integer indices of its rows
        (naming what was received).
    """
    _check_table(table, "table")
    index = np.asarray(index)
    if index.dtype.kind not in "iu" or index.ndim != 1:
        raise DataError(
            f"index: expected a 1-D array of row indices, got {index.dtype} of shape {index.shape}"
        )
    m = table.x.shape[0]
    if index.size and not (-m <= int(index.min()) and int(index.max()) < m):
        raise DataError(
            f"index: row indices must lie in [0, {m}), got {index.min()} … {index.max()}"
        )
    lines = table.lines[index] if table.lines is not None else None
    examples = None
    if lines is None:
        examples = (table.examples if table.examples is not None else np.arange(table.x.shape[0]))[
            index
        ]
    return table._replace(
        x=table.x[index], labels=table.labels[index], lines=lines, examples=examples
    )


def _check_table(table, name: str) -> None:
    """DataError naming the argument ``name`` when it is not a :class:`Table`."""
    if not isinstance(table, Table):
        raise DataError(
            f"{name}: expected a jaxbp.data.Table (a loaded file), got {type(table).__name__}"
        )


def _sort_labels(values: Sequence) -> list:
    if all(isinstance(v, (int, np.integer)) for v in values):
        return sorted(int(v) for v in values)
    return sorted({str(v) for v in values})


def encode_labels(train: Table, others: Sequence[Table] = ()) -> tuple[list, tuple]:
    """Maps labels to class indices 0 … K − 1, consistently across the training and other files.

    Classes are those the training file declares (``.mat``, NPZ ``class_names``) — its labels
    are then indices that must lie in [0, K) — or else the distinct labels of all files, sorted
    (numerically when all are integers).

    Returns:
      ``(indices, classes)``: one int32 index array per table (training first), and the K
      classes in the labels' own type: Python integers when every file's labels are integers
      (or the training file declares integer classes), else strings.

    Raises:
      DataError: ``train`` or an entry of ``others`` not a :class:`Table`; a label out of range
        of the declared classes (naming its file and line), a single class in the training file,
        fewer training examples than classes, a class with no training examples.
    """
    _check_table(train, "train")
    for i, t in enumerate(others):
        _check_table(t, f"others[{i}]")
    tables = [train, *others]
    if train.class_names is not None:
        names = train.class_names
        k = len(names)
        encoded = []
        for t in tables:
            if t.labels.dtype.kind in "iu":
                y = t.labels
            else:
                lookup = {str(name): c for c, name in enumerate(names)}
                y = np.asarray([lookup.get(str(s), -1) for s in t.labels], dtype=np.int64)
            bad = np.flatnonzero((y < 0) | (y >= k))
            if bad.size:
                i = int(bad[0])
                raise DataError(
                    f"{t.where(i)}: label {t.labels[i].item()!r} is out of range for the {k} classes "
                    f"declared in {train.path} (0..{k - 1})"
                )
            encoded.append(y.astype(np.int32))
    else:
        values = set()
        for t in tables:
            values.update(t.labels.tolist())
        ordered = _sort_labels(list(values))
        if any(t.labels.dtype.kind not in "iu" for t in tables):
            ordered = _sort_labels([str(v) for v in ordered])
            if all(s.lstrip("-").isdigit() for s in ordered):
                ordered = [str(v) for v in sorted(int(s) for s in ordered)]
            lookup = {v: c for c, v in enumerate(ordered)}
            encoded = [np.asarray([lookup[str(s)] for s in t.labels], np.int32) for t in tables]
        else:
            lookup = {v: c for c, v in enumerate(ordered)}
            encoded = [np.asarray([lookup[int(s)] for s in t.labels], np.int32) for t in tables]
        names = tuple(ordered)
    present = np.unique(encoded[0])
    if present.size == 1:
        raise DataError(
            f"y: only one class ({names[int(present[0])]}) in {train.path}; a classifier needs "
            "at least two"
        )
    check_classes(encoded[0], names, train.path, others=list(zip(encoded[1:], others, strict=True)))
    return encoded, tuple(names)


def check_classes(y_train: np.ndarray, class_names, path, *, others=()) -> None:
    """Every class needs a training example, and there must be at least as many as classes.

    Raises:
      DataError: naming the count or the first class without training examples (and where it
        does occur, if in another file).
    """
    k = len(class_names)
    if len(y_train) < k:
        raise DataError(
            f"{path}: {len(y_train)} training example(s) but {k} classes; need at least one "
            "example per class"
        )
    counts = np.bincount(y_train, minlength=k)
    missing = np.flatnonzero(counts == 0)
    if missing.size:
        c = int(missing[0])
        seen = ""
        for y, t in others:
            rows = np.flatnonzero(y == c)
            if rows.size:
                seen = f" (it occurs at {t.where(int(rows[0]))})"
                break
        raise DataError(
            f"{path}: class {class_names[c]!r} has no training examples{seen}; "
            f"{missing.size} class(es) without training examples in all"
        )


def split_counts(counts, fraction: float) -> np.ndarray:
    """How many examples of each class :func:`stratified_split` gives to its second part, from
    the classes' counts alone: round(m · fraction) in all, apportioned to classes by largest
    remainder, except that every class keeps at least one example in the first part.

    Raises:
      DataError: ``fraction`` not a number in [0, 1), or ``counts`` not counts ≥ 0.
    """
    fraction = check_number(fraction, "fraction", low=0, high=1)
    counts = np.asarray(counts)
    if counts.dtype.kind not in "iu" or counts.ndim != 1 or (counts.size and counts.min() < 0):
        raise DataError(
            f"counts: expected a 1-D array of class counts ≥ 0, got {counts.dtype} "
            f"{counts.tolist()!r:.100}"
        )
    counts = counts.astype(np.int64)
    quota = counts * fraction
    n_take = np.floor(quota).astype(np.int64)
    extra = int(round(int(counts.sum()) * fraction)) - int(n_take.sum())
    order = np.argsort(-(quota - n_take), kind="stable")
    n_take[order[: max(extra, 0)]] += 1
    return np.minimum(n_take, counts - 1)


def training_rows(class_counts, *, test_fraction: float, val_fraction: float, own_test: bool):
    """The number of training rows :func:`prepare` leaves from data of ``class_counts``: the
    stratified test split taken first (unless the data have their own test split), then the
    validation split from the rest. The counts alone decide it, not the seed.

    Raises:
      DataError: as :func:`split_counts`, naming ``test_fraction`` or ``val_fraction``.
    """
    check_number(test_fraction, "test_fraction", low=0, high=1, low_open=True)
    check_number(val_fraction, "val_fraction", low=0, high=1)
    counts = np.asarray(class_counts, np.int64)
    if not own_test:
        counts = counts - split_counts(counts, test_fraction)
    return int((counts - split_counts(counts, val_fraction)).sum())


def stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator):
    """Splits indices so that each class gives the same share ``fraction`` to the second part
    (:func:`split_counts` says how many of each).

    Returns:
      ``(keep, take)``: sorted index arrays.

    Raises:
      DataError: ``rng`` not a ``numpy.random.Generator``, ``y`` not 1-D integer labels, or
        ``fraction`` as :func:`split_counts`.
    """
    if not isinstance(rng, np.random.Generator):
        raise DataError(
            f"rng: expected a numpy.random.Generator (numpy.random.default_rng(seed)), got "
            f"{type(rng).__name__} {rng!r:.100}"
        )
    y = np.asarray(y)
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise DataError(f"y: expected 1-D integer class indices, got {y.dtype} of shape {y.shape}")
    classes, counts = np.unique(y, return_counts=True)
    n_take = split_counts(counts, fraction)
    keep, out = [], []
    for c, t in zip(classes, n_take, strict=True):
        index = rng.permutation(np.flatnonzero(y == c))
        out.append(index[:t])
        keep.append(index[t:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(out))


SCALINGS = ("capped", "standard", "max", "none")
"""Feature scalings accepted by :func:`standardiser`."""

Z_CAP = 3.0
"""``capped`` scaling keeps every training value within this many scale units of the mean."""


def standardiser(x: np.ndarray, scaling: str = "capped") -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of each feature (column) of the training split: x ↦ (x − mean) / scale.

    - ``standard``: scale = the standard deviation σ (z-scores);
    - ``capped`` (default): scale = max(σ, max_i |x_i − mean| / 3). For a roughly normal
      feature this is σ or close to it; for a sparse feature — a pixel that is lit in a handful
      of images — σ is tiny and z-scores of its rare values reach tens, letting it dominate the
      first layer. The cap keeps every training value within ±3;
    - ``max``: mean 0, one scale for every feature, the largest |x| of the training split —
      images divided by their brightest pixel (``/ 255``, ``/ 16``): a dark background stays 0,
      and every pixel keeps the meaning it has at any other position, as a convolution (and a
      translation of the image) assumes; per-feature scalings give each position its own;
    - ``none``: mean 0, scale 1.

    A constant feature gets scale 1. Values so large that a feature's mean or spread overflows
    float64 (|x| beyond about 1e154 for σ) give it an infinite mean or scale, without a warning:
    :func:`prepare` refuses such a feature, naming its largest value.

    Raises:
      DataError: an unknown ``scaling``, or ``x`` not a 2-D array of real numbers (naming its
        type, dtype or shape).
    """
    _check_scaling_name(scaling)
    x = _features(x, "x")
    n = x.shape[1]
    if scaling == "none":
        return np.zeros(n), np.ones(n)
    if scaling == "max":
        top = float(np.max(np.abs(x))) if x.size else 0.0
        return np.zeros(n), np.full(n, top if top > 0 else 1.0)
    with np.errstate(over="ignore", invalid="ignore"):
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        if scaling == "capped":
            scale = np.maximum(scale, np.max(np.abs(x - mean), axis=0) / Z_CAP)
    return mean, np.where(scale > 0, scale, 1.0)


def _check_scaling_name(scaling) -> None:
    if not isinstance(scaling, str) or scaling not in SCALINGS:
        raise DataError(f"scaling: unknown {scaling!r}; valid scalings are {', '.join(SCALINGS)}")


def _features(x, name: str) -> np.ndarray:
    """``x`` as a 2-D float64 array; DataError naming ``name`` when it is not one (strings,
    objects, another number of dimensions)."""
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as e:  # ragged lists
        raise DataError(f"{name}: expected a 2-D array of numbers ({e})") from None
    if a.dtype.kind not in "iufb" or a.ndim != 2:
        raise DataError(
            f"{name}: expected a 2-D array of numbers (examples × features), got "
            f"{type(x).__name__} of dtype {a.dtype} and shape {a.shape}"
        )
    return a.astype(np.float64, copy=False)


FEATURE_LIMIT = float(np.finfo(np.float32).max)
"""The largest |feature| after scaling, float32's range (±3.4e38): jaxbp trains in float32 by
default, where a larger value becomes infinite. float64 runs are held to it too, so that a
dataset trains in both or in neither."""


def check_scaling(table: Table, mean: np.ndarray, scale: np.ndarray, scaling: str) -> None:
    """Refuses a scaling fitted on ``table`` (the training split) whose mean or scale is not
    finite — one value too large for the float64 sums it is computed with zeroes or voids its
    whole feature.

    Raises:
      DataError: naming the feature's largest value: its file, line and column (or example and
        feature index).
    """
    bad = np.flatnonzero(~(np.isfinite(mean) & np.isfinite(scale)))
    if bad.size:
        j = int(bad[0])
        i = int(np.argmax(np.abs(table.x[:, j])))
        raise DataError(
            f"{table.where_value(i, j)}: value {table.x[i, j]:.6g} is too large for the "
            f"{scaling} scaling of its feature: its mean or spread overflows float64 (mean "
            f"{mean[j]:.3g}, scale {scale[j]:.3g}); rescale that column of the data"
        )


def scale_features(
    x: np.ndarray, mean: np.ndarray, scale: np.ndarray, scaling: str, where: Callable
) -> np.ndarray:
    """(x − mean) / scale for raw features ``x`` (m, n), each within :data:`FEATURE_LIMIT`.

    Raises:
      DataError: the first value beyond it after scaling (or not finite), naming where it lives
        (``where(i, j)``: its file, line and column, as :meth:`Table.where_value`), the value
        and what it scales to.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        z = (x - mean) / scale
    bad = np.argwhere(~(np.abs(z) <= FEATURE_LIMIT))
    if bad.size:
        i, j = (int(v) for v in bad[0])
        raise DataError(
            f"{where(i, j)}: value {x[i, j]:.6g} is {z[i, j]:.3g} after the training "
            f"split's {scaling} scaling, beyond ±{FEATURE_LIMIT:.3g}, float32's range, the "
            "limit for the features of every run (float64 runs too); rescale that column"
        )
    return z


def one_hot(y: np.ndarray, num_classes: int, dtype=np.float32) -> np.ndarray:
    """(m,) class indices → (m, K) one-hot targets, the lecture's y^(i) ∈ {0, 1}^K.

    Raises:
      DataError: ``num_classes`` not an integer ≥ 1, ``y`` not integers in [0, K) (naming the
        first one out of range and its position).
    """
    k = check_count(num_classes, "num_classes", low=1)
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise DataError(f"y: expected integer class indices, got dtype {y.dtype}")
    bad = np.argwhere((y < 0) | (y >= k))
    if bad.size:
        at = tuple(int(v) for v in bad[0])
        raise DataError(f"y: class index {y[at]} at {list(at)} is outside [0, {k})")
    return np.eye(k, dtype=dtype)[y]


def prepare(
    name: str,
    train: Table,
    test: Table | None = None,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    scaling: str = "capped",
    test_description: str | None = None,
) -> Dataset:
    """Splits, encodes and standardises.

    Without a ``test`` table, a stratified ``test_fraction`` of ``train`` becomes the test split;
    then a stratified ``val_fraction`` of what remains becomes the validation split. Both draws
    use ``numpy.random.default_rng(seed)``. The standardisation (:func:`standardiser` with
    ``scaling``) is fitted on the training split alone and applied to all three.

    Raises:
      DataError: ``train`` / ``test`` not tables, a bad seed or scaling, fractions that are not
        numbers in range, an empty split, as :func:`encode_labels`, a feature whose
        scaling is not finite (:func:`check_scaling`) or a value beyond float32's range after
        scaling (:func:`scale_features`), in any split: naming its file, line and column.
    """
    _check_scaling_name(scaling)
    _check_table(train, "train")
    if test is not None:
        _check_table(test, "test")
    check_count(seed, "seed")
    val_fraction = check_number(val_fraction, "val_fraction", low=0, high=1)
    if test is None:
        test_fraction = check_number(test_fraction, "test_fraction", low=0, high=1, low_open=True)
    if test is not None and test.x.shape[1] != train.x.shape[1]:
        raise DataError(
            f"{test.path}: {test.x.shape[1]} features, but the training file {train.path} has "
            f"{train.x.shape[1]}"
        )
    rng = np.random.default_rng(seed)
    (y_all, *y_test), classes = encode_labels(train, [test] if test is not None else [])
    if test is None:
        keep, held = stratified_split(y_all, test_fraction, rng)
        test = take(train, held)
        y_test = [y_all[held]]
        train, y_all = take(train, keep), y_all[keep]
        description = test_description or (f"stratified {test_fraction:g} test split (seed {seed})")
    else:
        description = test_description or f"test file {test.path}"
    if len(y_test[0]) == 0:
        raise DataError(f"{train.path}: the test split is empty; use a larger test fraction")
    keep, held = stratified_split(y_all, val_fraction, rng)
    if val_fraction > 0 and len(held) == 0:
        raise DataError(
            f"{train.path}: a validation fraction of {val_fraction:g} leaves no validation "
            f"examples from {len(y_all)} training examples"
        )
    fit = take(train, keep)
    mean, scale = standardiser(fit.x, scaling)
    check_scaling(fit, mean, scale, scaling)

    def norm(table):
        return scale_features(table.x, mean, scale, scaling, table.where_value)

    return Dataset(
        name=name,
        x_train=norm(fit),
        y_train=y_all[keep],
        x_val=norm(take(train, held)),
        y_val=y_all[held],
        x_test=norm(test),
        y_test=y_test[0],
        classes=classes,
        mean=mean,
        scale=scale,
        split=f"{description}; stratified {val_fraction:g} validation split of the rest",
        image_shape=train.image_shape,
    )


def fingerprint(dataset: Dataset) -> str:
    """SHA-256 of the split arrays and class names: two runs on the same data share it.

    Raises:
      DataError: ``dataset`` not a :class:`Dataset`.
    """
    if not isinstance(dataset, Dataset):
        raise DataError(f"dataset: expected a jaxbp.data.Dataset, got {type(dataset).__name__}")
    h = hashlib.sha256()
    for a in (dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val):
        h.update(np.ascontiguousarray(a).tobytes())
    for a in (dataset.x_test, dataset.y_test):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update("\x00".join(dataset.class_names).encode())
    return h.hexdigest()
