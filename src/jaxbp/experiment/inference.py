"""A trained run, ready to use: :func:`load_run` and :class:`Run`.

A run directory's ``model.npz`` holds the final parameters of every seed (the best-validation
parameters under early stopping — those the test figures were computed with), the training
split's feature scaling (mean, scale) and the class names. :class:`Run` applies the scaling
itself: give it raw features, as in the data file.

Example:
  >>> from jaxbp.experiment import load_run
  >>> r = load_run("runs/iris-demo")  # doctest: +SKIP
  >>> r.predict([[5.1, 3.5, 1.4, 0.2]])  # doctest: +SKIP
  array(['setosa'], dtype='<U10')
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxbp.experiment.config import TrainConfig
from jaxbp.experiment.plan import CONFIG, MODEL, MODEL_FORMAT, SUMMARY


class Evaluation(NamedTuple):
    """What :meth:`Run.evaluate` measures.

    Attributes:
      accuracy: fraction of rows predicted correctly.
      precision, recall: per class name; None for a class never predicted / never present.
      confusion_matrix: (K, K) counts, entry (i, j) = rows of class i predicted j.
      n: number of rows.
    """

    accuracy: float
    precision: dict
    recall: dict
    confusion_matrix: np.ndarray
    n: int


@dataclasses.dataclass(frozen=True)
class Run:
    """One seed of a trained run.

    Attributes:
      path: the run directory.
      config: the run's resolved :class:`TrainConfig`.
      summary: summary.json's values, or None if the run did not finish writing it.
      params: that seed's parameters: for an mlp a tuple of ``Layer(W (n_out, n_in),
        b (n_out,))``, for a cnn the layers' tuple of dicts.
      seed: the training seed chosen.
      class_names: K names; class c is ``class_names[c]``.
      mean, scale: (n,) the training split's scaling x ↦ (x − mean) / scale.
      activation, output: the hidden activation(s) and the output layer.
      model: the network as a :class:`jaxbp.model.Model` (None: the mlp of ``params``).
    """

    path: Path
    config: TrainConfig
    summary: dict | None
    params: tuple
    seed: int
    class_names: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    activation: str | tuple[str, ...]
    output: str
    model: object = None

    @property
    def num_features(self) -> int:
        return int(self.mean.shape[0])

    def _features(self, x):
        x = np.asarray(x, np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"x: expected (m, {self.num_features}) features as in the training data, "
                f"got shape {x.shape}"
            )
        if not np.all(np.isfinite(x)):
            raise ValueError("x: non-finite feature values")
        return (x - self.mean) / self.scale

    def predict_proba(self, x) -> np.ndarray:
        """(m, K) output-layer values ŷ (class probabilities for ``softmax_ce``) for raw
        features ``x`` (m, n); the training split's scaling is applied here."""
        import jax
        import jax.numpy as jnp

        from jaxbp.losses import get_output
        from jaxbp.model import mlp

        model = self.model or mlp(activation=self.activation, output=self.output)
        dtype = jax.tree.leaves(self.params)[0].dtype
        features = jnp.asarray(self._features(x), dtype)
        z = model.logits(self.params, features)
        return np.asarray(get_output(self.output).link(z), np.float64)

    def predict_index(self, x) -> np.ndarray:
        """(m,) class indices in [0, K): the largest output of each row."""
        return np.argmax(self.predict_proba(x), axis=-1)

    def predict(self, x) -> np.ndarray:
        """(m,) predicted labels (class names, as in the training data) for raw features."""
        return np.asarray(self.class_names)[self.predict_index(x)]

    def evaluate(self, x, y) -> Evaluation:
        """Accuracy, per-class precision and recall and the confusion matrix on raw features
        ``x`` (m, n) with true class indices ``y`` (m,) (see :meth:`read_data`)."""
        from jaxbp.train import confusion_matrix

        y = np.asarray(y, np.int64)
        k = len(self.class_names)
        matrix = confusion_matrix(y, self.predict_index(x), k)
        correct = np.diag(matrix).astype(np.float64)
        predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
        return Evaluation(
            accuracy=float(correct.sum() / max(matrix.sum(), 1)),
            precision={
                n: (float(correct[c] / predicted[c]) if predicted[c] else None)
                for c, n in enumerate(self.class_names)
            },
            recall={
                n: (float(correct[c] / actual[c]) if actual[c] else None)
                for c, n in enumerate(self.class_names)
            },
            confusion_matrix=matrix,
            n=int(matrix.sum()),
        )

    def read_data(self, path, *, labels=None, need_labels: bool = True):
        """Raw features (and true class indices) from a data file in any format ``jaxbp train``
        reads, with the run's CSV label column. Without ``need_labels``, a CSV of features only
        (exactly ``num_features`` numbers a row) and IDX images without a labels file are
        accepted too.

        Returns:
          ``(x, y)``: (m, n) float64 features and (m,) class indices of this run's classes, or
          None for ``y`` when the file has no labels.

        Raises:
          jaxbp.data.DataError: as the loaders; a feature count other than the run's; a label
            that is not one of the run's classes (naming the file and line).
        """
        from jaxbp.data import DataError, file_format, load_file, read_idx

        n = self.num_features
        if not need_labels and labels is None and file_format(path) == "idx":
            images = read_idx(path)
            x, table = images.reshape(images.shape[0], -1).astype(np.float64), None
        elif file_format(path) == "csv" and _csv_width(path) == n:
            if need_labels:
                raise DataError(
                    f"{path}: {n} fields a row, the features alone; evaluating needs a label "
                    f"column too ({self.config.label_column})"
                )
            x, table = _features_csv(path), None
        else:
            table = load_file(path, labels=labels, label_column=self.config.label_column)
            x = table.x
        if x.shape[1] != n:
            raise DataError(f"{path}: {x.shape[1]} features a row, but the run was trained on {n}")
        if table is None:
            return x, None
        names = table.class_names
        lookup = {name: c for c, name in enumerate(self.class_names)}
        y = np.empty(len(table.labels), np.int64)
        for i, label in enumerate(table.labels.tolist()):
            name = names[label] if names is not None and isinstance(label, int) else str(label)
            if name not in lookup:
                raise DataError(
                    f"{table.where(i)}: label {name!r} is not a class of the run "
                    f"({', '.join(self.class_names)})"
                )
            y[i] = lookup[name]
        return x, y


def _data_lines(path):
    """(line number, fields) of each data line of a delimited text file, the delimiter judged
    as :func:`jaxbp.data.load_csv` does (comma, else semicolon, else whitespace)."""
    from jaxbp.data import DataError

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    delimiter = ""
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if delimiter == "":
            delimiter = "," if "," in line else ";" if ";" in line else None
        yield number, [f.strip() for f in line.split(delimiter)]


def _csv_width(path) -> int | None:
    """The number of fields of a CSV file's first data line (None: empty or unreadable)."""
    from jaxbp.data import DataError

    try:
        for _, fields in _data_lines(path):
            return len(fields)
    except DataError:
        return None
    return None


def _features_csv(path) -> np.ndarray:
    """A CSV of features only: every field a finite number; a non-numeric first line is a
    header. Raises DataError naming the line and column."""
    from jaxbp.data import DataError

    rows = []
    for number, fields in _data_lines(path):
        try:
            row = [float(f) for f in fields]
        except ValueError:
            if not rows and not any(_is_number(f) for f in fields):
                continue  # header
            bad = next(i for i, f in enumerate(fields) if not _is_number(f))
            raise DataError(
                f"{path}, line {number}, column {bad + 1}: cannot parse {fields[bad]!r}"
            ) from None
        if rows and len(row) != len(rows[0]):
            raise DataError(f"{path}, line {number}: {len(row)} fields, expected {len(rows[0])}")
        if not all(np.isfinite(row)):
            raise DataError(f"{path}, line {number}: non-finite value")
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no data rows")
    return np.asarray(rows, np.float64)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_run(path, seed: int | None = None) -> Run:
    """Loads a finished run directory for prediction.

    Args:
      path: the run directory written by :func:`jaxbp.experiment.run` / ``jaxbp train``.
      seed: which training seed of a multi-seed run (default: the best validation accuracy,
        the first seed on a tie or without a validation split).

    Returns:
      A :class:`Run`.

    Raises:
      FileNotFoundError: no such directory, or no model.npz / config.toml in it (a run that
        did not finish, or one written before model.npz existed).
      ValueError: an unreadable model file, or a seed the run did not train, naming them.

    Example:
      >>> r = load_run("runs/iris-demo")  # doctest: +SKIP
      >>> r.seed, r.class_names  # doctest: +SKIP
      (0, ('setosa', 'versicolor', 'virginica'))
    """
    from jaxbp import checkpoint
    from jaxbp.experiment.network import from_description, params_template

    run_dir = Path(path)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    model_path = run_dir / MODEL
    if not model_path.is_file():
        raise FileNotFoundError(
            f"{model_path}: no such file; the run did not finish (resume it) or predates {MODEL}"
        )
    if not (run_dir / CONFIG).is_file():
        raise FileNotFoundError(f"{run_dir / CONFIG}: no such file")
    try:
        meta = checkpoint.read_meta(model_path)
    except checkpoint.CheckpointError as e:
        raise ValueError(str(e)) from None
    if meta.get("format") != MODEL_FORMAT:
        raise ValueError(f"{model_path}: not a {MODEL_FORMAT} file")
    sizes, seeds, dtype = meta["sizes"], meta["seeds"], np.dtype(meta["dtype"])
    if dtype == np.float64:
        import jax

        jax.config.update("jax_enable_x64", True)
    try:
        model = from_description(meta, dtype)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{model_path}: the network it describes cannot be built ({e})") from None
    template = {
        "params": params_template(model, len(seeds)),
        "mean": np.zeros(sizes[0]),
        "scale": np.zeros(sizes[0]),
    }
    try:
        tree, _ = checkpoint.load(model_path, template)
    except checkpoint.CheckpointError as e:
        raise ValueError(str(e)) from None
    if seed is None:
        val = meta.get("val_accuracies")
        index = int(np.argmax(val)) if val and all(v is not None for v in val) else 0
    elif seed in seeds:
        index = seeds.index(seed)
    else:
        raise ValueError(f"seed: {seed} is not a seed of {run_dir} (seeds {seeds})")
    summary = None
    if (run_dir / SUMMARY).is_file():
        summary = json.loads((run_dir / SUMMARY).read_text(encoding="utf-8"))
    activation = meta["activation"]
    return Run(
        path=run_dir,
        config=TrainConfig.from_toml(run_dir / CONFIG),
        summary=summary,
        params=_seed(tree["params"], index),
        seed=seeds[index],
        class_names=tuple(meta["class_names"]),
        mean=tree["mean"],
        scale=tree["scale"],
        activation=activation if isinstance(activation, str) else tuple(activation),
        output=meta["output"],
        model=model,
    )


def _seed(params, index: int):
    """One seed's copy of parameters stored with a leading seed axis."""
    import jax

    return jax.tree.map(lambda a: a[index], params)
