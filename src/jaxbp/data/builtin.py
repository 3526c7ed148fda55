"""Built-in datasets: scikit-learn's bundled iris, wine and digits; MNIST-1D generated locally;
and two synthetic K-class generators, spirals and blobs.

None of them downloads anything: scikit-learn ships iris, wine and digits inside the package, and
MNIST-1D is built by the ``mnist1d`` package's ``make_dataset`` from its templates (its
``get_dataset`` would download a pickle or write one to the working directory; it is not used).
"""

from __future__ import annotations

import os
import random
from typing import NamedTuple

import numpy as np

from jaxbp.data.files import DataError, Table, check_count

BUILTIN = ("iris", "wine", "digits", "mnist1d", "spirals", "blobs")
"""Names accepted by :func:`load_builtin`."""

SYNTHETIC = ("spirals", "blobs")
"""The generated datasets; they take ``classes``, ``samples`` and a seed."""

SYNTHETIC_DEFAULTS = {"spirals": (3, 600), "blobs": (4, 600)}
"""(classes, samples) of each synthetic dataset when not given."""

SYNTHETIC_FEATURES = 2
"""Spirals and blobs are points of the plane."""


class Shape(NamedTuple):
    """What a built-in dataset is, known without loading it: enough for the config's rules
    (the default batch size, the network's memory) to be decided before any data are read.

    Attributes:
      class_counts: examples of each class in the part the splits are drawn from — the whole
        dataset, or its training part when it has its own test split.
      features: the number of features of an example.
      own_test: whether the dataset comes with its own test split (MNIST-1D).
    """

    class_counts: tuple[int, ...]
    features: int
    own_test: bool = False


SHAPES = {
    "iris": Shape((50, 50, 50), 4),
    "wine": Shape((59, 71, 48), 13),
    "digits": Shape((178, 182, 177, 183, 181, 182, 181, 179, 174, 180), 64),
    "mnist1d": Shape((398, 396, 411, 394, 394, 402, 401, 404, 402, 398), 40, own_test=True),
}
"""The fixed datasets' shapes (scikit-learn's bundled files; MNIST-1D's 4000 training sequences
with the package's default arguments); tests/test_data.py checks them against the loaded data."""

LOAD_COPIES = 8
"""Loading, splitting and scaling a dataset hold up to about this many float64 copies of its
features at once (measured: 104 bytes an example for spirals' two features, 16 bytes a copy)."""


def shape(name: str, *, classes: int | None = None, samples: int | None = None) -> Shape:
    """The :class:`Shape` of built-in dataset ``name``; for spirals and blobs, that of
    ``classes`` classes of ``samples`` examples in all (their defaults when None)."""
    if name in SYNTHETIC:
        default_classes, default_samples = SYNTHETIC_DEFAULTS[name]
        k = default_classes if classes is None else classes
        m = default_samples if samples is None else samples
        return Shape(tuple(_per_class(m, k)), SYNTHETIC_FEATURES)
    return SHAPES[name]


def machine_memory() -> int:
    """This machine's physical memory in bytes (POSIX ``sysconf``: Linux and macOS, where jaxbp
    runs)."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def gib(nbytes: float) -> str:
    """``nbytes`` for a message: '23.3 GiB', '1.6e+04 GiB'."""
    value = nbytes / 2**30
    return f"{value:.3g} GiB" if value < 1e4 else f"{value:.2g} GiB"


def samples_limit(features: int = SYNTHETIC_FEATURES) -> int:
    """The most examples of ``features`` features this machine can load, split and scale:
    :data:`LOAD_COPIES` float64 copies of them must fit in its memory."""
    return machine_memory() // (LOAD_COPIES * 8 * features)


def check_classes_samples(name: str, classes: int, samples: int) -> None:
    """The bounds of a synthetic dataset's size, each error naming the argument and its value.

    Raises:
      DataError: fewer than 2 classes; fewer examples than classes (every class needs one);
        more examples than the machine's memory holds while loading them (the limit named).
    """
    for arg, value in (("classes", classes), ("samples", samples)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise DataError(f"{arg}: expected an integer, got {type(value).__name__} {value!r}")
    if classes < 2:
        raise DataError(f"classes: need at least 2, got {classes}")
    if samples < classes:
        raise DataError(
            f"samples: need at least one example per class, {classes} for {name}'s {classes} "
            f"classes, got {samples}"
        )
    limit = samples_limit()
    if samples > limit:
        need = samples * LOAD_COPIES * 8 * SYNTHETIC_FEATURES
        raise DataError(
            f"samples: at most {limit} on this machine, got {samples}: loading, splitting and "
            f"scaling {name} holds about {LOAD_COPIES} float64 copies of its features, "
            f"{gib(need)}, more than its {gib(machine_memory())} of memory"
        )


def _sklearn(name: str) -> Table:
    from sklearn import datasets

    bunch = {
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "digits": datasets.load_digits,
    }[name]()
    names = tuple(s.item() for s in bunch.target_names)  # strings; digits' are its integers
    images = getattr(bunch, "images", None)  # digits: (m, 8, 8), the rows of data in C order
    return Table(
        np.asarray(bunch.data, np.float64),
        np.asarray(bunch.target, np.int64),
        f"sklearn.datasets.load_{name}",
        None,
        names,
        None if images is None else (*images.shape[1:], 1),
    )


def mnist1d() -> tuple[Table, Table]:
    """MNIST-1D (Greydanus 2020) with the package's default arguments: 4000 training and 1000
    test sequences of length 40, 10 classes.

    ``make_dataset`` seeds NumPy's and Python's global generators; their states are restored
    afterwards so that loading the data leaves no trace on the caller's randomness.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    names = tuple(range(10))
    source = "mnist1d.make_dataset (default args)"
    train = Table(np.asarray(d["x"], np.float64), np.asarray(d["y"], np.int64), source, None, names)
    test = Table(
        np.asarray(d["x_test"], np.float64), np.asarray(d["y_test"], np.int64), source, None, names
    )
    return train, test


def _per_class(samples: int, classes: int) -> list[int]:
    return [samples // classes + (c < samples % classes) for c in range(classes)]


def spirals(*, classes: int, samples: int, seed: int) -> Table:
    """K interleaved 2-D spiral arms (the classic non-linearly-separable toy problem).

    Arm c: radius r ∈ [0, 1], angle t = 4(c + r) + 0.2 ε, point r (sin t, cos t), ε ~ N(0, 1).
    """
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c, n in enumerate(_per_class(samples, classes)):
        r = np.linspace(0.0, 1.0, n)
        t = 4.0 * (c + r) * (3.0 / classes) + 0.2 * rng.standard_normal(n)
        xs.append(np.stack([r * np.sin(t), r * np.cos(t)], axis=1))
        ys.append(np.full(n, c))
    names = tuple(f"arm{c}" for c in range(classes))
    return Table(np.concatenate(xs), np.concatenate(ys).astype(np.int64), "spirals", None, names)


def blobs(*, classes: int, samples: int, seed: int, features: int = 2) -> Table:
    """K isotropic Gaussian blobs, unit variance, centres uniform in [−4, 4]^n."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-4.0, 4.0, size=(classes, features))
    xs, ys = [], []
    for c, n in enumerate(_per_class(samples, classes)):
        xs.append(centres[c] + rng.standard_normal((n, features)))
        ys.append(np.full(n, c))
    names = tuple(f"blob{c}" for c in range(classes))
    return Table(np.concatenate(xs), np.concatenate(ys).astype(np.int64), "blobs", None, names)


def load_builtin(
    name: str, *, seed: int = 0, classes: int | None = None, samples: int | None = None
) -> tuple[Table, Table | None]:
    """A built-in dataset as (training table, test table or None when it has no own test split).

    Args:
      name: one of :data:`BUILTIN`.
      seed: the generator seed of spirals and blobs.
      classes, samples: K and the total number of examples, for spirals and blobs only.

    Raises:
      DataError: an unknown name (listing the valid ones); a seed that is not an integer ≥ 0;
        classes/samples for a dataset that does not take them, or out of
        :func:`check_classes_samples`' bounds.
    """
    if not isinstance(name, str) or name not in BUILTIN:
        raise DataError(f"dataset: unknown {name!r}; valid datasets are {', '.join(BUILTIN)}")
    if name not in SYNTHETIC:
        for flag, value in (("classes", classes), ("samples", samples)):
            if value is not None:
                raise DataError(
                    f"{flag}: only the synthetic datasets ({', '.join(SYNTHETIC)}) take it, "
                    f"not {name}"
                )
        if name == "mnist1d":
            return mnist1d()
        return _sklearn(name), None
    check_count(seed, "seed")
    default_classes, default_samples = SYNTHETIC_DEFAULTS[name]
    classes = default_classes if classes is None else classes
    samples = default_samples if samples is None else samples
    check_classes_samples(name, classes, samples)
    make = spirals if name == "spirals" else blobs
    return make(classes=classes, samples=samples, seed=seed), None
