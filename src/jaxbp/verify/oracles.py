"""The oracles of :func:`jaxbp.verify.check` as two compiled programs per check: reverse mode, and
every directional oracle (forward mode and the finite-difference ladder) vectorised over
directions.

Both see the loss through a flat vector θ of the checked leaves, in the **reference precision**
(one precision above each leaf's dtype, :mod:`jaxbp.verify.tolerance`)::

    f(θ) = loss_fn(unflatten(θ, fixed), *args_ref)

where ``fixed`` holds the leaves left out by ``wrt`` (and integer / key leaves) unchanged.

- rev (eq. V2): ``jax.value_and_grad(f)`` at θ.
- directions: for each direction d — a basis vector e_i (a *coordinate*, named by its element)
  or a random unit vector supported on one leaf (a *projection*), generated on the device from a
  key so no N-sized vector crosses from the host — one program computes, with
  ``jax.lax.map(..., batch_size=B)`` (``vmap`` over chunks of B directions):
  the fwd value ``jax.jvp(f, θ, v)`` (eq. V3), the hand value ⟨g, v⟩, and the loss at the six
  points θ ± s_k v of the step ladder with the hand value along each perturbation as actually
  represented (:mod:`jaxbp.verify.fd`, eqs. V4, V5); with ``kinks=``, the distance to the nearest
  watched kink along v caps the step (eq. V9).

Every compiled function here is a module-level ``jax.jit`` keyed on the loss function, the tree's
layout and the argument shapes, so repeated checks of the same problem compile once.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.verify import fd

Array = jax.Array

MEMORY_ELEMENTS = 1 << 21
"""Bound on the perturbed parameter numbers alive at once in the directional program (2M numbers,
16 MB in float64): B directions × 2 · LEVELS points × N parameters."""

FD_FLOP_BUDGET = 2e10
"""The automatic budget of the directional program, in floating-point operations of loss
evaluations (XLA's cost analysis of one evaluation × evaluations per direction): about half a second on
two CPU cores in float64, far less on an accelerator."""

MIN_COORDINATES = 1
"""Coordinates per leaf checked even when the budget is smaller. The first is the leaf's largest
disagreement with rev (then its largest hand element, then random ones, as the share allows):
rev compares every element, and fwd and fd confirm it independently where it matters most, plus
along a random projection of the whole leaf."""

DEFAULT_FD_BUDGET = "auto"
"""``fd_budget`` default: every coordinate when the loss is cheap enough, else a random sample
plus projections (:func:`plan`)."""

DEFAULT_PROJECTIONS = 1
"""Random unit directions per leaf whose coordinates are not all checked."""

EVALS_PER_DIRECTION = 2 * fd.LEVELS + 2
"""Loss evaluations per direction, forward mode counted as two."""


class Layout(NamedTuple):
    """How a flat θ of the checked leaves maps back to the tree (hashable: a static argument).

    Attributes:
      treedef: the tree's structure.
      shapes: every leaf's shape.
      eval_dtypes: every leaf's dtype in the reference precision (unchecked leaves: their own).
      checked: per leaf, whether it is part of θ.
      offsets: per leaf, its start in θ, and θ's size last (unchecked leaves take no room).
      flat_dtype: θ's dtype (the widest reference dtype).
    """

    treedef: object
    shapes: tuple
    eval_dtypes: tuple
    checked: tuple
    offsets: tuple
    flat_dtype: str

    @property
    def size(self) -> int:
        return self.offsets[-1]

    def segment(self, i: int) -> slice:
        return slice(self.offsets[i], self.offsets[i + 1])

    def unflatten(self, theta: Array, fixed: tuple):
        fixed_it = iter(fixed)
        leaves = []
        for i, (shape, dtype, c) in enumerate(
            zip(self.shapes, self.eval_dtypes, self.checked, strict=True)
        ):
            if c:
                leaves.append(
                    theta[self.offsets[i] : self.offsets[i + 1]].reshape(shape).astype(dtype)
                )
            else:
                leaves.append(next(fixed_it))
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


def make_layout(treedef, leaves, checked, eval_dtypes) -> Layout:
    offsets = [0]
    for leaf, c in zip(leaves, checked, strict=True):
        offsets.append(offsets[-1] + (math.prod(np.shape(leaf)) if c else 0))
    flat = str(jnp.result_type(*[d for d, c in zip(eval_dtypes, checked, strict=True) if c]))
    return Layout(treedef, tuple(tuple(np.shape(x)) for x in leaves), tuple(map(str, eval_dtypes)),
                  tuple(checked), tuple(offsets), flat)  # fmt: skip


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


def _flat_loss(loss_fn, layout, static_spec, fixed, dynamic):
    args = join_args(dynamic, static_spec)
    return lambda theta: loss_fn(layout.unflatten(theta, fixed), *args)


def batch_size(n_params: int, n_directions: int) -> int:
    """Directions per vectorised chunk: B · 2 · LEVELS · N ≤ :data:`MEMORY_ELEMENTS`."""
    per = 2 * fd.LEVELS * max(n_params, 1)
    return max(1, min(1024, n_directions, MEMORY_ELEMENTS // per))


# --- rev (V2) ------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("loss_fn", "layout", "static_spec"))
def _rev(loss_fn, layout, static_spec, theta, fixed, dynamic):
    return jax.value_and_grad(_flat_loss(loss_fn, layout, static_spec, fixed, dynamic))(theta)


@functools.partial(jax.jit, static_argnames=("loss_fn", "layout", "static_spec"))
def _value(loss_fn, layout, static_spec, theta, fixed, dynamic):
    return _flat_loss(loss_fn, layout, static_spec, fixed, dynamic)(theta)


def rev(loss_fn, layout: Layout, theta, fixed, args) -> tuple[float, np.ndarray]:
    """(f(θ), ∇f(θ)) by ``jax.value_and_grad`` (eq. V2), on the host in float64."""
    dynamic, static_spec = split_args(args)
    j, g = _rev(loss_fn, layout, static_spec, theta, fixed, dynamic)
    return float(j), np.asarray(g, np.float64)


def value(loss_fn, layout: Layout, theta, fixed, args) -> float:
    dynamic, static_spec = split_args(args)
    return float(_value(loss_fn, layout, static_spec, theta, fixed, dynamic))


def flops_per_evaluation(loss_fn, layout: Layout, theta, fixed, args) -> float | None:
    """XLA's cost analysis of one loss evaluation (lowering only, no compilation), or None."""
    dynamic, static_spec = split_args(args)
    try:
        cost = _value.lower(loss_fn, layout, static_spec, theta, fixed, dynamic).cost_analysis()
    except Exception:  # noqa: BLE001 — an estimate only; the budget falls back to a size rule
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    flops = None if not cost else cost.get("flops")
    return float(flops) if flops and flops > 0 else None


# --- directions (V3, V4, V9) ---------------------------------------------------------------------
class Directions(NamedTuple):
    """A batch of directions (device or host arrays, one entry per direction).

    Attributes:
      kind: 0 coordinate, 1 projection.
      index: the flat index in θ of a coordinate (projections: 0).
      start, stop: the segment in θ a projection is supported on (coordinates: index, index + 1).
      row: a projection's row in the projections array (coordinates: 0).
      step: the base step h of the ladder.
    """

    kind: np.ndarray
    index: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    row: np.ndarray
    step: np.ndarray


def _distance_to_kink(kinks, layout, fixed, args, theta, v):
    """First-order distance along v to the nearest watched pre-activation at 0 (inf: none)."""
    z, dz = jax.jvp(lambda t: kinks(layout.unflatten(t, fixed), *args), (theta,), (v,))
    dist = jnp.asarray(jnp.inf, theta.dtype)
    for zl, dzl in zip(jax.tree.leaves(z), jax.tree.leaves(dz), strict=True):
        zl, dzl = jnp.asarray(zl, theta.dtype), jnp.asarray(dzl, theta.dtype)
        if zl.size:
            moved = dzl != 0
            r = jnp.where(moved, jnp.abs(zl) / jnp.where(moved, jnp.abs(dzl), 1), jnp.inf)
            dist = jnp.minimum(dist, jnp.min(r))
    return dist


@functools.partial(
    jax.jit, static_argnames=("loss_fn", "kinks", "layout", "static_spec", "batch", "fwd")
)
def _directional(
    loss_fn, kinks, layout, static_spec, batch, fwd, theta, fixed, dynamic, hand, dirs, projections
):
    f = _flat_loss(loss_fn, layout, static_spec, fixed, dynamic)
    args = join_args(dynamic, static_spec)
    n = theta.shape[0]
    pos = jnp.arange(n)
    fractions = jnp.asarray(0.5 ** np.arange(fd.LEVELS), theta.dtype)

    def along(d: Directions, v):
        # the hand side only on the direction's own segment: a NaN elsewhere stays elsewhere
        g = jnp.where((pos >= d.start) & (pos < d.stop), hand, 0)
        h = d.step.astype(theta.dtype)
        blocked = jnp.asarray(False)
        if kinks is not None:
            dist = _distance_to_kink(kinks, layout, fixed, args, theta, v)
            blocked = dist == 0
            h = jnp.where(blocked, h, jnp.minimum(h, fd.KINK_STEP_FRACTION * dist))
        s = h * fractions
        plus = theta[None, :] + s[:, None] * v[None, :]
        minus = theta[None, :] - s[:, None] * v[None, :]
        # the 2 · LEVELS points one after another (a scan: one copy of f to compile, and separate
        # products, which run 40 % faster per point than a vmap's batched one on the CPU)
        values = jax.lax.map(f, jnp.concatenate([plus, minus]))
        j_plus, j_minus = values[: fd.LEVELS], values[fd.LEVELS :]
        hand_diff = (plus - minus) @ g
        tangent = jax.jvp(f, (theta,), (v,))[1] if fwd else jnp.zeros((), theta.dtype)
        return j_plus, j_minus, hand_diff, s, v @ g, tangent, blocked

    def one(d: Directions):
        # a coordinate is built here; a projection (random signs on its leaf, drawn on the host
        # from the check's key) is a row of ``projections`` — no random kernel to compile or run
        v = jnp.where(d.kind == 0, (pos == d.index).astype(theta.dtype), projections[d.row])
        return along(d, v)

    return jax.lax.map(one, dirs, batch_size=None if batch == 1 else batch)


class DirectionalValues(NamedTuple):
    """What the directional program returns, on the host in float64 (one entry per direction)."""

    j0: float
    j_plus: np.ndarray  # (n, LEVELS)
    j_minus: np.ndarray  # (n, LEVELS)
    hand_diff: np.ndarray  # (n, LEVELS): ⟨g, θ₊ − θ₋⟩
    steps: np.ndarray  # (n, LEVELS)
    hand: np.ndarray  # (n,): ⟨g, v⟩
    tangent: np.ndarray  # (n,): jvp along v (zeros without fwd)
    blocked: np.ndarray  # (n,) bool: on a watched kink


def directional(loss_fn, layout: Layout, theta, fixed, args, hand, dirs: Directions,
                projections: np.ndarray, j0: float, *, fwd: bool, kinks=None) -> DirectionalValues:  # fmt: skip
    """Runs the directional program (module docstring) over ``dirs``; ``j0`` is f(θ) (from rev)."""
    dynamic, static_spec = split_args(args)
    batch = batch_size(layout.size, len(dirs.kind))
    # converted on the host and placed with device_put: jnp.asarray(x, dtype) of a NumPy array
    # compiles a kernel per shape and dtype
    host = (np.int32, np.int32, np.int32, np.int32, np.int32, theta.dtype)
    dev = Directions(
        *(jax.device_put(np.asarray(a).astype(t)) for a, t in zip(dirs, host, strict=True))
    )
    rows = projections if len(projections) else np.zeros((1, theta.shape[0]))
    out = _directional(loss_fn, kinks, layout, static_spec, batch, fwd, theta, fixed, dynamic,
                       jax.device_put(np.asarray(hand).astype(theta.dtype)), dev,
                       jax.device_put(np.asarray(rows).astype(theta.dtype)))  # fmt: skip
    jp, jm, hd, s, hv, tg, bl = (np.asarray(a) for a in out)
    f64 = np.float64
    return DirectionalValues(float(j0), jp.astype(f64), jm.astype(f64), hd.astype(f64),
                             s.astype(f64), hv.astype(f64), tg.astype(f64), bl.astype(bool))  # fmt: skip


# --- which directions ----------------------------------------------------------------------------
class Plan(NamedTuple):
    """Per checked leaf: the flat coordinates (within the leaf) and the number of projections."""

    coordinates: dict  # leaf index -> np.ndarray of element indices (flat, within the leaf)
    projections: dict  # leaf index -> int
    complete: dict  # leaf index -> bool (every coordinate)
    budget: int | None  # the coordinate budget used (None: every coordinate)
    flops: float | None


def plan(
    sizes: dict, budget, *, flops: float | None, n_projections: int, rng, priority: dict
) -> Plan:
    """Chooses the directions (module docstring of :mod:`jaxbp.verify.check`, "Budget").

    Args:
      sizes: leaf index → number of elements (checked leaves only).
      budget: ``"auto"``, an int (coordinates in total) or None (every coordinate).
      flops: one loss evaluation's cost, for ``"auto"``.
      n_projections: projections for each leaf not covered completely.
      rng: host generator for the random coordinates.
      priority: leaf index → element indices to take first (largest hand value, largest
        disagreement with rev).
    """
    total = sum(sizes.values())
    if budget == "auto":
        if flops is None:
            budget = 20_000
        else:
            budget = int(FD_FLOP_BUDGET / (flops * EVALS_PER_DIRECTION))
    if budget is None or total <= budget:
        coords = {i: np.arange(n) for i, n in sizes.items()}
        return Plan(coords, {i: 0 for i in sizes}, {i: True for i in sizes}, None, flops)
    # Small leaves are taken whole while they fit; the rest share what is left.
    coords, complete, projections = {}, {}, {}
    left = budget
    order = sorted(sizes, key=lambda i: sizes[i])
    for k, i in enumerate(order):
        n = sizes[i]
        others = len(order) - k - 1
        share = max(MIN_COORDINATES, left // (others + 1))
        if n <= max(share, left - MIN_COORDINATES * others):
            coords[i], complete[i], projections[i] = np.arange(n), True, 0
        else:
            chosen = list(dict.fromkeys(int(j) for j in priority.get(i, ()) if 0 <= j < n))
            chosen = chosen[:share]
            taken = set(chosen)
            while len(chosen) < share:  # random coordinates, O(share) however large the leaf
                j = int(rng.integers(n))
                if j not in taken:
                    taken.add(j)
                    chosen.append(j)
            coords[i] = np.sort(np.asarray(chosen, np.int64))
            complete[i], projections[i] = False, n_projections
        left = max(left - len(coords[i]), 0)
    return Plan(coords, projections, complete, budget, flops)


def direction_count(sizes: dict, budget, flops: float | None, n_projections: int):
    """(directions, projections) that :func:`plan` chooses (it does not depend on which)."""
    p = plan(sizes, budget, flops=flops, n_projections=n_projections,
             rng=np.random.default_rng(0), priority={})  # fmt: skip
    n_proj = sum(p.projections.values())
    return sum(len(c) for c in p.coordinates.values()) + n_proj, n_proj


def projection_rows(rng: np.random.Generator, layout: Layout, leaves: list, dtype) -> np.ndarray:
    """One unit vector of random signs per entry of ``leaves`` (leaf indices), on that leaf's
    segment of θ and zero elsewhere: shape (len(leaves), N)."""
    rows = np.zeros((len(leaves), layout.size), dtype)
    for r, i in enumerate(leaves):
        seg = layout.segment(i)
        n = seg.stop - seg.start
        rows[r, seg] = (2.0 * rng.integers(0, 2, n) - 1.0) / np.sqrt(max(n, 1))
    return rows


def precompile(dtypes, loss_fn, layout: Layout, theta, fixed, args, count, *, fwd: bool,
               kinks=None) -> bool:  # fmt: skip
    """Compiles the directional program for ``count`` directions ahead of time (in a worker
    thread: JAX's configuration is thread-local, so the reference precision is entered here too);
    the call that follows finds it in JAX's compilation cache. False when it cannot be compiled —
    the call then raises the real error."""
    from jaxbp.verify.tolerance import reference_precision

    count, n_proj = count
    if count == 0:
        return False
    with reference_precision(dtypes):
        dynamic, static_spec = split_args(args)
        batch = batch_size(layout.size, count)
        shape = jax.ShapeDtypeStruct
        dirs = Directions(*(shape((count,), jnp.int32) for _ in range(5)),
                          shape((count,), theta.dtype))  # fmt: skip
        rows = shape((max(n_proj, 1), theta.shape[0]), theta.dtype)
        try:
            _directional.lower(loss_fn, kinks, layout, static_spec, batch, fwd, theta, fixed,
                               dynamic, shape(theta.shape, theta.dtype), dirs, rows).compile()  # fmt: skip
        except Exception:  # noqa: BLE001 — the real call reports it, with its own handling
            return False
    return True


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


def host_rng(key, stream: int = 0) -> np.random.Generator:
    """A NumPy generator seeded by the key's bits (and ``stream``, for independent streams of one
    key): directions and test vectors are drawn on the host, so no random-number kernel is
    compiled per leaf shape (reproducible from the key)."""
    key, _ = resolve_key(key)
    data = np.asarray(jax.random.key_data(key)).astype(np.uint64).ravel().tolist()
    return np.random.default_rng(data + [stream] if stream else data)


@functools.cache
def key_data_shape() -> tuple:
    """The shape of the default PRNG implementation's raw key data ((2,) for threefry)."""
    return tuple(np.shape(jax.random.key_data(jax.random.key(0))))


def projections(rng: np.random.Generator, n_elements: int, count: int) -> np.ndarray:
    """``count`` random unit vectors of length ``n_elements`` (float64, host)."""
    v = rng.standard_normal((count, n_elements))
    return v / np.linalg.norm(v, axis=1, keepdims=True)
