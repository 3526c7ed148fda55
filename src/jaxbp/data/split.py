"""From loaded tables to a train/validation/test :class:`Dataset`: labels mapped to classes,
stratified splits by seed, standardisation fitted on the training split only, one-hot targets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from jaxbp.data.files import DataError, Table


class Dataset(NamedTuple):
    """A classification problem split three ways, features standardised.

    Attributes:
      name: the dataset's name (built-in) or its data file's path.
      x_train, x_val, x_test: (m_·, n) float64 features, standardised with the training split's
        mean and scale.
      y_train, y_val, y_test: (m_·,) int32 class indices in [0, K).
      class_names: K names; class c is ``class_names[c]``.
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
    class_names: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    split: str
    image_shape: tuple[int, ...] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])


def take(table: Table, index: np.ndarray) -> Table:
    """The rows ``index`` of a table (labels, line numbers and declared classes kept)."""
    lines = table.lines[index] if table.lines is not None else None
    return Table(
        table.x[index], table.labels[index], table.path, lines, table.class_names, table.image_shape
    )


def _sort_labels(values: Sequence) -> list:
    if all(isinstance(v, (int, np.integer)) for v in values):
        return sorted(int(v) for v in values)
    return sorted({str(v) for v in values})


def encode_labels(train: Table, others: Sequence[Table] = ()) -> tuple[list, tuple[str, ...]]:
    """Maps labels to class indices 0 … K − 1, consistently across the training and other files.

    Classes are those the training file declares (``.mat``, NPZ ``class_names``) — its labels
    are then indices that must lie in [0, K) — or else the distinct labels of all files, sorted
    (numerically when all are integers).

    Returns:
      ``(indices, class_names)``: one int32 index array per table (training first).

    Raises:
      DataError: a label out of range of the declared classes (naming its file and line), a
        single class in the training file, fewer training examples than classes, a class with
        no training examples.
    """
    tables = [train, *others]
    if train.class_names is not None:
        names = train.class_names
        k = len(names)
        encoded = []
        for t in tables:
            if t.labels.dtype.kind in "iu":
                y = t.labels
            else:
                lookup = {name: c for c, name in enumerate(names)}
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
        names = tuple(str(v) for v in ordered)
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


def stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator):
    """Splits indices so that each class gives the same share ``fraction`` to the second part.

    The second part has round(m · fraction) examples in all, apportioned to classes by largest
    remainder, except that every class keeps at least one example in the first part.

    Returns:
      ``(keep, take)``: sorted index arrays.
    """
    m = len(y)
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * fraction
    n_take = np.floor(quota).astype(np.int64)
    extra = int(round(m * fraction)) - int(n_take.sum())
    order = np.argsort(-(quota - n_take), kind="stable")
    n_take[order[: max(extra, 0)]] += 1
    n_take = np.minimum(n_take, counts - 1)
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

    A constant feature gets scale 1.
    """
    if scaling not in SCALINGS:
        raise DataError(f"scaling: unknown {scaling!r}; valid scalings are {', '.join(SCALINGS)}")
    n = x.shape[1]
    if scaling == "none":
        return np.zeros(n), np.ones(n)
    if scaling == "max":
        top = float(np.max(np.abs(x))) if x.size else 0.0
        return np.zeros(n), np.full(n, top if top > 0 else 1.0)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    if scaling == "capped":
        scale = np.maximum(scale, np.max(np.abs(x - mean), axis=0) / Z_CAP)
    return mean, np.where(scale > 0, scale, 1.0)


def one_hot(y: np.ndarray, num_classes: int, dtype=np.float32) -> np.ndarray:
    """(m,) class indices → (m, K) one-hot targets, the lecture's y^(i) ∈ {0, 1}^K."""
    return np.eye(num_classes, dtype=dtype)[np.asarray(y)]


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
      DataError: bad fractions, an empty split, or as :func:`encode_labels`.
    """
    if scaling not in SCALINGS:
        raise DataError(f"scaling: unknown {scaling!r}; valid scalings are {', '.join(SCALINGS)}")
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction: must be in [0, 1), got {val_fraction!r}")
    if test is None and not 0 < test_fraction < 1:
        raise DataError(f"test_fraction: must be in (0, 1), got {test_fraction!r}")
    if test is not None and test.x.shape[1] != train.x.shape[1]:
        raise DataError(
            f"{test.path}: {test.x.shape[1]} features, but the training file {train.path} has "
            f"{train.x.shape[1]}"
        )
    rng = np.random.default_rng(seed)
    (y_all, *y_test), class_names = encode_labels(train, [test] if test is not None else [])
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
    x_train, y_train = train.x[keep], y_all[keep]
    mean, scale = standardiser(x_train, scaling)

    def norm(x):
        return (x - mean) / scale

    return Dataset(
        name=name,
        x_train=norm(x_train),
        y_train=y_train,
        x_val=norm(train.x[held]),
        y_val=y_all[held],
        x_test=norm(test.x),
        y_test=y_test[0],
        class_names=class_names,
        mean=mean,
        scale=scale,
        split=f"{description}; stratified {val_fraction:g} validation split of the rest",
        image_shape=train.image_shape,
    )


def fingerprint(dataset: Dataset) -> str:
    """SHA-256 of the split arrays and class names: two runs on the same data share it."""
    h = hashlib.sha256()
    for a in (dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val):
        h.update(np.ascontiguousarray(a).tobytes())
    for a in (dataset.x_test, dataset.y_test):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update("\x00".join(dataset.class_names).encode())
    return h.hexdigest()
