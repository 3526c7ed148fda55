"""Users' derivative rules: check_vjp, check_jvp, check_custom_vjp (verify/rules/).

Rules written outside this project — each correct, and with a planted bug that must be caught
and named by leaf (and by transform where the bug lives in one). Also the MLP instantiations
(check_backward, check_loss_vjp) of the VJP identities V10–V12.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp import verify
from jaxbp.verify import rules
from verify_support import numpy_problem

NAMES = dict(activation="tanh", output="softmax_ce")
DOT, DOT_FD = rules.DOT, rules.DOT_FD


def _rand(shape, seed, dtype=jnp.float64, low=None):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(shape) if low is None else rng.uniform(low, low + 1.5, shape)
    return jnp.asarray(v, dtype)


def _failing(report):
    return {(r.oracle, r.transform, r.path) for r in report.rows if not r.ok}


# --- the MLP instantiations (formerly test_verify_identities.py) ----------------------------------
def _problem(dtype=jnp.float64):
    return numpy_problem([4, 5, 3], dtype=dtype, m=6, seed=5, labels=False)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_delta_recursion_is_the_vjp_of_the_logits(dtype):
    params, x, _ = _problem(dtype)
    report = verify.check_backward(params, x, **NAMES)
    assert report.ok, str(report)
    paths = ["params[0].W", "params[0].b", "params[1].W", "params[1].b", "x"]
    for oracle in rules.VJP_ORACLES:
        assert [r.path for r in report.rows if r.oracle == oracle] == paths


def test_custom_vjp_of_loss_for_all_four_inputs():
    params, x, y = _problem()
    report = verify.check_loss_vjp(params, x, y, 0.7, **NAMES)
    assert report.ok, str(report)
    assert {r.path for r in report.rows} >= {"x", "y", "l2", "params[1].b"}


def test_a_wrong_leaf_of_the_vjp_fails_the_identity_at_that_leaf():
    params, x, _ = _problem()

    def wrong(p, x_, c):
        grads, dx = verify.backward_vjp(p, x_, c, **NAMES)
        return (grads[0], jaxbp.Layer(grads[1].W * 1.05, grads[1].b)), dx

    report = verify.check_backward(params, x, vjp_fn=wrong, **NAMES)
    assert report.failed == ["params[1].W"]
    assert {r.oracle for r in report.rows if not r.ok} == {"vjp", DOT, DOT_FD}


def test_affine_instead_of_linear_fails_zero_and_linearity():
    params, x, _ = _problem()

    def affine(p, x_, c):
        grads, dx = verify.backward_vjp(p, x_, c, **NAMES)
        return grads, dx + 1e-3

    report = verify.check_backward(params, x, vjp_fn=affine, **NAMES)
    assert report.failed == ["x"]
    assert {r.oracle for r in report.rows if not r.ok} >= {
        "vjp", DOT, "zero cotangent", "linearity"
    }  # fmt: skip


def test_generic_function_and_nonlinear_vjp():
    a = jnp.linspace(-1.0, 2.0, 5)

    def fun(v):
        return {"s": 2 * jnp.sin(v), "p": v[:2] * v[1:3]}

    def vjp(primals, c):
        (v,) = primals
        g = 2 * jnp.cos(v) * c["s"]
        g = g.at[:2].add(v[1:3] * c["p"]).at[1:3].add(v[:2] * c["p"])
        return (g,)

    assert verify.check_vjp(fun, vjp, a, names=("a",)).ok

    def squared(primals, c):  # not linear in c
        return (vjp(primals, c)[0] * jnp.sum(c["s"]),)

    report = verify.check_vjp(fun, squared, a, names=("a",))
    assert report.failed == ["a"]
    assert {r.oracle for r in report.rows if not r.ok} >= {"linearity"}


def test_seeded_and_reproducible():
    params, x, _ = _problem()
    a = verify.check_backward(params, x, key=3, **NAMES).to_dict()["rows"]
    b = verify.check_backward(params, x, key=3, **NAMES).to_dict()["rows"]
    c = verify.check_backward(params, x, key=jax.random.key(4), **NAMES).to_dict()["rows"]
    assert a == b and a != c


# --- check_vjp: rules of non-scalar functions, with planted bugs ----------------------------------
def matmul(x, W):
    return x @ W


def matmul_vjp(primals, c):
    x, W = primals
    return c @ W.T, x.T @ c


def test_matmul_vjp_that_forgets_a_transpose():
    x, W = _rand((4, 3), 0), _rand((3, 3), 1)
    report = verify.check_vjp(matmul, matmul_vjp, x, W)
    assert report.ok, str(report)
    assert [r.path for r in report.rows if r.oracle == "vjp"] == ["primals[0]", "primals[1]"]
    assert {r.transform for r in report.rows} == {"jit"}

    def forgot(primals, c):
        x, W = primals
        return c @ W, x.T @ c  # W, not W.T

    report = verify.check_vjp(matmul, forgot, x, W)
    assert report.failed == ["primals[0]"]
    assert {r.oracle for r in report.rows if not r.ok} == {"vjp", DOT, DOT_FD}
    with pytest.raises(AssertionError, match=r"primals\[0\]"):
        report.raise_if_failed()
    # a non-square W: the forgotten transpose has the wrong shape — a failing row that says so
    W2 = _rand((3, 2), 2)
    report = verify.check_vjp(matmul, lambda p, c: (c @ p[1][:2, :2], p[0].T @ c), x, W2)
    assert report.failed == ["primals[0]"]
    (row,) = [r for r in report.rows if not r.ok]
    assert row.oracle == "shape/dtype" and "shape (4, 2)" in row.problem and "(4, 3)" in row.problem


def layer_norm(x, p):
    mu = x.mean(-1, keepdims=True)
    sigma = jnp.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
    return (x - mu) / sigma * p["g"] + p["b"]


def _layer_norm_vjp(coupled):
    def vjp(primals, c):
        x, p = primals
        mu = x.mean(-1, keepdims=True)
        sigma = jnp.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
        xhat = (x - mu) / sigma
        d = c * p["g"]
        mean_term = d.mean(-1, keepdims=True) if coupled else 0.0
        dx = (d - mean_term - xhat * (d * xhat).mean(-1, keepdims=True)) / sigma
        return dx, {"g": (c * xhat).sum(0), "b": c.sum(0)}

    return vjp


def test_layer_norm_vjp_missing_the_mean_coupling_term():
    x = _rand((3, 5), 3)
    p = {"g": _rand((5,), 4), "b": _rand((5,), 5)}
    assert verify.check_vjp(layer_norm, _layer_norm_vjp(True), x, p).ok
    report = verify.check_vjp(layer_norm, _layer_norm_vjp(False), x, p)
    assert report.failed == ["primals[0]"]
    ok_paths = {r.path for r in report.rows if r.ok and r.oracle == "vjp"}
    assert ok_paths == {"primals[1]['b']", "primals[1]['g']"}


def test_softmax_vjp_with_only_the_diagonal():
    x = _rand((2, 4), 6)

    def full(primals, c):
        y = jax.nn.softmax(primals[0])
        return (y * (c - jnp.sum(c * y, -1, keepdims=True)),)

    def diagonal(primals, c):
        y = jax.nn.softmax(primals[0])
        return (y * (1 - y) * c,)

    assert verify.check_vjp(jax.nn.softmax, full, x).ok
    report = verify.check_vjp(jax.nn.softmax, diagonal, x)
    assert report.failed == ["primals[0]"]
    assert {r.oracle for r in report.rows if not r.ok} >= {"vjp", DOT, DOT_FD}


def conv1d(x, k):
    return jnp.correlate(x, k, mode="valid")


def test_conv1d_vjp_with_the_kernel_not_flipped():
    x, k = _rand((9,), 7), _rand((3,), 8)

    def right(primals, c):
        x, k = primals
        return jnp.convolve(c, k, mode="full"), jnp.correlate(x, c, mode="valid")

    def unflipped(primals, c):
        x, k = primals
        return jnp.correlate(c, k, mode="full"), jnp.correlate(x, c, mode="valid")

    assert verify.check_vjp(conv1d, right, x, k).ok
    report = verify.check_vjp(conv1d, unflipped, x, k)
    assert report.failed == ["primals[0]"]


def test_pytree_in_pytree_out_names_the_leaf():
    d = {"a": _rand((3,), 9), "b": _rand((3,), 10)}

    def f(d):
        return d["a"] * d["b"], jnp.sin(d["a"])

    def vjp(primals, c):
        (d,) = primals
        return ({"a": c[0] * d["b"] + c[1] * jnp.cos(d["a"]), "b": c[0] * d["a"]},)

    report = verify.check_vjp(f, vjp, d)
    assert report.ok, str(report)
    assert [r.path for r in report.rows if r.oracle == "vjp"] == [
        "primals[0]['a']",
        "primals[0]['b']",
    ]

    def wrong_b(primals, c):
        (d,) = primals
        return ({"a": c[0] * d["b"] + c[1] * jnp.cos(d["a"]), "b": c[0] * d["b"]},)

    assert verify.check_vjp(f, wrong_b, d).failed == ["primals[0]['b']"]
    # the wrong structure: one line, expected vs got
    with pytest.raises(TypeError, match=r"vjp_fn: returned .*expected a tuple with one cotangent"):
        verify.check_vjp(f, lambda p, c: vjp(p, c)[0], d)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_low_precision_a_correct_rule_passes_and_ten_percent_off_fails(dtype):
    x, W = _rand((4, 3), 11, dtype), _rand((3, 2), 12, dtype)
    report = verify.check_vjp(matmul, matmul_vjp, x, W)
    assert report.ok, str(report)
    # tolerances from the primal's dtype; references one precision up
    assert report.meta["rtol"]["primals[1]"] == verify.default_rtol(dtype)
    up = "float32" if dtype == jnp.bfloat16 else "float64"
    assert report.meta["reference_dtypes"] == {"primals[0]": up, "primals[1]": up}

    def off(primals, c):
        dx, dW = matmul_vjp(primals, c)
        return dx, (dW * 1.1).astype(dtype)

    report = verify.check_vjp(matmul, off, x, W)
    assert report.failed == ["primals[1]"]
    assert "vjp" in {r.oracle for r in report.rows if not r.ok}

    def upcast(primals, c):  # right values, wrong dtype: a failing row that says so
        dx, dW = matmul_vjp(primals, c)
        return dx, dW.astype(jnp.float64)

    report = verify.check_vjp(matmul, upcast, x, W)
    assert report.failed == ["primals[1]"]
    (row,) = [r for r in report.rows if not r.ok]
    assert row.oracle == "shape/dtype" and "float64" in row.problem
    assert jnp.dtype(dtype).name in row.problem


def test_integer_primal_is_skipped_with_a_note():
    x = _rand((3,), 13)
    n = jnp.asarray(3)

    def f(x, n):
        return x**n

    def vjp(primals, c):
        x, n = primals
        return c * n * x ** (n - 1), None

    report = verify.check_vjp(f, vjp, x, n)
    assert report.ok, str(report)
    (skipped,) = [r for r in report.rows if r.oracle == "skipped"]
    assert skipped.path == "primals[1]" and skipped.status == "not applicable"
    assert "float0" in skipped.note
    assert {r.path for r in report.rows if r.oracle == "vjp"} == {"primals[0]"}


def test_where_jax_cannot_reverse_f_the_finite_differences_still_judge():
    x = jnp.asarray([0.3, 0.7])

    def f(x):  # a while_loop: jax.jvp works, jax.vjp does not
        return jax.lax.while_loop(lambda s: s[1] < 3, lambda s: (jnp.sin(s[0]) + x, s[1] + 1),
                                  (x, 0))[0]  # fmt: skip

    def vjp_of(scale):
        def vjp(primals, c):
            (x,) = primals
            _, pullback = jax.vjp(lambda v: jnp.sin(jnp.sin(jnp.sin(v) + v) + v) + v, x)
            return (scale * pullback(c)[0],)

        return vjp

    report = verify.check_vjp(f, vjp_of(1.0), x)
    assert report.ok, str(report)
    assert {r.status for r in report.rows if r.oracle == "vjp"} == {"not applicable"}
    report = verify.check_vjp(f, vjp_of(1.02), x)
    assert {r.oracle for r in report.rows if not r.ok} == {DOT, DOT_FD}


# --- check_jvp --------------------------------------------------------------------------------
def test_jvp_rule_of_softmax_and_the_diagonal_bug():
    x = _rand((2, 4), 14)

    def full(primals, tangents):
        y = jax.nn.softmax(primals[0])
        (t,) = tangents
        return y, y * (t - jnp.sum(y * t, -1, keepdims=True))

    def diagonal(primals, tangents):
        y = jax.nn.softmax(primals[0])
        return y, y * (1 - y) * tangents[0]

    report = verify.check_jvp(jax.nn.softmax, full, x)
    assert report.ok, str(report)
    assert {r.oracle for r in report.rows} == set(rules.JVP_ORACLES)
    report = verify.check_jvp(jax.nn.softmax, diagonal, x)
    assert report.failed == ["primals[0]"]
    assert {r.oracle for r in report.rows if not r.ok} == {"jvp", "fd"}


def test_jvp_rule_pytree_rows_name_the_input_and_the_failing_output_leaf():
    x, W = _rand((4, 3), 15), _rand((3, 2), 16)

    def f(x, W):
        return {"y": x @ W, "s": jnp.sum(x**2)}

    def jvp(primals, tangents, bug=False):
        (x, W), (tx, tW) = primals, tangents
        ts = jnp.sum(2 * x * tx) * (1.5 if bug else 1.0)
        return f(x, W), {"y": tx @ W + x @ tW, "s": ts}

    assert verify.check_jvp(f, jvp, x, W).ok
    report = verify.check_jvp(f, functools.partial(jvp, bug=True), x, W)
    assert report.failed == ["primals[0]"]
    for r in report.rows:
        if not r.ok:
            assert "failing output leaves: out['s']" in r.note
    with pytest.raises(TypeError, match=r"jvp_fn: returned .*expected a pair"):
        verify.check_jvp(f, lambda p, t: f(*p), x, W)
    with pytest.raises(TypeError, match=r"jvp_fn: tangent_out has structure"):
        verify.check_jvp(f, lambda p, t: (f(*p), [t[0] @ p[1]]), x, W)


# --- check_custom_vjp -------------------------------------------------------------------------
def _safe_log(bwd):
    @jax.custom_vjp
    def safe_log(x):
        return jnp.log(x)

    safe_log.defvjp(lambda x: (jnp.log(x), x), bwd)
    return safe_log


def test_custom_vjp_safe_log_against_its_reference():
    x = _rand((5,), 17, low=0.5)
    good = _safe_log(lambda x, g: (g / jnp.maximum(x, 1e-30),))
    report = verify.check_custom_vjp(good, jnp.log, x)
    assert report.ok, str(report)
    assert {r.transform for r in report.rows if r.oracle == "vjp"} == {"eager", "jit", "vmap"}
    (jvp_row,) = [r for r in report.rows if r.oracle == "jvp"]
    assert jvp_row.status == "not applicable" and "custom_vjp" in jvp_row.note
    assert [r.status for r in report.rows if r.oracle == "grad of vjp"] == ["pass"]

    bad = _safe_log(lambda x, g: (g / jnp.maximum(x, 1e-30) ** 2,))
    report = verify.check_custom_vjp(bad, jnp.log, x)
    assert report.failed == ["primals[0]"]
    assert {t for o, t, _ in _failing(report) if o == "vjp"} == {"eager", "jit", "vmap"}


def _clip_gradient(sign):
    @functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
    def clip_gradient(lo, hi, x):
        return x

    def fwd(lo, hi, x):
        return x, None

    def bwd(lo, hi, _, g):
        return (sign * jnp.clip(g, lo, hi),)

    clip_gradient.defvjp(fwd, bwd)
    return clip_gradient


def test_custom_vjp_with_nondiff_argnums():
    x = _rand((4,), 18)

    def reference(lo, hi, x):
        return x

    report = verify.check_custom_vjp(_clip_gradient(1.0), reference, -100.0, 100.0, x)
    assert report.ok, str(report)
    assert report.meta["nondiff_argnums"] == [0, 1]  # taken from f, as jax passes them
    skipped = [r for r in report.rows if r.oracle == "skipped"]
    assert [r.path for r in skipped] == ["primals[0]", "primals[1]"]
    assert {r.path for r in report.rows if r.oracle == "vjp"} == {"primals[2]"}
    report = verify.check_custom_vjp(_clip_gradient(-1.0), reference, -100.0, 100.0, x,
                                     nondiff_argnums=(0, 1))  # fmt: skip
    assert report.failed == ["primals[2]"]


def test_custom_vjp_with_an_integer_argument():
    @jax.custom_vjp
    def power(x, n):
        return x**n

    power.defvjp(lambda x, n: (x**n, (x, n)), lambda r, g: (g * r[1] * r[0] ** (r[1] - 1), None))
    x = _rand((3,), 19, low=0.5)
    report = verify.check_custom_vjp(power, lambda x, n: x**n, x, jnp.asarray(3))
    assert report.ok, str(report)
    assert [r.path for r in report.rows if r.oracle == "skipped"] == ["primals[1]"]


def test_custom_jvp_logsumexp():
    def make(bug):
        @jax.custom_jvp
        def lse(x):
            m = jnp.max(x)
            return m + jnp.log(jnp.sum(jnp.exp(x - m)))

        @lse.defjvp
        def lse_jvp(primals, tangents):
            (x,), (t,) = primals, tangents
            y = lse(x)
            w = jnp.ones_like(x) / x.size if bug else jnp.exp(x - y)
            return y, jnp.sum(w * t)

        return lse

    x = _rand((6,), 20)
    reference = jax.scipy.special.logsumexp
    report = verify.check_custom_vjp(make(False), reference, x)
    assert report.ok, str(report)
    assert report.meta["kind"] == "custom_jvp"
    assert {r.transform for r in report.rows if r.oracle == "jvp" and r.ok} == {
        "eager", "jit", "vmap"
    }  # fmt: skip
    report = verify.check_custom_vjp(make(True), reference, x)
    assert report.failed == ["primals[0]"]
    assert {o for o, _, _ in _failing(report)} >= {"jvp", "vjp", DOT, DOT_FD}


def test_custom_vjp_wrong_only_under_jit():
    @jax.custom_vjp
    def triple(x):
        return 3 * x

    def bwd(_, g):
        return (2 * g if isinstance(g, jax.core.Tracer) else 3 * g,)

    triple.defvjp(lambda x: (3 * x, None), bwd)
    report = verify.check_custom_vjp(triple, lambda x: 3 * x, _rand((3,), 21))
    failing = {t for o, t, _ in _failing(report) if o == "vjp"}
    assert "jit" in failing and "eager" not in failing
    assert report.failed == ["primals[0]"]


def test_custom_vjp_wrong_only_under_vmap():
    def bwd_on_host(x, g):  # sums over axis 0, assuming no batch axis
        return x * np.flip(np.cumsum(np.flip(g, 0), 0), 0)

    @jax.custom_vjp
    def f(x):
        return jnp.cumsum(x**2 / 2)

    def bwd(x, g):
        out = jax.ShapeDtypeStruct(g.shape, g.dtype)
        return (jax.pure_callback(bwd_on_host, out, x, g, vmap_method="expand_dims"),)

    f.defvjp(lambda x: (f(x), x), bwd)
    report = verify.check_custom_vjp(f, lambda x: jnp.cumsum(x**2 / 2), _rand((4,), 22))
    assert {t for o, t, _ in _failing(report)} == {"vmap"}
    assert report.failed == ["primals[0]"]
    # a host callback has no derivative: second order is not applicable, and does not fail
    (g2,) = [r for r in report.rows if r.oracle == "grad of vjp"]
    assert g2.status == "not applicable" and "not differentiable" in g2.note and g2.ok


def test_custom_vjp_float32_ten_percent_off_in_one_leaf():
    def make(scale):
        @jax.custom_vjp
        def mm(x, W):
            return x @ W

        mm.defvjp(lambda x, W: (x @ W, (x, W)),
                  lambda r, c: (c @ r[1].T, scale * (r[0].T @ c)))  # fmt: skip
        return mm

    x, W = _rand((4, 3), 23, jnp.float32), _rand((3, 2), 24, jnp.float32)
    report = verify.check_custom_vjp(make(1.0), matmul, x, W)
    assert report.ok, str(report)
    report = verify.check_custom_vjp(make(1.1), matmul, x, W)
    assert report.failed == ["primals[1]"]


def test_plain_function_is_noted_not_refused():
    x = _rand((3,), 25)
    report = verify.check_custom_vjp(jnp.sin, jnp.sin, x)
    assert report.ok, str(report)
    (row,) = [r for r in report.rows if r.oracle == "rule"]
    assert row.status == "not applicable" and "neither" in row.note


# --- errors name the culprit ------------------------------------------------------------------
def test_bad_arguments():
    a = jnp.ones(3)
    with pytest.raises(ValueError, match="names: 2 labels for 1 primals"):
        verify.check_vjp(jnp.sin, lambda p, c: (c,), a, names=("a", "b"))
    with pytest.raises(TypeError, match="vjp_fn: returned .* expected a tuple"):
        verify.check_vjp(jnp.sin, lambda p, c: (c, c), a)
    for check in (verify.check_vjp, verify.check_jvp, verify.check_custom_vjp):
        with pytest.raises(ValueError, match="primals: none given"):
            check(jnp.sin, jnp.sin)
    with pytest.raises(TypeError, match="f: could not be traced"):
        verify.check_vjp(lambda x: float(x[0]) * x, lambda p, c: (c,), a)
    with pytest.raises(TypeError, match="vjp_fn: could not be traced"):
        verify.check_vjp(jnp.sin, lambda p, c: (float(c[0]) * c,), a)
    with pytest.raises(TypeError, match="vjp_fn: expected a callable"):
        verify.check_vjp(jnp.sin, None, a)
    with pytest.raises(ValueError, match="reference: output structure"):
        verify.check_custom_vjp(jnp.sin, lambda x: (jnp.sin(x), x), a)
    with pytest.raises(ValueError, match="reference: output shapes"):
        verify.check_custom_vjp(jnp.sin, lambda x: jnp.sin(x)[:2], a)
    with pytest.raises(TypeError, match="reference: could not be traced"):
        verify.check_custom_vjp(jnp.sin, lambda x: x @ jnp.ones(5), a)
    with pytest.raises(ValueError, match="nondiff_argnums: 3 is not a position"):
        verify.check_custom_vjp(jnp.sin, jnp.sin, a, nondiff_argnums=(3,))
    with pytest.raises(ValueError, match="primals: no floating-point leaf"):
        verify.check_vjp(lambda n: n * 1.0, lambda p, c: (None,), jnp.arange(3))
    with pytest.raises(ValueError, match="rtol: unknown oracle"):
        verify.check_vjp(jnp.sin, lambda p, c: (c * jnp.cos(p[0]),), a, rtol={"rev": 1e-3})
    with pytest.raises(ValueError, match="n_pairs: expected an integer"):
        verify.check_vjp(jnp.sin, lambda p, c: (c * jnp.cos(p[0]),), a, n_pairs=1)


def test_tolerance_options_per_oracle_and_raise_on_fail():
    x, W = _rand((4, 3), 26), _rand((3, 2), 27)

    def off(primals, c):
        dx, dW = matmul_vjp(primals, c)
        return dx, dW * 1.001

    assert not verify.check_vjp(matmul, off, x, W).ok
    loose = {k: 1e-2 for k in rules.VJP_ORACLES}
    assert verify.check_vjp(matmul, off, x, W, rtol=loose).ok
    with pytest.raises(AssertionError, match=r"failed at 1 leaf\(s\): primals\[1\]"):
        verify.check_vjp(matmul, off, x, W, raise_on_fail=True, title="mm")
