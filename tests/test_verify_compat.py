"""jaxbp.verify.check_grads: a drop-in for jax.test_util.check_grads, leaf by leaf.

float64 is on (tests/conftest.py). Where a case contrasts ours with JAX's, JAX's verdict is asserted
too, for the installed jax.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads as jax_check_grads

from jaxbp import verify
from jaxbp.verify import compat
from jaxbp.verify.compat import ALL_LEAVES, CUSTOM_VJP_NOTE, check_grads, check_grads_report

RNG = np.random.RandomState(0)


def _mlp_loss(params, x, y):
    h = jnp.tanh(x @ params["W1"] + params["b1"])
    logits = h @ params["W2"] + params["b2"]
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * y, axis=-1))


MLP_ARGS = (
    {
        "W1": RNG.randn(4, 5) / 2,
        "b1": RNG.randn(5) / 10,
        "W2": RNG.randn(5, 3) / 2,
        "b2": RNG.randn(3) / 10,
    },
    RNG.randn(6, 4),
    np.eye(3)[RNG.randint(0, 3, 6)],
)

CASES = {
    "polynomial": (lambda x: 0.5 * x**3 - 2 * x + 1, (RNG.randn(3),), 3),
    "sin_exp": (lambda x, y: jnp.sin(x) * jnp.exp(y), (RNG.randn(3), RNG.randn(3)), 2),
    "matmul": (lambda a, b: a @ b, (RNG.randn(3, 3), RNG.randn(3)), 2),
    "softmax": (jax.nn.softmax, (RNG.randn(3),), 1),
    "mlp_dict_loss": (_mlp_loss, MLP_ARGS, 1),
    "pytree_output": (
        lambda p: {"s": jnp.sin(p["a"]), "pair": (p["a"] * p["b"], jnp.sum(p["b"] ** 2))},
        ({"a": RNG.randn(3), "b": RNG.randn(3)},),
        2,
    ),
    "complex_abs2": (lambda z: jnp.sum(jnp.abs(z) ** 2), (RNG.randn(3) + 1j * RNG.randn(3),), 2),
    "holomorphic_cube": (lambda z: z**3, (np.array([0.3 + 0.4j, -0.5 + 0.1j, 0.2 - 0.6j]),), 3),
}


def _message(fn, *args, **kwargs) -> str:
    with pytest.raises(AssertionError) as e:
        fn(*args, **kwargs)
    return str(e.value)


@pytest.mark.parametrize("name", list(CASES))
def test_passes_where_jax_passes(name):
    f, args, order = CASES[name]
    jax_check_grads(f, args, order)  # JAX's passes ...
    report = check_grads_report(
        f, args, order
    )  # ... and so does ours (check_grads raises iff not ok)
    assert report.ok, str(report)
    oracles = {r.oracle for r in report.rows}
    assert {"fwd", "rev", "primal"} <= oracles
    if order >= 2:
        assert {"fwd of jvp", "rev of vjp"} <= oracles
    if order >= 3:
        assert "rev of vjp of jvp" in oracles
    # one fwd and one rev row per input leaf (per output leaf for fwd), named by its path in args,
    # and with several leaves JAX's own comparison along the whole tangent, "(all leaves)"
    n_leaves = len(jax.tree.leaves(args))
    n_out = len(jax.tree.leaves(f(*args)))
    whole = 1 if n_leaves > 1 else 0
    assert sum(r.oracle == "rev" for r in report.rows) == n_leaves + whole
    assert sum(r.oracle == "fwd" for r in report.rows) == (n_leaves + whole) * n_out
    assert sum(r.path == ALL_LEAVES for r in report.rows if r.oracle == "rev") == whole


def test_leaf_names_are_paths_in_args():
    report = check_grads_report(_mlp_loss, MLP_ARGS, 1)
    paths = [r.path for r in report.rows if r.oracle == "rev"]
    assert paths == ["args[0]['W1']", "args[0]['W2']", "args[0]['b1']", "args[0]['b2']"] + [
        "args[1]",
        "args[2]",
        ALL_LEAVES,
    ]
    f, args, _ = CASES["pytree_output"]
    report = check_grads_report(f, args, 1)
    assert {r.path for r in report.rows if r.oracle == "primal"} == {
        "out['pair'][0]",
        "out['pair'][1]",
        "out['s']",
    }
    assert any("→ out['pair'][1]" in r.method for r in report.rows if r.oracle == "fwd")
    report = check_grads_report(lambda x, y: x * y, (RNG.randn(2), RNG.randn(2)), 2)
    assert "tangent(args[1])" in {r.path for r in report.rows if r.oracle == "fwd of jvp"}


def _buggy_layer(factor, x):
    """sum(tanh(W x + b)) whose custom JVP scales b's contribution by ``factor``."""

    @jax.custom_jvp
    def loss(p):
        return jnp.sum(jnp.tanh(p["W"] @ x + p["b"]))

    @loss.defjvp
    def loss_jvp(primals, tangents):
        (p,), (tp,) = primals, tangents
        s = 1 - jnp.tanh(p["W"] @ x + p["b"]) ** 2
        return loss(p), jnp.sum(s * (tp["W"] @ x + factor * tp["b"]))

    return loss


def test_planted_one_percent_bug_names_exactly_the_leaf():
    x = RNG.randn(5)
    args = ({"W": RNG.randn(4, 5) / 3, "b": RNG.randn(4) / 3},)
    check_grads(_buggy_layer(1.0, x), args, 1)
    message = _message(check_grads, _buggy_layer(1.01, x), args, 1)
    assert "args[0]['b']" in message
    assert "args[0]['W']" not in message
    assert "FAIL" in message  # the table of failing rows
    report = check_grads_report(_buggy_layer(1.01, x), args, 1)
    # the leaf, and JAX's own comparison along the whole tangent
    assert report.failed == ["args[0]['b']", ALL_LEAVES]
    rows = [r for r in report.rows if not r.ok and r.path == "args[0]['b']"]
    assert {r.oracle for r in rows} == {"fwd", "rev"}
    fwd = next(r for r in rows if r.oracle == "fwd")
    assert 0.009 < fwd.max_rel < 0.011


def test_where_f_itself_is_nan_the_element_is_undefined_not_a_failure():
    x = np.array([1.0, -1.0, 4.0])
    jax_check_grads(jnp.sqrt, (x,), 1)  # JAX's passes: NaN == NaN in assert_allclose
    check_grads(jnp.sqrt, (x,), 1)  # ours passes too: sqrt(-1) is undefined, not a wrong value
    report = check_grads_report(jnp.sqrt, (x,), 1)
    fwd = next(r for r in report.rows if r.oracle == "fwd")
    assert fwd.status == "pass" and fwd.n == 2
    assert "undefined at this point (f is not finite) at (1,)" in fwd.note
    rev = next(r for r in report.rows if r.oracle == "rev")
    assert rev.status == "undefined"  # its inner product runs through the undefined element


def _nan_tangent_at(index):
    @jax.custom_jvp
    def f(x):
        return jnp.sin(x)

    @f.defjvp
    def f_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return f(x), jnp.cos(x).at[index].set(jnp.nan) * t

    return f


def test_nan_in_a_derivative_where_f_is_finite_fails_naming_the_element():
    x = np.array([0.1, 0.2, 0.3])
    report = check_grads_report(_nan_tangent_at(1), (x,), 1)
    assert not report.ok and report.failed == ["args[0]"]
    fwd = next(r for r in report.rows if r.oracle == "fwd" and not r.ok)
    assert "NaN in the hand result at (1,)" in fwd.problem
    message = _message(check_grads, _nan_tangent_at(1), (x,), 1)
    assert message.count("NaN in the hand result") == 1  # each failing leaf named once
    assert len(message) < 2000


def test_per_dtype_tolerance_dicts_are_honoured():
    x = RNG.randn(5)
    args = ({"W": RNG.randn(4, 5) / 3, "b": RNG.randn(4) / 3},)
    f = _buggy_layer(1.001, x)  # 0.1 % off: fails float64's default 1e-5
    assert "args[0]['b']" in _message(check_grads, f, args, 1)
    check_grads(f, args, 1, atol={np.float64: 1e-2}, rtol={np.float64: 1e-2})
    check_grads(f, args, 1, atol=1e-2, rtol=1e-2)
    # a dict for another dtype leaves float64 at its default
    _message(check_grads, f, args, 1, atol={np.float32: 1e-2}, rtol={np.float32: 1e-2})
    report = check_grads_report(f, args, 1, rtol={np.float64: 3e-3})
    assert {r.rtol for r in report.rows} == {3e-3}
    assert {r.atol for r in report.rows} == {1e-5}  # JAX's float64 default


def test_eps_is_honoured():
    x = np.array([0.01])  # |x| has a kink 0.01 away
    check_grads(jnp.abs, (x,), 1)  # the default step 1e-4 stays on one side
    message = _message(check_grads, jnp.abs, (x,), 1, eps=1.0)  # a step of 1 crosses it
    assert "args[0]" in message
    assert check_grads_report(jnp.abs, (x,), 1, eps=1.0).meta["eps"] == 1.0
    assert check_grads_report(jnp.abs, (x,), 1).meta["eps"] == compat.EPS == 1e-4


def _custom_vjp_fn(wrong_y: bool):
    @jax.custom_vjp
    def f(x, y):
        return jnp.sin(x) * y

    def fwd(x, y):
        return jnp.sin(x) * y, (x, y)

    def bwd(res, g):
        x, y = res
        return g * jnp.cos(x) * y, g * jnp.sin(x) * (1.05 if wrong_y else 1.0)

    f.defvjp(fwd, bwd)
    return f


def test_custom_vjp_correct_rule_passes_with_not_applicable_forward_rows():
    f = _custom_vjp_fn(wrong_y=False)
    args = (RNG.randn(3), RNG.randn(3))
    with pytest.raises(TypeError, match="custom_vjp"):
        jax_check_grads(f, args, 1, modes=("fwd", "rev"))  # JAX's crashes
    check_grads(f, args, 1, modes=("fwd", "rev"))
    report = check_grads_report(f, args, 1, modes=("fwd", "rev"))
    assert report.ok
    na = [r for r in report.rows if r.status == "not applicable"]
    assert [r.path for r in na] == ["args[0]", "args[1]"]
    assert all(r.oracle == "fwd" and r.ok and r.note == CUSTOM_VJP_NOTE for r in na)
    rev = [r for r in report.rows if r.oracle == "rev"]
    assert [r.path for r in rev] == ["args[0]", "args[1]", ALL_LEAVES]
    assert all("fd(t)" in r.method for r in rev)
    # order 2: the forward branch cannot be formed; the reverse branch is checked in both modes
    report = check_grads_report(f, args, 2)
    assert report.ok
    assert {"fwd of vjp", "rev of vjp"} <= {r.oracle for r in report.rows if r.status == "pass"}
    assert not any(r.oracle.endswith("of jvp") for r in report.rows)


def test_custom_vjp_wrong_bwd_fails_naming_the_argument():
    f = _custom_vjp_fn(wrong_y=True)
    args = (RNG.randn(3), RNG.randn(3))
    message = _message(check_grads, f, args, 1)
    assert "args[1]" in message and "args[0] " not in message
    assert check_grads_report(f, args, 1).failed == ["args[1]", ALL_LEAVES]
    assert check_grads_report(f, args, 1, modes=("rev",)).failed == ["args[1]", ALL_LEAVES]


def test_float32_sum_over_10000_elements_passes():
    x = np.random.RandomState(1).randn(10_000).astype(np.float32)

    def f(x):
        return jnp.sum((x - 3.0) ** 2)

    # JAX's finite difference of a float32 sum of 10 000 terms of ~10 is round-off
    with pytest.raises(AssertionError):
        jax_check_grads(f, (x,), 1)
    check_grads(f, (x,), 1)  # ours differences in float64
    report = check_grads_report(f, (x,), 1)
    assert all("differences in float64" in r.bound_source for r in report.rows if r.oracle == "fwd")
    assert all(r.dtype == "float32" for r in report.rows)


def test_float32_one_percent_bug_fails():
    rng = np.random.RandomState(2)
    x = rng.randn(100).astype(np.float32)
    args = (
        {
            "W": (rng.randn(100, 100) / 10).astype(np.float32),
            "b": rng.randn(100).astype(np.float32),
        },
    )
    f = _buggy_layer(1.01, x)
    jax_check_grads(f, args, 1)  # JAX's passes: b's share of its one random direction is small
    message = _message(check_grads, f, args, 1)
    assert "args[0]['b']" in message and "args[0]['W']" not in message
    check_grads(_buggy_layer(1.0, x), args, 1)


def test_modes_and_exports():
    f, args, _ = CASES["sin_exp"]
    assert check_grads(f, args, 1) is None
    report = check_grads_report(f, args, 1, modes=("rev",))
    assert {r.oracle for r in report.rows} == {"rev", "primal"}
    assert all("fd(t)" in r.method for r in report.rows if r.oracle == "rev")
    report = check_grads_report(f, args, 1, modes=["lin"])
    assert report.ok and {r.oracle for r in report.rows} == {"lin", "primal"}
    with pytest.raises(ValueError, match="unknown mode"):
        check_grads(f, args, 1, modes=("bwd",))
    assert verify.check_grads is check_grads and verify.check_grads_report is check_grads_report
    assert {"check_grads", "check_grads_report"} <= set(verify.__all__)


def test_order_defaults_to_one_as_the_contract_says():
    import inspect

    from jaxbp.verify import check_grads

    assert inspect.signature(check_grads).parameters["order"].default == 1
    check_grads(lambda x: jnp.sum(jnp.sin(x)), (jnp.arange(3.0),))


# --- the cases that once passed ours and failed JAX's (float32, x64 off: JAX's default) ---------
def _x64_off_cases():
    @jax.custom_jvp
    def ten_plus_sin(x):
        return 10.0 + jnp.sin(x)

    @ten_plus_sin.defjvp
    def _(primals, tangents):
        (x,), (t,) = primals, tangents
        return ten_plus_sin(x), 1.05 * jnp.cos(x) * t  # 5 % too large

    @jax.custom_vjp
    def mul(x, y):
        return x * y

    def mul_bwd(res, g):
        x, y = res
        return g * y, 1.05 * g * x  # the cotangent of y 5 % off

    mul.defvjp(lambda x, y: (x * y, (x, y)), mul_bwd)

    @jax.custom_vjp
    def linear(x, W, b):
        return x @ W + b

    def linear_bwd(res, g):
        x, W = res
        return g @ W.T, x.T @ g, 1.02 * g.sum(0)  # the bias gradient 2 % off

    linear.defvjp(lambda x, W, b: (x @ W + b, (x, W)), linear_bwd)
    rng = np.random.RandomState(3)
    f32 = np.float32
    return {
        "custom_jvp 10 + sin(x), tangent 5 % large": (
            ten_plus_sin, (rng.randn(4).astype(f32),), ("fwd", "rev")),
        "custom_vjp x * y, rev only, y's cotangent 5 % off": (
            mul, (rng.randn(3).astype(f32), rng.randn(3).astype(f32)), ("rev",)),
        "custom_vjp linear layer, rev only, bias 2 % off": (
            linear, (rng.randn(8, 3).astype(f32), rng.randn(3, 4).astype(f32),
                     rng.randn(4).astype(f32)), ("rev",)),
    }  # fmt: skip


@pytest.mark.parametrize("name", ["custom_jvp 10 + sin(x), tangent 5 % large",
                                  "custom_vjp x * y, rev only, y's cotangent 5 % off",
                                  "custom_vjp linear layer, rev only, bias 2 % off"])  # fmt: skip
def test_float32_with_x64_off_fails_where_jax_fails(name):
    with jax.enable_x64(False):
        f, args, modes = _x64_off_cases()[name]
        with pytest.raises(AssertionError):
            jax_check_grads(f, args, 1, modes=modes)
        report = check_grads_report(f, args, 1, modes=modes)
        assert not report.ok, str(report)
        # the fd reference was taken in float64 and its round-off allowance computed with
        # float64's epsilon: every fd part is far below the error
        for row in report.rows:
            if row.status == "FAIL" and row.problem is None:
                assert dict(row.parts).get("fd", 0.0) < 1e-3 * row.error
                assert "differences in float64" in row.bound_source


def test_f_that_chooses_differently_one_precision_up_is_differenced_in_its_own():
    # LAPACK orders this float32 matrix's eigenvalues differently in float64: differences taken
    # one precision up would be of another function (the eigenvalues of linalg_test.py's
    # testEigvalsGrad once failed so); the midpoint test sends them back to float32, as JAX's
    a = (np.random.RandomState(29).randn(5, 5) * 3).astype(np.float32)
    e32 = np.asarray(jnp.linalg.eigvals(jnp.asarray(a)))
    e64 = np.asarray(jnp.linalg.eigvals(jnp.asarray(a, jnp.float64)))
    assert np.max(np.abs(e32 - e64)) > 1.0  # another order
    jax_check_grads(jnp.linalg.eigvals, (a,), 1, modes=["fwd", "rev"], rtol=0.1, atol=0.1)
    report = check_grads_report(jnp.linalg.eigvals, (a,), 1, modes=["fwd", "rev"], rtol=0.1,
                                atol=0.1)  # fmt: skip
    assert report.ok, str(report)
    assert "another function at this point" in report.meta["reference"]["f"]
    assert "differences in complex64" in report.meta["reference"]["f"]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"atol": "x"}, TypeError, r"atol: expected a float or a \{dtype: tol\} dict, got 'x'"),
        ({"rtol": -1.0}, ValueError, r"rtol: expected a finite tolerance ≥ 0, got -1.0"),
        ({"order": "1"}, ValueError, r"order: expected an integer ≥ 1, got '1'"),
        ({"order": 0}, ValueError, r"order: expected an integer ≥ 1, got 0"),
        ({"eps": 0.0}, ValueError, r"eps: expected a finite step > 0, got 0.0"),
        ({"modes": ("bwd",)}, ValueError, r"modes: unknown mode\(s\) \['bwd'\]"),
    ],
)
def test_a_bad_argument_is_named_with_the_value_received(kwargs, error, message):
    kwargs = {"order": 1, **kwargs}
    with pytest.raises(error, match=message):
        check_grads(jnp.sin, (np.ones(2),), **kwargs)


def test_bad_function_and_args_are_named():
    with pytest.raises(TypeError, match="f: expected a callable, got str 'sin'"):
        check_grads("sin", (np.ones(2),), 1)
    with pytest.raises(TypeError, match=r"args: expected a tuple of arguments, got ndarray"):
        check_grads(jnp.sin, np.ones(2), 1)
