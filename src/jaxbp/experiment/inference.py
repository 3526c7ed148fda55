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

import numpy as np

from jaxbp.experiment.config import TrainConfig
from jaxbp.experiment.runner import CONFIG, MODEL, MODEL_FORMAT, SUMMARY


@dataclasses.dataclass(frozen=True)
class Run:
    """One seed of a trained run.

    Attributes:
      path: the run directory.
      config: the run's resolved :class:`TrainConfig`.
      summary: summary.json's values, or None if the run did not finish writing it.
      params: that seed's parameters, a tuple of ``Layer(W (n_out, n_in), b (n_out,))``.
      seed: the training seed chosen.
      class_names: K names; class c is ``class_names[c]``.
      mean, scale: (n,) the training split's scaling x ↦ (x − mean) / scale.
      activation, output: the hidden activation(s) and the output layer.
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
        import jax.numpy as jnp

        from jaxbp.forward import forward

        dtype = self.params[0].W.dtype
        z = jnp.asarray(self._features(x), dtype)
        cache = forward(self.params, z, activation=self.activation, output=self.output)
        return np.asarray(cache.a[-1], np.float64)

    def predict_index(self, x) -> np.ndarray:
        """(m,) class indices in [0, K): the largest output of each row."""
        return np.argmax(self.predict_proba(x), axis=-1)

    def predict(self, x) -> np.ndarray:
        """(m,) predicted labels (class names, as in the training data) for raw features."""
        return np.asarray(self.class_names)[self.predict_index(x)]


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
    from jaxbp.params import Layer

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
    s = len(seeds)
    template = {
        "params": tuple(
            Layer(np.zeros((s, o, i), dtype), np.zeros((s, o), dtype))
            for i, o in zip(sizes[:-1], sizes[1:], strict=True)
        ),
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
        params=tuple(Layer(layer.W[index], layer.b[index]) for layer in tree["params"]),
        seed=seeds[index],
        class_names=tuple(meta["class_names"]),
        mean=tree["mean"],
        scale=tree["scale"],
        activation=activation if isinstance(activation, str) else tuple(activation),
        output=meta["output"],
    )
