"""Finite differences that need no tuning: a step ladder per direction, Richardson extrapolation
with a measured truncation estimate, and automatic detection of kinks (docs/verify.md,
"Finite differences"; eqs. V4, V5, V9).

For a unit direction v and the loss f evaluated in the reference precision (one precision above
the parameters, :mod:`jaxbp.verify.tolerance`), two steps s_k = h · 2^-k (k = 0, 1) give

    central   D_k = (f(θ + s_k v) − f(θ − s_k v)) / (2 s_k)
    one-sided F₊_k = (f(θ + s_k v) − f(θ)) / s_k,   F₋_k = (f(θ) − f(θ − s_k v)) / s_k

**Step.** h = 2 · eps_eval^(1/3) · scale in float64 (eps^(1/5), Richardson's optimum, in float32:
:func:`step_factor`), with scale the leaf's root mean square (the whole
tree's where the leaf is all zeros, 1 where everything is): relative to the leaf, with no floor
that dwarfs small weights (layer norm's gains of 0.05 get a step of 0.05 · eps^(1/3)). A given
``fd_step`` replaces h. With ``kinks=`` (the pre-activations of kinked units), h is further
capped at half the first-order distance to the nearest watched kink.

**Error of a difference.** With the hand side g taken along the perturbation as actually
represented, e_k = D_k − ⟨g, θ₊ − θ₋⟩ / (2 s_k) is the hand gradient's error plus truncation
(c s_k² + O(s⁴)) plus round-off. Richardson extrapolation, R = (4 e₁ − e₀) / 3, removes the s²
term; |e₁ − e₀| / 3 = c s₁² is the truncation of the finer difference itself, a bound on what is
left in R many times over, and independent of any error in the hand gradient.
:data:`TRUNCATION_SAFETY` times it plus the round-off allowance
FD_NOISE_FACTOR · eps_eval · (|f₊| + |f₋|) / (2 s) is added to the row's tolerance — measured,
not assumed.

**Kinks.** On a smooth function the one-sided gap G_k = F₊_k − F₋_k is s_k f″ + O(s_k³), so
G₀ = 2 G₁. A kink (ReLU, abs, max, clip…) within the ladder breaks that ratio: at the point
itself G_k is the jump of the slope at every k. A direction with
|G₀ − 2 G₁| > :data:`KINK_RATIO_TOLERANCE` · |G₀| beyond round-off is **non-smooth at this
point**: its row shows both one-sided values F₋, F₊ at the finest step and
whether the hand value lies between them, and it does not fail — the analytic oracles (rev,
fwd), which take no step, still judge the gradient there.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxbp.verify.tolerance import FD_NOISE_FACTOR, step_factor

LEVELS = 2
"""Steps per direction: h, h/2. (A kink at a distance of 0.30–0.33 s₀ along v leaves the two
gaps in the smooth ratio; there Richardson's error stays within the allowance from u = 1/3 on,
so the false-alarm window is u ∈ [0.30, 0.33) — rare where the step is eps^(1/3) of the leaf's
scale, since kinks that close to a random point are.)"""

STEP_MULTIPLIER = 2.0
"""h = STEP_MULTIPLIER · eps_eval^(1/3) · scale, so the finest step is eps^(1/3) · scale / 2."""

KINK_RATIO_TOLERANCE = 0.1
"""Allowed departure of the one-sided gaps from G_k = 2 G_(k+1), relative to the coarser gap."""

TRUNCATION_SAFETY = 2.0
"""Multiplier of the measured Richardson discrepancy |R − R'| in the fd tolerance."""

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


class Verdict(NamedTuple):
    """Per direction (host arrays, float64).

    Attributes:
      error: R, the extrapolated difference between fd and the hand value along v.
      allowance: TRUNCATION_SAFETY · |e₁ − e₀| / 3 + round-off of R.
      smooth: False where a kink was detected (or a watched kink could not be avoided).
      f_minus, f_plus: the one-sided slopes at the finest step.
      central: D at the finest step (what a plain central difference would report).
      one_sided_error: the one-sided slopes' first-order truncation at the finest step,
        max(|F₊₁ − F₊₀|, |F₋₁ − F₋₀|) (their error is ∝ s, so the change from s₀ to s₁ is it).
    """

    error: np.ndarray
    allowance: np.ndarray
    smooth: np.ndarray
    f_minus: np.ndarray
    f_plus: np.ndarray
    central: np.ndarray
    one_sided_error: np.ndarray


def verdict(
    j0: float,
    j_plus: np.ndarray,
    j_minus: np.ndarray,
    hand_diff: np.ndarray,
    steps: np.ndarray,
    eval_eps: float,
    blocked: np.ndarray | None = None,
) -> Verdict:
    """Richardson estimate, its allowance and the kink test for each direction.

    Args:
      j0: f(θ).
      j_plus, j_minus: f(θ ± s_k v), shape (n, LEVELS).
      hand_diff: ⟨g, θ₊ − θ₋⟩ per level, shape (n, LEVELS).
      steps: s_k, shape (n, LEVELS).
      eval_eps: machine epsilon of the dtype f was evaluated in.
      blocked: optional (n,) bool, directions that sit on a watched kink (distance 0).
    """
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        return _verdict(j0, j_plus, j_minus, hand_diff, steps, eval_eps, blocked)


def _verdict(j0, j_plus, j_minus, hand_diff, steps, eval_eps, blocked) -> Verdict:
    j_plus, j_minus = np.asarray(j_plus, np.float64), np.asarray(j_minus, np.float64)
    two_s = 2 * steps
    d = (j_plus - j_minus) / two_s
    e = d - np.asarray(hand_diff, np.float64) / two_s
    r_fine = (4 * e[:, -1] - e[:, -2]) / 3
    noise = FD_NOISE_FACTOR * eval_eps * (np.abs(j_plus) + np.abs(j_minus)) / two_s
    truncation = np.abs(e[:, -1] - e[:, -2]) / 3
    allowance = TRUNCATION_SAFETY * truncation + (4 * noise[:, -1] + noise[:, -2]) / 3

    f_plus = (j_plus - j0) / steps
    f_minus = (j0 - j_minus) / steps
    gap = f_plus - f_minus
    gap_noise = (
        FD_NOISE_FACTOR * eval_eps * (np.abs(j_plus) + np.abs(j_minus) + 2 * abs(j0)) / steps
    )
    smooth = np.ones(len(steps), bool)
    for k in range(LEVELS - 1):
        departure = np.abs(gap[:, k] - 2 * gap[:, k + 1])
        limit = KINK_RATIO_TOLERANCE * np.abs(gap[:, k]) + gap_noise[:, k] + 2 * gap_noise[:, k + 1]
        smooth &= departure <= limit
    # a non-finite loss is no kink: the direction stays in the compared row, which fails on it
    smooth |= ~np.isfinite(e).all(axis=1)
    if blocked is not None:
        smooth &= ~np.asarray(blocked, bool)
    one_sided_error = np.maximum(np.abs(f_plus[:, -1] - f_plus[:, -2]),
                                 np.abs(f_minus[:, -1] - f_minus[:, -2]))  # fmt: skip
    return Verdict(r_fine, allowance, smooth, f_minus[:, -1], f_plus[:, -1], d[:, -1],
                   one_sided_error + gap_noise[:, -1])  # fmt: skip
