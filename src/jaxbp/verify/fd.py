"""The one finite-difference routine of the verifier: the step ladder, Richardson extrapolation
with a measured allowance, and kink detection (docs/verify.md, "Finite differences"; eqs. V4, V5,
V9). Every front door — :func:`~jaxbp.verify.check`, :func:`~jaxbp.verify.check_grads`,
:func:`~jaxbp.verify.check_vjp`, :func:`~jaxbp.verify.check_jvp`,
:func:`~jaxbp.verify.check_custom_vjp` — evaluates its function at the points of :data:`OFFSETS`
and hands the values to :func:`central`; only how the points are evaluated differs (a scalar loss
along directions in one ``lax.scan``, a pytree output along tangents under ``vmap``, JAX's own
step for ``check_grads``).

For a direction v and a function f evaluated in dtype d, two steps s_k = h · 2^-k (k = 0, 1) give

    central   D_k = (f(x + s_k v) − f(x − s_k v)) / (2 s_k)
    one-sided F₊_k = (f(x + s_k v) − f(x)) / s_k,   F₋_k = (f(x) − f(x − s_k v)) / s_k

**Estimate.** R = (4 D₁ − D₀) / 3 (Richardson: the s² term of the truncation removed).
|D₁ − D₀| / 3 is the truncation of the finer difference itself — a bound on what is left in R
many times over, and independent of any error in the hand value — and :data:`TRUNCATION_SAFETY`
times it plus the round-off of R, ``ROUNDOFF_FACTOR · eps(d) · (|f₊| + |f₋|) / (2 s)`` combined
over the two levels as R combines them, is the **allowance** a compared row adds to its bound.
``eps(d)`` is the machine epsilon of the dtype the values were *computed* in (:func:`eps_of` reads
it from the arrays before any host conversion): float64 where the reference runs in float64, and
float32 where it could not (no float64 on the backend, or f refused upcast arguments) — never the
parameter's dtype when the differences were taken one precision up.

With ``hand_diff`` (:func:`~jaxbp.verify.check`'s directions), the hand side is taken along the
perturbation as actually represented: e_k = D_k − ⟨g, x₊ − x₋⟩ / (2 s_k), so the rounding of
x ± s v never looks like a gradient error, and R is the hand value's error itself.

**Kinks.** On a smooth function the one-sided gap G_k = F₊_k − F₋_k is s_k f″ + O(s_k³), so
G₀ = 2 G₁. A kink (ReLU, abs, max, clip…) within the ladder breaks that ratio: at the point
itself G_k is the jump of the slope at every k. A direction with
|G₀ − 2 G₁| > :data:`KINK_RATIO_TOLERANCE` · |G₀| beyond round-off is **non-smooth at this
point** (:func:`kinks`): its row shows both one-sided values F₋, F₊ at the finest step and
whether the hand value lies between them, and it does not fail — the analytic oracles (rev,
fwd), which take no step, still judge the gradient there.

**Step.** h = 2 · eps_eval^(1/3) · scale in float64 (eps^(1/5), Richardson's optimum, in float32:
:func:`~jaxbp.verify.tolerance.step_factor`), with scale the leaf's root mean square (the whole
tree's where the leaf is all zeros, 1 where everything is): relative to the leaf, with no floor
that dwarfs small weights (layer norm's gains of 0.05 get a step of 0.05 · eps^(1/3)).
``check_grads`` takes JAX's step instead: ``eps`` (default 1e-4) times its random tangent.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxbp.verify.tolerance import FD_NOISE_FACTOR, step_factor

LEVELS = 2
"""Steps per direction: h, h/2. (A kink at a distance of 0.30–0.33 s₀ along v leaves the two
gaps in the smooth ratio; there Richardson's error stays within the allowance from u = 1/3 on,
so the false-alarm window is u ∈ [0.30, 0.33) — rare where the step is eps^(1/3) of the leaf's
scale, since kinks that close to a random point are.)"""

OFFSETS = (1.0, -1.0, 0.5, -0.5)
"""The points x + o · h · v of one direction, in the order every program evaluates them."""

STEP_MULTIPLIER = 2.0
"""h = STEP_MULTIPLIER · step_factor · scale, so the finest step is step_factor · scale."""

KINK_RATIO_TOLERANCE = 0.1
"""Allowed departure of the one-sided gaps from G_k = 2 G_(k+1), relative to the coarser gap."""

TRUNCATION_SAFETY = 2.0
"""Multiplier of the measured truncation |D₁ − D₀| / 3 in the allowance."""

ROUNDOFF_FACTOR = FD_NOISE_FACTOR
"""Round-off of one evaluation of f, in units of eps · |f| (the allowance's second term)."""

KINK_STEP_FRACTION = 0.5
"""With ``kinks=``: h ≤ KINK_STEP_FRACTION · (first-order distance to the nearest watched kink)."""


def scales(leaf_rms: np.ndarray) -> np.ndarray:
    """Per-leaf scale: the leaf's rms, else the rms of all leaves, else 1 (never a floor of 1)."""
    leaf_rms = np.asarray(leaf_rms, np.float64)
    positive = leaf_rms[leaf_rms > 0]
    fallback = float(np.sqrt(np.mean(positive**2))) if positive.size else 1.0
    return np.where(leaf_rms > 0, leaf_rms, fallback)


def base_step(scale: np.ndarray, eval_dtype) -> np.ndarray:
    """h = STEP_MULTIPLIER · :func:`~jaxbp.verify.tolerance.step_factor` · scale."""
    return STEP_MULTIPLIER * step_factor(eval_dtype) * np.asarray(scale, np.float64)


def ladder(h: np.ndarray) -> np.ndarray:
    """The steps of each direction, shape (n, LEVELS): h, h/2."""
    return np.asarray(h, np.float64)[:, None] * 0.5 ** np.arange(LEVELS)


def eps_of(*arrays) -> float:
    """Machine epsilon of the widest floating dtype among ``arrays`` as computed (NumPy or JAX
    arrays; read before any conversion to float64)."""
    from jaxbp.verify.tolerance import eps

    dtypes = [np.asarray(a).dtype for a in arrays]
    inexact = [d for d in dtypes if np.issubdtype(d, np.inexact) or d.name == "bfloat16"]
    if not inexact:
        return float(np.finfo(np.float64).eps)
    return min(eps(d) for d in inexact)


class Estimate(NamedTuple):
    """Per element of a difference (host arrays, float64).

    Attributes:
      value: R, the Richardson-extrapolated derivative along v (with ``hand_diff``: the hand
        value's error along v).
      allowance: TRUNCATION_SAFETY · truncation + roundoff: what a row adds to its bound.
      truncation: |D₁ − D₀| / 3, the measured truncation of the finer central difference.
      roundoff: the round-off of R, ROUNDOFF_FACTOR · eps · |f| / s combined over the levels.
      central: D₁, the plain central difference at the finer step.
      eval_eps: the epsilon the round-off was computed with.
    """

    value: np.ndarray
    allowance: np.ndarray
    truncation: np.ndarray
    roundoff: np.ndarray
    central: np.ndarray
    eval_eps: float

    @property
    def eval_dtype(self) -> str:
        """The float dtype whose epsilon the round-off was computed with."""
        for name in ("float64", "float32", "float16", "bfloat16"):
            if np.isclose(self.eval_eps, float(jnp.finfo(name).eps)):
                return name
        return f"eps {self.eval_eps:.2e}"


def central(plus, minus, steps, *, eval_eps: float, hand_diff=None) -> Estimate:
    """Richardson's estimate of the directional derivative and its allowance.

    Args:
      plus, minus: f(x + s_k v) and f(x − s_k v), shape (LEVELS, ...) — level first.
      steps: s_k, broadcastable to ``plus``.
      eval_eps: machine epsilon of the dtype f was evaluated in (:func:`eps_of`).
      hand_diff: optional ⟨g, x₊ − x₋⟩ per level (same shape as ``plus``): the estimate is then
        of the hand value's error.
    """
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        plus, minus = _wide(plus), _wide(minus)
        two_s = 2 * np.broadcast_to(np.asarray(steps, np.float64), plus.shape)
        d = _safe_sub(plus, minus) / two_s
        e = d if hand_diff is None else d - _wide(hand_diff) / two_s
        value = (4 * e[-1] - e[-2]) / 3
        noise = ROUNDOFF_FACTOR * eval_eps * (np.abs(plus) + np.abs(minus)) / two_s
        roundoff = (4 * noise[-1] + noise[-2]) / 3
        truncation = np.abs(e[-1] - e[-2]) / 3
        allowance = TRUNCATION_SAFETY * truncation + roundoff
    return Estimate(value, allowance, truncation, roundoff, d[-1], float(eval_eps))


def at_offsets(values, h, *, eval_eps: float | None = None) -> Estimate:
    """:func:`central` of values evaluated at the points x + o·h·v, o in :data:`OFFSETS`.

    Args:
      values: a sequence of len(OFFSETS) arrays in the order of :data:`OFFSETS`, or one array
        with that leading axis; each of shape (K, ...) for K directions (or any shape).
      h: the base step of each direction, broadcastable against the values' leading axes
        (shape (K,) for K directions, or a scalar).
      eval_eps: machine epsilon of the dtype the values were computed in; by default read from
        the arrays (:func:`eps_of`).
    """
    if eval_eps is None:
        eval_eps = eps_of(*(values if isinstance(values, (list, tuple)) else [values]))
    v = np.stack([_wide(a) for a in values])
    h = np.asarray(h, np.float64)
    h = h.reshape(h.shape + (1,) * (v.ndim - 1 - h.ndim))
    n = LEVELS
    plus = np.stack([v[2 * k] for k in range(n)])
    minus = np.stack([v[2 * k + 1] for k in range(n)])
    steps = np.stack([h * OFFSETS[2 * k] for k in range(n)])
    return central(plus, minus, steps, eval_eps=eval_eps)


def _wide(a) -> np.ndarray:
    """A host copy in float64, or complex128 for complex values."""
    a = np.asarray(a)
    return a.astype(np.complex128 if np.iscomplexobj(a) else np.float64)


def _safe_sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a − b`` where equal infinities differ by 0 (JAX's ``safe_sub``)."""
    return np.where(a == b, 0.0, a - b)


class Kinks(NamedTuple):
    """Per direction: whether f is smooth within the ladder, and the one-sided slopes.

    Attributes:
      smooth: False where a kink was detected (or a watched kink could not be avoided).
      f_minus, f_plus: the one-sided slopes at the finest step.
      one_sided_error: their first-order truncation at the finest step,
        max(|F₊₁ − F₊₀|, |F₋₁ − F₋₀|) plus round-off (their error is ∝ s, so the change from s₀
        to s₁ is it).
    """

    smooth: np.ndarray
    f_minus: np.ndarray
    f_plus: np.ndarray
    one_sided_error: np.ndarray


def kinks(center, plus, minus, steps, *, eval_eps: float, blocked=None) -> Kinks:
    """The kink test of the module docstring, from the same values as :func:`central` and f(x).

    Args:
      center: f(x), broadcastable to ``plus[0]``.
      plus, minus, steps: as :func:`central` (level first).
      eval_eps: as :func:`central`.
      blocked: optional bool array (shape of ``plus[0]``): directions that sit on a watched kink.
    """
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        plus = np.asarray(plus, np.float64)
        minus = np.asarray(minus, np.float64)
        s = np.broadcast_to(np.asarray(steps, np.float64), plus.shape)
        j0 = np.asarray(center, np.float64)
        f_plus = (plus - j0) / s
        f_minus = (j0 - minus) / s
        gap = f_plus - f_minus
        gap_noise = ROUNDOFF_FACTOR * eval_eps * (np.abs(plus) + np.abs(minus) + 2 * np.abs(j0)) / s
        smooth = np.ones(plus.shape[1:], bool)
        for k in range(LEVELS - 1):
            departure = np.abs(gap[k] - 2 * gap[k + 1])
            limit = KINK_RATIO_TOLERANCE * np.abs(gap[k]) + gap_noise[k] + 2 * gap_noise[k + 1]
            smooth &= departure <= limit
        # a non-finite value is no kink: the direction stays in the compared row, judged there
        smooth |= ~(np.isfinite(plus).all(axis=0) & np.isfinite(minus).all(axis=0))
        if blocked is not None:
            smooth &= ~np.asarray(blocked, bool)
        one_sided = np.maximum(np.abs(f_plus[-1] - f_plus[-2]), np.abs(f_minus[-1] - f_minus[-2]))
    return Kinks(smooth, f_minus[-1], f_plus[-1], one_sided + gap_noise[-1])


class Verdict(NamedTuple):
    """Per direction of :func:`~jaxbp.verify.check` (host arrays, float64): :class:`Estimate`
    and :class:`Kinks` together.

    Attributes:
      error: R, the extrapolated difference between fd and the hand value along v.
      allowance: the estimate's allowance.
      smooth, f_minus, f_plus, one_sided_error: from :func:`kinks`.
      central: D at the finest step (what a plain central difference would report).
      truncation, roundoff: the allowance's parts.
    """

    error: np.ndarray
    allowance: np.ndarray
    smooth: np.ndarray
    f_minus: np.ndarray
    f_plus: np.ndarray
    central: np.ndarray
    one_sided_error: np.ndarray
    truncation: np.ndarray
    roundoff: np.ndarray


def verdict(
    j0: float,
    j_plus: np.ndarray,
    j_minus: np.ndarray,
    hand_diff: np.ndarray,
    steps: np.ndarray,
    eval_eps: float,
    blocked: np.ndarray | None = None,
) -> Verdict:
    """:func:`central` and :func:`kinks` for n scalar directions laid out (n, LEVELS).

    Args:
      j0: f(θ).
      j_plus, j_minus: f(θ ± s_k v), shape (n, LEVELS).
      hand_diff: ⟨g, θ₊ − θ₋⟩ per level, shape (n, LEVELS).
      steps: s_k, shape (n, LEVELS).
      eval_eps: machine epsilon of the dtype f was evaluated in.
      blocked: optional (n,) bool, directions that sit on a watched kink (distance 0).
    """
    t = [np.asarray(a, np.float64).T for a in (j_plus, j_minus, hand_diff, steps)]
    est = central(t[0], t[1], t[3], eval_eps=eval_eps, hand_diff=t[2])
    k = kinks(j0, t[0], t[1], t[3], eval_eps=eval_eps, blocked=blocked)
    return Verdict(est.value, est.allowance, k.smooth, k.f_minus, k.f_plus, est.central,
                   k.one_sided_error, est.truncation, est.roundoff)  # fmt: skip


def describe(eval_dtype, *, step: str | None = None) -> str:
    """How the allowance was obtained, for a row's bound source."""
    try:
        name = str(jnp.dtype(eval_dtype))
    except TypeError:
        name = str(eval_dtype)
    return (f"fd at h and h/2{f' ({step})' if step else ''} in {name}: "
            f"{TRUNCATION_SAFETY:g}·|D(h) − D(h/2)|/3 (measured truncation) + "
            f"{ROUNDOFF_FACTOR:g}·eps({name})·|f|/h (round-off)")  # fmt: skip
