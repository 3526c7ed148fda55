"""Mutation tests: seeded bugs in a user's δ recursion are caught and named at the right leaf or
layer.

Each bug is a variant of the δ recursion (B1–B4) written here as a user would write it — with
the network fixed to tanh hidden layers and a softmax_ce output — and handed to the verifier as
``grad_fn`` (leaf names from :func:`jaxbp.verify.check`) and as ``deltas_fn`` (layer names from
:func:`jaxbp.verify.check_deltas`). Square hidden layers (4 → 6 → 6 → 6) make a transposed W and a
δ from the wrong layer shape-compatible, so they fail on values, not on shapes.
"""

import functools

import jax
import jax.numpy as jnp
import pytest

from jaxbp import verify
from jaxbp.verify.mlp import reference
from verify_support import numpy_problem

L2 = 0.5
KW = dict(activation="tanh", output="softmax_ce", l2=L2)
LOSS = functools.partial(reference.cost, **KW)
LEAVES = ["[0].W", "[0].b", "[1].W", "[1].b", "[2].W", "[2].b"]


@functools.partial(jax.jit, static_argnames=("bug",))
def _recursion(params, x, y, bug):
    """(J, grads, deltas) by the δ recursion, with ``bug`` seeded (None: correct)."""
    x, y = jnp.atleast_2d(x), jnp.atleast_2d(y)
    m = x.shape[0]
    zs, acts = [], [x]
    for l, (W, b) in enumerate(params):
        zs.append(acts[-1] @ W.T + b)
        acts.append(jnp.tanh(zs[-1]) if l < len(params) - 1 else jax.nn.softmax(zs[-1]))
    y_hat = acts[-1]
    J = -jnp.mean(jnp.sum(y * jax.nn.log_softmax(zs[-1]), axis=-1))
    J = J + L2 / (2 * m) * sum(jnp.sum(W * W) for W, _ in params)

    if bug == "softmax Jacobian diagonal only":
        delta = (-y / y_hat) * y_hat * (1 - y_hat)  # Σ_k ∂L/∂ŷ_k ∂ŷ_k/∂z_i without k ≠ i
    else:
        delta = y_hat - y  # B1
    if bug != "missing 1/m":
        delta = delta / m
    deltas = [None] * len(params)
    deltas[-1] = delta
    for l in reversed(range(1, len(params))):
        W = params[l].W
        back = delta @ (W.T if bug == "transposed W" and l == 2 else W)
        f_prime = 1 - acts[l] ** 2
        delta = back * f_prime  # B2
        if l == 2 and bug == "wrong sign in δ":
            delta = -delta
        if l == 2 and bug == "missing f′":
            delta = back
        deltas[l - 1] = delta

    grads = []
    for l, (W, b) in enumerate(params):
        d = deltas[l + 1] if (bug == "δ from the wrong layer" and l == 1) else deltas[l]
        g_W = d.T @ acts[l] + L2 / m * W  # B3, B4
        g_b = jnp.sum(d, axis=0) + (L2 / m * b if bug == "bias regularised" else 0)
        grads.append(type(params[l])(g_W, g_b))
    return J, tuple(grads), tuple(deltas)


def _grad_fn(bug):
    def grad_fn(params, x, y, **kw):
        del kw
        J, grads, _ = _recursion(params, x, y, bug)
        return J, grads

    return grad_fn


def _deltas_fn(bug):
    return lambda params, x, y: _recursion(params, x, y, bug)[2]


# bug → (failing leaves, failing δ's, first divergent δ)
EXPECTED = {
    "wrong sign in δ": (LEAVES[:4], ["δ[0]", "δ[1]"], "δ[1]"),
    "missing f′": (LEAVES[:4], ["δ[0]", "δ[1]"], "δ[1]"),
    "transposed W": (LEAVES[:4], ["δ[0]", "δ[1]"], "δ[1]"),
    "bias regularised": (["[0].b", "[1].b", "[2].b"], [], None),
    "missing 1/m": (LEAVES, ["δ[0]", "δ[1]", "δ[2]"], "δ[2]"),
    "δ from the wrong layer": (["[1].W", "[1].b"], [], None),
    "softmax Jacobian diagonal only": (LEAVES, ["δ[0]", "δ[1]", "δ[2]"], "δ[2]"),
}


def _problem():
    return numpy_problem([4, 6, 6, 6], m=5, seed=6, labels=False)


def test_the_unmutated_recursion_passes():
    params, x, y = _problem()
    assert verify.check(_grad_fn(None), LOSS, params, x, y).ok
    assert verify.check_deltas(params, x, y, deltas_fn=_deltas_fn(None), **KW).ok


@pytest.mark.parametrize("bug", sorted(EXPECTED))
def test_seeded_bug_is_caught_and_named(bug):
    leaves, deltas, first = EXPECTED[bug]
    params, x, y = _problem()
    report = verify.check(_grad_fn(bug), LOSS, params, x, y)
    assert report.failed == leaves, str(report)
    for oracle in ("rev", "fwd", "fd"):  # every oracle agrees on where
        assert [r.path for r in report.rows if r.oracle == oracle and not r.ok] == leaves
    with pytest.raises(AssertionError, match=r"\[\d\]\.[Wb]"):
        verify.check(_grad_fn(bug), LOSS, params, x, y, modes=("rev",), raise_on_fail=True)

    by_layer = verify.check_deltas(params, x, y, deltas_fn=_deltas_fn(bug), **KW)
    assert [p for p in by_layer.failed if p.startswith("δ")] == deltas
    assert by_layer.meta["first_divergent"] == first


def test_missing_one_over_m_breaks_mean_of_per_example():
    params, x, y = _problem()
    report = verify.check_transforms(params, x, y, value_and_grad_fn=_grad_fn("missing 1/m"), **KW)
    assert not next(r for r in report.rows if r.oracle == "mean(vmap) = batch").ok
    assert all(r.ok for r in report.rows if r.oracle in ("vmap", "jit∘vmap"))
