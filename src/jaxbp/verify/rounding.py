"""The error model of a low-precision hand result: a gradient computed in float16 or bfloat16
(docs/verify.md, "Low precision"; :mod:`jaxbp.verify.tolerance` states the policy).

A correct bfloat16 gradient can be 10 % off its exact value: the bias gradient of a least-squares
model is a sum of m residuals of both signs, each rounded to 8 bits, and the rounding of such a
sum scales with Σ|terms|, not with |Σ terms|. A tolerance relative to the result is then either
too tight (a correct gradient fails) or, loosened to pass it, too loose (a 10 % bug passes). So
a 16-bit hand result is judged in two parts, each against what it can be off by:

1. **The derivation, one precision up.** ``grad_fn`` is evaluated again on the parameters and the
   16-bit arguments cast to float32 (exactly): the same code, none of the 16-bit rounding. That
   result is compared with the oracles (evaluated in float64) at float32's tolerance, so a
   derivation bug of any size above float32's rounding shows there (rows ``rev``, ``fwd``,
   ``fd``; their note says "hand evaluated in float32").
2. **The rounding, against its own spread.** The 16-bit result is compared with that float32
   evaluation (row ``rounding``), and how far apart the two may be is *measured*, not assumed:
   at the point and at :data:`SAMPLES` points near it — every 16-bit leaf of the parameters and
   of the arguments moved elementwise by up to :data:`PERTURBATION`, which draws every rounding
   the computation makes afresh while its terms keep their magnitudes — the difference
   d_j = 16-bit − float32 is evaluated. Rounding scatters d_j around zero from point to point,
   with a spread that scales with the magnitude of the terms, whatever the code computes; a
   precision-only bug — a 16-bit code path that is wrong, a constant rounded wrongly on
   purpose — moves it the same way at every point, in proportion to the gradient or by a
   constant. So per element a straight line d = α + β·(float32 result) is fitted over the
   n = SAMPLES + 1 points (:func:`fit`): its value at the point is the **systematic part** of
   the 16-bit error, the residuals are the rounding. The row compares the float32 result plus
   that systematic part with the float32 result; its bound is
   ``rtol·|ref| + atol + Z·(standard error of the systematic part)``, rtol one 16-bit epsilon and
   Z from :func:`z`, chosen so that a correct leaf fails with probability
   :data:`FALSE_ALARM` however many elements it has. A 10 % error in a bfloat16 least-squares
   bias gradient, whose rounding alone is 5 % from point to point, fails; the correct one
   passes. NaN or Inf in the 16-bit result where float32 is finite (an overflow) fails the row.
   The transformations (``jit``, ``vmap``) of a 16-bit ``grad_fn``, which compare one rounding
   with another of the same point, take √2·Z·s_i as their allowance, s_i the residual standard
   deviation: XLA may round a fused computation differently from an eager one.

Where ``grad_fn`` cannot run one precision up — it raises on float32 inputs, returns 16-bit
leaves for them, or computes in a 16-bit dtype anywhere (its jaxpr is read) — part 1 has no
clean float32 result: d_j is measured against the oracle (reverse mode one precision up) instead,
the ``rounding`` row judges the systematic part of 16-bit − oracle, and the oracle rows
compare the 16-bit result at the point with the oracles, with √2·Z·s_i as allowance; the rows say so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core

from jaxbp.verify.oracles import join_args, split_args

SAMPLES = 48
"""Points near the point of the check at which the rounding is drawn again; with the point itself
n = 49 samples of d_j per element."""

PERTURBATION = 0.125
"""How far the nearby points lie: every 16-bit leaf multiplied by 1 + PERTURBATION · U(−1, 1)
elementwise (zeros stay zero). 16 bfloat16 ulps, 128 float16 ulps: enough that each rounding the
computation makes is drawn afresh, uniformly within its ulp — with 1-ulp moves the mean of d_j
kept a bias of 4 % of a bfloat16 least-squares bias gradient (t = 20 at 200 points), at 12.5 %
none was left (|t| < 2) — while the terms keep their magnitudes. Both sides of d_j are evaluated
at the same moved point, so the move itself is never mistaken for an error."""

FALSE_ALARM = 1e-5
"""The probability that a correct 16-bit leaf fails its ``rounding`` row: Z is Student's t
quantile for this probability shared among the leaf's elements (:func:`z`)."""

HALF = ("float16", "bfloat16")


def is_half(dtype) -> bool:
    """Whether ``dtype`` is a 16-bit float dtype (judged by this module's model)."""
    try:
        return str(jnp.dtype(dtype)) in HALF
    except TypeError:
        return False


def up_dtype(dtype) -> np.dtype:
    """The dtype a 16-bit leaf is evaluated in for part 1: float32."""
    return jnp.dtype(jnp.float32) if is_half(dtype) else jnp.dtype(dtype)


def upcast_half(tree):
    """Every 16-bit float array leaf of ``tree`` cast to float32 (exact); other leaves as they are."""

    def cast(leaf):
        if not isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
            return leaf
        if not is_half(jnp.result_type(leaf)):
            return leaf
        if isinstance(leaf, jax.core.Tracer):
            return leaf.astype(jnp.float32)
        return jax.device_put(np.asarray(leaf).astype(np.float32))

    return jax.tree.map(cast, tree)


def _subjaxprs(params) -> Iterator:
    for value in params.values():
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(v, jex_core.ClosedJaxpr):
                yield v.jaxpr
            elif isinstance(v, jex_core.Jaxpr):
                yield v


def computes_in_half(jaxpr) -> bool:
    """Whether any equation of ``jaxpr`` (through every sub-jaxpr) produces a 16-bit float."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            if is_half(getattr(var.aval, "dtype", None)):
                return True
        if any(computes_in_half(sub) for sub in _subjaxprs(eqn.params)):
            return True
    return False


class Spread(NamedTuple):
    """The measured rounding of a 16-bit hand result, per checked leaf (the order of ``idx``;
    float64 host arrays).

    Attributes:
      up: the hand result one precision up at the point, or None where part 1 has no clean
        float32 result.
      ref: the reference at the point (the float32 hand, or the oracle), as the points saw it.
      low: the 16-bit result at the point, as the points saw it (jitted).
      systematic: the systematic part of d = 16-bit − reference at the point: the value at the
        point of the straight line fitted to d_j against the reference over the n points.
      standard_error: its standard error.
      spread: s_i, the standard deviation of d_j about that line (the rounding at one point).
      n: the number of points (the point itself and :data:`SAMPLES` near it).
      reference: ``"float32 hand"`` or ``"oracle"``: what d_j was measured against.
      reason: why there is no clean float32 result (None where there is).
    """

    up: list | None
    ref: list
    low: list
    systematic: list
    standard_error: list
    spread: list
    n: int
    reference: str
    reason: str | None


def fit(low: np.ndarray, ref: np.ndarray) -> tuple:
    """Per element, the straight line d = α + β·ref fitted to d_j = low_j − ref_j over the points
    (axis 0; point 0 is the point of the check): ``(systematic, standard_error, spread)`` —
    the line's value at point 0, its standard error, and the residual standard deviation.

    A systematic error proportional to the gradient (a factor wrong in a 16-bit code path) moves
    d with the reference from point to point and lands on β; a constant one on α; rounding lands
    in the residuals. Where the reference does not vary, the line is the mean."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        d = low - ref
        n = d.shape[0]
        xm, dm = ref.mean(axis=0), d.mean(axis=0)
        sxx = np.sum((ref - xm) ** 2, axis=0)
        flat = ~(sxx > 1e-24 * np.maximum(np.sum(ref**2, axis=0), 1e-300))
        safe = np.where(flat, 1.0, sxx)
        beta = np.where(flat, 0.0, np.sum((ref - xm) * (d - dm), axis=0) / safe)
        at0 = dm + beta * (ref[0] - xm)
        resid = d - (dm + beta * (ref - xm))
        dof = np.where(flat, n - 1, n - 2)
        sigma = np.sqrt(np.sum(resid**2, axis=0) / dof)
        se = sigma * np.sqrt(1.0 / n + np.where(flat, 0.0, (ref[0] - xm) ** 2 / safe))
    return at0, np.where(np.isfinite(se), se, 0.0), np.where(np.isfinite(sigma), sigma, 0.0)


def _flat_leaves(out, treedef) -> list:
    from jaxbp.verify.hand import parse_gradient

    return parse_gradient(out, treedef)[1]


def _clean_up(grad_c: Callable, tree, rest, treedef, idx) -> tuple[list | None, str | None]:
    """``grad_fn`` one precision up at the point, if it runs there cleanly."""
    up_tree, up_rest = upcast_half(tree), upcast_half(rest)
    dynamic, spec = split_args(up_rest)
    try:
        jaxpr = jax.make_jaxpr(lambda t, d: grad_c(t, *join_args(d, spec)))(up_tree, dynamic)
    except Exception as e:  # noqa: BLE001 — grad_fn refusing float32 inputs is an answer
        return None, f"grad_fn could not be traced on float32 inputs ({type(e).__name__})"
    if computes_in_half(jaxpr):
        return None, "grad_fn computes in a 16-bit dtype even on float32 inputs"
    try:
        leaves = _flat_leaves(grad_c(up_tree, *up_rest), treedef)
    except Exception as e:  # noqa: BLE001
        return None, f"grad_fn failed on float32 inputs ({type(e).__name__})"
    up = []
    for i in idx:
        leaf = leaves[i]
        if leaf is None or not hasattr(leaf, "dtype") or is_half(leaf.dtype):
            return None, "grad_fn returned a 16-bit or missing leaf for float32 inputs"
        up.append(np.asarray(leaf, np.float64))
    return up, None


def _perturbed(rng: np.random.Generator, tree, n: int) -> list:
    """``n`` copies of ``tree`` with every 16-bit float leaf moved elementwise to
    x · (1 + PERTURBATION · U(−1, 1)), rounded to the leaf's dtype (zeros stay zero)."""

    def one():
        def move(leaf):
            if isinstance(leaf, (jax.Array, np.ndarray, np.generic)) and is_half(
                jnp.result_type(leaf)
            ):
                x = np.asarray(leaf).astype(np.float64)
                moved = x * (1.0 + PERTURBATION * rng.uniform(-1.0, 1.0, x.shape))
                return moved.astype(np.asarray(leaf).dtype)
            return leaf

        return jax.tree.map(move, tree)

    return [one() for _ in range(n)]


def _stack(trees: list):
    def stack(*leaves):
        if isinstance(leaves[0], (jax.Array, np.ndarray, np.generic)):
            return jax.device_put(np.stack([np.asarray(v) for v in leaves]))
        return leaves[0]

    return jax.tree.map(stack, *trees)


def measure(
    grad_c: Callable,
    tree,
    rest: tuple,
    treedef,
    idx: list,
    *,
    rng: np.random.Generator,
    oracle: Callable | None = None,
    samples: int = SAMPLES,
) -> Spread:
    """Parts 1 and 2 of the module docstring for a 16-bit ``grad_fn``.

    Args:
      grad_c: ``grad_c(tree, *rest)`` → grads (or ``(value, grads)``) with ``tree``'s structure.
      tree, rest: the point (16-bit leaves among them).
      treedef: ``tree``'s structure.
      idx: the flat indices of the checked leaves.
      rng: host generator for the perturbations.
      oracle: ``oracle(tree, *rest)`` → the flat reference gradient of the checked leaves (one
        precision up), used where ``grad_fn`` has no clean float32 evaluation.
      samples: the number of nearby points.
    """
    up, reason = _clean_up(grad_c, tree, rest, treedef, idx)
    both = [(tree, rest)] + _perturbed(rng, (tree, rest), samples)  # the point first
    trees = _stack([t for t, _ in both])
    # the non-array arguments are the same at every point; the arrays are mapped over
    _, spec = split_args(rest)
    dyn = _stack([split_args(r)[0] for _, r in both])

    def low(t, d):
        return [_flat_leaves(grad_c(t, *join_args(d, spec)), treedef)[i] for i in idx]

    def high(t, d):
        t_up, d_up = upcast_half(t), upcast_half(d)
        if up is not None:
            return [_flat_leaves(grad_c(t_up, *join_args(d_up, spec)), treedef)[i] for i in idx]
        return oracle(t, *join_args(d, spec))

    low_j = _mapped(low, trees, dyn)
    high_j = _mapped(high, trees, dyn)
    refs, lows, systematic, standard_error, spread = [], [], [], [], []
    for k in range(len(idx)):
        lo, hi = np.asarray(low_j[k], np.float64), np.asarray(high_j[k], np.float64)
        at0, se, sigma = fit(lo, hi)
        refs.append(hi[0])
        lows.append(lo[0])
        systematic.append(at0)
        standard_error.append(se)
        spread.append(sigma)
    return Spread(up, refs, lows, systematic, standard_error, spread, len(both),
                  "float32 hand" if up is not None else "oracle", reason)  # fmt: skip


def _mapped(fn, trees, dyn) -> list:
    """``fn`` at every stacked point: one jitted ``lax.map`` (each point unbatched, as grad_fn
    runs), or, where grad_fn cannot be traced, a Python loop."""
    try:
        out = jax.jit(lambda t, d: jax.lax.map(lambda a: fn(*a), (t, d)))(trees, dyn)
        return [np.asarray(o) for o in out]
    except Exception:  # noqa: BLE001 — an untraceable grad_fn runs eagerly, point by point
        n = jax.tree.leaves(trees)[0].shape[0]
        pts = [fn(jax.tree.map(lambda a, i=i: a[i], trees), jax.tree.map(lambda a, i=i: a[i], dyn))
               for i in range(n)]  # fmt: skip
        return [np.stack([np.asarray(p[k]) for p in pts]) for k in range(len(pts[0]))]


def z(n_elements: int, samples: int = SAMPLES) -> float:
    """Z for a leaf of ``n_elements``: the two-sided Student's t quantile (``samples`` degrees of
    freedom) at :data:`FALSE_ALARM` / n_elements — 4.9 for a scalar, 7.6 for 10⁴ elements, 8.9
    for 10⁶ (a correct systematic part lies within Z standard errors of zero at every element with probability
    1 − FALSE_ALARM)."""
    from scipy import stats

    return float(stats.t.ppf(1.0 - FALSE_ALARM / (2.0 * max(int(n_elements), 1)), samples))


def allowance(spread: np.ndarray, n: int) -> np.ndarray:
    """The allowance of one point of a leaf against another evaluation (a transformation, the
    oracle): √2 · Z · s_i — two roundings."""
    spread = np.asarray(spread, np.float64)
    return np.sqrt(2.0) * z(spread.size, n - 2) * spread


def systematic_allowance(standard_error: np.ndarray, n: int) -> np.ndarray:
    """The allowance of the systematic part (the ``rounding`` row): Z · its standard error
    (n − 2 degrees of freedom)."""
    standard_error = np.asarray(standard_error, np.float64)
    return z(standard_error.size, n - 2) * standard_error


def describe(s: Spread, dtype, n_elements: int, *, systematic: bool = False) -> str:
    """Where a ``rounding`` allowance came from, for a row's bound source."""
    against = "its float32 evaluation" if s.up is not None else "the oracle"
    where = f"this point and {s.n - 1} points within {PERTURBATION:.1%} of it"
    if systematic:
        return (f"rounding: Z = {z(n_elements, s.n - 2):.2f} standard errors of the systematic "
                f"part of ({dtype} hand − {against}), a line fitted to it over {where}")  # fmt: skip
    return (f"rounding: √2·Z (Z = {z(n_elements, s.n - 2):.2f}) × the residual standard deviation "
            f"of ({dtype} hand − {against}) over {where}")  # fmt: skip


__all__ = [
    "HALF",
    "SAMPLES",
    "PERTURBATION",
    "FALSE_ALARM",
    "Spread",
    "allowance",
    "computes_in_half",
    "describe",
    "fit",
    "systematic_allowance",
    "is_half",
    "measure",
    "up_dtype",
    "upcast_half",
    "z",
]
