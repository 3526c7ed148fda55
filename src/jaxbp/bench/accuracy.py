"""Time to accuracy: in-process wall time, compile included, to reach 97 % test accuracy on the
digits dataset with hand-derived gradients — beside scikit-learn's ``MLPClassifier.fit`` on the
same split and architecture.

Both fit the training and validation splits of :func:`jaxbp.data.load_dataset` (``digits``,
seed 0; neither uses the validation split for anything else) and are scored on its test split.
The architecture is the one ``jaxbp train`` fits to digits by default, 64-256-10 with relu.
scikit-learn runs ``MLPClassifier(hidden_layer_sizes=(256,), activation="relu")`` with its
defaults otherwise (Adam, lr 1e-3, batches of 200, alpha 1e-4, stopping on its own tolerance);
its fit time is the whole ``fit``, its own initialisation included. jaxbp starts from its
``glorot`` initialisation and trains with the runner's epoch (:func:`jaxbp.train.make_epoch`:
full-batch Adam, lr 3e-2, λ = 3 — the lecture's full-batch algorithm with an adaptive step),
measuring test accuracy after every epoch and stopping at the first epoch at or above the
target — all of it one compiled program (:func:`jaxbp_time_to_accuracy`). The clock starts from
the NumPy arrays, before anything is traced or compiled.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp

TARGET = 0.97

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
"""Compiler options of this one ``jit`` (not global flags): on a 64-256-10 network the clock is
mostly compilation — about 0.29 s with XLA's defaults, 0.22 s with these (2 cores) — while an
epoch takes a millisecond or two either way."""
HIDDEN = (256,)
"""64-256-10: the network ``jaxbp train`` fits to digits by default."""
ACTIVATION = "relu"
L2 = 3.0
"""λ of the jaxbp run: ``jaxbp train``'s default on digits (scikit-learn keeps its own alpha)."""


def load_digits_split(seed: int = 0):
    """(x_fit, y_fit, x_test, y_test) as float64/int32 numpy arrays: train + validation, test."""
    from jaxbp.data import load_dataset

    ds = load_dataset("digits", seed=seed)
    x_fit = np.concatenate([ds.x_train, ds.x_val])
    y_fit = np.concatenate([ds.y_train, ds.y_val])
    return x_fit, y_fit, ds.x_test, ds.y_test, ds.split


def glorot_on_host(sizes, seed: int, dtype) -> tuple[jaxbp.Layer, ...]:
    """jaxbp's ``glorot`` initialisation (W uniform in ±√6/√(n_in + n_out), b = 0) drawn with
    NumPy on the host: through ``jax.random`` it would be one more XLA program to compile."""
    rng = np.random.default_rng(seed)
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        bound = np.sqrt(6.0 / (n_in + n_out))
        W = rng.uniform(-bound, bound, (n_out, n_in))
        params.append(jaxbp.Layer(jnp.asarray(W, dtype), jnp.zeros((n_out,), dtype)))
    return tuple(params)


def jaxbp_time_to_accuracy(
    x_fit,
    y_fit,
    x_test,
    y_test,
    *,
    dtype=jnp.float32,
    target: float = TARGET,
    seed: int = 0,
    lr: float = 3e-2,
    batch_size: int | None = None,
    max_epochs: int = 500,
    hidden=HIDDEN,
    l2: float = L2,
) -> dict:
    """Trains 64-256-10 relu with hand-derived gradients until test accuracy ≥ ``target``.

    The whole run is one XLA program, compiled with :data:`FAST_COMPILE`: the optimizer's
    initial state, then a ``lax.while_loop`` of epochs — :func:`jaxbp.train.make_epoch`, the
    runner's epoch with gradient source ``manual`` (:func:`jaxbp.value_and_grad`) — each followed
    by the test accuracy, until it reaches ``target`` (or ``max_epochs``).

    Returns:
      dict with ``wall_s`` (from the host arrays to the result, compile included), ``compile_s``
      (tracing and compiling), ``epochs``, ``test_accuracy``, ``reached``, ``optimizer``.
    """
    from jaxbp.data import one_hot
    from jaxbp.optim import make_optimizer
    from jaxbp.train import TrainState, gradient_source, make_epoch

    t0 = time.perf_counter()
    k = int(np.max(y_fit)) + 1
    params = glorot_on_host((x_fit.shape[1], *hidden, k), seed, dtype)
    optimizer = make_optimizer("adam", lr=lr)
    kw = dict(activation=ACTIVATION, output="softmax_ce")
    epoch = make_epoch(optimizer, gradient_source("manual"), batch_size=batch_size, l2=l2, **kw)
    data = (
        jnp.asarray(x_fit, dtype),
        jnp.asarray(one_hot(y_fit, k), dtype),
        jnp.asarray(x_test, dtype),
        jnp.asarray(y_test, jnp.int32),
    )

    def train_to_target(params, data):
        x, y, x_test, y_test = data
        zero = jnp.zeros((), jnp.int32)
        state = TrainState(params, optimizer.init(params), jax.random.key(seed), zero)

        def not_there(carry):
            _, accuracy, epochs = carry
            return (accuracy < target) & (epochs < max_epochs)

        def one_epoch(carry):
            state, _, epochs = carry
            state, _ = epoch(state, x, y)
            y_hat = jaxbp.predict(state.params, x_test, **kw)
            return state, jnp.mean(jnp.argmax(y_hat, axis=1) == y_test), epochs + 1

        start = (state, jnp.zeros((), jnp.float32), zero)
        return jax.lax.while_loop(not_there, one_epoch, start)

    compiled = jax.jit(train_to_target).lower(params, data).compile(compiler_options=FAST_COMPILE)
    compile_s = time.perf_counter() - t0
    _, accuracy, epochs = compiled(params, data)
    accuracy, epochs = float(accuracy), int(epochs)  # the run's one host sync
    return {
        "wall_s": time.perf_counter() - t0,
        "compile_s": compile_s,
        "epochs": epochs,
        "test_accuracy": accuracy,
        "reached": accuracy >= target,
        "optimizer": f"adam(lr={lr}), {f'batch {batch_size}' if batch_size else 'full batch'} "
        "(jaxbp.train.make_epoch)",
    }


def sklearn_fit_time(x_fit, y_fit, x_test, y_test, *, dtype=np.float32, seed: int = 0, call=None):
    """``MLPClassifier(hidden_layer_sizes=HIDDEN, activation="relu").fit`` wall time and score,
    timed inside the scikit-learn worker process (:func:`jaxbp.bench.peers.sklearn_worker`)."""
    from jaxbp.bench.peers import sklearn_worker

    call = call or sklearn_worker()
    seconds, n_iter, accuracy = call(
        "fit",
        np.asarray(x_fit, dtype),
        np.asarray(y_fit),
        np.asarray(x_test, dtype),
        np.asarray(y_test),
        HIDDEN,
        ACTIVATION,
        seed,
    )
    return {
        "wall_s": seconds,
        "epochs": n_iter,
        "test_accuracy": accuracy,
        "reached": accuracy >= TARGET,
        "optimizer": "sklearn defaults: adam(lr=1e-3), batch 200, alpha 1e-4",
    }


def time_to_accuracy(
    *,
    dtype=jnp.float32,
    seed: int = 0,
    repeats: int = 3,
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    """Both runs (module docstring), alternated ``repeats`` times (jaxbp, scikit-learn, jaxbp, …).

    Every jaxbp repetition traces and compiles afresh (a new program each time); only the first
    also pays the process's one-time tracing of jaxbp's and optax's functions, reported as
    ``first_wall_s``.

    Returns:
      dict with ``target``, ``setup``, ``repeats``, ``runs`` (name → the median repetition's
      dict, plus ``wall_s_all``) and ``ratio``, the median jaxbp time over the median
      scikit-learn fit time (None when scikit-learn is missing or jaxbp missed the target).
    """
    from jaxbp.bench.peers import installed

    x_fit, y_fit, x_test, y_test, split = load_digits_split(seed)
    hidden = "-".join(map(str, HIDDEN))
    setup = (
        f"64-{hidden}-10 {ACTIVATION}, {x_fit.shape[0]} training rows, "
        f"{x_test.shape[0]} test rows, {split}"
    )
    data = (x_fit, y_fit, x_test, y_test)
    todo = {"jaxbp hand-derived": lambda: jaxbp_time_to_accuracy(*data, dtype=dtype, seed=seed)}
    if installed("sklearn"):
        from jaxbp.bench.peers import sklearn_worker

        call = sklearn_worker()  # started (and scikit-learn imported) before any clock runs
        todo["sklearn MLPClassifier.fit"] = lambda: sklearn_fit_time(
            *data, dtype=np.dtype(dtype), seed=seed, call=call
        )
    results: dict[str, list[dict]] = {name: [] for name in todo}
    for r in range(repeats):
        for name, run in todo.items():
            log(f"  {name} ({r + 1}/{repeats})")
            results[name].append(run())
    runs = {}
    for name, rs in results.items():
        ordered = sorted(rs, key=lambda run: run["wall_s"])
        runs[name] = dict(ordered[len(ordered) // 2], wall_s_all=[run["wall_s"] for run in rs])
    runs["jaxbp hand-derived"]["first_wall_s"] = results["jaxbp hand-derived"][0]["wall_s"]
    ratio = None
    jx = runs["jaxbp hand-derived"]
    if "sklearn MLPClassifier.fit" in runs and all(
        run["reached"] for run in results["jaxbp hand-derived"]
    ):
        ratio = jx["wall_s"] / runs["sklearn MLPClassifier.fit"]["wall_s"]
    return {"target": TARGET, "setup": setup, "repeats": repeats, "runs": runs, "ratio": ratio}
