"""The three gradient oracles of :func:`jaxbp.verify.check`: reverse mode, forward mode and central
finite differences — vectorised over perturbation directions, never a Python loop over elements.

All three see the loss through a flat parameter vector θ (the leaves concatenated in tree order,
each in its own dtype's values): ``f(θ) = loss_fn(unflatten(θ), *args)``.

- rev (eq. V2): ``jax.grad(loss_fn)`` on the tree.
- fwd (eq. V3): ``jax.jvp(f, θ, e)`` along a basis vector e_i of one leaf (elementwise) or along a
  random unit direction confined to one leaf (projection) — forward mode only, independent of any
  reverse-mode rule.
- fd (eq. V4): ``(f(θ + h e_i) − f(θ − h e_i)) / (θ₊ᵢ − θ₋ᵢ)``, the denominator being the step as
  actually represented in the leaf's dtype; for a projection, the hand side is
  ``⟨g, θ₊ − θ₋⟩ / 2h`` with the perturbation as actually represented, so rounding of θ ± h v never
  looks like a gradient error. The step is ``h = eps^(1/3) · max(rms(leaf), 1)``.

Directions are evaluated with ``jax.lax.map(..., batch_size=B)`` — ``vmap`` over chunks of B
directions inside one compiled loop, B chosen to keep B·N numbers in memory bounded.

Every compiled function here is a module-level ``jax.jit`` keyed on the loss function, the tree's
layout and the argument shapes, so repeated checks of the same problem compile once.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.verify.report import eps, fd_step_factor

Array = jax.Array

MEMORY_ELEMENTS = 1 << 19
"""Bound on B · N, the perturbed parameter vectors alive at once (512K numbers, 4 MB in float64):
chunks that stay in cache run faster than larger ones (10 285-parameter network on the CPU:
B = 50 takes 0.85 s for the full elementwise fd, B = 407 2.4 s)."""

DEFAULT_FD_BUDGET = 20_000
"""Parameters checked elementwise; above it, the largest leaves are checked by projections."""

DEFAULT_PROJECTIONS = 16
"""Random unit directions per projected leaf."""


class Layout(NamedTuple):
    """How a flat θ maps back to the tree (hashable, so it can be a static jit argument)."""

    treedef: object
    shapes: tuple
    dtypes: tuple
    offsets: tuple
    flat_dtype: str

    @property
    def size(self) -> int:
        return self.offsets[-1]

    def unflatten(self, theta: Array):
        leaves = [
            theta[start:stop].reshape(shape).astype(dtype)
            for start, stop, shape, dtype in zip(
                self.offsets[:-1], self.offsets[1:], self.shapes, self.dtypes, strict=True
            )
        ]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


def layout_of(params) -> tuple[Layout, list[str], np.ndarray]:
    """The layout, the leaves' keystr paths and θ (on the host, float64 values) of ``params``.

    Raises:
      TypeError: a leaf that is not a floating-point array, naming its path.
      ValueError: a tree with no leaves.
    """
    with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
    if not with_path:
        raise ValueError("params: the tree has no leaves to check")
    paths, shapes, dtypes, offsets, values = [], [], [], [0], []
    for path, leaf in with_path:
        name = jax.tree_util.keystr(path)
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"params: leaf {name} has dtype {dtype}; only floating-point leaves can be "
                "differentiated"
            )
        paths.append(name)
        shapes.append(tuple(jnp.shape(leaf)))
        dtypes.append(str(dtype))
        offsets.append(offsets[-1] + math.prod(jnp.shape(leaf)))
        values.append(np.asarray(leaf, np.float64).ravel())
    flat_dtype = str(jnp.result_type(*dtypes))
    layout = Layout(treedef, tuple(shapes), tuple(dtypes), tuple(offsets), flat_dtype)
    return layout, paths, np.concatenate(values)


class _ById:
    """A non-hashable static argument, hashed by identity (correct, never shared)."""

    def __init__(self, value):
        self.value = value

    def __hash__(self):
        return id(self.value)

    def __eq__(self, other):
        return isinstance(other, _ById) and other.value is self.value


def split_args(args: tuple):
    """Splits ``args`` into traced array leaves and a hashable static remainder."""
    leaves, treedef = jax.tree_util.tree_flatten(args)
    dynamic, static = [], []
    for i, leaf in enumerate(leaves):
        if isinstance(leaf, (jax.Array, np.ndarray)):
            dynamic.append(leaf)
        else:
            try:
                hash(leaf)
                static.append((i, leaf))
            except TypeError:
                static.append((i, _ById(leaf)))
    return tuple(dynamic), (treedef, len(leaves), tuple(static))


def join_args(dynamic, static_spec) -> tuple:
    treedef, n, static = static_spec
    leaves: list = [None] * n
    for i, leaf in static:
        leaves[i] = leaf.value if isinstance(leaf, _ById) else leaf
    static_indices = {i for i, _ in static}
    it = iter(dynamic)
    for i in range(n):
        if i not in static_indices:
            leaves[i] = next(it)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _flat_loss(loss_fn, layout, static_spec, dynamic):
    args = join_args(dynamic, static_spec)
    return lambda theta: loss_fn(layout.unflatten(theta), *args)


def batch_size(n_params: int, n_directions: int) -> int:
    """Directions per vectorised chunk: B · N ≤ :data:`MEMORY_ELEMENTS`, 1 ≤ B ≤ 1024."""
    return max(1, min(1024, n_directions, MEMORY_ELEMENTS // max(n_params, 1)))


# --- rev (V2) ------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("loss_fn", "static_spec"))
def _rev(loss_fn, static_spec, params, dynamic):
    args = join_args(dynamic, static_spec)
    return jax.value_and_grad(lambda p: loss_fn(p, *args))(params)


def rev(loss_fn: Callable, params, args: tuple):
    """(J, ∇J) by ``jax.value_and_grad(loss_fn)`` (eq. V2)."""
    dynamic, static_spec = split_args(args)
    return _rev(loss_fn, static_spec, params, dynamic)


# --- fwd (V3) ------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("loss_fn", "layout", "static_spec", "batch"))
def _fwd_basis(loss_fn, layout, static_spec, batch, theta, dynamic, indices):
    f = _flat_loss(loss_fn, layout, static_spec, dynamic)

    def one(i):
        return jax.jvp(f, (theta,), (jax.nn.one_hot(i, theta.shape[0], dtype=theta.dtype),))[1]

    return jax.lax.map(one, indices, batch_size=batch)


@functools.partial(jax.jit, static_argnames=("loss_fn", "layout", "static_spec", "batch"))
def _fwd_segment(loss_fn, layout, static_spec, batch, theta, dynamic, start, tangents):
    f = _flat_loss(loss_fn, layout, static_spec, dynamic)

    def one(t):
        full = jax.lax.dynamic_update_slice(jnp.zeros_like(theta), t, (start,))
        return jax.jvp(f, (theta,), (full,))[1]

    return jax.lax.map(one, tangents, batch_size=batch)


def fwd_basis(loss_fn, layout: Layout, theta, args, indices) -> np.ndarray:
    """∂f/∂θ_i for each flat index, by one ``jax.jvp`` per basis vector (eq. V3)."""
    dynamic, static_spec = split_args(args)
    batch = batch_size(layout.size, len(indices))
    out = _fwd_basis(
        loss_fn, layout, static_spec, batch, theta, dynamic, jnp.asarray(indices, jnp.int32)
    )
    return np.asarray(out, np.float64)


def fwd_segment(loss_fn, layout: Layout, theta, args, start: int, tangents) -> np.ndarray:
    """⟨∇f, t⟩ for each tangent t supported on θ[start : start + len(t)] (eq. V3)."""
    dynamic, static_spec = split_args(args)
    batch = batch_size(layout.size, tangents.shape[0])
    tangents = jnp.asarray(tangents, theta.dtype)
    out = _fwd_segment(loss_fn, layout, static_spec, batch, theta, dynamic, start, tangents)
    return np.asarray(out, np.float64)


# --- fd (V4) -------------------------------------------------------------------------------------
class FDValues(NamedTuple):
    """Loss values around θ for a set of directions (host arrays, float64).

    Attributes:
      j0: f(θ).
      j_plus: f(θ₊) per direction.
      j_minus: f(θ₋) per direction.
      near_kink: per direction, which steps cross a kink (0 none, 1 the + step, 2 the − step,
        3 both; all 0 when no kink function was given).
      ratio: per direction, min over watched units of |z| / |dz| — the fraction of the step that
        reaches the nearest kink (inf when none is moved or no kink function was given).
    """

    j0: float
    j_plus: np.ndarray
    j_minus: np.ndarray
    near_kink: np.ndarray
    ratio: np.ndarray


def _near_kink(kinks, layout, args, theta, tangent):
    """Which steps along ``tangent`` cross a kinked pre-activation (eq. V9; 0 when none), and the
    fraction of the step that reaches the nearest one."""
    from jaxbp.verify.kinks import crossing_sides, step_ratio

    z, dz = jax.jvp(lambda t: kinks(layout.unflatten(t), *args), (theta,), (tangent,))
    return crossing_sides(z, dz), step_ratio(z, dz)


@functools.partial(jax.jit, static_argnames=("loss_fn", "kinks", "layout", "static_spec", "batch"))
def _fd_basis(loss_fn, kinks, layout, static_spec, batch, theta, dynamic, indices, v_plus, v_minus):
    f = _flat_loss(loss_fn, layout, static_spec, dynamic)
    args = join_args(dynamic, static_spec)

    def one(inputs):
        i, vp, vm = inputs
        plus, minus = theta.at[i].set(vp), theta.at[i].set(vm)
        near, ratio = jnp.asarray(0, jnp.int32), jnp.asarray(jnp.inf, jnp.float32)
        if kinks is not None:
            near, ratio = _near_kink(kinks, layout, args, theta, plus - theta)
        return f(plus), f(minus), near, ratio

    return f(theta), jax.lax.map(one, (indices, v_plus, v_minus), batch_size=batch)


@functools.partial(jax.jit, static_argnames=("loss_fn", "kinks", "layout", "static_spec", "batch"))
def _fd_segment(loss_fn, kinks, layout, static_spec, batch, theta, dynamic, start, s_plus, s_minus):
    f = _flat_loss(loss_fn, layout, static_spec, dynamic)
    args = join_args(dynamic, static_spec)

    def one(inputs):
        sp, sm = inputs
        plus = jax.lax.dynamic_update_slice(theta, sp, (start,))
        minus = jax.lax.dynamic_update_slice(theta, sm, (start,))
        near, ratio = jnp.asarray(0, jnp.int32), jnp.asarray(jnp.inf, jnp.float32)
        if kinks is not None:
            near, ratio = _near_kink(kinks, layout, args, theta, plus - theta)
        return f(plus), f(minus), near, ratio

    return f(theta), jax.lax.map(one, (s_plus, s_minus), batch_size=batch)


def step_size(leaf_values: np.ndarray, dtype) -> float:
    """h = eps^(1/3) · max(rms(leaf), 1): the leaf's scale times the dtype's optimal factor."""
    rms = float(np.sqrt(np.mean(leaf_values**2))) if leaf_values.size else 0.0
    return fd_step_factor(dtype) * max(rms, 1.0)


def rounded(values: np.ndarray, dtype) -> np.ndarray:
    """``values`` as represented in ``dtype``, back in float64 (exact)."""
    return np.asarray(values, dtype=jnp.dtype(dtype)).astype(np.float64)


def fd_basis(loss_fn, layout, theta, args, indices, v_plus, v_minus, kinks=None) -> FDValues:
    """f at θ with θ_i set to ``v_plus[k]`` / ``v_minus[k]`` for each ``i = indices[k]``."""
    dynamic, static_spec = split_args(args)
    batch = batch_size(layout.size, len(indices))
    j0, (jp, jm, near, ratio) = _fd_basis(
        loss_fn, kinks, layout, static_spec, batch, theta, dynamic,
        jnp.asarray(indices, jnp.int32), jnp.asarray(v_plus, theta.dtype),
        jnp.asarray(v_minus, theta.dtype),
    )  # fmt: skip
    return FDValues(
        float(j0), np.asarray(jp, np.float64), np.asarray(jm, np.float64), np.asarray(near),
        np.asarray(ratio, np.float64),
    )  # fmt: skip


def fd_segment(loss_fn, layout, theta, args, start, s_plus, s_minus, kinks=None) -> FDValues:
    """f at θ with the segment from ``start`` replaced by each row of ``s_plus`` / ``s_minus``."""
    dynamic, static_spec = split_args(args)
    batch = batch_size(layout.size, s_plus.shape[0])
    j0, (jp, jm, near, ratio) = _fd_segment(
        loss_fn, kinks, layout, static_spec, batch, theta, dynamic, start,
        jnp.asarray(s_plus, theta.dtype), jnp.asarray(s_minus, theta.dtype),
    )  # fmt: skip
    return FDValues(
        float(j0), np.asarray(jp, np.float64), np.asarray(jm, np.float64), np.asarray(near),
        np.asarray(ratio, np.float64),
    )  # fmt: skip


def fd_noise(values: FDValues, denominator: np.ndarray, dtype) -> np.ndarray:
    """Round-off allowance of each central difference (eq. V5): c · eps · (|J₊| + |J₋|) / |den|."""
    from jaxbp.verify.report import FD_NOISE_FACTOR

    scale = np.abs(values.j_plus) + np.abs(values.j_minus)
    return FD_NOISE_FACTOR * eps(dtype) * scale / np.abs(denominator)


# --- which leaves are checked elementwise -------------------------------------------------------
def plan(sizes: list[int], budget: int | None) -> list[bool]:
    """Per leaf, whether to check it elementwise (True) or by projections (False).

    Everything is elementwise when the total fits the budget (or ``budget`` is None); otherwise
    the smallest leaves are taken elementwise while they fit, and the rest are projected.
    """
    if budget is None or sum(sizes) <= budget:
        return [True] * len(sizes)
    chosen = [False] * len(sizes)
    used = 0
    for i in sorted(range(len(sizes)), key=lambda i: sizes[i]):
        if used + sizes[i] <= budget:
            chosen[i] = True
            used += sizes[i]
    return chosen


def projections(rng: np.random.Generator, n_elements: int, count: int) -> np.ndarray:
    """``count`` random unit vectors of length ``n_elements`` (float64, host)."""
    v = rng.standard_normal((count, n_elements))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def resolve_key(key) -> tuple[Array, dict]:
    """``key`` as a ``jax.random`` key, and how to record it: None → seed 0, an int → that seed.

    Raises:
      TypeError: anything else than None, an int or a key.
    """
    if key is None:
        return jax.random.key(0), {"seed": 0}
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key(int(key)), {"seed": int(key)}
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key, {"key_data": np.asarray(jax.random.key_data(key)).tolist()}
    if isinstance(key, jax.Array) and key.dtype == jnp.uint32 and key.shape == (2,):
        return jax.random.wrap_key_data(key), {"key_data": np.asarray(key).tolist()}
    raise TypeError(f"key: expected None, an int seed or a jax.random key, got {key!r}")


def host_rng(key) -> np.random.Generator:
    """A NumPy generator seeded by the key's bits: directions and test vectors are drawn on the
    host, so no random-number kernel is compiled per leaf shape (reproducible from the key)."""
    key, _ = resolve_key(key)
    data = np.asarray(jax.random.key_data(key)).astype(np.uint64).ravel().tolist()
    return np.random.default_rng(data)
