"""A trained run, ready to use: :func:`load_run` and :class:`Run`.

A run directory's ``model.npz`` holds the final parameters of every seed (the best-validation
parameters under early stopping — those the test figures were computed with), the training
split's feature scaling (mean, scale) and the classes in the training labels' own type
(integers for integer labels, strings for named ones; :func:`classes_meta`). :class:`Run`
applies the scaling itself: give it raw features, as in the data file; it returns labels as the
data gave them, so that ``run.predict(x) == y`` compares like with like.

Example:
  >>> from jaxbp.experiment import load_run
  >>> r = load_run("runs/iris-demo")  # doctest: +SKIP
  >>> r.predict([[5.1, 3.5, 1.4, 0.2]])  # doctest: +SKIP
  array(['setosa'], dtype='<U10')
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxbp.experiment.config import TrainConfig
from jaxbp.experiment.plan import CONFIG, MODEL, MODEL_FORMAT, SUMMARY


def classes_meta(classes) -> dict:
    """What model.npz's header records about the classes (the runner writes it; :func:`load_run`
    reads it back): ``classes`` in their own type — Python integers or strings, as the dataset's
    :attr:`jaxbp.data.Dataset.classes` — and ``class_names``, the same spelled as strings, which
    files written before ``classes`` existed hold alone.

    Raises:
      ValueError: ``classes`` that are not a sequence of integers or of strings (a mix, floats,
        booleans), naming the first offending one.
    """
    classes = list(classes)

    def integer(c):
        return isinstance(c, (int, np.integer)) and not isinstance(c, bool)

    def string(c):
        return isinstance(c, str)

    integers = all(integer(c) for c in classes)
    if not integers and not all(string(c) for c in classes):
        kind = integer if integer(classes[0]) else string
        bad = next(c for c in classes if not kind(c))
        raise ValueError(
            f"classes: expected all integers or all strings, got {type(bad).__name__} {bad!r}"
        )
    own = [int(c) for c in classes] if integers else [str(c) for c in classes]
    return {"classes": own, "class_names": [str(c) for c in own]}


def _recorded_classes(meta: dict, model_path, k: int) -> tuple:
    """The classes a model file's header records: ``classes`` (their own type) where the file
    has them, else ``class_names`` (strings: a file written before ``classes`` existed).

    Raises:
      ValueError: neither key, a list of another length than the network's ``k`` outputs, or
        entries that are neither all integers nor all strings, naming the file.
    """
    for key in ("classes", "class_names"):
        if key not in meta:
            continue
        values = meta[key]
        ok = isinstance(values, list) and (
            all(isinstance(v, int) and not isinstance(v, bool) for v in values)
            or all(isinstance(v, str) for v in values)
        )
        if not ok or len(values) != k:
            raise ValueError(
                f"{model_path}: its header's {key} should be {k} integers or {k} strings, one a "
                f"network output; got {values!r:.200}"
            )
        return tuple(values)
    raise ValueError(f"{model_path}: its header records no classes (class_names)")


class Evaluation(NamedTuple):
    """What :meth:`Run.evaluate` measures.

    Attributes:
      accuracy: fraction of rows predicted correctly.
      precision, recall: per class name (the class as a string, :attr:`Run.class_names`);
        None for a class never predicted / never present.
      confusion_matrix: (K, K) counts, entry (i, j) = rows of class i predicted j.
      n: number of rows.
    """

    accuracy: float
    precision: dict
    recall: dict
    confusion_matrix: np.ndarray
    n: int


@dataclasses.dataclass(frozen=True, repr=False)
class Run:
    """One seed of a trained run.

    Attributes:
      path: the run directory.
      config: the run's resolved :class:`TrainConfig`.
      summary: summary.json's values, or None if the run did not finish writing it.
      params: that seed's parameters: for an mlp a tuple of ``Layer(W (n_out, n_in),
        b (n_out,))``, for a cnn the layers' tuple of dicts.
      seed: the training seed chosen.
      classes: the K classes in the training labels' own type (integers for integer labels,
        strings for named ones; runs written before jaxbp recorded the type: strings); class c
        is ``classes[c]``, and :meth:`predict` returns them. ``class_names`` spells them as
        strings.
      mean, scale: (n,) the training split's scaling x ↦ (x − mean) / scale.
      activation, output: the hidden activation(s) and the output layer.
      model: the network as a :class:`jaxbp.model.Model` (None: the mlp of ``params``).
      sizes: the layer widths model.npz records, features first, classes last (() unknown).

    ``repr(run)`` is one line — directory, network, seed, classes, scaling — never the weights.
    """

    path: Path
    config: TrainConfig
    summary: dict | None
    params: tuple
    seed: int
    classes: tuple
    mean: np.ndarray
    scale: np.ndarray
    activation: str | tuple[str, ...]
    output: str
    model: object = None
    sizes: tuple[int, ...] = ()

    @property
    def class_names(self) -> tuple[str, ...]:
        """The K classes as strings, for display (tables, plots, evaluation.json)."""
        return tuple(str(c) for c in self.classes)

    @property
    def num_features(self) -> int:
        return int(self.mean.shape[0])

    def __repr__(self) -> str:
        network = "-".join(map(str, self.sizes)) if self.sizes else "?"
        kind = getattr(self.config, "model", "mlp")
        shown = ", ".join(repr(c) for c in self.classes[:6])
        if len(self.classes) > 6:
            shown += f", … ({len(self.classes)} in all)"
        return (
            f"Run({str(self.path)!r}, {kind} {network}, seed {self.seed}, classes ({shown}), "
            f"scaling {getattr(self.config, 'scaling', '?')!r})"
        )

    def _features(self, x):
        """Raw features ``x`` as an (m, n) array, scaled as the training split was.

        Raises:
          ValueError: ``x`` not numbers, of another shape than (m, n) or (n,), or not finite;
            :class:`jaxbp.data.DataError` (a ValueError) for a value beyond float32's range
            after the scaling, naming ``x[i, j]`` and the value.
        """
        from jaxbp.data.split import scale_features

        given = x
        try:
            x = np.asarray(x, np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"x: expected an (m, {self.num_features}) array of numbers, got "
                f"{type(x).__name__} ({e})"
            ) from None
        if x.ndim == 0:
            raise ValueError(
                f"x: expected an (m, {self.num_features}) array of features, got "
                f"{type(given).__name__} {given!r:.100}"
            )
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"x: expected (m, {self.num_features}) features as in the training data, "
                f"got shape {x.shape}"
            )
        bad = np.argwhere(~np.isfinite(x))
        if bad.size:
            i, j = (int(v) for v in bad[0])
            raise ValueError(f"x[{i}, {j}]: non-finite feature value {x[i, j]} ({len(bad)} in all)")
        return scale_features(x, self.mean, self.scale, self._scaling, lambda i, j: f"x[{i}, {j}]")

    @property
    def _scaling(self) -> str:
        return getattr(self.config, "scaling", "training")

    def check_features(self, x: np.ndarray, where) -> None:
        """Refuses raw features that the run's scaling takes beyond float32's range.

        Args:
          x: (m, n) raw features, finite.
          where: ``where(i, j)`` names value (i, j) for the message (file, line, column).

        Raises:
          jaxbp.data.DataError: the first such value, named by ``where``, with what it scales
            to.
        """
        from jaxbp.data.split import scale_features

        scale_features(x, self.mean, self.scale, self._scaling, where)

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
        """(m,) predicted labels for raw features, in the training labels' own type: an
        integer array for integer labels (digits, a CSV of numbered classes), strings for named
        ones — ``classes[c]`` of each predicted class c, as scikit-learn's ``classes_``."""
        labels = np.asarray(self.classes)
        return labels[self.predict_index(x)]

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
          jaxbp.data.DataError: ``path`` not a path; as the loaders; a feature count other
            than the run's; a value the run's scaling takes beyond float32's range (naming the
            file, line and column — or example and feature — and the value); a label that is
            not one of the run's classes (naming the file and line).
        """
        from jaxbp.data import DataError, file_format, load_file, read_idx
        from jaxbp.data.files import check_path

        check_path(path, "path")
        n = self.num_features
        if not need_labels and labels is None and file_format(path) == "idx":
            images = read_idx(path)
            x, table = images.reshape(images.shape[0], -1).astype(np.float64), None

            def where(i, j):
                return f"{path}, example {i}, feature {j}"

        elif file_format(path) == "csv" and _csv_width(path) == n:
            if need_labels:
                raise DataError(
                    f"{path}: {n} fields a row, the features alone; evaluating needs a label "
                    f"column too ({self.config.label_column})"
                )
            x, lines, table = *_features_csv(path), None

            def where(i, j):
                return f"{path}, line {lines[i]}, column {j + 1}"

        else:
            table = load_file(path, labels=labels, label_column=self.config.label_column)
            x, where = table.x, table.where_value
        if x.shape[1] != n:
            raise DataError(f"{path}: {x.shape[1]} features a row, but the run was trained on {n}")
        self.check_features(x, where)
        if table is None:
            return x, None
        names = table.class_names
        lookup = {name: c for c, name in enumerate(self.class_names)}
        y = np.empty(len(table.labels), np.int64)
        for i, label in enumerate(table.labels.tolist()):
            declared = names is not None and isinstance(label, int)
            name = str(names[label]) if declared else str(label)
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


def _features_csv(path) -> tuple[np.ndarray, list[int]]:
    """A CSV of features only: every field a finite number; a non-numeric first line is a
    header. Returns the (m, n) features and each row's 1-based line number. Raises DataError
    naming the line and column (and the value)."""
    from jaxbp.data import DataError

    rows, lines = [], []
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
        bad = [j for j, v in enumerate(row) if not np.isfinite(v)]
        if bad:
            j = bad[0]
            raise DataError(
                f"{path}, line {number}, column {j + 1}: non-finite value {fields[j]!r}"
            )
        rows.append(row)
        lines.append(number)
    if not rows:
        raise DataError(f"{path}: no data rows")
    return np.asarray(rows, np.float64), lines


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_run(run_dir, seed: int | None = None) -> Run:
    """Loads a finished run directory for prediction.

    Args:
      run_dir: the run directory written by :func:`jaxbp.experiment.run` / ``jaxbp train``
        (a ``str`` or ``os.PathLike``).
      seed: which training seed of a multi-seed run (default: the best validation accuracy,
        the first seed on a tie or without a validation split).

    Returns:
      A :class:`Run`; it predicts labels in the training labels' own type (:attr:`Run.classes`).

    Raises:
      FileNotFoundError: no such directory, or no model.npz / config.toml in it (a run that
        did not finish, or one written before model.npz existed), naming the path and the
        ``run_dir`` received.
      ValueError: ``run_dir`` not a path or ``seed`` not an integer (naming the argument and
        the value received); an unreadable or damaged model file, config.toml or summary.json
        (naming the file: summary.json that is not valid JSON says so, with where); a seed the
        run did not train.

    Example:
      >>> r = load_run("runs/iris-demo")  # doctest: +SKIP
      >>> r.seed, r.classes  # doctest: +SKIP
      (0, ('setosa', 'versicolor', 'virginica'))
    """
    from jaxbp import checkpoint
    from jaxbp.experiment.network import from_description, params_template

    if not isinstance(run_dir, (str, os.PathLike)):
        raise ValueError(
            f"run_dir: expected a run directory's path (str or os.PathLike), got "
            f"{type(run_dir).__name__} {run_dir!r:.200}"
        )
    if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool)):
        raise ValueError(f"seed: expected an integer or None, got {type(seed).__name__} {seed!r}")
    path = Path(run_dir)
    received = f"run_dir {str(run_dir)!r}"
    if not path.is_dir():
        what = "not a directory" if path.exists() else "no such run directory"
        raise FileNotFoundError(f"{path}: {what} ({received})")
    model_path = path / MODEL
    if not model_path.is_file():
        raise FileNotFoundError(
            f"{model_path}: no such file; the run did not finish (resume it) or predates {MODEL}"
        )
    if not (path / CONFIG).is_file():
        raise FileNotFoundError(f"{path / CONFIG}: no such file")
    try:
        meta = checkpoint.read_meta(model_path)
    except checkpoint.CheckpointError as e:
        raise ValueError(str(e)) from None
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        raise ValueError(f"{model_path}: not a {MODEL_FORMAT} file")
    try:
        sizes, seeds = [int(v) for v in meta["sizes"]], list(meta["seeds"])
        dtype = np.dtype(meta["dtype"])
        activation, output = meta["activation"], meta["output"]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(
            f"{model_path}: a damaged header, {type(e).__name__} {e} reading sizes, seeds, dtype, "
            "activation and output"
        ) from None
    if len(sizes) < 2 or not seeds:
        raise ValueError(f"{model_path}: a damaged header: sizes {sizes}, seeds {seeds}")
    classes = _recorded_classes(meta, model_path, sizes[-1])
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
        raise ValueError(f"seed: {seed} is not a seed of {path} (seeds {seeds})")
    try:
        config = TrainConfig.from_toml(path / CONFIG)
    except OSError as e:
        raise ValueError(f"{path / CONFIG}: cannot be read ({e.strerror or e})") from None
    return Run(
        path=path,
        config=config,
        summary=_read_summary(path / SUMMARY),
        params=_seed(tree["params"], index),
        seed=seeds[index],
        classes=classes,
        mean=tree["mean"],
        scale=tree["scale"],
        activation=activation if isinstance(activation, str) else tuple(activation),
        output=output,
        model=model,
        sizes=tuple(sizes),
    )


def _read_summary(path: Path) -> dict | None:
    """summary.json's values, or None when the run has none (it did not finish writing it).

    Raises:
      ValueError: a file that cannot be read, is not valid JSON (where it fails) or not a JSON
        object, naming it.
    """
    if not path.exists():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else e.reason
        raise ValueError(f"{path}: cannot be read ({reason or e})") from None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); a damaged "
            "summary; remove it to load the model (model.npz) without it"
        ) from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a JSON object, got a {type(values).__name__}")
    return values


def _seed(params, index: int):
    """One seed's copy of parameters stored with a leading seed axis."""
    import jax

    return jax.tree.map(lambda a: a[index], params)
