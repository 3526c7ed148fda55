"""jaxbp.verify.check on gradients written outside this project, as a new user writes them: each
correct one passes with the defaults (no ``kinks=``, no tolerances), each planted bug is caught
and named by its leaf."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp import verify
from verify_support import numpy_problem

RNG = np.random.default_rng(2026)


def _normal(*shape, scale=1.0, dtype=jnp.float64):
    return jnp.asarray(RNG.standard_normal(shape) * scale, dtype)


# --- logistic regression on a dict pytree ---------------------------------------------------------
def logreg_loss(p, x, y):
    z = x @ p["w"] + p["b"]
    return jnp.mean(jax.nn.softplus(z) - y * z)


def logreg_grad(p, x, y, bug=1.0):
    z = x @ p["w"] + p["b"]
    dz = (jax.nn.sigmoid(z) - y) / x.shape[0]
    return {"b": jnp.sum(dz) * bug, "w": x.T @ dz}


def logreg_problem(dtype=jnp.float64):
    x = _normal(64, 5, dtype=dtype)
    y = jnp.asarray(RNG.integers(0, 2, 64), dtype)
    return {"b": jnp.asarray(0.3, dtype), "w": _normal(5, dtype=dtype)}, x, y


# --- 1-D convolution (cross-correlation, VALID) ---------------------------------------------------
def conv_loss(p, x, t):
    y = jnp.correlate(x, p["k"], mode="valid") + p["c"]
    return 0.5 * jnp.sum((y - t) ** 2)


def conv_grad(p, x, t, flipped=False):
    r = jnp.correlate(x, p["k"], mode="valid") + p["c"] - t
    gk = jnp.correlate(x, r, mode="valid")  # ∂/∂k_j = Σ_i r_i x_(i+j): a correlation of x and r
    return {"c": jnp.sum(r), "k": gk[::-1] if flipped else gk}


# --- layer norm after a small weight matrix (scale-invariant in W) --------------------------------
def ln_loss(p, a, c):
    z = a @ p["W"]
    mu, var = jnp.mean(z, -1, keepdims=True), jnp.var(z, -1, keepdims=True)
    y = p["g"] * (z - mu) / jnp.sqrt(var + 1e-5) + p["b"]
    return jnp.sum(y * c)


def ln_grad(p, a, c, coupling=True):
    z = a @ p["W"]
    mu, var = jnp.mean(z, -1, keepdims=True), jnp.var(z, -1, keepdims=True)
    inv = 1 / jnp.sqrt(var + 1e-5)
    zhat = (z - mu) * inv
    dzhat = c * p["g"]
    dz = dzhat - jnp.mean(dzhat, -1, keepdims=True) * coupling
    dz = inv * (dz - zhat * jnp.mean(dzhat * zhat, -1, keepdims=True))
    return {"W": a.T @ dz, "b": jnp.sum(c, 0), "g": jnp.sum(c * zhat, 0)}


# --- single-head softmax attention --------------------------------------------------------------
def attn_loss(p, x, c):
    d = p["q"].shape[1]
    s = (x @ p["q"]) @ (x @ p["k"]).T / jnp.sqrt(d)
    return jnp.sum((jax.nn.softmax(s, -1) @ (x @ p["v"])) * c)


def attn_grad(p, x, c, diagonal_only=False):
    d = p["q"].shape[1]
    q, k, v = x @ p["q"], x @ p["k"], x @ p["v"]
    pr = jax.nn.softmax(q @ k.T / jnp.sqrt(d), -1)
    dpr = c @ v.T
    if diagonal_only:  # the softmax Jacobian's diagonal only
        ds = pr * (1 - pr) * dpr
    else:
        ds = pr * (dpr - jnp.sum(dpr * pr, -1, keepdims=True))
    dq, dk = ds @ k / jnp.sqrt(d), ds.T @ q / jnp.sqrt(d)
    return {"k": x.T @ dk, "q": x.T @ dq, "v": x.T @ (pr.T @ c)}


# --- Gaussian NLL with a learned log-variance -----------------------------------------------------
def nll_loss(p, x, y):
    mu, s = x @ p["mu"], x @ p["logvar"]
    return jnp.mean(0.5 * (s + (y - mu) ** 2 * jnp.exp(-s)))


def nll_grad(p, x, y, bug=False):
    mu, s = x @ p["mu"], x @ p["logvar"]
    m = x.shape[0]
    dmu = -(y - mu) * jnp.exp(-s) / m
    ds = 0.5 * (1 - (y - mu) ** 2 * jnp.exp(-s) * (0.0 if bug else 1.0)) / m
    return {"logvar": x.T @ ds, "mu": x.T @ dmu}


# --- masked softmax cross-entropy with integer labels ---------------------------------------------
def masked_loss(p, x, labels, mask):
    logits = x @ p["W"].T + p["b"]
    ce = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, labels[:, None], -1)[:, 0]
    return jnp.sum(mask * ce) / jnp.sum(mask)


def masked_grad(p, x, labels, mask, ignore_mask=False):
    logits = x @ p["W"].T + p["b"]
    w = (jnp.ones_like(mask) if ignore_mask else mask) / jnp.sum(mask)
    dz = (jax.nn.softmax(logits, -1) - jax.nn.one_hot(labels, logits.shape[-1])) * w[:, None]
    return {"W": dz.T @ x, "b": jnp.sum(dz, 0)}


def _cases():
    x16 = _normal(24)
    ln = {"W": _normal(6, 8, scale=0.05), "b": _normal(8), "g": 1 + _normal(8, scale=0.1)}
    attn = {k: _normal(5, 4, scale=0.5) for k in "kqv"}
    nll = {"logvar": _normal(3, scale=0.3), "mu": _normal(3)}
    masked = {"W": _normal(4, 6), "b": _normal(4)}
    labels = jnp.asarray(RNG.integers(0, 4, 20), jnp.int32)
    mask = jnp.asarray(RNG.integers(0, 2, 20), jnp.float64).at[0].set(1.0)
    return {
        "logistic regression": (logreg_loss, logreg_grad, *logreg_problem(), {"bug": 1.1}, "['b']"),
        "conv1d": (conv_loss, conv_grad, {"c": jnp.asarray(0.1), "k": _normal(5)}, x16,
                   _normal(20), {"flipped": True}, "['k']"),
        "layer norm": (ln_loss, ln_grad, ln, _normal(10, 6), _normal(10, 8), {"coupling": False},
                       "['W']"),
        "attention": (attn_loss, attn_grad, attn, _normal(7, 5), _normal(7, 4),
                      {"diagonal_only": True}, "['k']"),
        "gaussian nll": (nll_loss, nll_grad, nll, _normal(30, 3), _normal(30), {"bug": True},
                         "['logvar']"),
        "masked cross-entropy": (masked_loss, masked_grad, masked, _normal(20, 6), labels, mask,
                                 {"ignore_mask": True}, None),
    }  # fmt: skip


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_a_correct_hand_gradient_passes_with_the_defaults(name):
    loss, grad, params, *args, _, _ = CASES[name]
    report = verify.check(grad, loss, params, *args)
    assert report.ok, str(report)


@pytest.mark.parametrize("name", list(CASES))
def test_a_planted_bug_is_caught_and_named(name):
    loss, grad, params, *args, bug, culprit = CASES[name]
    report = verify.check(functools.partial(grad, **bug), loss, params, *args, transforms=())
    assert not report.ok
    if culprit is not None:
        assert culprit in report.failed
    # every oracle that can see the bug sees it
    assert {f.oracle for f in report.failures} >= {"rev", "fwd", "fd"}


def test_layer_norm_of_small_weights_needs_no_step_tuning():
    loss, grad, params, *args, _, _ = CASES["layer norm"]
    report = verify.check(grad, loss, params, *args, modes=("fd",), transforms=())
    assert report.ok, str(report)
    # the step follows the leaf: W's rms is 0.05, so its step is ~20 × smaller than g's
    steps = report.meta["fd"]["steps"]
    assert steps["['W']"] < steps["['g']"] / 10


def _seeds(n, quick=4):
    return [s if s < quick else pytest.param(s, marks=pytest.mark.slow) for s in range(n)]


@pytest.mark.parametrize("seed", _seeds(12))
def test_random_float32_relu_networks_raise_no_false_alarm(seed):
    rng = np.random.default_rng(seed)
    sizes = [int(rng.integers(2, 12)) for _ in range(int(rng.integers(3, 5)))]
    params, x, y = numpy_problem(sizes, dtype=jnp.float32, m=int(rng.integers(4, 32)), seed=seed)
    kw = dict(activation="relu", l2=float(rng.choice([0.0, 0.5])))
    report = verify.check(functools.partial(jaxbp.value_and_grad, **kw),
                          functools.partial(jaxbp.cost, **kw), params, x, y)  # fmt: skip
    assert report.ok, str(report)


@pytest.mark.parametrize("seed", _seeds(16))
def test_random_float64_relu_networks_raise_no_false_alarm(seed):
    rng = np.random.default_rng(100 + seed)
    sizes = [int(rng.integers(2, 10)) for _ in range(int(rng.integers(3, 5)))]
    params, x, y = numpy_problem(sizes, m=int(rng.integers(4, 24)), seed=seed)
    kw = dict(activation=str(rng.choice(["relu", "leaky_relu"])))
    report = verify.check(functools.partial(jaxbp.value_and_grad, **kw),
                          functools.partial(jaxbp.cost, **kw), params, x, y, transforms=())  # fmt: skip
    assert report.ok, str(report)
