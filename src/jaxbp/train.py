"""Training with hand-derived gradients: pure functions from state to state.

The lecture's algorithm (§ "Neural Network - Training"): initialise Θ with symmetry breaking, then
repeat — forward propagation, backpropagation of δ, gradient step. Here one *epoch* is a pass over
the training set in minibatches of ``batch_size`` rows (all rows: the lecture's full-batch
gradient descent), compiled as one ``jax.lax.scan`` over the minibatches, so that a whole epoch is
one XLA program and the host sees one result per epoch.

Calling contract (stax/optax style — no hidden state, no device placement):

- :func:`init_state` ``(key, sizes, optimizer, …) -> TrainState``;
- :func:`make_epoch` builds ``epoch(state, x, y) -> (state, (batch_loss, grad_norm))``;
- :func:`make_step` wraps it into the full per-epoch function
  ``step(state, stop, x, y, x_val, y_val) -> (state, stop, EpochMetrics)`` — epoch, evaluation on
  the training and validation splits, early-stopping bookkeeping;
- :func:`compile_step` ``vmap``s it over seeds and ``jit``s it, donating the state buffers.

Arrays are whatever the caller passes: committed to one device, or sharded with
``jax.sharding`` — the functions never place data themselves. ``x`` is (m, n), ``y`` is (m, K)
targets (one-hot for classification: :func:`jaxbp.data.one_hot`).

The gradient source is a function with the signature of :func:`jaxbp.value_and_grad`, by its name
in the one registry, :mod:`jaxbp.sources`: training accepts :data:`GRAD_SOURCES` — ``manual`` (the
δ recursion), ``autodiff`` (``jax.grad`` of the same cost) or ``graph`` (the lecture's
node-by-node computational graph, :mod:`jaxbp.graph`).

Any other network — the CNN of :func:`jaxbp.model.cnn` — is given as a :class:`jaxbp.model.Model`
(its init, gradient source and evaluation bound to its architecture) in place of the MLP's
gradient source and its ``activation`` / ``output``: ``make_epoch(opt, model, batch_size=64)``,
``make_step(epoch, model=model)``, ``init_state(key, model, opt)``, ``evaluate(…, model=model)``.
The MLP's arguments are the same thing spelled out: they build :func:`jaxbp.model.mlp`.

Example (two seeds at once; ``jaxbp train`` does exactly this, plus checkpoints and reports):
  >>> opt = jaxbp.optim.make_optimizer("adam", lr=3e-3)
  >>> kw = dict(activation="relu", output="softmax_ce")
  >>> epoch = make_epoch(opt, gradient_source("manual"), batch_size=64, **kw)
  >>> step = compile_step(make_step(epoch, **kw))
  >>> def init(seed):
  ...     state = init_state(jax.random.key(seed), [64, 256, 10], opt)
  ...     return state, init_early_stop(state.params)
  >>> state, stop = jax.vmap(init)(jnp.arange(2))
  >>> for e, state, stop, metrics in fit(step, state, stop, (x, y, x_val, y_val), epochs=40):
  ...     print(e, metrics.val_accuracy)  # one value per seed
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbp import sources
from jaxbp.cost import NO_PENALTY
from jaxbp.model import Model, mlp
from jaxbp.params import Params, init_params
from jaxbp.validation import is_concrete

Array = jax.Array
ValueAndGrad = sources.ValueAndGrad

GRAD_SOURCES = sources.NAMES
"""The names of :data:`jaxbp.sources.SOURCES` that training accepts (:func:`gradient_source`):
all of them."""


class TrainState(NamedTuple):
    """Everything that determines the rest of a run (besides data and config).

    Attributes:
      params: the network's parameters: for the MLP a tuple of ``Layer(W (n_out, n_in),
        b (n_out,))``, for a :class:`~jaxbp.model.Model` whatever its ``init`` returns.
      opt_state: the optax optimizer state.
      key: typed PRNG key, fixed for the run; epoch e shuffles with ``fold_in(key, e)``.
      epoch: int32 scalar, the number of epochs completed.
    """

    params: Params
    opt_state: optax.OptState
    key: Array
    epoch: Array


class EarlyStop(NamedTuple):
    """Early stopping on the validation loss.

    Attributes:
      best_params: the parameters at the lowest validation loss so far.
      best_loss: that loss (scalar; +inf before the first epoch).
      best_epoch: int32, the epoch that reached it.
      wait: int32, epochs since the last improvement.
      active: bool, False once ``wait`` reached the patience: training of this seed has stopped.
    """

    best_params: Params
    best_loss: Array
    best_epoch: Array
    wait: Array
    active: Array


class EpochMetrics(NamedTuple):
    """Per-epoch scalars (a leading seed axis under :func:`compile_step`).

    Attributes:
      train_loss: J(Θ) on the whole training split after the epoch, L2 term included.
      train_accuracy: fraction of training examples classified correctly.
      val_loss: mean cost on the validation split (no L2 term); NaN without one.
      val_accuracy: fraction correct on the validation split; NaN without one.
      batch_loss: mean of the minibatch costs J seen during the epoch (before each update).
      grad_norm: mean over the epoch's steps of the global gradient norm ‖∂J/∂Θ‖₂.
    """

    train_loss: Array
    train_accuracy: Array
    val_loss: Array
    val_accuracy: Array
    batch_loss: Array
    grad_norm: Array


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch and seeds."""


def gradient_source(name: str) -> ValueAndGrad:
    """The ``value_and_grad`` function for a gradient source name: :func:`jaxbp.sources.source`
    restricted to :data:`GRAD_SOURCES`.

    Args:
      name: ``manual`` (:func:`jaxbp.value_and_grad`, the δ recursion), ``autodiff``
        (:func:`jaxbp.autodiff_value_and_grad`), ``graph`` (:func:`jaxbp.graph.value_and_grad`),
        ``scan``, ``custom_vjp`` or ``vmap`` (:mod:`jaxbp.sources`).

    Raises:
      ValueError: an unknown name, listing the valid ones.
    """
    return sources.source(name, among=GRAD_SOURCES)


def as_model(source, activation=None, output=None) -> Model:
    """``source`` itself when it is a :class:`~jaxbp.model.Model`; else the MLP with that
    gradient source (None: the δ recursion) and ``activation`` / ``output``.

    Raises:
      TypeError: an MLP gradient source without ``activation`` and ``output``.
    """
    if isinstance(source, Model):
        return source
    if activation is None or output is None:
        raise TypeError("activation, output: needed with an MLP gradient source (or give a Model)")
    return mlp(activation=activation, output=output, source=source)


def init_state(key: Array, sizes, optimizer, *, scheme: str = "he", dtype=jnp.float32, params=None):
    """A fresh :class:`TrainState`: parameters from ``init_params`` — or from ``sizes.init``
    when ``sizes`` is a :class:`~jaxbp.model.Model` (its scheme and dtype bound), or
    ``params`` when starting from given weights — and the optimizer's state.

    ``key`` is split once: one half initialises the parameters, the other orders the minibatches
    (the same order whether or not ``params`` is given).
    """
    k_params, k_data = jax.random.split(key)
    if params is None and isinstance(sizes, Model):
        params = sizes.init(k_params)
    elif params is None:
        params = init_params(k_params, sizes, scheme=scheme, dtype=dtype)
    return TrainState(params, optimizer.init(params), k_data, jnp.zeros((), jnp.int32))


def init_early_stop(params: Params) -> EarlyStop:
    """Early-stopping state before the first epoch (a copy of ``params``: the state's and the
    stop's buffers are donated separately)."""
    dtype = jax.tree.leaves(params)[0].dtype
    best = jax.tree.map(jnp.copy, params)
    return EarlyStop(
        best,
        jnp.asarray(jnp.inf, dtype),
        jnp.zeros((), jnp.int32),
        jnp.zeros((), jnp.int32),
        jnp.ones((), bool),
    )


def make_loss_fn(value_and_grad: ValueAndGrad | Model, *, activation=None, output=None):
    """J(Θ; x, y, λ) as a ``jax.custom_vjp`` whose backward pass is ``value_and_grad``'s gradient
    (an MLP source with ``activation`` / ``output``, or a :class:`~jaxbp.model.Model`).

    Optimizers that differentiate the objective themselves (L-BFGS's line search calls
    ``jax.value_and_grad`` on it) then differentiate with the chosen source, not with autodiff.
    """
    model = as_model(value_and_grad, activation, output)

    @jax.custom_vjp
    def loss(params, x, y, l2):
        return model.value_and_grad(params, x, y, l2=l2)[0]

    def fwd(params, x, y, l2):
        J, grads = model.value_and_grad(params, x, y, l2=l2)
        return J, (grads, x, y, l2)

    def bwd(res, ct):
        grads, x, y, l2 = res
        scaled = jax.tree.map(lambda g: ct * g, grads)
        dl2 = None if l2 is NO_PENALTY else jnp.zeros_like(l2)
        return scaled, jnp.zeros_like(x), jnp.zeros_like(y), dl2

    loss.defvjp(fwd, bwd)
    return loss


def global_norm(tree) -> Array:
    """‖tree‖₂ over all leaves."""
    return jnp.sqrt(sum(jnp.sum(leaf * leaf) for leaf in jax.tree.leaves(tree)))


def make_epoch(
    optimizer,
    value_and_grad: ValueAndGrad | Model,
    *,
    batch_size: int | None,
    activation=None,
    output: str | None = None,
    l2: float = 0.0,
    uses_value_fn: bool = False,
):
    """Builds the epoch function ``epoch(state, x, y) -> (state, (batch_loss, grad_norm))``.

    The training rows are permuted with ``fold_in(state.key, state.epoch)`` and cut into
    ⌊m / B⌋ minibatches of B = ``batch_size`` rows (the remainder, different each epoch, is left
    out); ``batch_size=None`` is full-batch gradient descent, one step per epoch on all m rows
    in their order. Each step computes (J, ∂J/∂Θ) with ``value_and_grad`` and applies the
    optimizer's update. The L2 coefficient is rescaled to λB/m for a minibatch of B rows so that
    its penalty (λB/m)/(2B) Σ W² = (λ/2m) Σ W² is the lecture's term for the whole training set
    (eq. R1) and each step's gradient is an unbiased estimate of ∂J/∂Θ. With λ = 0 (or None) a
    registry source gets ``l2=None`` (:func:`batch_l2`): no penalty pass at all.

    Args:
      optimizer: an optax ``GradientTransformation``.
      value_and_grad: the gradient source (see :func:`gradient_source`) with ``activation`` and
        ``output``, or a :class:`~jaxbp.model.Model` (which binds them).
      batch_size: B, or None for the full batch.
      activation, output: as for :func:`jaxbp.value_and_grad` (static; MLP sources only).
      l2: λ ≥ 0 for the whole training set, or None: no penalty.
      uses_value_fn: the optimizer needs the objective (L-BFGS; full batch only).

    Returns:
      A pure function of (state, x, y), jittable, with no device placement.
    """
    model = as_model(value_and_grad, activation, output)
    update = make_update(optimizer, model, batch_size=batch_size, uses_value_fn=uses_value_fn)

    def epoch(state: TrainState, x: Array, y: Array):
        m = x.shape[0]
        index = batch_index(state, m, batch_size)
        l2_batch = batch_l2(model, l2, index.shape[1], m, x.dtype)

        def step(carry, xs):
            params, opt_state = carry
            rows, i = xs
            full = index.shape[1] == m
            xb, yb = (x, y) if full else (x[rows], y[rows])
            key = step_key(state.key, state.epoch, i) if model.stochastic else None
            return update(params, opt_state, xb, yb, l2_batch, key)

        steps = jnp.arange(index.shape[0], dtype=jnp.int32)
        (params, opt_state), (losses, norms) = jax.lax.scan(
            step, (state.params, state.opt_state), (index, steps)
        )
        new = TrainState(params, opt_state, state.key, state.epoch + 1)
        return new, (jnp.mean(losses), jnp.mean(norms))

    return epoch


def batch_index(state: TrainState, m: int, batch_size: int | None) -> Array:
    """(⌊m / B⌋, B) row indices of this epoch's minibatches (:func:`make_epoch`): a permutation
    by ``fold_in(state.key, state.epoch)``, or all m rows in order for the full batch.

    Raises:
      ValueError: B not between 1 and m.
    """
    b = m if batch_size is None else batch_size
    if not 1 <= b <= m:
        raise ValueError(f"batch_size: must be between 1 and the {m} training rows, got {b}")
    if b == m:
        return jnp.arange(m)[None]
    perm = jax.random.permutation(jax.random.fold_in(state.key, state.epoch), m)
    return perm[: (m // b) * b].reshape(m // b, b)


DROPOUT_STREAM = 0x64726F70
"""``fold_in`` data that separates the dropout masks' keys from the minibatch order's."""


def step_key(key: Array, epoch, i) -> Array:
    """The key of step ``i`` of epoch ``epoch`` (0-based) for a stochastic model's masks
    (dropout): ``fold_in(fold_in(fold_in(key, DROPOUT_STREAM), epoch), i)``, ``key`` the
    state's — fixed by the run's key as the minibatch order is, so a resumed run draws the
    same masks."""
    key = jax.random.fold_in(jax.random.fold_in(key, DROPOUT_STREAM), epoch)
    return jax.random.fold_in(key, i)


def make_update(optimizer, model: Model, *, batch_size: int | None, uses_value_fn: bool = False):
    """One minibatch step of :func:`make_epoch`:
    ``update(params, opt_state, xb, yb, l2_batch, key=None) -> ((params, opt_state),
    (J, grad_norm))``; ``key`` (:func:`step_key`) only for a ``stochastic`` model.

    Raises:
      ValueError: L-BFGS (``uses_value_fn``) with minibatches, or with a stochastic model.
    """
    if uses_value_fn and model.stochastic:
        raise ValueError("model: L-BFGS needs one objective; a stochastic model (dropout) has none")
    if uses_value_fn and batch_size is not None:
        raise ValueError(
            f"batch_size: L-BFGS is a full-batch method; use the full batch, got {batch_size}"
        )
    loss_fn = make_loss_fn(model)

    def update(params, opt_state, xb, yb, l2_batch, key=None):
        if uses_value_fn:
            J, grads = optax.value_and_grad_from_state(loss_fn)(
                params, xb, yb, l2_batch, state=opt_state
            )
            updates, opt_state = optimizer.update(
                grads,
                opt_state,
                params,
                value=J,
                grad=grads,
                value_fn=lambda p: loss_fn(p, xb, yb, l2_batch),
            )
        else:
            kw = {"key": key} if model.stochastic else {}
            J, grads = model.value_and_grad(params, xb, yb, l2=l2_batch, **kw)
            updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state), (J, global_norm(grads))

    return update


def batch_l2(value_and_grad: ValueAndGrad | Model, l2, b: int, m: int, dtype):
    """The λ a step on B = ``b`` of the ``m`` training rows passes to ``value_and_grad``: λB/m.

    λ = 0 known before tracing (the configuration's number), or None, is no penalty: a source of
    :data:`jaxbp.sources.SOURCES` (or a :class:`~jaxbp.model.Model` whose ``no_penalty`` says
    so) is then given the explicit marker ``l2=None`` and computes no L2 term at all (one pass
    over the weights less per step, docs/benchmarks.md); any other function keeps the numeric
    contract and gets 0.0. A traced λ is always an ordinary λ.
    """
    if l2 is NO_PENALTY or (is_concrete(l2) and float(l2) == 0):
        if isinstance(value_and_grad, Model):
            registered = value_and_grad.no_penalty
        else:
            registered = any(value_and_grad is fn for fn in sources.SOURCES.values())
        return NO_PENALTY if registered else 0.0
    return jnp.asarray(l2 * b / m, dtype)


def evaluate(
    params: Params, x: Array, y: Array, *, activation=None, output=None, l2=0.0, model=None
):
    """(J, accuracy) on a split: mean cost plus (λ/2m) Σ W² (eqs. C1–C3, R1; none for
    ``l2=None``), and the fraction of rows whose largest output is the target's class. ``y``:
    (m, K) targets. The MLP's ``activation`` / ``output``, or a :class:`~jaxbp.model.Model`."""
    J, logits = as_model(model, activation, output).cost(params, x, y, l2=l2)
    correct = jnp.argmax(logits, axis=-1) == jnp.argmax(y, axis=-1)
    return J, jnp.sum(correct.astype(logits.dtype)) / x.shape[0]


def predict_labels(params: Params, x: Array, *, activation=None, output=None, model=None) -> Array:
    """The predicted class of each row: argmax of the output layer (the MLP's ``activation`` /
    ``output``, or a :class:`~jaxbp.model.Model`)."""
    return jnp.argmax(as_model(model, activation, output).logits(params, x), axis=-1)


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """(K, K) counts on the host: entry (i, j) is the number of examples of class i predicted j."""
    index = np.asarray(y_true, np.int64) * num_classes + np.asarray(y_pred, np.int64)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def make_step(
    epoch, *, activation=None, output=None, l2: float = 0.0, patience: int = 0, model=None
):
    """The full per-epoch function ``step(state, stop, x, y, x_val, y_val)``.

    Runs ``epoch``, evaluates the training split (J with its L2 term) and the validation split
    (cost without it), and updates the early-stopping state: an epoch whose validation loss is
    below the best so far stores its parameters; after ``patience`` epochs without improvement
    ``stop.active`` turns False, and from then on the step leaves this seed's state unchanged
    (so that seeds trained together under ``vmap`` can stop at different epochs).
    ``patience=0`` never stops. The network: the MLP's ``activation`` / ``output``, or a
    :class:`~jaxbp.model.Model`.

    Returns:
      ``step -> (state, stop, EpochMetrics)``, pure and jittable.
    """
    finish = make_finish(as_model(model, activation, output), l2=l2, patience=patience)

    def step(state: TrainState, stop: EarlyStop, x, y, x_val, y_val):
        new, (batch_loss, grad_norm) = epoch(state, x, y)
        return finish(state, stop, new, batch_loss, grad_norm, x, y, x_val, y_val)

    return step


def make_finish(model: Model, *, l2: float = 0.0, patience: int = 0):
    """The end of :func:`make_step`'s epoch, after the minibatch steps:
    ``finish(state, stop, new, batch_loss, grad_norm, x, y, x_val, y_val) -> (state, stop,
    EpochMetrics)`` — evaluation of ``new`` (the state after the epoch) and early stopping, which
    keeps ``state`` for a seed that had stopped already."""

    def finish(state, stop, new, batch_loss, grad_norm, x, y, x_val, y_val):
        train_loss, train_acc = evaluate(new.params, x, y, l2=l2, model=model)
        if x_val.shape[0] > 0:
            val_loss, val_acc = evaluate(new.params, x_val, y_val, model=model)
        else:
            val_loss = val_acc = jnp.asarray(jnp.nan, train_loss.dtype)
        improved = val_loss < stop.best_loss
        wait = jnp.where(improved, 0, stop.wait + 1)
        new_stop = EarlyStop(
            best_params=jax.tree.map(
                lambda n, o: jnp.where(improved, n, o), new.params, stop.best_params
            ),
            best_loss=jnp.where(improved, val_loss, stop.best_loss),
            best_epoch=jnp.where(improved, new.epoch, stop.best_epoch),
            wait=wait,
            active=jnp.asarray(True) if patience <= 0 else wait < patience,
        )
        go = stop.active

        def keep(n, o):
            return jax.tree.map(lambda a, b: jnp.where(go, a, b), n, o)

        state = TrainState(
            keep(new.params, state.params),
            keep(new.opt_state, state.opt_state),
            state.key,
            jnp.where(go, new.epoch, state.epoch),
        )
        metrics = EpochMetrics(train_loss, train_acc, val_loss, val_acc, batch_loss, grad_norm)
        return state, keep(new_stop, stop), metrics

    return finish


def compile_step(step, *, seeds: bool = True):
    """``jax.jit`` of ``step``, ``vmap``ped over a leading seed axis of ``state`` and ``stop``
    when ``seeds`` (the data are shared); the state and stop buffers are donated."""
    fn = jax.vmap(step, in_axes=(0, 0, None, None, None, None)) if seeds else step
    return jax.jit(fn, donate_argnums=(0, 1))


def fit(step, state, stop, data, *, epochs: int, start: int = 0) -> Iterator:
    """Runs epochs ``start`` … ``epochs − 1``, yielding after each ``(epoch, state, stop, metrics)``
    with ``metrics`` a host-side :class:`EpochMetrics` of NumPy values.

    One host synchronisation per epoch: the metrics and the early-stopping flags are fetched
    together. Stops early when every seed's early stopping is inactive.

    Args:
      step: the compiled step (:func:`compile_step`).
      state, stop: the state to continue from (its buffers are donated to ``step``).
      data: ``(x, y, x_val, y_val)``.
      epochs: the total number of epochs of the run.
      start: epochs already completed.

    Raises:
      TrainingDiverged: a NaN or infinite training loss, naming the epoch (1-based) and seeds;
        the state of that epoch is not yielded.
    """
    for e in range(start, epochs):
        state, stop, metrics = step(state, stop, *data)
        metrics, active = jax.device_get((metrics, stop.active))
        bad = np.flatnonzero(~np.isfinite(np.atleast_1d(metrics.train_loss)))
        if bad.size:
            raise TrainingDiverged(
                f"epoch {e + 1}: the training loss is {np.atleast_1d(metrics.train_loss)[bad[0]]} "
                f"for seed index(es) {bad.tolist()}; lower the learning rate"
            )
        yield e + 1, state, stop, metrics
        if not np.any(active):
            return
