"""A network of layers with an output layer: its cost J, the output error δ^(L) = ŷ − y seeded at
the logits, the hand-derived gradient, and the same as a ``jax.custom_vjp`` loss.

For any ``model`` (a :class:`~jaxbp.layers.base.Layer`, usually a
:func:`~jaxbp.layers.Sequential`) whose forward gives logits z^(L) of shape (m, K), and an output
layer of :data:`jaxbp.losses.OUTPUTS` (softmax_ce, sigmoid_bce, identity_mse)::

    J(Θ) = (1/m) Σ_i cost(z_i^(L), y_i) + (λ/2m) Σ_W ‖W‖²            (eqs. C1–C3, R1)
    δ^(L) = (ŷ − y) / m                                               (eq. C4, with the 1/m)
    (Δ, _) = model.backward(params, cache, δ^(L))                     (eq. L5)
    D = Δ + (λ/m) W on the W… leaves, Δ elsewhere                     (eq. R2: off the bias)

Seeding the 1/m with δ^(L) makes every layer's (summed) backward return D = (1/m)Δ directly. The
penalty falls on the parameters named ``W…`` (dense and conv weights, attention projections,
embeddings) and never on biases, normalisation scales/offsets or running statistics.

Functions:

- :func:`cost` — J by the forward pass only (what ``jax.grad`` differentiates: the reference);
- :func:`value_and_grad` — ``((J, cache), grads)`` by the hand-derived backward;
- :func:`autodiff_value_and_grad` — the same by ``jax.value_and_grad`` of :func:`cost`;
- :func:`loss` — J as a ``jax.custom_vjp`` whose backward is the hand-derived one, so that
  ``jax.grad``, optax, ``jit`` and ``vmap`` run our derivation;
- :func:`predict` (the label of each row), :func:`predict_proba` (ŷ = g(z^(L)));
- :func:`penalty`, :func:`penalty_grad`.

``cache`` is the model's forward cache: pass it to ``model.update_state`` to carry BatchNorm's
running statistics to the next step.

The inputs, as :func:`jaxbp.value_and_grad` takes them for the lecture's MLP:

- ``x``: a batch (m, *in_shape), m ≥ 1. A floating ``x`` is cast to the network's dtype — the
  dtype of the first floating leaf of ``params`` (:func:`network_dtype`) — so that J, δ and every
  gradient are in the parameters' dtype whatever the data's (float64 rows into a float32 network
  give float32 J and grads, as :func:`jaxbp.forward` does); an integer ``x`` (Embedding's indices)
  is passed as it is. The cotangent of ``x`` in :func:`loss` comes back in ``x``'s own dtype.
  A single example is not recognised here: whether ``x`` of shape (n,) is one example or a batch
  of n indices depends on the network's input shape, which a ``Layer`` does not carry — pass
  ``x[None]`` (the lecture-level API, which knows its input is a feature vector, does that).
- ``y``: (m, K) targets (one-hot or probability rows for softmax_ce, multi-hot for sigmoid_bce,
  real values for identity_mse; any numeric or boolean dtype), or for softmax_ce integer labels
  of shape (m,) in [0, K), made one-hot here; cast to the logits' dtype. Labels out of range are
  an error naming the first bad one (checked when ``y`` is concrete, i.e. outside ``jit``).
- ``l2``: λ, a finite scalar ≥ 0 (checked when concrete; a traced λ under ``jit`` is checked for
  its shape only), cast to the network's dtype; or None, no penalty term at all (nothing
  computed). ``0.0`` is an ordinary λ.

Every error names the argument and what was received, with the messages of
:mod:`jaxbp.validation`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.layers.base import Layer
from jaxbp.losses import Output, get_output
from jaxbp.validation import check_l2, is_concrete

Array = jax.Array


def _is_weight(path) -> bool:
    last = path[-1] if path else None
    return isinstance(last, jax.tree_util.DictKey) and str(last.key).startswith("W")


def network_dtype(params):
    """The network's dtype: that of the first floating leaf of ``params`` (tree order — the first
    layer's first floating parameter), or None for a network without floating parameters."""
    for leaf in jax.tree.leaves(params):
        dtype = jnp.result_type(leaf)
        if jnp.issubdtype(dtype, jnp.floating):
            return dtype
    return None


def _penalty(params, l2, m: int) -> Array:
    leaves = jax.tree.leaves(params)
    total = jnp.zeros((), jnp.result_type(*leaves) if leaves else jnp.float32)
    if l2 is None:
        return total
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if _is_weight(path):
            total = total + jnp.sum(leaf * leaf)
    return (l2 / (2 * m)) * total


def _penalty_grad(params, l2, m: int):
    if l2 is None:
        return jax.tree.map(jnp.zeros_like, params)
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: (l2 / m) * leaf if _is_weight(path) else jnp.zeros_like(leaf), params
    )


def penalty(params, l2, m: int) -> Array:
    """(λ/2m) Σ ‖W‖² over the ``W…`` leaves of ``params`` (eq. R1); 0 for ``l2=None``.

    Raises:
      ValueError: ``l2`` not a scalar, or (when concrete) negative or not finite.
    """
    if l2 is not None:
        check_l2(l2)
    return _penalty(params, l2, m)


def penalty_grad(params, l2, m: int):
    """∂/∂params of :func:`penalty`: (λ/m) W on the ``W…`` leaves, zeros elsewhere (eq. R2).

    Raises:
      ValueError: as :func:`penalty`.
    """
    if l2 is not None:
        check_l2(l2)
    return _penalty_grad(params, l2, m)


# --- the inputs ----------------------------------------------------------------------------------
def _is_array(value) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _check_model(model) -> None:
    if not isinstance(model, Layer):
        raise TypeError(f"model: must be a jaxbp.layers.Layer, got {type(model).__name__}")


def _as_input(params, x):
    """``x`` checked as a non-empty batch; floating ``x`` cast to :func:`network_dtype`."""
    if not _is_array(x):
        raise TypeError(f"x: must be an array, one example per row, got {type(x).__name__}")
    shape = tuple(jnp.shape(x))
    if not shape:
        raise ValueError(f"x: must be a batch (m, …), one example per row, got shape {shape}")
    if shape[0] == 0:
        raise ValueError(f"x: empty batch, got shape {shape}; need at least one example")
    dtype = network_dtype(params)
    if dtype is not None and jnp.issubdtype(jnp.result_type(x), jnp.floating):
        return jnp.asarray(x).astype(dtype)
    return x


def _as_l2(params, l2):
    """``l2`` checked (a scalar; finite and ≥ 0 when concrete) and cast to the network's dtype."""
    if l2 is None:
        return None
    check_l2(l2)
    dtype = network_dtype(params)
    return jnp.asarray(l2) if dtype is None else jnp.asarray(l2).astype(dtype)


def _prepare(model, params, x, y, output: str, l2) -> tuple[Output, Array, Array | None]:
    """The checks and casts every entry point makes before its forward pass."""
    _check_model(model)
    out = get_output(output)
    x = _as_input(params, x)
    if not _is_array(y):
        raise TypeError(
            f"y: must be an array of (m, K) targets or integer labels, got {type(y).__name__}"
        )
    return out, x, _as_l2(params, l2)


def _require_logits(z, m: int) -> tuple[int, int]:
    shape = tuple(z.shape)
    if len(shape) != 2 or shape[0] != m:
        raise ValueError(
            f"model: its output must be (m, K) logits, one row for each of the {m} rows of x, got "
            f"shape {shape}"
        )
    return shape


def _targets(y, z, m: int, output: str):
    """``y`` as (m, K) targets in the logits' dtype, checked against the logits ``z`` (an array or
    a ``jax.ShapeDtypeStruct``): integer labels (m,) made one-hot (softmax_ce only)."""
    _, k = _require_logits(z, m)
    shape = tuple(jnp.shape(y))
    dtype = jnp.result_type(y)
    if jnp.issubdtype(dtype, jnp.integer) and len(shape) == 1:
        if output != "softmax_ce":
            raise ValueError(
                f"y: integer labels of shape {shape} are accepted only for output='softmax_ce'; "
                f"output={output!r} needs targets of shape ({m}, {k})"
            )
        if shape[0] != m:
            raise ValueError(f"y: {shape[0]} labels for {m} rows of x; x and y row counts differ")
        if is_concrete(y):
            labels = np.asarray(y)
            bad = np.flatnonzero((labels < 0) | (labels >= k))
            if bad.size:
                i = int(bad[0])
                raise ValueError(
                    f"y: label {int(labels[i])} at row {i} is out of range [0, {k}) for an output "
                    f"layer of width {k} ({bad.size} bad label(s) in all)"
                )
        return jax.nn.one_hot(y, k, dtype=z.dtype)
    if len(shape) != 2:
        raise ValueError(
            f"y: expected targets of shape ({m}, {k})"
            + (" or integer labels of shape (m,)" if output == "softmax_ce" else "")
            + f", got shape {shape} and dtype {dtype}"
        )
    if shape[0] != m:
        raise ValueError(f"y: {shape[0]} rows for {m} rows of x; x and y row counts differ")
    if shape[1] != k:
        raise ValueError(
            f"y: width {shape[1]} differs from the output layer's width {k} (the network's "
            f"logits have shape {(m, k)})"
        )
    return jnp.asarray(y).astype(z.dtype)


def _cost(out: Output, params, z, y, l2, m: int) -> Array:
    """J from the logits and (m, K) targets: the data cost plus the penalty (eqs. C1–C3, R1)."""
    return jnp.mean(out.cost(z, y)) + _penalty(params, l2, m)


# --- the head ------------------------------------------------------------------------------------
def cost(model: Layer, params, x, y, *, output: str, l2=None, key=None, train: bool = True):
    """J(Θ) by the forward pass alone (eqs. C1–C3, R1): the function autodiff differentiates.

    Arguments as :func:`value_and_grad`.
    """
    out, x, l2 = _prepare(model, params, x, y, output, l2)
    m = x.shape[0]
    z, _ = model.forward(params, x, key=key, train=train)
    return _cost(out, params, z, _targets(y, z, m, output), l2, m)


def value_and_grad(
    model: Layer, params, x, y, *, output: str, l2=None, key=None, train: bool = True
):
    """``((J, cache), grads)`` with the hand-derived gradient D (eqs. C4, L5, R2).

    Args:
      model: the network; its forward must give (m, K) logits.
      params: its parameters (``model.init``).
      x: a batch of inputs, (m, *in_shape); floating inputs are cast to the network's dtype
        (module docstring).
      y: (m, K) targets (one-hot for softmax_ce, multi-hot for sigmoid_bce), or integer labels
        (m,) for softmax_ce.
      output: an output layer of :data:`jaxbp.losses.OUTPUTS`.
      l2: λ ≥ 0, or None: no penalty.
      key: for dropout (``train=True``).
      train: training mode (batch statistics, dropout on).

    Returns:
      ``((J, cache), grads)``, like ``jax.value_and_grad(..., has_aux=True)``; ``cache`` feeds
      ``model.update_state``. J and ``grads`` are in the parameters' dtype.

    Raises:
      TypeError / ValueError: naming the argument (``model``, ``x``, ``y``, ``output``, ``l2``)
        and what was received.
    """
    out, x, l2 = _prepare(model, params, x, y, output, l2)
    m = x.shape[0]
    z, cache = model.forward(params, x, key=key, train=train)
    y = _targets(y, z, m, output)
    J = _cost(out, params, z, y, l2, m)
    delta = out.delta(out.link(z), y) / m  # δ^(L) = (ŷ − y)/m   (eq. C4)
    grads, _ = model.backward(params, cache, delta)
    if l2 is not None:
        grads = jax.tree.map(jnp.add, grads, _penalty_grad(params, l2, m))
    return (J, cache), grads


def autodiff_value_and_grad(
    model: Layer, params, x, y, *, output: str, l2=None, key=None, train: bool = True
):
    """The reference: ``((J, cache), grads)`` with ``grads`` by ``jax.value_and_grad`` of the
    forward pass (no hand-derived backward involved). Arguments as :func:`value_and_grad`."""
    out, x, l2 = _prepare(model, params, x, y, output, l2)
    m = x.shape[0]

    def J(p):
        z, cache = model.forward(p, x, key=key, train=train)
        return _cost(out, p, z, _targets(y, z, m, output), l2, m), cache

    return jax.value_and_grad(J, has_aux=True)(params)


def loss(model: Layer, params, x, y, *, output: str, l2=None, key=None, train: bool = True):
    """J(Θ) as a ``jax.custom_vjp`` whose backward pass is the hand-derived one.

    ``jax.grad(lambda p: loss(model, p, x, y, output="softmax_ce"))(params)`` then runs
    :func:`value_and_grad`'s δ recursion, not autodiff; the cotangents of ``x`` (the first layer's
    dx, in ``x``'s dtype; none for integer inputs), ``y`` (∂J/∂y from the logits) and ``l2``
    (Σ‖W‖²/2m) are the true ones, so the function composes with any transformation. Arguments and
    checks as :func:`value_and_grad`. Stateful models: this returns J only — use
    :func:`value_and_grad` to get the cache for ``model.update_state``.

    Per-example gradients: ``jax.vmap(jax.grad(f), in_axes=(None, 0, 0))(params, x[:, None],
    y[:, None])`` with ``f = lambda p, x, y: loss(model, p, x, y, output=…)`` (each row a batch
    of one; the head does not take a single example, module docstring).
    """
    out, x, l2 = _prepare(model, params, x, y, output, l2)
    del out
    z = jax.eval_shape(lambda p, x: model.forward(p, x, key=key, train=train)[0], params, x)
    y = _targets(y, z, x.shape[0], output)
    return _loss(model, output, bool(train), params, x, y, l2, key)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _loss(model, output, train, params, x, y, l2, key):
    z, _ = model.forward(params, x, key=key, train=train)
    return _cost(get_output(output), params, z, y, l2, x.shape[0])


def _loss_fwd(model, output, train, params, x, y, l2, key):
    z, cache = model.forward(params, x, key=key, train=train)
    J = _cost(get_output(output), params, z, y, l2, x.shape[0])
    return J, (params, cache, z, y, l2, x)


def _loss_bwd(model, output, train, res, g):
    del train
    params, cache, z, y, l2, x = res
    out = get_output(output)
    m = z.shape[0]
    delta = out.delta(out.link(z), y) * (g / m)  # g · δ^(L), δ^(L) = (ŷ − y)/m   (eq. C4)
    grads, dx = model.backward(params, cache, delta)
    if l2 is not None:
        grads = jax.tree.map(lambda d, p: d + g * p, grads, _penalty_grad(params, l2, m))
        dl2 = g * _penalty(params, 1.0, m).astype(jnp.result_type(l2))
    else:
        dl2 = None
    dy = _cotangent(out.target_grad(z, y) * (g / m), y)
    dx = _cotangent(dx, x)
    return grads, dx, dy, dl2, None


def _cotangent(value, like):
    """``value`` as the cotangent of ``like``: its dtype, or float0 zeros for an integer input."""
    if value is None or not jnp.issubdtype(jnp.result_type(like), jnp.inexact):
        return np.zeros(jnp.shape(like), dtype=jax.dtypes.float0)
    return value.astype(jnp.result_type(like))


_loss.defvjp(_loss_fwd, _loss_bwd)


def _logits(model, params, x) -> Array:
    _check_model(model)
    x = _as_input(params, x)
    z, _ = model.forward(params, x, train=False)
    _require_logits(z, x.shape[0])
    return z


def predict(model: Layer, params, x) -> Array:
    """The predicted class of each row: argmax of the logits, evaluation mode; shape (m,).

    ``x`` as for :func:`value_and_grad` (a batch; floating rows cast to the network's dtype).
    """
    return jnp.argmax(_logits(model, params, x), axis=-1)


def predict_proba(model: Layer, params, x, *, output: str) -> Array:
    """ŷ = g(z^(L)), evaluation mode, shape (m, K): the class probabilities (softmax for
    softmax_ce, the per-label sigmoid for sigmoid_bce) or, for identity_mse, the outputs
    themselves — what :func:`jaxbp.predict` returns for the lecture's MLP.

    ``x`` as for :func:`value_and_grad`; ŷ in the network's dtype.
    """
    _check_model(model)
    out = get_output(output)
    return out.link(_logits(model, params, x))
