"""Time to accuracy: in-process wall time, compile included, to reach 97 % test accuracy on the
digits dataset with hand-derived gradients — beside scikit-learn's ``MLPClassifier.fit`` on the
same split and architecture.

Both fit the training and validation splits of :func:`jaxbp.data.load_dataset` (``digits``,
seed 0; neither uses the validation split for anything else) and are scored on its test split.
The architecture is scikit-learn's default, 64-100-10 with relu. scikit-learn runs with its
defaults (Adam, lr 1e-3, batches of 200, stopping on its own tolerance); its fit time is the
whole ``fit``. jaxbp trains with the runner's compiled epoch (:func:`jaxbp.train.make_epoch`:
Adam, lr 1e-2, shuffled batches of 64, one ``lax.scan``) and checks test accuracy after every
epoch — one host sync per epoch — stopping at the first epoch at or above the target. The clock
starts before anything is compiled.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp

TARGET = 0.97
HIDDEN = (100,)
ACTIVATION = "relu"


def load_digits_split(seed: int = 0):
    """(x_fit, y_fit, x_test, y_test) as float64/int32 numpy arrays: train + validation, test."""
    from jaxbp.data import load_dataset

    ds = load_dataset("digits", seed=seed)
    x_fit = np.concatenate([ds.x_train, ds.x_val])
    y_fit = np.concatenate([ds.y_train, ds.y_val])
    return x_fit, y_fit, ds.x_test, ds.y_test, ds.split


def jaxbp_time_to_accuracy(
    x_fit,
    y_fit,
    x_test,
    y_test,
    *,
    dtype=jnp.float32,
    target: float = TARGET,
    seed: int = 0,
    lr: float = 1e-2,
    batch_size: int = 64,
    max_epochs: int = 200,
) -> dict:
    """Trains 64-100-10 relu with hand-derived gradients until test accuracy ≥ ``target``.

    The epoch is :func:`jaxbp.train.make_epoch` (the runner's compiled epoch, gradient source
    ``manual``: :func:`jaxbp.value_and_grad`), followed in the same ``jit`` by the test accuracy.

    Returns:
      dict with ``wall_s`` (to the first epoch at target, compile included), ``compile_s``
      (to the end of the first epoch, whose call compiles), ``epochs``, ``test_accuracy``,
      ``reached``, ``optimizer``.
    """
    from jaxbp.data import one_hot
    from jaxbp.optim import make_optimizer
    from jaxbp.train import gradient_source, init_state, make_epoch

    t0 = time.perf_counter()
    k = int(np.max(y_fit)) + 1
    sizes = (x_fit.shape[1], *HIDDEN, k)
    optimizer = make_optimizer("adam", lr=lr)
    kw = dict(activation=ACTIVATION, output="softmax_ce")
    epoch = make_epoch(optimizer, gradient_source("manual"), batch_size=batch_size, **kw)
    x_fit = jnp.asarray(x_fit, dtype)
    y_fit = jnp.asarray(one_hot(y_fit, k), dtype)
    x_test, y_test = jnp.asarray(x_test, dtype), jnp.asarray(y_test, jnp.int32)

    @functools.partial(jax.jit, donate_argnums=0)
    def train_and_test(state):
        state, _ = epoch(state, x_fit, y_fit)
        y_hat = jaxbp.predict(state.params, x_test, **kw)
        return state, jnp.mean(jnp.argmax(y_hat, axis=1) == y_test)

    state = init_state(jax.random.key(seed), sizes, optimizer, dtype=dtype)
    compile_s, accuracy, epochs = None, 0.0, 0
    while accuracy < target and epochs < max_epochs:
        state, acc = train_and_test(state)
        accuracy = float(acc)  # the epoch's one host sync
        epochs += 1
        if compile_s is None:
            compile_s = time.perf_counter() - t0
    return {
        "wall_s": time.perf_counter() - t0,
        "compile_s": compile_s,
        "epochs": epochs,
        "test_accuracy": accuracy,
        "reached": accuracy >= target,
        "optimizer": f"adam(lr={lr}), batch {batch_size} (jaxbp.train.make_epoch)",
    }


def sklearn_fit_time(x_fit, y_fit, x_test, y_test, *, dtype=np.float32, seed: int = 0) -> dict:
    """``MLPClassifier(hidden_layer_sizes=(100,), activation="relu").fit`` wall time and score."""
    from sklearn.neural_network import MLPClassifier

    x_fit, x_test = np.asarray(x_fit, dtype), np.asarray(x_test, dtype)
    clf = MLPClassifier(hidden_layer_sizes=HIDDEN, activation=ACTIVATION, random_state=seed)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter is part of its default
        clf.fit(x_fit, y_fit)
    wall = time.perf_counter() - t0
    accuracy = float(clf.score(x_test, y_test))
    return {
        "wall_s": wall,
        "epochs": int(clf.n_iter_),
        "test_accuracy": accuracy,
        "reached": accuracy >= TARGET,
        "optimizer": "sklearn defaults: adam(lr=1e-3), batch 200",
    }


def time_to_accuracy(
    *, dtype=jnp.float32, seed: int = 0, log: Callable[[str], None] = lambda _: None
) -> dict:
    """Both runs (module docstring); ``ratio`` is jaxbp's time over scikit-learn's fit time.

    Returns:
      dict with ``target``, ``setup``, ``runs`` (name → run dict) and ``ratio`` (None when
      scikit-learn is missing or jaxbp did not reach the target).
    """
    from jaxbp.bench.peers import installed

    x_fit, y_fit, x_test, y_test, split = load_digits_split(seed)
    setup = f"64-100-10 relu, {x_fit.shape[0]} training rows, {x_test.shape[0]} test rows, {split}"
    log("  jaxbp (hand-derived)")
    runs = {
        "jaxbp hand-derived": jaxbp_time_to_accuracy(
            x_fit, y_fit, x_test, y_test, dtype=dtype, seed=seed
        )
    }
    ratio = None
    if installed("sklearn"):
        log("  scikit-learn MLPClassifier.fit")
        runs["sklearn MLPClassifier.fit"] = sklearn_fit_time(
            x_fit,
            y_fit,
            x_test,
            y_test,
            dtype=np.dtype(dtype.name if hasattr(dtype, "name") else dtype),
            seed=seed,
        )
        if runs["jaxbp hand-derived"]["reached"]:
            ratio = (
                runs["jaxbp hand-derived"]["wall_s"] / runs["sklearn MLPClassifier.fit"]["wall_s"]
            )
    return {"target": TARGET, "setup": setup, "runs": runs, "ratio": ratio}
