"""A corpus of real derivative rules, each with a planted bug, for the verifier's contract.

The contract (docs/verify.md, section 6): ``jaxbp.verify.check_grads`` is never less strict than
``jax.test_util.check_grads`` — wherever JAX's check, called with the same arguments, rejects a
planted bug, ours rejects it too — and it passes every correct rule. Each :class:`Case` here is a
rule written the way its authors wrote it (JAX's custom-derivatives tutorial, JAX's own source,
optax, llm.c, the implicit-layers tutorial, textbook matrix calculus), copied into a
``jax.custom_jvp`` / ``jax.custom_vjp`` with one realistic mistake planted behind ``bug=True``:
a factor off by 1–5 %, a wrong sign, a dropped term, a transpose, a conj too few or too many, one
argument's cotangent wrong, a wrong 1/m.

``case.make(bug)`` returns ``(f, args)``; call it, and every check, inside ``case.context()``
(``jax.enable_x64(case.x64)``: ``x64=False`` is a JAX user's default, float32). ``case.kwargs``
are the keyword arguments of ``check_grads`` (``order``, ``modes``, and ``atol`` / ``rtol`` /
``eps`` where the rule's own tests pass them). ``case.reference``, where given, is the plain
function (same signature, differentiated by JAX) for ``check_custom_vjp``; it is given on a
sample of 20 cases spanning every category but ``ode``, to keep the test file within its time
budget (``check_custom_vjp`` compiles its jit, vmap and grad-of-VJP programs afresh on every call:
1–5 s a call here, 20–40 s on an odeint case). ``case.leaves`` are the argument paths the bug
makes wrong, in the ``args[i]…`` form of ``check_grads``' report.

:func:`derivative_gap` measures how far a bug moves the quantities ``check_grads`` compares, so
that a test can show that no bug is a no-op. Used by tests/test_verify_corpus.py and
benchmarks/verify_corpus.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections import namedtuple
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy as jsp
import numpy as np
from jax import lax
from jax.experimental.ode import odeint

TUTORIAL = "https://docs.jax.dev/en/latest/notebooks/Custom_derivative_rules_for_Python_code.html"
JAX = "https://github.com/jax-ml/jax/blob/jax-v0.10.2/"
OPTAX = "https://github.com/google-deepmind/optax/blob/main/optax/"
GILES = "https://people.maths.ox.ac.uk/gilesm/files/NA-08-01.pdf"

CATEGORIES = (
    "custom_vjp rev",
    "custom_jvp fwd",
    "custom_jvp fwd+rev",
    "float32",
    "far from zero",
    "reduction",
    "linear algebra",
    "implicit",
    "ode",
    "complex",
    "order 2",
)
"""Every case has one of these as its main trait (most have several: see dtype, modes, order)."""


@dataclasses.dataclass(frozen=True)
class Case:
    """One rule with a planted bug. ``make(bug)`` builds ``(f, args)`` in the current context."""

    name: str
    category: str
    bug: str
    source: str
    make: Callable[[bool], tuple[Callable, tuple]]
    doc: str
    order: int = 1
    modes: tuple[str, ...] = ("fwd", "rev")
    atol: Any = None
    rtol: Any = None
    eps: float | None = None
    x64: bool = True
    reference: Callable | None = None
    leaves: tuple[str, ...] = ()

    @property
    def kwargs(self) -> dict:
        """The keyword arguments of ``check_grads`` for this case."""
        kw = {"order": self.order, "modes": self.modes}
        tols = {"atol": self.atol, "rtol": self.rtol, "eps": self.eps}
        return kw | {k: v for k, v in tols.items() if v is not None}

    def context(self) -> contextlib.AbstractContextManager:
        """``jax.enable_x64(self.x64)``: build the arguments and run every check inside it."""
        return jax.enable_x64(self.x64)


CASES: list[Case] = []


def case(category: str, bug: str, source: str, **options) -> Callable:
    """Registers the decorated ``make(bug)`` as a :class:`Case` named after it."""
    assert category in CATEGORIES, category

    def register(make):
        doc = " ".join(make.__doc__.split())
        CASES.append(Case(make.__name__, category, bug, source, make, doc, **options))
        return make

    return register


# --- inputs: drawn on the host with fixed seeds, in the context's default precision -----------


def _real(seed: int, *shape: int, scale: float = 1.0, shift: float = 0.0):
    values = shift + scale * np.random.RandomState(seed).randn(*shape)
    return jnp.asarray(values, jnp.result_type(float))


def _complex(seed: int, *shape: int, scale: float = 1.0):
    rng = np.random.RandomState(seed)
    values = scale * (rng.randn(*shape) + 1j * rng.randn(*shape))
    return jnp.asarray(values, jnp.result_type(complex))


def _positive(seed: int, *shape: int, low: float, high: float):
    values = np.random.RandomState(seed).uniform(low, high, shape)
    return jnp.asarray(values, jnp.result_type(float))


def _spd(seed: int, n: int):
    a = np.random.RandomState(seed).randn(n, n)
    return jnp.asarray(a @ a.T / n + np.eye(n), jnp.result_type(float))


def _factor(bug: bool, factor: float) -> float:
    return factor if bug else 1.0


# === JAX's custom-derivatives tutorial ==========================================================


@case(
    "custom_jvp fwd+rev",
    "the slope 1/(1 + eˣ) instead of 1 − 1/(1 + eˣ) (the '1 −' dropped)",
    TUTORIAL + "#example-numerical-stability",
    reference=lambda x: jnp.log(1.0 + jnp.exp(x)),
    leaves=("args[0]",),
)
def log1pexp(bug):
    """The tutorial's log1pexp(x) = log(1 + eˣ), whose custom JVP keeps large x finite."""

    @jax.custom_jvp
    def log1pexp(x):
        return jnp.log(1.0 + jnp.exp(x))

    @log1pexp.defjvp
    def log1pexp_jvp(primals, tangents):
        (x,), (x_dot,) = primals, tangents
        ans = log1pexp(x)
        slope = 1 / (1 + jnp.exp(x)) if bug else 1 - 1 / (1 + jnp.exp(x))
        return ans, slope * x_dot

    return log1pexp, (_real(0, 5, scale=2.0),)


@case(
    "order 2",
    "the y term sin(x)·ẏ of the JVP dropped",
    TUTORIAL + "#tl-dr-custom-jvps-with-jax-custom-jvp",
    order=2,
    reference=lambda x, y: jnp.sin(x) * y,
    leaves=("args[1]",),
)
def sin_times_y_jvp(bug):
    """The tutorial's first custom_jvp, f(x, y) = sin(x)·y, checked to order 2."""

    @jax.custom_jvp
    def f(x, y):
        return jnp.sin(x) * y

    @f.defjvp
    def f_jvp(primals, tangents):
        x, y = primals
        x_dot, y_dot = tangents
        tangent_out = jnp.cos(x) * x_dot * y
        if not bug:
            tangent_out = tangent_out + jnp.sin(x) * y_dot
        return f(x, y), tangent_out

    return f, (_real(1, 4), _real(2, 4))


@case(
    "custom_vjp rev",
    "y's cotangent cos(x)·g instead of sin(x)·g (copied from x's)",
    TUTORIAL + "#tl-dr-custom-vjps-with-jax-custom-vjp",
    modes=("rev",),
    reference=lambda x, y: jnp.sin(x) * y,
    leaves=("args[1]",),
)
def sin_times_y_vjp(bug):
    """The tutorial's first custom_vjp, f(x, y) = sin(x)·y, residuals (cos x, sin x, y)."""

    @jax.custom_vjp
    def f(x, y):
        return jnp.sin(x) * y

    def f_fwd(x, y):
        return f(x, y), (jnp.cos(x), jnp.sin(x), y)

    def f_bwd(res, g):
        cos_x, sin_x, y = res
        return cos_x * g * y, (cos_x if bug else sin_x) * g

    f.defvjp(f_fwd, f_bwd)
    return f, (_real(3, 4), _real(4, 4))


@case(
    "float32",
    "y's cotangent 5 % too large",
    "https://docs.jax.dev/en/latest/_autosummary/jax.custom_vjp.html",
    modes=("rev",),
    x64=False,
    reference=lambda x, y: x * y,
    leaves=("args[1]",),
)
def mul_vjp_f32(bug):
    """x·y as a custom_vjp (the API page's example shape), 64 elements, float32 with x64 off."""

    @jax.custom_vjp
    def mul(x, y):
        return x * y

    def mul_fwd(x, y):
        return mul(x, y), (x, y)

    def mul_bwd(res, g):
        x, y = res
        return g * y, _factor(bug, 1.05) * g * x

    mul.defvjp(mul_fwd, mul_bwd)
    return mul, (_real(5, 64), _real(6, 64))


@case(
    "custom_jvp fwd",
    "(√x + 1) instead of (√x + 2) in the derivative's numerator",
    TUTORIAL + "#example-enforcing-a-differentiation-convention",
    modes=("fwd",),
    reference=lambda x: x / (1 + jnp.sqrt(x)),
    leaves=("args[0]",),
)
def sqrt_ratio(bug):
    """The tutorial's f(x) = x / (1 + √x) on ℝ₊, with its derivative (√x + 2) / (2 (√x + 1)²)."""

    @jax.custom_jvp
    def f(x):
        return x / (1 + jnp.sqrt(x))

    @f.defjvp
    def f_jvp(primals, tangents):
        (x,), (x_dot,) = primals, tangents
        numerator = jnp.sqrt(x) + (1 if bug else 2)
        return f(x), (numerator / (2 * (jnp.sqrt(x) + 1) ** 2)) * x_dot

    return f, (_positive(7, 5, low=0.5, high=3.0),)


@case(
    "order 2",
    "x's rule x·y·ẋ instead of 2·x·y·ẋ (the factor 2 dropped)",
    TUTORIAL + "#use-jax-custom-jvp-to-define-forward-mode-and-indirectly-reverse-mode-rules",
    order=2,
    leaves=("args[0]",),
)
def square_times_y_defjvps(bug):
    """The tutorial's ``defjvps`` example f(x, y) = x²·y, one rule per argument, to order 2."""

    @jax.custom_jvp
    def f(x, y):
        return x**2 * y

    f.defjvps(
        lambda x_dot, primal_out, x, y: (1 if bug else 2) * x * y * x_dot,
        lambda y_dot, primal_out, x, y: x**2 * y_dot,
    )
    return f, (_real(8, 4), _real(9, 4))


@case(
    "implicit",
    "the cotangent of a 5 % too large",
    TUTORIAL + "#example-implicit-function-differentiation-of-iterative-implementations",
    order=2,
    modes=("rev",),
    reference=jnp.sqrt,
    leaves=("args[0]",),
)
def fixed_point_newton_sqrt(bug):
    """The tutorial's fixed_point with its implicit-function custom_vjp, as newton_sqrt(a),
    checked as the tutorial checks it: ``check_grads(newton_sqrt, (2.,), order=2,
    modes=["rev"])``."""

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
    def fixed_point(f, a, x_guess):
        def cond_fun(carry):
            x_prev, x = carry
            return jnp.abs(x_prev - x) > 1e-6

        def body_fun(carry):
            _, x = carry
            return x, f(a, x)

        _, x_star = lax.while_loop(cond_fun, body_fun, (x_guess, f(a, x_guess)))
        return x_star

    def fixed_point_fwd(f, a, x_init):
        x_star = fixed_point(f, a, x_init)
        return x_star, (a, x_star)

    def fixed_point_rev(f, res, x_star_bar):
        a, x_star = res
        _, vjp_a = jax.vjp(lambda a: f(a, x_star), a)
        (a_bar,) = vjp_a(
            fixed_point(functools.partial(rev_iter, f), (a, x_star, x_star_bar), x_star_bar)
        )
        a_bar = jax.tree.map(lambda t: _factor(bug, 1.05) * t, a_bar)  # a may be a tuple
        return a_bar, jnp.zeros_like(x_star)

    def rev_iter(f, packed, u):
        a, x_star, x_star_bar = packed
        _, vjp_x = jax.vjp(lambda x: f(a, x), x_star)
        return x_star_bar + vjp_x(u)[0]

    fixed_point.defvjp(fixed_point_fwd, fixed_point_rev)

    def newton_sqrt(a):
        return fixed_point(lambda a, x: 0.5 * (x + a / x), a, a)

    return newton_sqrt, (jnp.asarray(2.0, jnp.result_type(float)),)


@case(
    "float32",
    "the cotangent of a 5 % too large",
    TUTORIAL + "#example-implicit-function-differentiation-of-iterative-implementations",
    order=2,
    modes=("rev",),
    x64=False,
    leaves=("args[0]",),
)
def fixed_point_newton_sqrt_f32(bug):
    """The tutorial's newton_sqrt (fixed_point with its implicit custom_vjp) in float32 with
    x64 off, as a JAX user runs the tutorial."""
    return fixed_point_newton_sqrt(bug)


Point = namedtuple("Point", ["x", "y"])
"""The tutorial's pytree argument."""


def _point_reference(pt):
    return {"a": pt.x**2, "b": (jnp.sin(pt.x), jnp.cos(pt.y))}


@case(
    "custom_vjp rev",
    "y_bar = sin(y)·ḡ: the minus sign of d cos(y)/dy dropped",
    TUTORIAL + "#working-with-list-tuple-dict-containers-and-other-pytrees",
    modes=("rev",),
    reference=_point_reference,
    leaves=("args[0].y",),
)
def pytree_point_vjp(bug):
    """The tutorial's pytree custom_vjp: a namedtuple Point in, a dict with a tuple out."""

    @jax.custom_vjp
    def f(pt):
        return _point_reference(pt)

    def f_fwd(pt):
        return f(pt), pt

    def f_bwd(pt, g):
        a_bar, (b0_bar, b1_bar) = g["a"], g["b"]
        x_bar = 2 * pt.x * a_bar + jnp.cos(pt.x) * b0_bar
        y_bar = (1 if bug else -1) * jnp.sin(pt.y) * b1_bar
        return (Point(x_bar, y_bar),)

    f.defvjp(f_fwd, f_bwd)
    return f, (Point(_real(10, 3), _real(11, 3)),)


# === values far from zero =======================================================================


@case(
    "far from zero",
    "the tangent 5 % too large",
    "https://docs.jax.dev/en/latest/_autosummary/jax.custom_jvp.html "
    "(10 + sin(x) in float32: a counterexample reported against the verifier)",
    modes=("fwd",),
    x64=False,
    reference=lambda x: 10 + jnp.sin(x),
    leaves=("args[0]",),
)
def sin_offset_f32(bug):
    """f(x) = 10 + sin(x), a custom_jvp checked forward-only in float32 with x64 off."""

    @jax.custom_jvp
    def f(x):
        return 10 + jnp.sin(x)

    @f.defjvp
    def f_jvp(primals, tangents):
        (x,), (x_dot,) = primals, tangents
        return f(x), _factor(bug, 1.05) * jnp.cos(x) * x_dot

    return f, (_real(12, 5),)


@case(
    "far from zero",
    "the gradient 5 % too large",
    OPTAX + "losses/_regression.py (squared_error, on top of a constant energy)",
    modes=("rev",),
    x64=False,
    reference=lambda x: 1000.0 + jnp.mean(0.5 * (x - 3.0) ** 2),
    leaves=("args[0]",),
)
def energy_offset_f32(bug):
    """E(x) = 1000 + mean(½ (x − 3)²) over 32 values (a loss on top of a large constant),
    as a custom_vjp in float32: the output ~1e3, the gradient ~0.1."""

    @jax.custom_vjp
    def energy(x):
        return 1000.0 + jnp.mean(0.5 * (x - 3.0) ** 2)

    def energy_fwd(x):
        return energy(x), x

    def energy_bwd(x, g):
        return (_factor(bug, 1.05) * g * (x - 3.0) / x.size,)

    energy.defvjp(energy_fwd, energy_bwd)
    return energy, (_real(13, 32),)


@case(
    "far from zero",
    "the tangent 3 % too large",
    "https://docs.jax.dev/en/latest/_autosummary/jax.custom_jvp.html",
    x64=False,
    leaves=("args[0]",),
)
def temperature_tanh_f32(bug):
    """T(x) = 300 + 5 tanh(x) (a bounded physical quantity, ~300), custom_jvp, float32."""

    @jax.custom_jvp
    def temperature(x):
        return 300.0 + 5.0 * jnp.tanh(x)

    @temperature.defjvp
    def temperature_jvp(primals, tangents):
        (x,), (x_dot,) = primals, tangents
        slope = 5.0 * (1 - jnp.tanh(x) ** 2)
        return temperature(x), _factor(bug, 1.03) * slope * x_dot

    return temperature, (_real(14, 8),)


@case(
    "far from zero",
    "the tangent 2 % too large",
    JAX + "jax/_src/numpy/linalg.py (_det_jvp)",
    x64=False,
    leaves=("args[0]",),
)
def det_f32(bug):
    """det(A) with JAX's JVP det(A)·tr(A⁻¹ Ȧ), A = 10·I + noise so det ~1e3, float32."""

    @jax.custom_jvp
    def det(a):
        return jnp.linalg.det(a)

    @det.defjvp
    def det_jvp(primals, tangents):
        (a,), (a_dot,) = primals, tangents
        y = det(a)
        return y, _factor(bug, 1.02) * y * jnp.trace(jnp.linalg.solve(a, a_dot))

    a = _real(15, 3, 3) + 10 * jnp.eye(3)
    return det, (a,)


@case(
    "far from zero",
    "the tangent 1 % too large",
    "https://docs.jax.dev/en/latest/_autosummary/jax.custom_jvp.html",
    reference=jnp.cosh,
    leaves=("args[0]",),
)
def cosh_far(bug):
    """cosh(x) at x ≈ 7 (values ~550) with its rule sinh(x)·ẋ, float64."""

    @jax.custom_jvp
    def cosh(x):
        return jnp.cosh(x)

    @cosh.defjvp
    def cosh_jvp(primals, tangents):
        (x,), (x_dot,) = primals, tangents
        return cosh(x), _factor(bug, 1.01) * jnp.sinh(x) * x_dot

    return cosh, (_real(16, 4, scale=0.3, shift=7.0),)


# === JAX's own rules (jax/_src), copied into custom rules ======================================


@case(
    "linear algebra",
    "d log|det| 5 % too large",
    JAX + "jax/_src/numpy/linalg.py (_slogdet_jvp)",
    leaves=("args[0]",),
)
def slogdet(bug):
    """jnp.linalg.slogdet with JAX's JVP: d log|det A| = tr(A⁻¹ Ȧ), the sign's tangent zero."""

    @jax.custom_jvp
    def slogdet(x):
        return tuple(jnp.linalg.slogdet(x))

    @slogdet.defjvp
    def slogdet_jvp(primals, tangents):
        (x,), (g,) = primals, tangents
        sign, ans = slogdet(x)
        ans_dot = _factor(bug, 1.05) * jnp.trace(jnp.linalg.solve(x, g), axis1=-1, axis2=-2)
        return (sign, ans), (jnp.zeros_like(sign), ans_dot)

    return slogdet, (_real(17, 4, 4) + 2 * jnp.eye(4),)


@case(
    "float32",
    "d log|det| 5 % too large",
    JAX + "jax/_src/numpy/linalg.py (_slogdet_jvp)",
    x64=False,
    leaves=("args[0]",),
)
def slogdet_f32(bug):
    """The slogdet case (JAX's JVP, d log|det| 5 % off) in float32 with x64 off."""
    return slogdet(bug)


@case(
    "complex",
    "the sign's tangent left zero for complex input (the real branch taken)",
    JAX + "jax/_src/numpy/linalg.py (_slogdet_jvp)",
    reference=lambda x: tuple(jnp.linalg.slogdet(x)),
    leaves=("args[0]",),
)
def slogdet_complex(bug):
    """jnp.linalg.slogdet of a complex matrix with JAX's JVP, whose sign (a unit complex
    number) moves with Im tr(A⁻¹ Ȧ)."""

    @jax.custom_jvp
    def slogdet(x):
        return tuple(jnp.linalg.slogdet(x))

    @slogdet.defjvp
    def slogdet_jvp(primals, tangents):
        (x,), (g,) = primals, tangents
        sign, ans = slogdet(x)
        ans_dot = jnp.trace(jnp.linalg.solve(x, g), axis1=-1, axis2=-2)
        if bug:
            sign_dot = jnp.zeros_like(sign)
        else:
            sign_dot = (ans_dot - jnp.real(ans_dot).astype(ans_dot.dtype)) * sign
        return (sign, ans), (sign_dot, jnp.real(ans_dot))

    return slogdet, (_complex(18, 3, 3) + 2 * jnp.eye(3),)


def _sym(a):
    return (a + a.T) / 2


@case(
    "linear algebra",
    "φ(X) = tril(X) without halving the diagonal",
    JAX + "jax/_src/lax/linalg.py (_cholesky_jvp_rule)",
    leaves=("args[0]",),
)
def cholesky(bug):
    """Cholesky with JAX's forward rule L̇ = L·φ(L⁻¹ Σ̇ L⁻ᴴ) (Murray 2016, arXiv:1602.07527),
    on the symmetric part of an SPD argument."""

    @jax.custom_jvp
    def cholesky(x):
        return jnp.linalg.cholesky(x)

    @cholesky.defjvp
    def cholesky_jvp(primals, tangents):
        (x,), (sigma_dot,) = primals, tangents
        L = cholesky(x)
        n = x.shape[-1]

        def phi(X):
            lower = jnp.tril(X)
            return lower if bug else lower / (1 + jnp.eye(n, dtype=X.dtype))

        tmp = lax.linalg.triangular_solve(
            L, sigma_dot, left_side=False, transpose_a=True, conjugate_a=True, lower=True
        )
        inner = lax.linalg.triangular_solve(L, tmp, left_side=True, transpose_a=False, lower=True)
        return L, L @ phi(inner)

    return (lambda a: cholesky(_sym(a))), (_spd(19, 4),)


@case(
    "linear algebra",
    "the reciprocal eigenvalue gaps 1/(wⱼ − wᵢ) with the sign flipped",
    JAX + "jax/_src/lax/linalg.py (_eigh_jvp_rule)",
    leaves=("args[0]",),
)
def eigh(bug):
    """eigh with JAX's non-degenerate perturbation rule (Giles 2008), seen through the
    eigenvalues and the gauge-invariant matrix function V·diag(sin w)·Vᵀ."""

    @jax.custom_jvp
    def eigh(a):
        return tuple(jnp.linalg.eigh(a))

    @eigh.defjvp
    def eigh_jvp(primals, tangents):
        (a,), (a_dot,) = primals, tangents
        w, v = eigh(a)
        eye_n = jnp.eye(a.shape[-1], dtype=a.dtype)
        gaps = w[:, None] - w[None, :] if bug else w[None, :] - w[:, None]
        Fmat = 1 / (eye_n + gaps) - eye_n
        vdag_adot_v = v.T @ a_dot @ v
        return (w, v), (jnp.diagonal(vdag_adot_v), v @ (Fmat * vdag_adot_v))

    def f(a):
        w, v = eigh(_sym(a))
        return w, v @ jnp.diag(jnp.sin(w)) @ v.T

    return f, (_real(20, 4, 4),)


def _solve_lower(a, b):
    return jsp.linalg.solve_triangular(a, b, lower=True)


@case(
    "linear algebra",
    "the tangent of A not masked to its lower triangle (tril dropped)",
    JAX + "jax/_src/lax/linalg.py (_triangular_solve_jvp_rule_a)",
    leaves=("args[0]",),
)
def triangular_solve(bug):
    """X = A⁻¹B for lower-triangular A (only A's lower triangle is read), with JAX's rule
    Ẋ = A⁻¹(Ḃ − tril(Ȧ) X)."""

    @jax.custom_jvp
    def solve_lower(a, b):
        return _solve_lower(a, b)

    @solve_lower.defjvp
    def solve_lower_jvp(primals, tangents):
        (a, b), (a_dot, b_dot) = primals, tangents
        x = solve_lower(a, b)
        g_a = a_dot if bug else jnp.tril(a_dot)
        return x, _solve_lower(a, b_dot - g_a @ x)

    return solve_lower, (_real(21, 4, 4) + 3 * jnp.eye(4), _real(22, 4, 2))


@case(
    "linear algebra",
    "dΩ = L + Lᵀ instead of the skew-symmetric L − Lᵀ",
    JAX + "jax/_src/lax/linalg.py (_thin_qr_jvp)",
    leaves=("args[0]",),
)
def qr(bug):
    """Reduced QR of a 5×3 matrix with JAX's rule (Townsend, j-towns.github.io/papers/
    qr-derivative.pdf), real case."""

    @jax.custom_jvp
    def qr(x):
        return tuple(jnp.linalg.qr(x))

    @qr.defjvp
    def qr_jvp(primals, tangents):
        (x,), (dx,) = primals, tangents
        q, r = qr(x)
        dx_rinv = lax.linalg.triangular_solve(r, dx)  # right side: dx · r⁻¹
        qt_dx_rinv = q.T @ dx_rinv
        lower = jnp.tril(qt_dx_rinv, -1)
        do = lower + lower.T if bug else lower - lower.T
        return (q, r), (q @ (do - qt_dx_rinv) + dx_rinv, (qt_dx_rinv - do) @ r)

    return qr, (_real(23, 5, 3),)


@case(
    "linear algebra",
    "the terms s − s·A·A⁺ of Golub & Pereyra's formula dropped",
    JAX + "jax/_src/numpy/linalg.py (_pinv_jvp)",
    leaves=("args[0]",),
)
def pinv(bug):
    """The pseudo-inverse of a tall 5×3 matrix with JAX's JVP (Golub & Pereyra 1973)."""

    @jax.custom_jvp
    def pinv(a):
        return jnp.linalg.pinv(a)

    @pinv.defjvp
    def pinv_jvp(primals, tangents):
        (a,), (a_dot,) = primals, tangents
        p = pinv(a)
        s = (p @ p.T) @ a_dot.T
        t = (a_dot.T @ p.T) @ p
        p_dot = -(p @ a_dot) @ p + t - (p @ a) @ t
        if not bug:
            p_dot = p_dot + s - (s @ a) @ p
        return p, p_dot

    return pinv, (_real(24, 5, 3),)


@case(
    "linear algebra",
    "ṡ = diag(Uᵀ Ȧ Vᵀ) instead of diag(Uᵀ Ȧ V) (Vt not transposed)",
    JAX + "jax/_src/lax/linalg.py (_svd_jvp_rule, compute_uv=False)",
    leaves=("args[0]",),
)
def singular_values(bug):
    """The singular values of a 4×4 matrix with JAX's rule ṡ = diag(Uᵀ Ȧ V)."""

    @jax.custom_jvp
    def singular_values(a):
        return jnp.linalg.svd(a, compute_uv=False)

    @singular_values.defjvp
    def singular_values_jvp(primals, tangents):
        (a,), (a_dot,) = primals, tangents
        u, s, vt = jnp.linalg.svd(a, full_matrices=False)
        return s, jnp.diagonal(u.T @ a_dot @ (vt if bug else vt.T))

    return singular_values, (_real(25, 4, 4),)


@case(
    "float32",
    "x₂'s tangent weighted by e^(x₁ − out) (x1 for x2, copy-paste)",
    JAX + "jax/_src/lax/other.py (logaddexp, _logaddexp_jvp)",
    x64=False,
    leaves=("args[1]",),
)
def logaddexp_f32(bug):
    """JAX's logaddexp custom_jvp (finite inputs), float32 with x64 off."""

    @jax.custom_jvp
    def logaddexp(x1, x2):
        return jnp.logaddexp(x1, x2)

    @logaddexp.defjvp
    def logaddexp_jvp(primals, tangents):
        (x1, x2), (t1, t2) = primals, tangents
        out = logaddexp(x1, x2)
        return out, t1 * jnp.exp(x1 - out) + t2 * jnp.exp((x1 if bug else x2) - out)

    return logaddexp, (_real(26, 6), _real(27, 6))


@case(
    "order 2",
    "softmax's JVP y·ẋ without the − y·Σ(y·ẋ) term (second order only)",
    JAX + "jax/_src/nn/functions.py (_softmax, _softmax_jvp)",
    order=2,
    modes=("rev",),
    leaves=("args[0]",),
)
def logsumexp_softmax_order2(bug):
    """logsumexp over rows as a custom_vjp whose backward is g·softmax(x), softmax being a copy
    of jax.nn.softmax's custom_jvp: the first derivative is exact, the second runs softmax's
    JVP."""

    @functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
    def softmax(x, axis):
        unnormalized = jnp.exp(x - lax.stop_gradient(x.max(axis, keepdims=True)))
        return unnormalized / unnormalized.sum(axis, keepdims=True)

    @softmax.defjvp
    def softmax_jvp(axis, primals, tangents):
        (x,), (x_dot,) = primals, tangents
        y = softmax(x, axis)
        if bug:
            return y, y * x_dot
        return y, y * (x_dot - (y * x_dot).sum(axis, keepdims=True))

    @jax.custom_vjp
    def logsumexp(x):
        return jsp.special.logsumexp(x, axis=-1)

    def logsumexp_fwd(x):
        return logsumexp(x), x

    def logsumexp_bwd(x, g):
        return (g[..., None] * softmax(x, -1),)

    logsumexp.defvjp(logsumexp_fwd, logsumexp_bwd)
    return logsumexp, (_real(28, 3, 5),)


def _binary_search(func, x0, low=0.0, high=100.0):
    """JAX's tests/custom_root_test.py solver, verbatim."""
    del x0

    def cond(state):
        low, high = state
        midpoint = 0.5 * (low + high)
        return (low < midpoint) & (midpoint < high)

    def body(state):
        low, high = state
        midpoint = 0.5 * (low + high)
        update_upper = func(midpoint) > 0
        low = jnp.where(update_upper, low, midpoint)
        high = jnp.where(update_upper, midpoint, high)
        return (low, high)

    solution, _ = lax.while_loop(cond, body, (low, high))
    return solution


@case(
    "implicit",
    "the tangent solve −y / f′ instead of y / f′ (the sign of a Newton step)",
    JAX + "tests/custom_root_test.py (test_custom_root_scalar)",
    order=2,
    rtol={np.float32: 1e-2, np.float64: 1e-3},
    leaves=("args[0]",),
)
def custom_root_scalar(bug):
    """lax.custom_root: √(x³) as the root of y² − x³ by binary search, with JAX's test's
    scalar tangent solve and its check_grads tolerances."""

    def scalar_solve(f, y):
        return (-y if bug else y) / f(1.0)

    def sqrt_cubed(x):
        return lax.custom_root(lambda y: y**2 - x**3, 1.0, _binary_search, scalar_solve)

    return sqrt_cubed, (jnp.asarray(5.0, jnp.result_type(float)),)


def _dot(a, b):
    return lax.dot(a, b, precision=lax.Precision.HIGHEST)


@case(
    "implicit",
    "the tangent solve with the transposed Jacobian",
    JAX + "tests/custom_root_test.py (test_custom_root_vector_with_solve_closure)",
    order=2,
    atol={np.float32: 1e-2, np.float64: 1e-11},
    leaves=("args[0]", "args[1]"),
)
def custom_root_vector(bug):
    """lax.custom_root for A y = b (an oracle solver) with JAX's test's vector tangent solve."""

    def vector_solve(f, y):
        jac = jax.jacobian(f)(y)
        return jnp.linalg.solve(jac.T if bug else jac, y)

    def linear_solve(a, b):
        solution = jnp.linalg.solve(a, b)
        return lax.custom_root(
            lambda y: _dot(a, y) - b, jnp.zeros_like(b), lambda func, x0: solution, vector_solve
        )

    return linear_solve, (_real(29, 2, 2) + 2 * jnp.eye(2), _real(30, 2))


@case(
    "implicit",
    "transpose_solve factors A instead of Aᵀ",
    JAX + "tests/custom_linear_solve_test.py (test_custom_linear_solve_lu)",
    order=2,
    rtol=2e-3,
    leaves=("args[0]", "args[1]"),
)
def custom_linear_solve_lu(bug):
    """lax.custom_linear_solve with LU solves for A and Aᵀ, as in JAX's test."""

    def linear_solve(a, b):
        a_factors = jsp.linalg.lu_factor(a)
        at_factors = jsp.linalg.lu_factor(a if bug else a.T)

        def solve(matvec, x):
            return jsp.linalg.lu_solve(a_factors, x)

        def transpose_solve(vecmat, x):
            return jsp.linalg.lu_solve(at_factors, x)

        return lax.custom_linear_solve(functools.partial(_dot, a), b, solve, transpose_solve)

    return linear_solve, (_real(31, 3, 3), _real(32, 3))


@case(
    "implicit",
    "symmetric=True for a non-symmetric A (so Aᵀ is solved as A)",
    JAX + "tests/custom_linear_solve_test.py (test_custom_linear_solve)",
    order=2,
    rtol=3e-3,
    leaves=("args[0]", "args[1]"),
)
def custom_linear_solve_symmetric(bug):
    """lax.custom_linear_solve with JAX's test's explicit-Jacobian solve, flagged symmetric."""

    def explicit_jacobian_solve(matvec, b):
        return lax.stop_gradient(jnp.linalg.solve(jax.jacobian(matvec)(b), b))

    def linear_solve(a, b):
        return lax.custom_linear_solve(
            functools.partial(_dot, a),
            b,
            explicit_jacobian_solve,
            explicit_jacobian_solve,
            symmetric=bug,
        )

    return linear_solve, (_real(33, 3, 3), _real(34, 3))


@case(
    "complex",
    "the transpose solve with Aᴴ instead of Aᵀ (a conj too many)",
    JAX + "tests/custom_linear_solve_test.py (test_custom_linear_solve_complex)",
    order=2,
    rtol=1e-2,
    reference=jnp.linalg.solve,
    leaves=("args[0]", "args[1]"),
)
def custom_linear_solve_complex(bug):
    """lax.custom_linear_solve of a complex system, JAX's test, with explicit transpose solve."""

    def solve(a, b):
        def solve(matvec, x):
            return jsp.linalg.solve(a, x)

        def tr_solve(matvec, x):
            return jsp.linalg.solve(a.conj().T if bug else a.T, x)

        return lax.custom_linear_solve(functools.partial(_dot, a), b, solve, tr_solve)

    return solve, (_complex(35, 2, 2, scale=0.5), _complex(36, 2, scale=0.5))


def _deq_cell(W, x, z):
    return jnp.tanh(_dot(W, z) + x)


@case(
    "implicit",
    "the adjoint solve without the Jacobian term (u = z̄, 'Jacobian-free' backprop)",
    "http://implicit-layers-tutorial.org/implicit_functions/ (fixed_point_layer)",
    modes=("rev",),
    leaves=("args[0]", "args[1]"),
)
def deq_fixed_point_layer(bug):
    """The implicit-layers tutorial's deep-equilibrium layer z* = tanh(W z* + x) with its
    implicit custom_vjp (forward iteration to 1e-12, since FD needs an accurate primal)."""

    def fwd_solver(f, z_init):
        def cond_fun(carry):
            z_prev, z = carry
            return jnp.linalg.norm(z_prev - z) > 1e-12

        def body_fun(carry):
            _, z = carry
            return z, f(z)

        _, z_star = lax.while_loop(cond_fun, body_fun, (z_init, f(z_init)))
        return z_star

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
    def fixed_point_layer(solver, f, params, x):
        return solver(lambda z: f(params, x, z), z_init=jnp.zeros_like(x))

    def fixed_point_layer_fwd(solver, f, params, x):
        z_star = fixed_point_layer(solver, f, params, x)
        return z_star, (params, x, z_star)

    def fixed_point_layer_bwd(solver, f, res, z_star_bar):
        params, x, z_star = res
        _, vjp_a = jax.vjp(lambda params, x: f(params, x, z_star), params, x)
        _, vjp_z = jax.vjp(lambda z: f(params, x, z), z_star)
        if bug:
            return vjp_a(z_star_bar)
        return vjp_a(solver(lambda u: vjp_z(u)[0] + z_star_bar, z_init=jnp.zeros_like(z_star)))

    fixed_point_layer.defvjp(fixed_point_layer_fwd, fixed_point_layer_bwd)
    W = 0.5 * _real(37, 4, 4) / np.sqrt(4)
    return functools.partial(fixed_point_layer, fwd_solver, _deq_cell), (W, _real(38, 4))


# === ODE solvers: jax.experimental.ode.odeint ===================================================

TS = np.linspace(0.0, 1.0, 4)
"""The output times of the ODE cases."""


def _mm_rate(y, vmax, km):
    return vmax * y / (km + y)


@case(
    "ode",
    "∂rate/∂y = vmax/(km + y): the quotient rule's − vmax·y/(km + y)² dropped",
    JAX + "jax/experimental/ode.py (odeint's adjoint runs jax.vjp of the dynamics)",
    modes=("rev",),
    leaves=("args[0]", "args[1]", "args[2]"),
)
def odeint_michaelis_menten(bug):
    """Michaelis–Menten decay ẏ = −vmax·y/(km + y) by odeint, its rate a custom_jvp: odeint's
    adjoint transposes the rate's JVP rule."""

    @jax.custom_jvp
    def rate(y, vmax, km):
        return _mm_rate(y, vmax, km)

    @rate.defjvp
    def rate_jvp(primals, tangents):
        (y, vmax, km), (y_dot, vmax_dot, km_dot) = primals, tangents
        d_y = vmax / (km + y) if bug else vmax * km / (km + y) ** 2
        d_vmax = y / (km + y)
        d_km = -vmax * y / (km + y) ** 2
        return rate(y, vmax, km), d_y * y_dot + d_vmax * vmax_dot + d_km * km_dot

    def dynamics(y, t, vmax, km):  # one function object: odeint compiles once per transform
        return -rate(y, vmax, km)

    def solve(y0, vmax, km):
        return odeint(dynamics, y0, jnp.asarray(TS, y0.dtype), vmax, km)

    y0 = _positive(39, 3, low=0.5, high=2.0)
    vmax = _positive(40, 3, low=0.5, high=1.5)
    return solve, (y0, vmax, jnp.asarray(0.7, y0.dtype))


def _oscillator(y, t, theta):
    """A forced, damped oscillator: position, velocity; θ = (stiffness, damping, forcing)."""
    pos, vel = y[0], y[1]
    return jnp.stack([vel, -theta[0] * pos - theta[1] * vel + theta[2] * jnp.sin(2.0 * t)])


def _oscillator_odeint(time_flip: bool, theta_factor: float):
    """The oscillator solved by odeint inside a custom_vjp whose backward pass is a copy of
    odeint's adjoint (_odeint_rev, without the times' cotangent); ``time_flip=False`` or
    ``theta_factor`` ≠ 1 plant the two bugs."""

    @jax.custom_vjp
    def solve(y0, theta):
        return odeint(_oscillator, y0, jnp.asarray(TS, y0.dtype), theta)

    def solve_fwd(y0, theta):
        ys = solve(y0, theta)
        return ys, (ys, theta)

    def aug_dynamics(augmented_state, t, theta):
        """The original system augmented with vjp_y, vjp_t and vjp_args."""
        y, y_bar, *_ = augmented_state
        # t is negative time here: negated again to get back to normal time
        y_dot, vjpfun = jax.vjp(_oscillator, y, -t if time_flip else t, theta)
        return (-y_dot, *vjpfun(y_bar))

    def solve_bwd(res, g):
        ys, theta = res
        ts, g = jnp.asarray(TS, ys.dtype), jnp.asarray(g)

        def scan_fun(carry, i):
            y_bar, t0_bar, theta_bar = carry
            t_bar = jnp.dot(_oscillator(ys[i], ts[i], theta), g[i])
            t0_bar = t0_bar - t_bar
            _, y_bar, t0_bar, theta_bar = odeint(
                aug_dynamics,
                (ys[i], y_bar, t0_bar, theta_bar),
                jnp.stack([-ts[i], -ts[i - 1]]),
                theta,
            )
            y_bar, t0_bar, theta_bar = jax.tree.map(lambda v: v[1], (y_bar, t0_bar, theta_bar))
            return (y_bar + g[i - 1], t0_bar, theta_bar), t_bar

        init = (g[-1], jnp.zeros((), ys.dtype), jnp.zeros_like(theta))
        (y_bar, _, theta_bar), _ = lax.scan(scan_fun, init, jnp.arange(len(TS) - 1, 0, -1))
        return y_bar, theta_factor * theta_bar

    solve.defvjp(solve_fwd, solve_bwd)
    y0 = jnp.asarray([1.0, 0.0], jnp.result_type(float))
    return solve, (y0, jnp.asarray([4.0, 0.3, 1.5], y0.dtype))


@case(
    "ode",
    "the augmented dynamics evaluated at t instead of −t (the time flip of the backward pass)",
    JAX + "jax/experimental/ode.py (_odeint_rev)",
    modes=("rev",),
    leaves=("args[1]",),
)
def odeint_adjoint_time_flip(bug):
    """A forced, damped oscillator by odeint inside a custom_vjp whose backward pass is a copy
    of odeint's adjoint."""
    return _oscillator_odeint(time_flip=not bug, theta_factor=1.0)


@case(
    "ode",
    "the cotangent of the dynamics' arguments (odeint's *args) 5 % too large",
    JAX + "jax/experimental/ode.py (_odeint_rev)",
    modes=("rev",),
    leaves=("args[1]",),
)
def odeint_args_cotangent(bug):
    """The same copy of odeint's adjoint with its cotangent for the dynamics' arguments 5 % off
    (a counterexample reported against the verifier)."""
    return _oscillator_odeint(time_flip=True, theta_factor=_factor(bug, 1.05))


@case(
    "ode",
    "W's cotangent transposed (y·ḡᵀ instead of ḡ·yᵀ)",
    "https://docs.jax.dev/en/latest/_autosummary/jax.experimental.ode.odeint.html "
    "(a neural ODE whose layer is a custom_vjp)",
    modes=("rev",),
    leaves=("args[1]",),
)
def odeint_neural_ode_layer(bug):
    """A neural ODE ẏ = tanh(W y) by odeint, the layer a hand-written custom_vjp."""

    @jax.custom_vjp
    def layer(y, W):
        return jnp.tanh(W @ y)

    def layer_fwd(y, W):
        h = layer(y, W)
        return h, (y, W, h)

    def layer_bwd(res, g):
        y, W, h = res
        dz = g * (1 - h**2)
        return W.T @ dz, jnp.outer(y, dz) if bug else jnp.outer(dz, y)

    layer.defvjp(layer_fwd, layer_bwd)

    def dynamics(y, t, W):
        return layer(y, W)

    def solve(y0, W):
        return odeint(dynamics, y0, jnp.asarray(TS, y0.dtype), W)

    return solve, (_real(41, 3), 0.5 * _real(42, 3, 3))


# === ML libraries: losses, normalisations, layers ===============================================


def _gelu_tanh(x):
    return jax.nn.gelu(x, approximate=True)


@case(
    "float32",
    "d/dx of the cubic term: (1 + 0.044715·x²) instead of (1 + 3·0.044715·x²)",
    JAX + "jax/_src/nn/functions.py (gelu, approximate=True); arXiv:1606.08415",
    modes=("fwd",),
    x64=False,
    reference=_gelu_tanh,
    leaves=("args[0]",),
)
def gelu_tanh_f32(bug):
    """The tanh-approximate GELU with a hand-derived custom_jvp (as fused kernels write it),
    float32 forward-only."""

    @jax.custom_jvp
    def gelu(x):
        return _gelu_tanh(x)

    @gelu.defjvp
    def gelu_jvp(primals, tangents):
        (x,), (x_dot,) = primals, tangents
        c = np.sqrt(2 / np.pi).astype(x.dtype)
        t = jnp.tanh(c * (x + 0.044715 * x**3))
        du = c * (1 + (1 if bug else 3) * 0.044715 * x**2)
        return gelu(x), (0.5 * (1 + t) + 0.5 * x * (1 - t**2) * du) * x_dot

    return gelu, (_real(43, 16, scale=1.5),)


@case(
    "float32",
    "σ(x)(1 − x(1 − σ(x))) instead of σ(x)(1 + x(1 − σ(x)))",
    "https://docs.jax.dev/en/latest/_autosummary/jax.nn.silu.html",
    modes=("fwd",),
    x64=False,
    leaves=("args[0]",),
)
def silu_f32(bug):
    """SiLU / swish x·σ(x) with a hand-derived custom_jvp, float32 forward-only."""

    @jax.custom_jvp
    def silu(x):
        return x * jax.nn.sigmoid(x)

    @silu.defjvp
    def silu_jvp(primals, tangents):
        (x,), (x_dot,) = primals, tangents
        s = jax.nn.sigmoid(x)
        return silu(x), s * (1 + (-1 if bug else 1) * x * (1 - s)) * x_dot

    return silu, (_real(44, 16, scale=2.0),)


@case(
    "order 2",
    "sigmoid's JVP t·y·(y − 1) instead of t·y·(1 − y) (second order of softplus only)",
    JAX + "jax/_src/nn/functions.py (softplus, sigmoid)",
    order=2,
    reference=jax.nn.softplus,
    leaves=("args[0]",),
)
def softplus_sigmoid_order2(bug):
    """softplus as a custom_jvp whose rule is ẋ·σ(x), σ itself a custom_jvp: a bug in σ's rule
    shows only in the second derivative."""

    @jax.custom_jvp
    def sigmoid(x):
        return 1 / (1 + jnp.exp(-x))

    @sigmoid.defjvp
    def sigmoid_jvp(primals, tangents):
        (x,), (x_dot,) = primals, tangents
        y = sigmoid(x)
        return y, x_dot * y * ((y - 1) if bug else (1 - y))

    @jax.custom_jvp
    def softplus(x):
        return jnp.logaddexp(x, 0.0)

    @softplus.defjvp
    def softplus_jvp(primals, tangents):
        (x,), (x_dot,) = primals, tangents
        return softplus(x), x_dot * sigmoid(x)

    return softplus, (_real(45, 5),)


@case(
    "reduction",
    "the weights' tangent term ẇ·log_softmax(x) dropped",
    OPTAX + "losses/_classification.py (weighted_logsoftmax)",
    x64=False,
    leaves=("args[1]",),
)
def optax_weighted_logsoftmax_f32(bug):
    """optax's weighted_logsoftmax custom_jvp inside a cross-entropy averaged over a batch of 8
    with soft labels, float32."""

    @jax.custom_jvp
    def weighted_logsoftmax(x, weights):
        logsoftmax_x = jax.nn.log_softmax(x, axis=-1)
        return jnp.where(weights != 0.0, weights * logsoftmax_x, jnp.zeros_like(logsoftmax_x))

    @weighted_logsoftmax.defjvp
    def weighted_logsoftmax_jvp(primals, tangents):
        (x, weights), (x_dot, weights_dot) = primals, tangents
        logsoftmax_x = jax.nn.log_softmax(x, axis=-1)
        result = jnp.where(weights != 0.0, weights * logsoftmax_x, jnp.zeros_like(logsoftmax_x))
        out_tangents = weights * x_dot - weights * jnp.sum(
            x_dot * jax.nn.softmax(x, axis=-1), axis=-1, keepdims=True
        )
        if not bug:
            out_tangents = out_tangents + weights_dot * logsoftmax_x
        return result, out_tangents

    def loss(x, w):
        return -jnp.mean(jnp.sum(weighted_logsoftmax(x, w), axis=-1))

    return loss, (_real(46, 8, 5), jax.nn.softmax(_real(47, 8, 5), axis=-1))


def _simplex_projection(values):
    """optax's _projection_unit_simplex (sort-based, Held et al.)."""
    n_features = values.shape[0]
    u = jnp.sort(values)[::-1]
    cumsum_u = jnp.cumsum(u)
    ind = jnp.arange(n_features) + 1
    cond = 1 / ind + (u - cumsum_u / ind) > 0
    idx = jnp.count_nonzero(cond)
    return jax.nn.relu(1 / idx + (values - cumsum_u[idx - 1] / idx))


@case(
    "custom_jvp fwd",
    "the mean over the support divided by n instead of the support's size",
    OPTAX + "projections/_projections.py (_projection_unit_simplex_jvp)",
    modes=("fwd",),
    leaves=("args[0]",),
)
def optax_projection_simplex(bug):
    """optax's Euclidean projection onto the unit simplex and its custom_jvp (piecewise linear:
    no JAX-differentiable reference beyond itself, so none is given)."""

    @jax.custom_jvp
    def projection(values):
        return _simplex_projection(values)

    @projection.defjvp
    def projection_jvp(primals, tangents):
        (values,), (values_dot,) = primals, tangents
        primal_out = projection(values)
        supp = primal_out > 0
        card = values.shape[0] if bug else jnp.count_nonzero(supp)
        return primal_out, supp * values_dot - (jnp.dot(supp, values_dot) / card) * supp

    return projection, (_real(48, 8),)


@case(
    "reduction",
    "the softmax taken over the batch axis 0 instead of the reduced axis −1",
    JAX + "jax/_src/ops/special.py (logsumexp)",
    modes=("rev",),
    reference=lambda x: jsp.special.logsumexp(x, axis=-1),
    leaves=("args[0]",),
)
def logsumexp_axis(bug):
    """Row-wise logsumexp of a 4×6 batch as a custom_vjp with backward ḡ·softmax(x)."""

    @jax.custom_vjp
    def logsumexp(x):
        return jsp.special.logsumexp(x, axis=-1)

    def logsumexp_fwd(x):
        return logsumexp(x), x

    def logsumexp_bwd(x, g):
        return (g[:, None] * jax.nn.softmax(x, axis=0 if bug else -1),)

    logsumexp.defvjp(logsumexp_fwd, logsumexp_bwd)
    return logsumexp, (_real(49, 4, 6),)


def _layer_norm_reference(x, gamma, beta):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    rstd = 1 / jnp.sqrt(jnp.var(x, axis=-1, keepdims=True) + 1e-5)
    return (x - mean) * rstd * gamma + beta


def _layer_norm(bug_dx: bool, bug_dgamma: bool):
    """llm.c's layernorm_forward / layernorm_backward as a custom_vjp over the last axis."""

    @jax.custom_vjp
    def layer_norm(x, gamma, beta):
        return _layer_norm_reference(x, gamma, beta)

    def layer_norm_fwd(x, gamma, beta):
        mean = jnp.mean(x, axis=-1, keepdims=True)
        rstd = 1 / jnp.sqrt(jnp.var(x, axis=-1, keepdims=True) + 1e-5)
        xhat = (x - mean) * rstd
        return xhat * gamma + beta, (xhat, rstd, gamma)

    def layer_norm_bwd(res, g):
        xhat, rstd, gamma = res
        dnorm = g * gamma
        dx = dnorm - jnp.mean(dnorm, axis=-1, keepdims=True)
        if not bug_dx:
            dx = dx - xhat * jnp.mean(dnorm * xhat, axis=-1, keepdims=True)
        reduce = jnp.mean if bug_dgamma else jnp.sum
        return dx * rstd, reduce(g * xhat, axis=0), jnp.sum(g, axis=0)

    layer_norm.defvjp(layer_norm_fwd, layer_norm_bwd)
    return layer_norm


@case(
    "custom_vjp rev",
    "dx without the − x̂·mean(dnorm·x̂) term",
    "https://github.com/karpathy/llm.c/blob/master/train_gpt2.c (layernorm_backward)",
    modes=("rev",),
    leaves=("args[0]",),
)
def layer_norm(bug):
    """llm.c's layer norm backward (8 rows of 6), float64."""
    return _layer_norm(bug_dx=bug, bug_dgamma=False), (
        _real(50, 8, 6, scale=2.0, shift=1.0),
        _real(51, 6, scale=0.5, shift=1.0),
        _real(52, 6),
    )


@case(
    "float32",
    "dγ averaged over the batch instead of summed (a stray 1/m)",
    "https://github.com/karpathy/llm.c/blob/master/train_gpt2.c (layernorm_backward)",
    modes=("rev",),
    x64=False,
    leaves=("args[1]",),
)
def layer_norm_dgamma_f32(bug):
    """llm.c's layer norm backward (8 rows of 6), float32 with x64 off."""
    return _layer_norm(bug_dx=False, bug_dgamma=bug), (
        _real(53, 8, 6, scale=2.0, shift=1.0),
        _real(54, 6, scale=0.5, shift=1.0),
        _real(55, 6),
    )


@case(
    "float32",
    "the backward recomputes rstd with eps 1e-3 while the forward uses 1e-5",
    "https://github.com/karpathy/llm.c/blob/master/train_gpt2.c (layernorm_backward)",
    modes=("rev",),
    x64=False,
    leaves=("args[0]", "args[1]"),
)
def layer_norm_eps_f32(bug):
    """A layer norm whose backward recomputes the statistics instead of saving them (to save
    memory), on small activations (x ~ 0.1, so eps matters), float32 with x64 off."""

    @jax.custom_vjp
    def layer_norm(x, gamma, beta):
        return _layer_norm_reference(x, gamma, beta)

    def layer_norm_fwd(x, gamma, beta):
        return layer_norm(x, gamma, beta), (x, gamma)

    def layer_norm_bwd(res, g):
        x, gamma = res
        eps = 1e-3 if bug else 1e-5
        rstd = 1 / jnp.sqrt(jnp.var(x, axis=-1, keepdims=True) + eps)
        xhat = (x - jnp.mean(x, axis=-1, keepdims=True)) * rstd
        dnorm = g * gamma
        dx = dnorm - jnp.mean(dnorm, axis=-1, keepdims=True)
        dx = dx - xhat * jnp.mean(dnorm * xhat, axis=-1, keepdims=True)
        return dx * rstd, jnp.sum(g * xhat, axis=0), jnp.sum(g, axis=0)

    layer_norm.defvjp(layer_norm_fwd, layer_norm_bwd)
    x = _real(90, 8, 6, scale=0.1)
    return layer_norm, (x, _real(91, 6, scale=0.5, shift=1.0), _real(92, 6))


def _rms_norm_reference(x, w):
    return x / jnp.sqrt(jnp.mean(x**2, axis=-1, keepdims=True) + 1e-6) * w


@case(
    "reduction",
    "the mean in dx's second term taken as a sum (1/m dropped)",
    "https://arxiv.org/abs/1910.07467 (RMSNorm); flax.linen.RMSNorm",
    modes=("rev",),
    leaves=("args[0]",),
)
def rms_norm(bug):
    """RMSNorm y = x / rms(x) · w over the last axis as a custom_vjp (6 rows of 8)."""

    @jax.custom_vjp
    def rms_norm(x, w):
        return _rms_norm_reference(x, w)

    def rms_norm_fwd(x, w):
        r = 1 / jnp.sqrt(jnp.mean(x**2, axis=-1, keepdims=True) + 1e-6)
        return x * r * w, (x, w, r)

    def rms_norm_bwd(res, g):
        x, w, r = res
        gw = g * w
        reduce = jnp.sum if bug else jnp.mean
        dx = r * gw - x * r**3 * reduce(gw * x, axis=-1, keepdims=True)
        return dx, jnp.sum(g * x * r, axis=0)

    rms_norm.defvjp(rms_norm_fwd, rms_norm_bwd)
    return rms_norm, (_real(56, 6, 8), _real(57, 8, scale=0.3, shift=1.0))


def _batch_norm_reference(x, gamma, beta):
    mean = jnp.mean(x, axis=0)
    return (x - mean) / jnp.sqrt(jnp.var(x, axis=0) + 1e-5) * gamma + beta


@case(
    "reduction",
    "the x̂ term divided by m − 1 (Bessel's correction) instead of m",
    "https://arxiv.org/abs/1502.03167 (batch normalization, section 3)",
    modes=("rev",),
    leaves=("args[0]",),
)
def batch_norm(bug):
    """Training-mode batch norm over a batch of 16 (biased variance) as a custom_vjp."""

    @jax.custom_vjp
    def batch_norm(x, gamma, beta):
        return _batch_norm_reference(x, gamma, beta)

    def batch_norm_fwd(x, gamma, beta):
        rstd = 1 / jnp.sqrt(jnp.var(x, axis=0) + 1e-5)
        xhat = (x - jnp.mean(x, axis=0)) * rstd
        return xhat * gamma + beta, (xhat, rstd, gamma)

    def batch_norm_bwd(res, g):
        xhat, rstd, gamma = res
        m = xhat.shape[0]
        dxhat = g * gamma
        denominator = m - 1 if bug else m
        dx = rstd * (
            dxhat - jnp.sum(dxhat, axis=0) / m - xhat * jnp.sum(dxhat * xhat, axis=0) / denominator
        )
        return dx, jnp.sum(g * xhat, axis=0), jnp.sum(g, axis=0)

    batch_norm.defvjp(batch_norm_fwd, batch_norm_bwd)
    return batch_norm, (_real(58, 16, 4, shift=0.5), _real(59, 4, shift=1.0), _real(60, 4))


def _attention_reference(q, k, v):
    p = jax.nn.softmax(q @ k.T / np.sqrt(q.shape[-1]), axis=-1)
    return p @ v


@case(
    "custom_vjp rev",
    "dK without the 1/√d scale",
    "https://arxiv.org/abs/2205.14135 (FlashAttention, appendix B.2: the standard backward)",
    modes=("rev",),
    leaves=("args[1]",),
)
def attention(bug):
    """Single-head softmax attention softmax(QKᵀ/√d)V with the standard backward pass."""

    @jax.custom_vjp
    def attention(q, k, v):
        return _attention_reference(q, k, v)

    def attention_fwd(q, k, v):
        p = jax.nn.softmax(q @ k.T / np.sqrt(q.shape[-1]), axis=-1)
        return p @ v, (q, k, v, p)

    def attention_bwd(res, g):
        q, k, v, p = res
        scale = 1 / np.sqrt(q.shape[-1])
        dp = g @ v.T
        ds = p * (dp - jnp.sum(dp * p, axis=-1, keepdims=True))
        return ds @ k * scale, ds.T @ q * (1.0 if bug else scale), p.T @ g

    attention.defvjp(attention_fwd, attention_bwd)
    return attention, (_real(61, 5, 4), _real(62, 6, 4), _real(63, 6, 3))


def _softmax_ce_reference(logits, labels):
    return jnp.mean(-jnp.sum(labels * jax.nn.log_softmax(logits, axis=-1), axis=-1))


@case(
    "reduction",
    "the logits' cotangent without the batch mean's 1/m",
    OPTAX + "losses/_classification.py (softmax_cross_entropy, averaged over the batch)",
    modes=("rev",),
    x64=False,
    leaves=("args[0]",),
)
def softmax_cross_entropy_f32(bug):
    """optax's softmax cross-entropy averaged over a batch of 8 as a custom_vjp (labels are
    an argument too), float32 with x64 off."""

    @jax.custom_vjp
    def loss(logits, labels):
        return _softmax_ce_reference(logits, labels)

    def loss_fwd(logits, labels):
        return loss(logits, labels), (logits, labels)

    def loss_bwd(res, g):
        logits, labels = res
        m = 1 if bug else logits.shape[0]
        p = jax.nn.softmax(logits, axis=-1)
        d_logits = g * (p * jnp.sum(labels, axis=-1, keepdims=True) - labels) / m
        d_labels = -g * jax.nn.log_softmax(logits, axis=-1) / logits.shape[0]
        return d_logits, d_labels

    loss.defvjp(loss_fwd, loss_bwd)
    labels = jax.nn.one_hot(np.random.RandomState(64).randint(0, 5, 8), 5)
    return loss, (_real(65, 8, 5), labels)


def _bce_reference(x, y):
    return jnp.mean(jax.nn.softplus(x) - x * y)


@case(
    "float32",
    "the labels' tangent +x·ẏ instead of −x·ẏ",
    OPTAX + "losses/_classification.py (sigmoid_binary_cross_entropy)",
    x64=False,
    leaves=("args[1]",),
)
def sigmoid_bce_f32(bug):
    """optax's sigmoid binary cross-entropy mean(softplus(x) − x·y) over 16 examples, as a
    custom_jvp, float32 with x64 off."""

    @jax.custom_jvp
    def loss(x, y):
        return _bce_reference(x, y)

    @loss.defjvp
    def loss_jvp(primals, tangents):
        (x, y), (x_dot, y_dot) = primals, tangents
        label_term = (1 if bug else -1) * x * y_dot
        return loss(x, y), jnp.mean((jax.nn.sigmoid(x) - y) * x_dot + label_term)

    labels = _positive(66, 16, low=0.0, high=1.0)
    return loss, (_real(67, 16, scale=2.0), labels)


def _gaussian_nll_reference(mu, log_sigma, y):
    z = (y - mu) * jnp.exp(-log_sigma)
    return jnp.mean(0.5 * z**2 + log_sigma + 0.5 * np.log(2 * np.pi))


@case(
    "reduction",
    "d/d log σ = −z² (the +1 from log σ dropped)",
    "https://pytorch.org/docs/stable/generated/torch.nn.GaussianNLLLoss.html",
    modes=("rev",),
    leaves=("args[1]",),
)
def gaussian_nll(bug):
    """The Gaussian negative log-likelihood with a learned log σ per example, mean over 12."""

    @jax.custom_vjp
    def nll(mu, log_sigma, y):
        return _gaussian_nll_reference(mu, log_sigma, y)

    def nll_fwd(mu, log_sigma, y):
        return nll(mu, log_sigma, y), (mu, log_sigma, y)

    def nll_bwd(res, g):
        mu, log_sigma, y = res
        n = mu.shape[0]
        inv_sigma = jnp.exp(-log_sigma)
        z = (y - mu) * inv_sigma
        d_log_sigma = -(z**2) if bug else 1 - z**2
        return -g * z * inv_sigma / n, g * d_log_sigma / n, g * z * inv_sigma / n

    nll.defvjp(nll_fwd, nll_bwd)
    return nll, (_real(68, 12), _real(69, 12, scale=0.3), _real(70, 12))


def _kernel(a):
    return a @ a.T / a.shape[0] + jnp.eye(a.shape[0], dtype=a.dtype)


@case(
    "linear algebra",
    "K̄ = ½ααᵀ − K⁻¹: the ½ on K⁻¹ dropped",
    "http://gaussianprocess.org/gpml/chapters/RW5.pdf (eq. 5.9)",
    modes=("rev",),
    leaves=("args[0]",),
)
def gp_log_marginal_likelihood(bug):
    """A Gaussian process's log marginal likelihood by Cholesky, as a custom_vjp in K
    (GPML eq. 5.9: K̄ = ½(ααᵀ − K⁻¹)), with K = aaᵀ/n + I."""

    @jax.custom_vjp
    def lml(K, y):
        c = jsp.linalg.cho_factor(K, lower=True)
        alpha = jsp.linalg.cho_solve(c, y)
        logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(c[0])))
        return -0.5 * y @ alpha - 0.5 * logdet - 0.5 * y.shape[0] * np.log(2 * np.pi)

    def lml_fwd(K, y):
        c = jsp.linalg.cho_factor(K, lower=True)
        return lml(K, y), (c, jsp.linalg.cho_solve(c, y))

    def lml_bwd(res, g):
        c, alpha = res
        K_inv = jsp.linalg.cho_solve(c, jnp.eye(alpha.shape[0], dtype=alpha.dtype))
        K_bar = 0.5 * jnp.outer(alpha, alpha) - (1.0 if bug else 0.5) * K_inv
        return g * K_bar, -g * alpha

    lml.defvjp(lml_fwd, lml_bwd)
    return (lambda a, y: lml(_kernel(a), y)), (_real(71, 5, 5), _real(72, 5))


@case(
    "linear algebra",
    "K̄ = −b̄xᵀ/2: half of the symmetrised cotangent −(b̄xᵀ + xb̄ᵀ)/2",
    "https://docs.scipy.org/doc/scipy/reference/generated/scipy.linalg.cho_solve.html; " + GILES,
    modes=("rev",),
    leaves=("args[0]",),
)
def cho_solve(bug):
    """x = K⁻¹b by Cholesky (cho_factor / cho_solve) as a custom_vjp with a symmetrised
    cotangent for the SPD matrix, K = aaᵀ/n + I."""

    @jax.custom_vjp
    def spd_solve(K, b):
        return jsp.linalg.cho_solve(jsp.linalg.cho_factor(K, lower=True), b)

    def spd_solve_fwd(K, b):
        c = jsp.linalg.cho_factor(K, lower=True)
        x = jsp.linalg.cho_solve(c, b)
        return x, (c, x)

    def spd_solve_bwd(res, g):
        c, x = res
        b_bar = jsp.linalg.cho_solve(c, g)
        K_bar = -jnp.outer(b_bar, x) / 2
        if not bug:
            K_bar = K_bar - jnp.outer(x, b_bar) / 2
        return K_bar, b_bar

    spd_solve.defvjp(spd_solve_fwd, spd_solve_bwd)
    return (lambda a, b: spd_solve(_kernel(a), b)), (_real(73, 4, 4), _real(74, 4))


@case(
    "linear algebra",
    "Ā = −A⁻¹ḠA⁻¹ instead of −A⁻ᵀḠA⁻ᵀ (transposes dropped)",
    GILES + " (section 2.2.3)",
    modes=("rev",),
    reference=jnp.linalg.inv,
    leaves=("args[0]",),
)
def inverse(bug):
    """The matrix inverse as a custom_vjp with Giles's reverse-mode rule."""

    @jax.custom_vjp
    def inv(a):
        return jnp.linalg.inv(a)

    def inv_fwd(a):
        a_inv = inv(a)
        return a_inv, a_inv

    def inv_bwd(a_inv, g):
        t = a_inv if bug else a_inv.T
        return (-t @ g @ t,)

    inv.defvjp(inv_fwd, inv_bwd)
    return inv, (_real(75, 3, 3) + 2 * jnp.eye(3),)


@case(
    "float32",
    "Ā = +b̄xᵀ (the minus sign dropped)",
    GILES + " (section 2.3.1)",
    modes=("rev",),
    x64=False,
    leaves=("args[0]",),
)
def solve_f32(bug):
    """x = A⁻¹b as a custom_vjp (b̄ = A⁻ᵀḡ, Ā = −b̄xᵀ), float32 with x64 off."""

    @jax.custom_vjp
    def solve(a, b):
        return jnp.linalg.solve(a, b)

    def solve_fwd(a, b):
        x = solve(a, b)
        return x, (a, x)

    def solve_bwd(res, g):
        a, x = res
        b_bar = jnp.linalg.solve(a.T, g)
        return (1 if bug else -1) * jnp.outer(b_bar, x), b_bar

    solve.defvjp(solve_fwd, solve_bwd)
    return solve, (_real(76, 4, 4) + 3 * jnp.eye(4), _real(77, 4))


def _dense_loss_reference(params, x):
    return jnp.mean(jnp.sum(jnp.tanh(x @ params["W"] + params["b"]), axis=-1))


@case(
    "float32",
    "the bias cotangent summed over the batch without the 1/m",
    "https://cs231n.github.io/optimization-2/ (backprop of an affine layer, batch mean)",
    modes=("rev",),
    x64=False,
    leaves=("args[0]['b']",),
)
def dense_tanh_f32(bug):
    """A dense tanh layer's batch-mean loss as a custom_vjp over a params dict (a flax-style
    {"W", "b"}), float32 with x64 off."""

    @jax.custom_vjp
    def loss(params, x):
        return _dense_loss_reference(params, x)

    def loss_fwd(params, x):
        h = jnp.tanh(x @ params["W"] + params["b"])
        return jnp.mean(jnp.sum(h, axis=-1)), (params, x, h)

    def loss_bwd(res, g):
        params, x, h = res
        m = x.shape[0]
        dz = g * (1 - h**2) / m
        db = jnp.sum(dz * m, axis=0) if bug else jnp.sum(dz, axis=0)
        return {"W": x.T @ dz, "b": db}, dz @ params["W"].T

    loss.defvjp(loss_fwd, loss_bwd)
    params = {"W": 0.5 * _real(78, 4, 3), "b": 0.1 * _real(79, 3)}
    return loss, (params, _real(80, 8, 4))


@case(
    "custom_vjp rev",
    "the kernel's cotangent flipped (convolve instead of correlate)",
    "https://cs231n.github.io/convolutional-networks/ (conv backward); flax.linen.Conv",
    modes=("rev",),
    leaves=("args[1]",),
)
def conv1d(bug):
    """A 1-D 'valid' cross-correlation (a conv layer as flax computes it) as a custom_vjp."""

    @jax.custom_vjp
    def conv(x, w):
        return jnp.correlate(x, w, mode="valid")

    def conv_fwd(x, w):
        return conv(x, w), (x, w)

    def conv_bwd(res, g):
        x, w = res
        kernel = jnp.convolve if bug else jnp.correlate
        return jnp.convolve(g, w, mode="full"), kernel(x, g, mode="valid")

    conv.defvjp(conv_fwd, conv_bwd)
    return conv, (_real(81, 16), _real(82, 3))


IDS = np.array([1, 3, 3, 7, 1, 0])
"""Token ids with repeats, for the embedding case."""


@case(
    "custom_vjp rev",
    "the cotangent scattered with .set instead of .add (repeated ids lose all but one row)",
    "https://github.com/pytorch/pytorch/blob/main/aten/src/ATen/native/Embedding.cpp "
    "(embedding_dense_backward accumulates)",
    modes=("rev",),
    reference=lambda table: table[IDS],
    leaves=("args[0]",),
)
def embedding(bug):
    """An embedding lookup table[ids] with repeated ids as a custom_vjp."""

    @jax.custom_vjp
    def lookup(table):
        return table[IDS]

    def lookup_fwd(table):
        return lookup(table), table.shape

    def lookup_bwd(shape, g):
        zeros = jnp.zeros(shape, g.dtype).at[IDS]
        return (zeros.set(g) if bug else zeros.add(g),)

    lookup.defvjp(lookup_fwd, lookup_bwd)
    return lookup, (_real(83, 10, 4),)


def _l2_normalize_reference(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


@case(
    "custom_jvp fwd+rev",
    "ẏ = ẋ/‖x‖ without the projection − y(y·ẋ)/‖x‖",
    "https://www.math.uwaterloo.ca/~hwolkowi/matrixcookbook.pdf (d(x/‖x‖))",
    leaves=("args[0]",),
)
def l2_normalize(bug):
    """Row-wise L2 normalisation x/‖x‖ (embeddings, cosine similarity) as a custom_jvp."""

    @jax.custom_jvp
    def normalize(x):
        return _l2_normalize_reference(x)

    @normalize.defjvp
    def normalize_jvp(primals, tangents):
        (x,), (x_dot,) = primals, tangents
        norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
        y = x / norm
        if bug:
            return y, x_dot / norm
        return y, (x_dot - y * jnp.sum(y * x_dot, axis=-1, keepdims=True)) / norm

    return normalize, (_real(84, 5, 4),)


@case(
    "custom_jvp fwd+rev",
    "the tangent 2 % too small",
    OPTAX + "losses/_regression.py (log_cosh)",
    leaves=("args[0]",),
)
def log_cosh_sum(bug):
    """optax's log-cosh loss (a smooth Huber) summed over 20 residuals, as a custom_jvp with the
    rule Σ tanh(x)·ẋ."""

    @jax.custom_jvp
    def log_cosh(x):
        return jnp.sum(jnp.log(jnp.cosh(x)))

    @log_cosh.defjvp
    def log_cosh_jvp(primals, tangents):
        (x,), (x_dot,) = primals, tangents
        return log_cosh(x), _factor(bug, 0.98) * jnp.sum(jnp.tanh(x) * x_dot)

    return log_cosh, (_real(85, 20, scale=2.0),)


# === complex inputs =============================================================================


@case(
    "complex",
    "the cotangent 2ḡz instead of 2ḡ·conj(z) (conj missing)",
    "https://docs.jax.dev/en/latest/notebooks/autodiff_cookbook.html#complex-numbers-and-differentiation",
    modes=("rev",),
    reference=lambda z: jnp.sum(jnp.abs(z) ** 2),
    leaves=("args[0]",),
)
def abs2_vjp_complex(bug):
    """Σ|z|² (real output, complex input) as a custom_vjp in JAX's convention ḡ ↦ 2ḡ·z̄."""

    @jax.custom_vjp
    def power(z):
        return jnp.sum(jnp.abs(z) ** 2)

    def power_fwd(z):
        return power(z), z

    def power_bwd(z, g):
        return (2 * g * (z if bug else jnp.conj(z)),)

    power.defvjp(power_fwd, power_bwd)
    return power, (_complex(86, 4),)


@case(
    "complex",
    "the tangent 2·Re(z·ż) instead of 2·Re(z̄·ż) (conj missing)",
    "https://docs.jax.dev/en/latest/notebooks/autodiff_cookbook.html#complex-numbers-and-differentiation",
    reference=lambda z: jnp.abs(z) ** 2,
    leaves=("args[0]",),
)
def abs2_jvp_complex(bug):
    """|z|² elementwise (real output) as a custom_jvp, fwd and rev."""

    @jax.custom_jvp
    def abs2(z):
        return jnp.abs(z) ** 2

    @abs2.defjvp
    def abs2_jvp(primals, tangents):
        (z,), (z_dot,) = primals, tangents
        return abs2(z), 2 * jnp.real((z if bug else jnp.conj(z)) * z_dot)

    return abs2, (_complex(87, 4),)


@case(
    "complex",
    "x̄ = Aᴴḡ instead of Aᵀḡ (the adjoint, a conj too many, in JAX's transpose convention)",
    "https://docs.jax.dev/en/latest/notebooks/autodiff_cookbook.html#complex-numbers-and-differentiation",
    modes=("rev",),
    reference=lambda a, x: a @ x,
    leaves=("args[1]",),
)
def complex_matvec_vjp(bug):
    """y = A x for complex A, x as a custom_vjp (JAX's VJP of a holomorphic map is the plain
    transpose: Ā = ḡxᵀ, x̄ = Aᵀḡ)."""

    @jax.custom_vjp
    def matvec(a, x):
        return a @ x

    def matvec_fwd(a, x):
        return matvec(a, x), (a, x)

    def matvec_bwd(res, g):
        a, x = res
        return jnp.outer(g, x), (a.conj().T if bug else a.T) @ g

    matvec.defvjp(matvec_fwd, matvec_bwd)
    return matvec, (_complex(88, 3, 3), _complex(89, 3))


# === the quantities check_grads compares, for the not-a-no-op test ===============================


def _draw(rng: np.random.RandomState, x):
    x = jnp.asarray(x)
    values = rng.randn(*x.shape)
    if jnp.iscomplexobj(x):
        values = values + 1j * rng.randn(*x.shape)
    return jnp.asarray(values, x.dtype)


def derivatives(f, args, order: int, modes) -> list:
    """The JVPs and VJPs that ``check_grads(f, args, order, modes)`` compares, level by level
    (JAX's recursion: ``partial(jvp, f)`` on ``(args, args)``, ``vjp(f)(f(args))``), along
    directions drawn from ``RandomState(0)``: equal calls draw equal directions."""
    rng = np.random.RandomState(0)
    out: list = []

    def level(f, args, order):
        if "fwd" in modes:
            out.append(jax.jvp(f, args, jax.tree.map(functools.partial(_draw, rng), args))[1])
            if order > 1:
                level(functools.partial(jax.jvp, f), (args, args), order - 1)
        if "rev" in modes:
            y, vjp = jax.vjp(f, *args)
            out.append(vjp(jax.tree.map(functools.partial(_draw, rng), y)))
            if order > 1:

                def f_vjp(*args):
                    y, vjp = jax.vjp(f, *args)
                    return vjp(y)

                level(f_vjp, args, order - 1)

    level(f, args, order)
    return jax.tree.leaves(out)


def derivative_gap(c: Case) -> float:
    """max over compared arrays of ‖bug − correct‖∞ / max(‖bug‖∞, ‖correct‖∞): how far the
    planted bug moves what ``check_grads`` compares (0 for a no-op, at most 2)."""
    with c.context():
        good = derivatives(*c.make(False), c.order, c.modes)
        bad = derivatives(*c.make(True), c.order, c.modes)
    gaps = []
    for a, b in zip(good, bad, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        scale = max(np.max(np.abs(a), initial=0.0), np.max(np.abs(b), initial=0.0))
        scale = max(float(scale), np.finfo(a.dtype).tiny)
        gaps.append(float(np.max(np.abs(a - b), initial=0.0)) / scale)
    return max(gaps)


def round_off(c: Case) -> float:
    """What float round-off can move a derivative by, relative: √ε of the case's precision."""
    return float(np.sqrt(np.finfo(np.float64 if c.x64 else np.float32).eps))
