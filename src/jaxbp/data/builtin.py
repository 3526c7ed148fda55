"""Built-in datasets: scikit-learn's bundled iris, wine and digits; MNIST-1D generated locally;
and two synthetic K-class generators, spirals and blobs.

None of them downloads anything: scikit-learn ships iris, wine and digits inside the package, and
MNIST-1D is built by the ``mnist1d`` package's ``make_dataset`` from its templates (its
``get_dataset`` would download a pickle or write one to the working directory; it is not used).
"""

from __future__ import annotations

import random

import numpy as np

from jaxbp.data.files import DataError, Table

BUILTIN = ("iris", "wine", "digits", "mnist1d", "spirals", "blobs")
"""Names accepted by :func:`load_builtin`."""

SYNTHETIC = ("spirals", "blobs")
"""The generated datasets; they take ``classes``, ``samples`` and a seed."""

SYNTHETIC_DEFAULTS = {"spirals": (3, 600), "blobs": (4, 600)}
"""(classes, samples) of each synthetic dataset when not given."""


def _sklearn(name: str) -> Table:
    from sklearn import datasets

    bunch = {
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "digits": datasets.load_digits,
    }[name]()
    names = tuple(str(s) for s in bunch.target_names)
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
    names = tuple(str(c) for c in range(10))
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
      DataError: an unknown name (listing the valid ones); classes/samples for a dataset that
        does not take them, or not positive.
    """
    if name not in BUILTIN:
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
    default_classes, default_samples = SYNTHETIC_DEFAULTS[name]
    classes = default_classes if classes is None else classes
    samples = default_samples if samples is None else samples
    if classes < 2:
        raise DataError(f"classes: need at least 2, got {classes}")
    if samples < 1:
        raise DataError(f"samples: need at least 1, got {samples}")
    make = spirals if name == "spirals" else blobs
    return make(classes=classes, samples=samples, seed=seed), None
