"""The verifier's error model and tolerance policy — the one place that owns them.

Every check compares a *hand* result h (the gradient, VJP, JVP or δ under test) with a
*reference* r (an oracle's answer) elementwise (docs/verify.md, "Error model"; eq. V1)::

    |h_i − r_i| ≤ atol + rtol · |r_i| (+ noise_i)

Three sources of error can separate a correct h from r, and each has its own term:

1. **Rounding of the hand result** in the dtype it was computed in. It is bounded by a small
   multiple of that dtype's machine epsilon relative to the leaf's scale, so ``rtol`` follows the
   **parameter's** dtype (never the dtype ``grad_fn`` happened to return: a float32 parameter
   whose gradient comes back as float16 is judged at float32's tolerance, and the mismatch of
   dtypes is itself a failing row), and ``atol = rtol · max_i |r_i|`` scales with the leaf, so a
   leaf whose gradient is 1e-9 everywhere is judged on its own scale.
2. **Rounding of the reference.** The oracles run in a higher precision than the hand result
   (:func:`reference_dtype`: float16 / bfloat16 → float32, float32 → float64, enabling 64-bit
   types locally where they are off), so the reference's own rounding is negligible and the
   tolerance reflects the hand result alone. Where no higher precision exists (float64, or
   float32 on a TPU) the reference shares the dtype and the same ``rtol`` covers both.
3. **Finite differences**: truncation (∝ h² for a central difference, ∝ h⁴ after Richardson
   extrapolation) and round-off (∝ eps · |f| / h). Neither is guessed: :func:`jaxbp.verify.fd.
   central`, the one routine behind every fd row of every check, measures the truncation of each
   difference from the step ladder itself and the round-off from the function values, with the
   epsilon of the dtype the values were computed in, and the row adds them to its bound as its
   ``fd`` part. The step is :func:`step_factor` of the dtype f is evaluated in, times the leaf's
   scale (``check_grads``: JAX's ``eps`` along its tangent).

A 16-bit hand result has a fourth source, its own rounding through the computation, which scales
with the magnitude of the terms and not of the result: :mod:`jaxbp.verify.rounding` judges it
one precision up and against a measured spread (the ``rounding`` part). ``check_grads`` keeps
JAX's tolerances (:data:`JAX_GRADIENT_TOLERANCE`) and caps each bound at JAX's own criterion.

The constants below are the whole policy; docs/verify.md tabulates them per dtype.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

ANALYTIC_RTOL_F64 = 1e-12
"""rtol for a float64 hand result against a float64 reference (≈ 4 500 eps)."""

ANALYTIC_ULPS = 256
"""rtol for a float32 hand result, in units of float32's eps (3.05e-5): room for the sums over a
batch and a chain of layers, and still 300× finer than a 1 % error."""

ANALYTIC_ULPS_HALF = 4
"""rtol for a float16 / bfloat16 hand result, in units of its eps (bfloat16 0.031, float16 0.0039).
With the leaf-scaled atol, an element may be off by rtol · (|r_i| + max |r|) ≤ 2 rtol · max |r|,
so a leaf 10 % too large (error 0.1 · max |r| at its largest element) fails in both dtypes while
the rounding of a correct half-precision gradient (a few eps of the leaf's scale) passes."""

FD_RTOL_FACTOR = 10.0
"""Finite-difference rtol floor, in units of eps_ref^(2/3): the relative error of a central
difference with the step eps^(1/3) · scale that balances truncation against round-off."""

FD_NOISE_FACTOR = 16.0
"""Round-off allowance of one central difference: FD_NOISE_FACTOR · eps · (|J₊| + |J₋|) / (2h)."""

KINDS = ("analytic", "fd", "rounding")


def eps(dtype) -> float:
    """Machine epsilon of a floating (or complex) dtype."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        dtype = jnp.finfo(dtype).dtype
    return float(jnp.finfo(dtype).eps)


def _is_half(dtype) -> bool:
    return jnp.dtype(dtype).itemsize <= 2 and jnp.issubdtype(dtype, jnp.floating)


def _real(dtype) -> np.dtype:
    dtype = jnp.dtype(dtype)
    return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.complexfloating) else dtype


def default_rtol(dtype, kind: str = "analytic") -> float:
    """The default relative tolerance for a hand result whose *parameter* has ``dtype``.

    Args:
      dtype: the parameter's dtype (float16, bfloat16, float32, float64, or a complex dtype,
        which takes its real part's tolerance).
      kind: ``"analytic"`` (against an exact derivative: rev, fwd, δ probes, transformations,
        identities), ``"fd"`` (the relative accuracy of a central difference evaluated in
        ``dtype`` itself: the floor of the rule checks' fd rows where the reference has no higher
        precision) or ``"rounding"`` (the floor of a 16-bit result's mean against its float32
        evaluation, :mod:`jaxbp.verify.rounding`: one epsilon).

    Returns:
      analytic: float64 :data:`ANALYTIC_RTOL_F64`, float32 ``ANALYTIC_ULPS · eps``, 16-bit
      ``ANALYTIC_ULPS_HALF · eps``; fd: ``FD_RTOL_FACTOR · eps^(2/3)``; rounding: eps (16-bit),
      else the analytic rtol.
    """
    real = _real(dtype)
    e = eps(real)
    if kind == "analytic":
        if real == jnp.float64:
            return ANALYTIC_RTOL_F64
        return (ANALYTIC_ULPS_HALF if _is_half(real) else ANALYTIC_ULPS) * e
    if kind == "fd":
        return max(FD_RTOL_FACTOR * e ** (2.0 / 3.0), default_rtol(real, "analytic"))
    if kind == "rounding":
        return e if _is_half(real) else default_rtol(real, "analytic")
    raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")


def fd_step_factor(dtype) -> float:
    """eps^(1/3): the central-difference step per unit of a leaf's scale."""
    return eps(dtype) ** (1.0 / 3.0)


def step_factor(eval_dtype) -> float:
    """The finite-difference step per unit of a leaf's scale, for a loss evaluated in
    ``eval_dtype``: eps^(1/3) in float64, eps^(1/5) in lower precisions.

    eps^(1/5) is Richardson's optimal step (its s⁴ truncation against round-off ∝ eps / s). In
    float64 the smaller eps^(1/3) step already leaves round-off 1e-11 of the gradient's scale,
    far below any tolerance, and keeps kinks out of the ladder; in float32 (the reference of a
    half-precision parameter, or float32 where no float64 exists) eps^(1/3) would leave round-off
    of 1e-4–1e-3 of a small leaf's gradient, so the larger step is taken.
    """
    e = eps(eval_dtype)
    return fd_step_factor(eval_dtype) if e < 1e-10 else e ** (1.0 / 5.0)


def has_float64() -> bool:
    """Whether the default backend computes in float64 (every backend but TPU)."""
    return jax.default_backend() != "tpu"


def reference_dtype(dtype) -> np.dtype:
    """The dtype the oracles evaluate in for a parameter of ``dtype``: the next precision up.

    float16 / bfloat16 → float32; float32 → float64 (complex64 → complex128) where the backend
    has float64; float64 stays float64.
    """
    dtype = jnp.dtype(dtype)
    complex_ = jnp.issubdtype(dtype, jnp.complexfloating)
    real = _real(dtype)
    if _is_half(real):
        up = jnp.dtype(jnp.float32)
    elif real == jnp.float32 and has_float64():
        up = jnp.dtype(jnp.float64)
    else:
        up = real
    if complex_:
        return jnp.dtype(jnp.complex128 if up == jnp.float64 else jnp.complex64)
    return up


def needs_x64(dtypes: Sequence) -> bool:
    """Whether any reference dtype of ``dtypes`` is a 64-bit type."""
    return any(jnp.dtype(reference_dtype(d)).itemsize >= 8 for d in dtypes)


@contextlib.contextmanager
def reference_precision(dtypes: Sequence):
    """Enables 64-bit types for the duration when a reference of ``dtypes`` needs them (and they
    are off); a no-op otherwise. The user's setting is restored on exit."""
    if needs_x64(dtypes) and not jax.config.jax_enable_x64:
        with jax.enable_x64(True):
            yield
    else:
        yield


def upcast(tree, *, only: Sequence | None = None):
    """Casts every inexact array leaf of ``tree`` to its :func:`reference_dtype`.

    Leaves that are not inexact arrays (integers, booleans, keys, Python scalars, None) are
    returned as they are. Call inside :func:`reference_precision`.

    Args:
      tree: any pytree.
      only: optional dtypes; when given, only leaves of these dtypes are cast.
    """
    only = None if only is None else {jnp.dtype(d) for d in only}

    def cast(leaf):
        if not isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
            return leaf
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.inexact) or (only is not None and dtype not in only):
            return leaf
        up = reference_dtype(dtype)
        if up == dtype:
            return leaf
        if isinstance(leaf, jax.core.Tracer):
            return leaf.astype(up)
        # through the host with device_put: an eager conversion, or jnp.asarray of a NumPy array,
        # compiles a kernel per shape and dtype
        return jax.device_put(np.asarray(leaf).astype(up))

    return jax.tree.map(cast, tree)


# --- check_grads' tolerances: JAX's, restated ---------------------------------------------------
# jax.test_util.check_grads reads these from jax._src.public_test_util (2e-3 for float32, 1e-5 for
# float64, ...); jaxbp.verify.check_grads takes the same numbers from here, so it imports nothing
# private of JAX. Checked against jax 0.10.2 by tests/test_verify_tolerance.py.
JAX_GRADIENT_TOLERANCE = {
    "bfloat16": 1e-1,
    "float16": 1e-2,
    "float32": 2e-3,
    "float64": 1e-5,
    "complex64": 1e-3,
    "complex128": 1e-5,
}
"""``check_grads``' default ``atol`` and ``rtol`` per dtype (JAX's ``default_gradient_tolerance``;
8-bit float types: 1e-1, float4: 1)."""

JAX_DEFAULT_TOLERANCE = {
    "bool": 0.0,
    "bfloat16": 1e-2,
    "float16": 1e-3,
    "float32": 1e-6,
    "float64": 1e-15,
    "complex64": 1e-6,
    "complex128": 1e-15,
}
"""JAX's fallback for a dtype missing from a merged tolerance dict (its ``default_tolerance``;
integer dtypes: 0)."""


def jax_tolerance_table(given) -> float | dict:
    """A ``check_grads`` ``atol`` / ``rtol`` argument merged as JAX merges it: ``None`` → the
    defaults; a number → that number for every dtype; a ``{dtype: tol}`` dict → the defaults
    updated with it."""
    if given is None:
        return dict(JAX_GRADIENT_TOLERANCE)
    if not isinstance(given, dict):
        return given
    merged = dict(JAX_GRADIENT_TOLERANCE)
    for k, v in given.items():
        merged[str(np.dtype(k) if not isinstance(k, str) else jnp.dtype(k))] = v
    return merged


def jax_tolerance(dtype, table) -> float:
    """The tolerance of ``dtype`` in a merged table (JAX's ``public_test_util.tolerance``)."""
    if not isinstance(table, dict):
        return float(table)
    name = str(jax.dtypes.canonicalize_dtype(jnp.dtype(dtype)))
    if name in table:
        return float(table[name])
    if name.startswith("float8") or name.startswith("float4"):
        return 1.0 if name.startswith("float4") or "e8m0" in name else 1e-1
    if jnp.issubdtype(jnp.dtype(name), jnp.integer) or name == "float0":
        return 0.0
    return float(JAX_DEFAULT_TOLERANCE[name])


def tolerance_table(dtypes: Sequence = ("float16", "bfloat16", "float32", "float64")) -> list:
    """The default tolerances for each dtype, as rows of plain values (for docs and the CLI)."""
    return [
        {
            "dtype": str(jnp.dtype(d)),
            "eps": eps(d),
            "reference_dtype": str(reference_dtype(d)),
            "analytic_rtol": default_rtol(d, "analytic"),
            "fd_rtol": default_rtol(d, "fd"),
            "fd_step_factor": step_factor(reference_dtype(d)),
        }
        for d in dtypes
    ]
