"""Loaders for data files a user brings: CSV, NPZ, IDX (the MNIST format) and the course's
MATLAB ``.mat``.

Every loader takes a path and returns a :class:`Table` — features as float64 rows, the labels
exactly as the file holds them (mapped to classes later, across the training and test files
together, by :func:`jaxbp.data.split.encode_labels`) and where each row came from, so that a
later error about a label can still name the file and line. Bad input raises :class:`DataError`
naming the file, and for a bad value its line and column (CSV) or its index (arrays).
"""

from __future__ import annotations

import csv
import gzip
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np


class DataError(ValueError):
    """Bad data: the message names the file and, where there is one, the line and column."""


class Table(NamedTuple):
    """One file's examples, labels not yet mapped to classes.

    Attributes:
      x: (m, n) float64 features, one example per row.
      labels: (m,) the labels as stored: integers, or strings (CSV/NPZ with named classes).
      path: the file the examples came from (the features' file for IDX).
      lines: (m,) 1-based line number of each example in a text file, or None for binary files
        (errors then name the 0-based example index).
      class_names: the classes the file itself declares, in their own type (``.mat``: the
        digits 0–9; NPZ: ``class_names``, integers or strings), or None when classes are the
        distinct labels.
      image_shape: (H, W, C) of one example when the file stores images (IDX, an NPZ ``x`` of
        (m, H, W) or (m, H, W, C)), the row holding its pixels in row-major order; else None.
      columns: (n,) 1-based column of the text file each feature came from (the label column
        skipped), or None for binary files (errors then name the 0-based feature index).
      examples: (m,) 0-based index of each example in its binary file, once rows have been
        taken from it (:func:`jaxbp.data.split.take`); None: row i is example i (or the file
        is text, and ``lines`` name the rows).
    """

    x: np.ndarray
    labels: np.ndarray
    path: str
    lines: np.ndarray | None = None
    class_names: tuple | None = None
    image_shape: tuple[int, ...] | None = None
    columns: np.ndarray | None = None
    examples: np.ndarray | None = None

    def where(self, i: int) -> str:
        """Where example ``i`` lives, for an error message: its line in a text file, else its
        index in the file (not in this table, when it holds rows taken from the file)."""
        if self.lines is not None:
            return f"{self.path}, line {int(self.lines[i])}"
        if self.examples is not None:
            return f"{self.path}, example {int(self.examples[i])}"
        return f"{self.path}, example {i}"

    def where_value(self, i: int, j: int) -> str:
        """Where feature ``j`` of example ``i`` lives, for an error message: its line and
        column in a text file, else its example and feature index."""
        if self.columns is not None:
            return f"{self.where(i)}, column {int(self.columns[j])}"
        return f"{self.where(i)}, feature {j}"


LABEL_COLUMNS = ("first", "last")
"""Named label-column positions for CSV files; an integer N (1-based) is accepted too."""


def check_path(path, name: str = "path") -> Path:
    """``path`` (a ``str`` or ``os.PathLike``) as a ``Path``.

    Raises:
      DataError: another type, naming the argument ``name`` and what it received.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise DataError(
            f"{name}: expected a file path (str or os.PathLike), got {type(path).__name__} {path!r}"
        )
    return Path(path)


def check_number(value, name: str, *, low: float, high: float, low_open=False, high_open=True):
    """``value`` as a float when it is a real number (not a bool) within [low, high] — the ends
    excluded where ``low_open`` / ``high_open``.

    Raises:
      DataError: another type, NaN, or a number out of range, naming the argument ``name``, the
        range and what it received.
    """
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
        raise DataError(
            f"{name}: expected a number in {interval}, got {type(value).__name__} {value!r}"
        )
    v = float(value)
    inside = (low < v if low_open else low <= v) and (v < high if high_open else v <= high)
    if not inside:  # NaN is inside nothing
        raise DataError(f"{name}: must be in {interval}, got {value!r}")
    return v


def check_count(value, name: str, *, low: int = 0) -> int:
    """``value`` as an int when it is an integer (not a bool) ≥ ``low``.

    Raises:
      DataError: another type or a smaller value, naming ``name`` and what it received.
    """
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise DataError(
            f"{name}: expected an integer ≥ {low}, got {type(value).__name__} {value!r}"
        )
    if value < low:
        raise DataError(f"{name}: expected an integer ≥ {low}, got {value}")
    return int(value)


def check_exists(path, name: str = "path") -> Path:
    """The path as a ``Path``; :class:`DataError` naming it when it is not a readable file (or
    the argument ``name`` when it is not a path at all)."""
    p = check_path(path, name)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    if not p.is_file():
        raise DataError(f"{p}: not a regular file")
    return p


def _open_maybe_gzip(path: Path, mode: str = "rb"):
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, mode)
    return open(path, mode)


def _label_index(label_column, n_fields: int, path: Path) -> int:
    if label_column == "first":
        return 0
    if label_column == "last":
        return n_fields - 1
    column = check_label_column(label_column)
    if not 1 <= column <= n_fields:
        raise DataError(
            f"{path}: label column {column} is out of range; the file has {n_fields} columns"
        )
    return column - 1


def check_label_column(label_column) -> str | int:
    """``first``, ``last``, or a 1-based column number (an int, or a string of digits as the
    command line gives it) as an int.

    Raises:
      DataError: anything else (a float, a bool, 0, another word), naming ``label_column`` and
        the value received.
    """
    if isinstance(label_column, str) and label_column in LABEL_COLUMNS:
        return label_column
    number = None
    if isinstance(label_column, (int, np.integer)) and not isinstance(label_column, bool):
        number = int(label_column)
    elif isinstance(label_column, str) and label_column.strip().isdigit():
        number = int(label_column)
    if number is None or number < 1:
        raise DataError(
            "label_column: expected first, last or a 1-based column number, got "
            f"{type(label_column).__name__} {label_column!r}"
        )
    return number


def _split_fields(line: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        return line.split()
    return next(csv.reader([line], delimiter=delimiter))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_csv(path, *, label_column="last") -> Table:
    """Loads a delimited text file: one example per line, numeric features and one label column.

    The delimiter is a comma, else a semicolon, else whitespace (judged from the first data line).
    A first line whose feature fields are all non-numeric is a header and is skipped. Blank lines
    and lines starting with ``#`` are skipped. Labels may be numbers or strings.

    Args:
      path: the file (plain text or gzip).
      label_column: ``"first"``, ``"last"`` or a 1-based column number.

    Returns:
      A :class:`Table` with 1-based line numbers.

    Raises:
      DataError: missing file; a line with a different number of fields (its line number); a
        feature that is not a number or not finite (its line and 1-based column).
    """
    p = check_exists(path)
    with _open_maybe_gzip(p, "rt") as f:
        try:
            text = f.read()
        except UnicodeDecodeError as e:
            raise DataError(f"{p}: not a text file ({e.reason} at byte {e.start})") from None
        except (OSError, EOFError) as e:  # a damaged or truncated gzip file
            raise DataError(f"{p}: cannot read ({e})") from None
    rows: list[list[float]] = []
    labels: list[str] = []
    lines: list[int] = []
    delimiter: str | None = ""  # "" = not decided yet
    n_fields = label_at = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if delimiter == "":
            delimiter = "," if "," in line else ";" if ";" in line else None
        fields = [s.strip() for s in _split_fields(line, delimiter)]
        if n_fields is None:
            n_fields = len(fields)
            if n_fields < 2:
                raise DataError(
                    f"{p}, line {number}: need at least one feature and a label column, "
                    f"found {n_fields} field"
                )
            label_at = _label_index(label_column, n_fields, p)
            features = fields[:label_at] + fields[label_at + 1 :]
            if not any(_is_number(s) for s in features):
                continue  # a header line
        if len(fields) != n_fields:
            raise DataError(
                f"{p}, line {number}: {len(fields)} fields, expected {n_fields} as on the first line"
            )
        row = []
        for column, s in enumerate(fields, start=1):
            if column - 1 == label_at:
                continue
            try:
                value = float(s)
            except ValueError:
                hint = (
                    f" (if column {column} holds the labels, set the label column to it)"
                    if not rows and not _is_number(s) and s
                    else ""
                )
                raise DataError(
                    f"{p}, line {number}, column {column}: cannot parse {s!r} as a number{hint}"
                ) from None
            if not math.isfinite(value):
                raise DataError(f"{p}, line {number}, column {column}: non-finite value {s!r}")
            row.append(value)
        label = fields[label_at]
        if label == "":
            raise DataError(f"{p}, line {number}, column {label_at + 1}: empty label")
        rows.append(row)
        labels.append(label)
        lines.append(number)
    if not rows:
        raise DataError(f"{p}: no data rows")
    where = [f"{p}, line {n}, column {label_at + 1}" for n in lines]
    return Table(
        np.asarray(rows, dtype=np.float64),
        _numeric_labels(labels, where),
        str(p),
        np.asarray(lines),
        columns=np.asarray([c for c in range(1, n_fields + 1) if c - 1 != label_at]),
    )


def _numeric_labels(labels: list[str], where: list[str]) -> np.ndarray:
    """Integer labels where every label is an integer literal ("3", "3.0"), strings where some
    label is not a number ("setosa").

    Raises:
      DataError: every label is a number but some are not integers (``0.137``) or not finite —
        continuous values (a regression target), not class labels; naming the first such label's
        place ``where[i]``.
    """
    try:
        values = np.asarray([float(s) for s in labels])
    except ValueError:
        return np.asarray(labels, dtype=str)
    bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{where[i]}: label {labels[i]!r} is not a class label; "
            f"{_continuous(bad.size, len(labels))}"
        )
    return values.astype(np.int64)


def _continuous(n_bad: int, n: int) -> str:
    return (
        f"{n_bad} of the {n} labels are not integers — continuous values (a regression "
        "target?) cannot be classes; a classifier needs integer or string labels"
    )


def check_finite(x: np.ndarray, path, name: str = "x") -> None:
    """DataError naming the first non-finite entry of an array loaded from ``path``."""
    bad = np.argwhere(~np.isfinite(x))
    if bad.size:
        index = ", ".join(str(int(i)) for i in bad[0])
        raise DataError(
            f"{path}: non-finite value {float(x[tuple(bad[0])])} at {name}[{index}] "
            f"({len(bad)} non-finite value(s) in all)"
        )


def _check_examples(x: np.ndarray, path, name: str) -> None:
    """DataError when ``x`` has no examples (rows) or examples without features."""
    if x.shape[0] == 0:
        raise DataError(f"{path}: no examples ({name} has shape {x.shape})")
    if x.size == 0:
        raise DataError(f"{path}: examples without features ({name} has shape {x.shape})")


def _array_labels(y: np.ndarray, path, m: int | None = None) -> np.ndarray:
    """The labels array as (m,) ints or strings; ``y`` may be (m,) or (m, 1).

    Raises:
      DataError: another shape (when ``m``, the number of examples, is given), a non-integer or
        non-finite float label (continuous values are not classes), a dtype that is not labels.
    """
    y = np.asarray(y)
    if m is not None and y.shape not in ((m,), (m, 1)):
        raise DataError(f"{path}: y must be ({m},) — one label per example — got shape {y.shape}")
    y = y.reshape(-1)
    if y.dtype.kind in "US":
        return y.astype(str)
    if y.dtype.kind in "iub":
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        check_finite(y, path, "y")
        frac = np.flatnonzero(y != np.round(y))
        if frac.size:
            i = int(frac[0])
            raise DataError(
                f"{path}: label y[{i}] = {y[i].item()!r} is not an integer class label; "
                f"{_continuous(frac.size, y.size)}"
            )
        return y.astype(np.int64)
    raise DataError(f"{path}: labels of dtype {y.dtype} are not class labels")


ZIP_MAGIC = b"PK\x03\x04"
NPY_MAGIC = b"\x93NUMPY"
"""The first bytes of a ``.npz`` archive (a zip file) and of a single ``.npy`` array."""


PICKLED = (
    "an array of Python objects (pickled), which jaxbp does not load: unpickling runs any code "
    "a file holds; save numeric (or string) arrays"
)
"""Why an archive of object arrays is refused."""


def _declared_classes(names: np.ndarray, path) -> tuple:
    """An NPZ ``class_names`` array as a tuple of Python integers or strings, its own type.

    Raises:
      DataError: names of another dtype (floats, booleans): classes are integers or strings.
    """
    names = names.reshape(-1)
    if names.dtype.kind in "iu":
        return tuple(int(v) for v in names)
    if names.dtype.kind in "US":
        return tuple(str(v) for v in names.astype(str))
    raise DataError(
        f"{path}: class_names has dtype {names.dtype}; class names are integers or strings"
    )


def load_npz(path) -> Table:
    """Loads a NumPy ``.npz`` archive with ``x`` (m, n) and ``y`` (m,), and optionally
    ``class_names`` (K,) — integers or strings, kept as such — in which case ``y`` holds class
    indices 0 … K − 1.

    Raises:
      DataError: missing file or key, a file that is not a zip archive (its first bytes), arrays
        of Python objects (pickled: never loaded), wrong shapes, a non-finite feature (its
        index).
    """
    p = check_exists(path)
    if p.stat().st_size == 0:
        raise DataError(f"{p}: empty file, not a .npz archive")
    with open(p, "rb") as f:
        magic = f.read(len(ZIP_MAGIC))
    if magic == NPY_MAGIC[: len(ZIP_MAGIC)]:
        raise DataError(f"{p}: a single .npy array, not a .npz archive with x and y")
    if magic != ZIP_MAGIC:
        raise DataError(
            f"{p}: not a .npz archive: it starts with the bytes {magic.hex(' ')}, not a zip "
            f"archive's {ZIP_MAGIC.hex(' ')}"
        )
    try:  # our own file handle: np.load leaks its own when the archive is damaged
        with open(p, "rb") as f:
            archive = np.load(f, allow_pickle=False)
            missing = [k for k in ("x", "y") if k not in archive.files]
            if missing:
                found = ", ".join(archive.files) or "nothing"
                raise DataError(f"{p}: missing array(s) {', '.join(missing)}; found {found}")
            arrays = {}
            for key in ("x", "y", "class_names"):
                if key in archive.files:
                    arrays[key] = _npz_array(archive, key, p)
            x, y, names = arrays["x"], arrays["y"], arrays.get("class_names")
    except DataError:
        raise
    except Exception as e:  # zipfile.BadZipFile, EOFError, zlib …
        raise DataError(
            f"{p}: not a readable .npz archive — damaged or truncated? ({type(e).__name__}: {e})"
        ) from None
    if x.ndim == 0:
        raise DataError(f"{p}: x must be (m, n) examples by features, got a scalar")
    _check_examples(x, p, "x")
    image_shape = _image_shape(x.shape)
    x = x[:, None] if x.ndim == 1 else x.reshape(x.shape[0], -1)
    if y.ndim == 0 or y.shape[0] != x.shape[0]:
        raise DataError(f"{p}: x has {x.shape[0]} rows but y has shape {y.shape}")
    if x.dtype.kind not in "iufb":
        raise DataError(f"{p}: x has dtype {x.dtype}; expected numbers")
    x = x.astype(np.float64)
    check_finite(x, p)
    class_names = _declared_classes(names, p) if names is not None else None
    return Table(x, _array_labels(y, p, x.shape[0]), str(p), None, class_names, image_shape)


def _npz_array(archive, key: str, path) -> np.ndarray:
    """Array ``key`` of an open archive.

    Raises:
      DataError: an array of Python objects, which only unpickling would read — and
        unpickling a file runs any code it holds, so jaxbp never does.
    """
    try:
        return np.asarray(archive[key])
    except ValueError as e:
        if "allow_pickle" not in str(e):
            raise
        raise DataError(f"{path}: {key} is {PICKLED}") from None


def _image_shape(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """(H, W, C) of one example of an array of ``shape`` (m, H, W) or (m, H, W, C); else None."""
    if len(shape) == 3:
        return (int(shape[1]), int(shape[2]), 1)
    if len(shape) == 4:
        return tuple(int(d) for d in shape[1:])
    return None


_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path) -> np.ndarray:
    """Reads one IDX file (LeCun's MNIST format), gzip-compressed or not.

    Header: two zero bytes, a type byte, the number of dimensions d, then d big-endian uint32
    sizes; the data follow in C order.

    Raises:
      DataError: missing file, bad magic number, truncated or oversized data.
    """
    p = check_exists(path)
    with _open_maybe_gzip(p) as f:
        try:
            data = f.read()
        except (OSError, EOFError) as e:
            raise DataError(f"{p}: cannot read ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DataError(f"{p}: not an IDX file (magic bytes {data[:4].hex() or 'missing'})")
    dtype, ndim = _IDX_TYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{p}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise DataError(
            f"{p}: IDX header says shape {shape} ({expected} bytes), the file has {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def load_idx(images, labels) -> Table:
    """Loads an IDX images file and its IDX labels file: images (m, …) become rows (m, n).

    Raises:
      DataError: either file missing or malformed, labels not 1-D, counts that differ.
    """
    x = read_idx(images)
    y = read_idx(labels)
    if y.ndim != 1:
        raise DataError(f"{labels}: IDX labels must be 1-D, got shape {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{images} has {x.shape[0]} examples but {labels} has {y.shape[0]} labels")
    _check_examples(x, images, "the images")
    image_shape = _image_shape(x.shape)
    x = x.reshape(x.shape[0], -1).astype(np.float64)
    check_finite(x, images)
    return Table(x, _array_labels(y, labels), str(images), None, None, image_shape)


MAT_CLASSES = tuple(range(10))
"""The course's digit classes, the integers 0–9; label 10 in a ``.mat`` file means digit 0."""


def load_mat(path) -> Table:
    """Loads the course's MATLAB file: ``X`` (m, n) and ``y`` (m, 1) with labels 1 … 10, where
    10 stands for the digit 0 (Octave's 1-based indexing). Class c ∈ 0 … 9 is the digit c.

    Raises:
      DataError: missing file, no ``X``/``y``, a label outside 1 … 10 (its row), non-finite X.
    """
    import scipy.io

    p = check_exists(path)
    if p.stat().st_size == 0:
        raise DataError(f"{p}: empty file, not a MATLAB .mat file")
    try:
        mat = scipy.io.loadmat(p)
    except Exception as e:  # scipy raises MatReadError, ValueError, IndexError … on junk
        raise DataError(
            f"{p}: not a MATLAB .mat file, or a damaged one (v4–v7.2 are read; "
            f"{type(e).__name__}: {e})"
        ) from None
    variables = sorted(k for k in mat if not k.startswith("__"))
    missing = [k for k in ("X", "y") if k not in mat]
    if missing:
        raise DataError(
            f"{p}: no variable {' or '.join(missing)}; found {', '.join(variables) or 'nothing'}"
        )
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"])
    if x.dtype.kind not in "iufb":
        raise DataError(f"{p}: X is a MATLAB {x.dtype} array; expected a numeric matrix")
    x = x.astype(np.float64)
    if x.ndim != 2 or y.size != x.shape[0]:
        raise DataError(f"{p}: X has shape {x.shape} but y has shape {y.shape}")
    _check_examples(x, p, "X")
    check_finite(x, p, "X")
    labels = _array_labels(y, p, x.shape[0] if y.ndim == 1 else None)
    if labels.dtype.kind not in "iu":
        raise DataError(f"{p}: y holds {labels.dtype} values; expected the digit labels 1..10")
    bad = np.flatnonzero((labels < 1) | (labels > 10))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{p}: label y[{i}] = {labels[i]} is out of range 1..10 (10 means digit 0; "
            f"{bad.size} bad label(s) in all)"
        )
    return Table(x, labels % 10, str(p), None, MAT_CLASSES)


FORMATS = ("csv", "npz", "idx", "mat")
"""File formats :func:`load_file` recognises."""


def file_format(path) -> str:
    """The format of a data file, from its name: ``.npz``, ``.mat``, IDX (``-ubyte``, ``.idx``,
    with or without ``.gz``), and CSV for anything else (``.csv``, ``.data``, ``.tra`` …).

    Raises:
      DataError: ``path`` not a ``str`` or ``os.PathLike``, naming what it received.
    """
    name = check_path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(".npz"):
        return "npz"
    if name.endswith(".mat"):
        return "mat"
    if "idx" in name.rsplit(".", 1)[-1] or name.endswith("ubyte"):
        return "idx"
    return "csv"


def load_file(path, *, labels=None, label_column="last") -> Table:
    """Loads any supported file, choosing the loader by :func:`file_format`.

    Args:
      path: the data file.
      labels: the IDX labels file (required for IDX, rejected for other formats).
      label_column: CSV only: ``first``, ``last`` or a 1-based column number.

    Raises:
      DataError: as the loaders, or a labels file given for a non-IDX format / missing for IDX.
    """
    kind = file_format(path)
    if kind == "idx":
        if labels is None:
            raise DataError(f"{path}: an IDX images file needs its labels file (--labels PATH)")
        return load_idx(path, labels)
    if labels is not None:
        raise DataError(
            f"{path}: a separate labels file is only used with IDX images, not {kind} files"
        )
    if kind == "npz":
        return load_npz(path)
    if kind == "mat":
        return load_mat(path)
    return load_csv(path, label_column=label_column)
