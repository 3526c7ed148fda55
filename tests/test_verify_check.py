"""jaxbp.verify.check: any grad_fn against rev / fwd / fd and under jit / vmap, leaf by leaf."""

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


def _problem(dtype=jnp.float64, m=6):
    return numpy_problem([4, 5, 3], dtype=dtype, m=m)


def _scaled_leaf(grads, index, factor=None, value=None):
    leaves, treedef = jax.tree.flatten(grads)
    leaf = leaves[index]
    leaves[index] = leaf * factor if value is None else leaf.at[(0,) * leaf.ndim].set(value)
    return jax.tree.unflatten(treedef, leaves)


def test_correct_gradient_passes_every_oracle_and_transformation():
    params, x, y = _problem()
    report = verify.check(GRAD, LOSS, params, x, y)
    assert report.ok, str(report)
    assert report.failed == [] and report.failures == []
    kinds = [(r.oracle, r.transform) for r in report.rows if r.path != "(value)"]
    assert kinds == (
        [("rev", "eager")] * 4 + [("fwd", "eager")] * 4 + [("fd", "eager")] * 4
        + [("eager", "jit")] * 4 + [("eager", "vmap")] * 4
    )  # fmt: skip
    assert all(r.status == "pass" for r in report.rows)
    assert {r.method for r in report.rows if r.oracle == "fd"} == {"elementwise"}
    assert set(report.meta["seconds"]) >= {"grad_fn", "rev", "directions", "jit", "vmap", "total"}


def test_float32_correct_code_passes_all_oracles_against_a_float64_reference():
    params, x, y = _problem(jnp.float32)
    report = verify.check(GRAD, LOSS, params, x, y)
    assert report.ok, str(report)
    assert set(report.meta["reference_dtypes"].values()) == {"float64"}
    assert all(r.rtol == pytest.approx(256 * 2.0**-23) for r in report.rows if r.oracle == "rev")


@pytest.mark.parametrize("index", range(4))
def test_five_percent_error_in_one_leaf_fails_exactly_that_leaf(index):
    params, x, y = _problem()

    def wrong(p, x_, y_):
        J, g = GRAD(p, x_, y_)
        return J, _scaled_leaf(g, index, 1.05)

    report = verify.check(wrong, LOSS, params, x, y, transforms=())
    assert report.failed == [PATHS[index]]
    assert {f.oracle for f in report.failures} == {"rev", "fwd", "fd"}
    assert all(f.path == PATHS[index] and f.transform == "eager" for f in report.failures)


def test_a_one_percent_float32_bug_in_one_element_of_a_large_leaf_is_named():
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.standard_normal(1000), jnp.float32)
    a = jnp.asarray(rng.standard_normal(1000), jnp.float32)

    def loss(p, a_):
        return jnp.sum(jnp.sin(p["w"] * a_)) + jnp.sum(p["v"] ** 2)

    def grad(p, a_):
        g = a_ * jnp.cos(p["w"] * a_)
        return {"v": 2 * p["v"], "w": g.at[417].multiply(1.01)}

    params = {"v": jnp.ones(3, jnp.float32), "w": w}
    report = verify.check(grad, loss, params, a, transforms=())
    assert report.failed == ["['w']"]
    assert {f.index for f in report.failures} == {(417,)}


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_value_in_a_leaf_fails_that_leaf(bad):
    params, x, y = _problem()
    report = verify.check(
        lambda *a: (GRAD(*a)[0], _scaled_leaf(GRAD(*a)[1], 2, value=bad)), LOSS, params, x, y,
        transforms=(),
    )  # fmt: skip
    assert report.failed == ["[1].W"]
    bad_rows = [r for r in report.rows if not r.ok]
    assert all("in the hand result at (0, 0)" in r.problem for r in bad_rows if r.oracle == "rev")


def test_a_loss_undefined_at_the_point_makes_every_oracle_row_undefined():
    params, x, y = _problem()
    x = x.at[0, 0].set(jnp.nan)  # the loss itself is NaN here: nothing can be judged
    report = verify.check(GRAD, LOSS, params, x, y, transforms=())
    assert report.ok, str(report)
    judged = [r for r in report.rows if r.oracle in ("rev", "fwd", "fd", "loss_fn")]
    assert judged and all(r.status == "undefined" for r in judged)
    assert all("undefined at this point" in r.note for r in judged)
    assert any("not finite at the point" in w for w in report.warnings)


def test_nan_in_the_hand_where_the_loss_is_finite_fails():
    params, x, y = _problem()

    def grad(*a):
        J, g = GRAD(*a)
        return J, jax.tree.map(lambda leaf: leaf.at[(0,) * leaf.ndim].set(jnp.nan), g)

    report = verify.check(grad, LOSS, params, x, y, modes=("rev",), transforms=())
    assert not report.ok
    assert all("NaN in the hand result" in r.problem for r in report.rows if not r.ok)


def test_wrong_value_is_named_but_gradients_pass():
    params, x, y = _problem()
    report = verify.check(lambda *a: (GRAD(*a)[0] + 1.0, GRAD(*a)[1]), LOSS, params, x, y,
                          modes=("rev",), transforms=())  # fmt: skip
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


def test_scalar_and_zero_size_leaves():
    def loss(p):
        return p["s"] ** 2 * jnp.sum(p["v"]) + jnp.sum(p["empty"])

    def grad(p):
        return {"empty": jnp.zeros((0, 3)), "s": 2 * p["s"] * jnp.sum(p["v"]),
                "v": jnp.full(p["v"].shape, p["s"] ** 2)}  # fmt: skip

    params = {"empty": jnp.zeros((0, 3)), "s": jnp.asarray(1.5), "v": jnp.arange(3.0)}
    report = verify.check(grad, loss, params)
    assert report.ok, str(report)
    assert {r.path for r in report.rows} == {"['empty']", "['s']", "['v']"}


def test_coordinates_and_projections_above_the_budget():
    params, x, y = _problem()
    report = verify.check(GRAD, LOSS, params, x, y, modes=("fwd", "fd"), fd_budget=10,
                          transforms=())  # fmt: skip
    assert report.ok, str(report)
    methods = {(r.oracle, r.path, r.method) for r in report.rows}
    # the small leaves whole while they fit (b's: 3 and 5), the rest sampled and projected
    assert ("fd", "[1].b", "elementwise") in methods and ("fd", "[0].b", "elementwise") in methods
    assert ("fd", "[0].W", "1 of 20 coordinates") in methods
    assert ("fd", "[0].W", "1 projection") in methods
    assert report.meta["fd"]["complete"] == {"[0].W": False, "[0].b": True, "[1].W": False,
                                             "[1].b": True}  # fmt: skip

    def wrong(p, x_, y_):
        J, g = GRAD(p, x_, y_)
        return J, _scaled_leaf(g, 0, 1.05)

    bad = verify.check(wrong, LOSS, params, x, y, modes=("fwd", "fd"), fd_budget=10,
                       transforms=())  # fmt: skip
    assert bad.failed == ["[0].W"]
    assert {r.oracle for r in bad.rows if not r.ok} == {"fwd", "fd"}
    # a coordinate names its element, a projection names none
    assert {f.index is None for f in bad.failures} == {True, False}


def test_the_automatic_budget_covers_every_coordinate_of_a_cheap_loss():
    params, x, y = _problem()
    report = verify.check(GRAD, LOSS, params, x, y, modes=("fd",), transforms=())
    assert all(report.meta["fd"]["complete"].values())
    assert report.meta["fd"]["flops_per_evaluation"] > 0


def test_tolerance_overrides_per_mode_and_per_leaf():
    params, x, y = _problem()
    report = verify.check(GRAD, LOSS, params, x, y, modes=("rev", "fd"), rtol={"fd": 1e-14},
                          atol={"fd": 0.0}, transforms=())  # fmt: skip
    assert all(r.ok for r in report.rows if r.oracle == "rev")
    assert not any(r.ok for r in report.rows if r.oracle == "fd")
    assert all(r.rtol == 1e-14 for r in report.rows if r.oracle == "fd")

    def wrong(p, x_, y_):
        J, g = GRAD(p, x_, y_)
        return J, _scaled_leaf(g, 1, 1.05)

    loose = verify.check(wrong, LOSS, params, x, y, modes=("rev",), transforms=(),
                         rtol={"[0].b": 0.1})  # fmt: skip
    assert loose.ok
    nested = verify.check(wrong, LOSS, params, x, y, modes=("rev", "fwd"), transforms=(),
                          rtol={"rev": {"[0].b": 0.1}})  # fmt: skip
    assert nested.failed == ["[0].b"] and {f.oracle for f in nested.failures} == {"fwd"}


def test_fd_step_is_honoured():
    params, x, y = _problem()
    report = verify.check(GRAD, LOSS, params, x, y, modes=("fd",), fd_step=1e-4, transforms=())
    assert report.ok and set(report.meta["fd"]["steps"].values()) == {1e-4}
    per_leaf = verify.check(GRAD, LOSS, params, x, y, modes=("fd",), transforms=(),
                            fd_step={"[0].W": 1e-3})  # fmt: skip
    assert per_leaf.meta["fd"]["steps"]["[0].W"] == 1e-3
    assert per_leaf.meta["fd"]["steps"]["[0].b"] != 1e-3


def test_raise_on_fail_names_every_failing_leaf_with_the_table():
    params, x, y = _problem()

    def wrong(p, x_, y_):
        J, g = GRAD(p, x_, y_)
        return J, _scaled_leaf(_scaled_leaf(g, 1, 1.05), 3, -1.0)

    with pytest.raises(AssertionError, match=r"2 leaf\(s\).*\[0\]\.b.*\[1\]\.b") as info:
        verify.check(wrong, LOSS, params, x, y, modes=("rev",), raise_on_fail=True)
    table = str(info.value)
    assert "oracle" in table and "bound = …" in table and table.count("FAIL") == 2


def test_record_is_reproducible_and_complete():
    params, x, y = _problem()
    a = verify.check(GRAD, LOSS, params, x, y, key=7, fd_budget=10).to_dict()
    b = verify.check(GRAD, LOSS, params, x, y, key=7, fd_budget=10).to_dict()
    assert a["rows"] == b["rows"]
    meta = a["meta"]
    assert meta["seed"] == 7 and meta["modes"] == ["rev", "fwd", "fd"]
    assert meta["transforms"] == ["jit", "vmap"]
    assert set(meta["fd"]["steps"]) == set(PATHS)
    assert meta["dtypes"] == dict.fromkeys(PATHS, "float64")
    assert meta["tolerances"]["rtol"] == {"float64": verify.default_rtol("float64")}
    assert {"device", "jax_version", "jaxbp_version"} <= set(meta)
    json.dumps(a, allow_nan=False)
    key = jax.random.key(7)
    assert verify.check(GRAD, LOSS, params, x, y, key=key, modes=("rev",)).meta["key_data"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(modes=("rev", "bwd")), ValueError, "valid modes are rev, fwd, fd"),
        (dict(modes=()), ValueError, "modes"),
        (dict(rtol={"fdd": 1.0}), ValueError, "rtol: unknown key 'fdd'"),
        (dict(atol=-1.0), ValueError, "atol"),
        (dict(fd_budget=-1), ValueError, "fd_budget"),
        (dict(fd_step=0.0), ValueError, "fd_step"),
        (dict(fd_step={"[9].W": 1e-3}), ValueError, "fd_step: unknown leaf"),
        (dict(n_projections=0), ValueError, "n_projections"),
        (dict(key="seed"), TypeError, "key"),
        (dict(transforms=("pmap",)), ValueError, "transforms: unknown"),
        (dict(kinks=0.5), TypeError, "kinks: expected a callable"),
        (dict(wrt=1.5), TypeError, "wrt: expected"),
        (dict(wrt=(7,)), ValueError, "wrt: argnums"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, error, match):
    params, x, y = _problem()
    with pytest.raises(error, match=match):
        verify.check(GRAD, LOSS, params, x, y, **kwargs)


def test_errors_that_name_the_culprit():
    params, x, y = _problem()
    with pytest.raises(ValueError, match=r"loss_fn: returned shape \(6,\).*must return a scalar"):
        verify.check(GRAD, lambda p, x_, y_: jnp.sum(x_, axis=1), params, x, y)
    with pytest.raises(TypeError, match="loss_fn: cannot be traced by JAX"):
        verify.check(GRAD, lambda p, x_, y_: float(jnp.sum(p[0].W)), params, x, y)
    with pytest.raises(ValueError, match=r"value of shape \(1,\); the value must be a scalar"):
        verify.check(lambda *a: (GRAD(*a)[0][None], GRAD(*a)[1]), LOSS, params, x, y)
    with pytest.raises(TypeError, match="kinks: returned a leaf of dtype"):
        verify.check(GRAD, LOSS, params, x, y, kinks=lambda p, x_, y_: jnp.arange(3))
    with pytest.raises(TypeError, match="grad_fn: returned a tree"):
        verify.check(lambda *a: GRAD(*a)[1][0], LOSS, params, x, y)
    with pytest.raises(ValueError, match="no leaves"):
        verify.check(lambda p: p, lambda p: 0.0, {})
    with pytest.raises(ValueError, match=r"no floating-point leaf.*\['n'\] \(not differentiable"):
        verify.check(lambda p: p, lambda p: 0.0, {"n": jnp.arange(3, dtype=jnp.int32)})


def test_a_python_scalar_leaf_is_a_failing_row_that_says_so():
    def grad(p):
        return {"a": 2 * p["a"], "b": 0}

    report = verify.check(grad, lambda p: jnp.sum(p["a"] ** 2) + jnp.sum(p["b"]),
                          {"a": jnp.ones(2), "b": jnp.ones(3)}, transforms=())  # fmt: skip
    assert report.failed == ["['b']"]
    (row,) = [r for r in report.rows if r.oracle == "grad_fn"]
    assert "Python int (0); expected a float64 array of shape (3,)" in row.problem


def test_a_leaf_of_the_wrong_shape_fails_by_name():
    params, x, y = _problem()

    def wrong(p, x_, y_):
        J, g = GRAD(p, x_, y_)
        return J, (g[0], jaxbp.Layer(g[1].W.T, g[1].b))

    report = verify.check(wrong, LOSS, params, x, y, transforms=())
    assert report.failed == ["[1].W"]
    (row,) = [r for r in report.rows if r.oracle == "grad_fn"]
    assert "returned shape (5, 3), the parameter has shape (3, 5)" in row.problem
    assert {r.oracle for r in report.rows if not r.ok} == {"grad_fn", "rev", "fwd", "fd"}


def test_a_tracer_sensitive_bug_is_caught_under_jit_and_named():
    params, x, y = _problem()

    def jit_only(p, x_, y_):
        J, g = GRAD(p, x_, y_)
        if isinstance(x_, jax.core.Tracer):
            g = _scaled_leaf(g, 1, 1.05)
        return J, g

    report = verify.check(jit_only, LOSS, params, x, y)
    assert report.failed == ["[0].b"]
    assert [(f.oracle, f.transform) for f in report.failures] == [("eager", "jit")]


def test_a_batching_bug_is_caught_under_vmap_and_named():
    params, x, y = _problem()

    @jax.custom_batching.custom_vmap
    def scale_bias(b):
        return b

    @scale_bias.def_vmap
    def _rule(axis_size, in_batched, b):
        return b * 1.05, in_batched[0]  # the batching rule gets it wrong

    def vmap_only(p, x_, y_):
        J, g = GRAD(p, x_, y_)
        return J, (g[0], jaxbp.Layer(g[1].W, scale_bias(g[1].b)))

    report = verify.check(vmap_only, LOSS, params, x, y)
    assert report.failed == ["[1].b"]
    assert [(f.oracle, f.transform) for f in report.failures] == [("eager", "vmap")]
    assert report.failures[0].index[0] in (0, 1)  # the copy, then the element


def test_a_grad_fn_that_cannot_be_jitted_is_a_failing_row():
    params, x, y = _problem()

    def eager_only(p, x_, y_):
        J, g = GRAD(p, x_, y_)
        return float(J), g

    report = verify.check(eager_only, LOSS, params, x, y, modes=("rev",), transforms=("jit",))
    (row,) = [r for r in report.rows if not r.ok]
    assert row.transform == "jit" and "grad_fn failed under jit" in row.problem


def test_a_custom_vjp_inside_loss_fn_makes_forward_mode_not_applicable():
    @jax.custom_vjp
    def square(w):
        return w**2

    square.defvjp(lambda w: (w**2, w), lambda w, g: (2 * w * g,))

    def loss(p):
        return jnp.sum(square(p["w"]))

    report = verify.check(lambda p: {"w": 2 * p["w"]}, loss, {"w": jnp.arange(1.0, 4.0)})
    assert report.ok, str(report)
    (fwd,) = [r for r in report.rows if r.oracle == "fwd"]
    assert fwd.status == "not applicable" and "custom_vjp" in fwd.note
    assert {r.status for r in report.rows if r.oracle in ("rev", "fd")} == {"pass"}


def _activation_loss(params, x, activation, y, scale, post, extra):
    """Non-array positional arguments: a name, an int, a callable, None and a dataclass."""
    del extra
    z = getattr(jax.nn, activation)(x @ params["w"] + params["b"])
    return scale * jnp.mean(post((z - y) ** 2))


def _activation_grad(params, x, activation, y, scale, post, extra):
    return jax.grad(_activation_loss)(params, x, activation, y, scale, post, extra)


@pytest.mark.parametrize("extra", [None, "a dataclass"])
def test_non_array_positional_arguments_pass_through_as_in_jax_grad(extra):
    import dataclasses

    @dataclasses.dataclass
    class Options:
        name: str = "opts"

    params, x, _ = _problem()
    p = {"w": params[0].W.T[:, :1], "b": params[0].b[:1]}
    yv = 0.5 * x[:, 1:2]
    extra = Options() if extra else None
    args = (x, "tanh", yv, 3, jnp.sqrt, extra)
    report = verify.check(_activation_grad, _activation_loss, p, *args)
    assert report.ok, str(report)
    assert {r.oracle for r in report.rows} >= {"rev", "fwd", "fd", "eager"}

    def wrong(params, *a):
        g = _activation_grad(params, *a)
        return {**g, "b": 1.05 * g["b"]}

    assert verify.check(wrong, _activation_loss, p, *args).failed == ["['b']"]
