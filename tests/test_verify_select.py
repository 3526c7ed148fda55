"""``wrt=`` (jaxbp.verify.select): PRNG keys, integer counters and frozen leaves left out; argnums."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import verify

RNG = np.random.default_rng(11)


def _params():
    return {
        "frozen": jnp.asarray(RNG.standard_normal(3)),
        "key": jax.random.key(3),
        "step": jnp.asarray(7, jnp.int32),
        "w": jnp.asarray(RNG.standard_normal(3)),
    }


def _loss(p, x):
    noise = jax.random.normal(p["key"], x.shape) * 1e-3  # a fixed key: deterministic
    return jnp.sum(jnp.sin(p["w"] * x + noise) * p["frozen"]) + 0.0 * p["step"]


def _grad(p, x):
    noise = jax.random.normal(p["key"], x.shape) * 1e-3
    return {
        "frozen": jnp.sin(p["w"] * x + noise),
        "key": None,  # anything goes for a leaf that is not checked
        "step": 0,
        "w": jnp.cos(p["w"] * x + noise) * x * p["frozen"],
    }


def test_keys_and_integer_counters_are_left_out_automatically():
    report = verify.check(_grad, _loss, _params(), jnp.arange(1.0, 4.0), transforms=("jit",))
    assert report.ok, str(report)
    assert report.meta["checked"] == ["['frozen']", "['w']"]
    assert set(report.meta["skipped"]) == {"['key']", "['step']"}


@pytest.mark.parametrize(
    "wrt",
    [
        lambda path, leaf: path != "['frozen']",
        {"frozen": False, "key": False, "step": False, "w": True},
    ],
)
def test_a_predicate_or_a_mask_leaves_frozen_weights_out(wrt):
    def wrong(p, x):
        g = _grad(p, x)
        return {**g, "frozen": g["frozen"] * 2}  # wrong, but frozen: not checked

    report = verify.check(wrong, _loss, _params(), jnp.arange(1.0, 4.0), wrt=wrt, transforms=())
    assert report.ok, str(report)
    assert report.meta["checked"] == ["['w']"]
    assert report.meta["skipped"]["['frozen']"] == "left out by wrt"


def test_argnums_check_the_gradient_with_respect_to_other_arguments():
    def loss(w, x):
        return jnp.sum(jnp.tanh(x @ w) ** 2)

    def grad(w, x):  # ∂/∂w and ∂/∂x, as jax.grad(argnums=(0, 1)) returns them
        t = jnp.tanh(x @ w)
        up = 2 * t * (1 - t**2)
        return x.T @ up, up @ w.T

    w, x = jnp.asarray(RNG.standard_normal((3, 2))), jnp.asarray(RNG.standard_normal((4, 3)))
    report = verify.check(grad, loss, w, x, wrt=(0, 1))
    assert report.ok, str(report)
    assert report.meta["checked"] == ["args[0]", "args[1]"]

    def wrong(w_, x_):
        gw, gx = grad(w_, x_)
        return gw, gx * 1.05

    assert verify.check(wrong, loss, w, x, wrt=(0, 1), transforms=()).failed == ["args[1]"]
    only_x = verify.check(lambda w_, x_: grad(w_, x_)[1], loss, w, x, wrt=1)
    assert only_x.ok and only_x.meta["checked"] == ["args[1]"]


def test_argnums_with_a_predicate():
    def loss(p, x):
        return jnp.sum(p["a"] * x**2) + jnp.sum(p["b"] * x)

    def grad(p, x):
        return ({"a": x**2, "b": x}, 2 * p["a"] * x + p["b"])

    p, x = {"a": jnp.ones(3), "b": jnp.ones(3)}, jnp.arange(3.0)
    report = verify.check(grad, loss, p, x, wrt=((0, 1), lambda path, leaf: "['b']" not in path))
    assert report.ok, str(report)
    assert report.meta["checked"] == ["args[0]['a']", "args[1]"]


def test_bad_selections_name_themselves():
    params, x = _params(), jnp.arange(1.0, 4.0)
    with pytest.raises(TypeError, match="wrt: the predicate returned"):
        verify.check(_grad, _loss, params, x, wrt=lambda path, leaf: "yes")
    with pytest.raises(ValueError, match="wrt: the mask"):
        verify.check(_grad, _loss, params, x, wrt={"w": True})
    with pytest.raises(ValueError, match="no floating-point leaf"):
        verify.check(_grad, _loss, params, x, wrt=lambda path, leaf: False)
    with pytest.raises(ValueError, match=r"rtol: unknown key .*nope"):
        verify.check(_grad, _loss, params, x, rtol={"['nope']": 1e-3})
