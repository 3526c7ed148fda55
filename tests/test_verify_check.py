"""jaxbp.verify.check: any grad_fn against rev / fwd / fd, leaf by leaf (eqs. V1–V5)."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp import verify
from jaxbp.verify.mlp import reference
from verify_support import numpy_problem

KW = dict(activation="tanh", output="softmax_ce", l2=0.1)
LOSS = functools.partial(reference.cost, **KW)
GRAD = functools.partial(jaxbp.value_and_grad, **KW)
PATHS = ["[0].W", "[0].b", "[1].W", "[1].b"]


def _problem(dtype=jnp.float64):
    return numpy_problem([4, 5, 3], dtype=dtype, m=6)


def _scaled_leaf(grads, index, factor=None, value=None):
    leaves, treedef = jax.tree.flatten(grads)
    leaf = leaves[index]
    leaves[index] = leaf * factor if value is None else leaf.at[(0,) * leaf.ndim].set(value)
    return jax.tree.unflatten(treedef, leaves)


def test_correct_gradient_passes_every_oracle():
    params, x, y = _problem()
    report = verify.check(GRAD, LOSS, params, x, y)
    assert report.ok, str(report)
    assert report.failed == []
    assert [r.oracle for r in report.rows] == ["loss_fn"] + ["rev"] * 4 + ["fwd"] * 4 + ["fd"] * 4
    assert [r.path for r in report.rows[1:5]] == PATHS
    assert all(r.method == "elementwise" for r in report.rows[1:])


def test_float32_correct_code_passes_all_oracles():
    # torch.autograd.gradcheck fails correct float32 code; tolerances here derive from eps.
    params, x, y = _problem(jnp.float32)
    report = verify.check(GRAD, LOSS, params, x, y)
    assert report.ok, str(report)
    assert {r.dtype for r in report.rows} == {"float32"}


@pytest.mark.parametrize("index", range(4))
def test_five_percent_error_in_one_leaf_fails_exactly_that_leaf(index):
    params, x, y = _problem()

    def wrong(p, x_, y_):
        J, g = GRAD(p, x_, y_)
        return J, _scaled_leaf(g, index, 1.05)

    report = verify.check(wrong, LOSS, params, x, y)
    assert report.failed == [PATHS[index]]
    failing = {(r.oracle, r.path) for r in report.rows if not r.ok}
    assert failing == {(o, PATHS[index]) for o in ("rev", "fwd", "fd")}
    assert PATHS[index] in str(report).splitlines()[0]


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf])
def test_non_finite_value_in_a_leaf_fails_that_leaf(bad):
    params, x, y = _problem()
    report = verify.check(
        lambda p, x_, y_: _scaled_leaf(GRAD(p, x_, y_)[1], 2, value=bad),
        LOSS, params, x, y, modes=("rev", "fd"),
    )  # fmt: skip
    assert report.failed == ["[1].W"]
    kind = "NaN" if np.isnan(bad) else "Inf"
    assert all(f"{kind} in the hand result at (0, 0)" in r.problem for r in report.rows if not r.ok)


def test_nan_in_both_hand_and_oracle_fails():
    # check_grads passes when both sides are NaN; here NaN parameters make every oracle NaN too.
    params, x, y = _problem()
    params = (params[0], jaxbp.Layer(params[1].W.at[0, 0].set(jnp.nan), params[1].b))
    report = verify.check(GRAD, LOSS, params, x, y, modes=("rev",))
    assert not report.ok
    assert "NaN" in report.rows[0].problem  # the (value) row
    assert set(report.failed) >= {"[1].W", "[1].b"}


def test_wrong_value_is_named_but_gradients_pass():
    params, x, y = _problem()
    report = verify.check(
        lambda p, x_, y_: (GRAD(p, x_, y_)[0] * 1.01, GRAD(p, x_, y_)[1]),
        LOSS, params, x, y, modes=("rev",),
    )  # fmt: skip
    assert report.failed == ["(value)"]


def test_grads_only_result_is_accepted_and_gives_no_value_row():
    params, x, y = _problem()
    report = verify.check(lambda *a: GRAD(*a)[1], LOSS, params, x, y, modes=("rev",))
    assert report.ok and all(r.path != "(value)" for r in report.rows)


def _dict_loss(params, scale):
    a, w = params["a"], params["w"]
    return (
        jnp.sum(jnp.sin(w @ a) ** 2) + scale * jnp.sum(a**4) + 1e-10 * jnp.sum(params["tiny"] ** 2)
    )


def _dict_grad(params, scale, tiny_factor=1.0):
    """Hand-derived gradient of _dict_loss."""
    a, w = params["a"], params["w"]
    s = jnp.sin(w @ a)
    upstream = 2 * s * jnp.cos(w @ a)
    return {
        "a": w.T @ upstream + 4 * scale * a**3,
        "tiny": 2e-10 * tiny_factor * params["tiny"],
        "w": jnp.outer(upstream, a),
    }


def _dict_params():
    rng = np.random.default_rng(1)
    return {
        "a": jnp.asarray(rng.standard_normal(3)),
        "tiny": jnp.asarray(rng.standard_normal(2)),
        "w": jnp.asarray(rng.standard_normal((2, 3))),
    }


def test_any_pytree_and_static_arguments():
    report = verify.check(_dict_grad, _dict_loss, _dict_params(), 0.5)
    assert report.ok, str(report)
    assert [r.path for r in report.rows if r.oracle == "rev"] == ["['a']", "['tiny']", "['w']"]


def test_a_tiny_leaf_is_judged_on_its_own_scale():
    # A 5 % error in a leaf whose gradient is ~1e-10 — invisible next to the other leaves.
    wrong = functools.partial(_dict_grad, tiny_factor=1.05)
    report = verify.check(wrong, _dict_loss, _dict_params(), 0.5, modes=("rev", "fwd"))
    assert report.failed == ["['tiny']"]


def test_projections_above_the_budget():
    params, x, y = _problem()
    report = verify.check(GRAD, LOSS, params, x, y, modes=("fwd", "fd"), fd_budget=10)
    assert report.ok, str(report)
    methods = {r.path: r.method for r in report.rows if r.oracle == "fd"}
    # smallest leaves elementwise while they fit (b's: 5 + 3 ≤ 10), the rest projected
    assert methods == {"[0].W": "16 projections", "[0].b": "elementwise",
                       "[1].W": "16 projections", "[1].b": "elementwise"}  # fmt: skip
    assert report.meta["fd"]["projected"] == ["[0].W", "[1].W"]

    def wrong(p, x_, y_):
        J, g = GRAD(p, x_, y_)
        return J, _scaled_leaf(g, 0, 1.05)

    bad = verify.check(wrong, LOSS, params, x, y, modes=("fwd", "fd"), fd_budget=10)
    assert bad.failed == ["[0].W"]
    assert {r.oracle for r in bad.rows if not r.ok} == {"fwd", "fd"}


def test_tolerance_overrides_per_mode():
    params, x, y = _problem()
    report = verify.check(GRAD, LOSS, params, x, y, modes=("rev", "fd"), rtol={"fd": 1e-14},
                          atol={"fd": 0.0})  # fmt: skip
    assert all(r.ok for r in report.rows if r.oracle == "rev")
    assert not any(r.ok for r in report.rows if r.oracle == "fd")
    assert all(r.rtol == 1e-14 for r in report.rows if r.oracle == "fd")


def test_raise_on_fail_names_every_failing_leaf():
    params, x, y = _problem()

    def wrong(p, x_, y_):
        J, g = GRAD(p, x_, y_)
        return J, _scaled_leaf(_scaled_leaf(g, 1, 1.05), 3, -1.0)

    with pytest.raises(AssertionError, match=r"2 leaf\(s\).*\[0\]\.b.*\[1\]\.b"):
        verify.check(wrong, LOSS, params, x, y, modes=("rev",), raise_on_fail=True)


def test_record_is_reproducible_and_complete():
    params, x, y = _problem()
    a = verify.check(GRAD, LOSS, params, x, y, key=7, fd_budget=10).to_dict()
    b = verify.check(GRAD, LOSS, params, x, y, key=7, fd_budget=10).to_dict()
    assert a["rows"] == b["rows"]
    meta = a["meta"]
    assert meta["seed"] == 7 and meta["modes"] == ["rev", "fwd", "fd"]
    assert set(meta["fd"]["steps"]) == set(PATHS)
    assert meta["dtypes"] == dict.fromkeys(PATHS, "float64")
    assert meta["tolerances"]["fd"]["rtol"] == {"float64": verify.default_rtol("float64", "fd")}
    assert {"device", "jax_version", "jaxbp_version"} <= set(meta)
    json.dumps(a, allow_nan=False)
    key = jax.random.key(7)
    assert verify.check(GRAD, LOSS, params, x, y, key=key, modes=("rev",)).meta["key_data"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(modes=("rev", "bwd")), ValueError, "valid modes are rev, fwd, fd"),
        (dict(modes=()), ValueError, "modes"),
        (dict(rtol={"fdd": 1.0}), ValueError, "valid keys"),
        (dict(atol=-1.0), ValueError, "atol"),
        (dict(fd_budget=-1), ValueError, "fd_budget"),
        (dict(n_projections=0), ValueError, "n_projections"),
        (dict(key="seed"), TypeError, "key"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, error, match):
    params, x, y = _problem()
    with pytest.raises(error, match=match):
        verify.check(GRAD, LOSS, params, x, y, **kwargs)


def test_bad_params_and_bad_grad_fn_result():
    with pytest.raises(TypeError, match=r"leaf \['n'\] has dtype int32"):
        verify.check(lambda p: p, lambda p: 0.0, {"n": jnp.arange(3, dtype=jnp.int32)})
    with pytest.raises(ValueError, match="no leaves"):
        verify.check(lambda p: p, lambda p: 0.0, {})
    params, x, y = _problem()
    with pytest.raises(TypeError, match="grad_fn: returned a tree"):
        verify.check(lambda *a: GRAD(*a)[1][0], LOSS, params, x, y)


def test_a_leaf_of_the_wrong_shape_fails_every_oracle_by_name():
    params, x, y = _problem()

    def wrong(p, x_, y_):
        J, g = GRAD(p, x_, y_)
        return J, (g[0], jaxbp.Layer(g[1].W.T, g[1].b))

    report = verify.check(wrong, LOSS, params, x, y)
    assert report.failed == ["[1].W"]
    bad = [r for r in report.rows if not r.ok]
    assert [r.oracle for r in bad] == ["rev", "fwd", "fd"]
    assert all("returned shape (5, 3), the parameter has shape (3, 5)" in r.problem for r in bad)
