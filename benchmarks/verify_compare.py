"""Four gradient checkers on the same hand-written gradients, correct and with planted bugs.

    python benchmarks/verify_compare.py [--out benchmarks/results/verify_compare.md]

writes a markdown table to ``--out`` and the full record (every verdict, message, tolerance and
time) as JSON beside it (same name, ``.json``). Everything runs in float64 on the default JAX
backend. PyTorch is optional (``pip install torch``); without it its column says "n/a".

The checkers, each with its defaults
------------------------------------
- **jaxbp** — ``jaxbp.verify.check(grad_fn, loss_fn, params, *data)``: nothing but the defaults.
- **check_grads** — ``jax.test_util.check_grads(f, (params,), order=1, modes=("rev",))`` where
  ``f`` is a ``jax.custom_vjp`` whose forward is ``loss_fn`` and whose backward returns the hand
  gradient (times the cotangent), so that "rev" checks the hand gradient against finite
  differences along one random direction. Only "rev": check_grads cannot run "fwd" on a
  ``custom_vjp`` (JAX: "can't apply forward-mode autodiff (jvp) to a custom_vjp function"), and
  "fwd" on ``loss_fn`` itself would check JAX's autodiff, not the hand gradient.
- **chex** — ``chex.assert_numerical_grads(f, (θ,), order=1, modes=("rev",))`` (chex 0.1.92:
  ``assert_numerical_grads(f, f_args, order, atol=0.01, **check_kwargs)``; it multiplies ``atol``
  by ``f_args[0].size`` and calls ``check_grads``), with the same ``custom_vjp`` wrapping, ``modes``
  for the same reason. chex reads ``f_args[0].size``, which a dict of parameters does not have
  (the script tries the dict first and records the error), so it gets the parameters flattened
  by ``jax.flatten_util.ravel_pytree`` — and so cannot name a leaf.
- **torch** — ``torch.autograd.gradcheck(fn, leaves)`` with its defaults (full numerical
  Jacobian, eps 1e-6, atol 1e-5, rtol 1e-3), ``fn`` a ``torch.autograd.Function`` whose forward is
  the same loss and whose backward is the same hand gradient, both written once in this file
  against a small array namespace (``Ops``) and run with PyTorch's float64 tensors; the leaves
  are passed in JAX's tree order, so "input k" names leaf k.

What each cell records
----------------------
- bug rows: **caught** (the checker failed the gradient) or **missed**; correct rows: **ok** or
  **false alarm**;
- **leaf**: whether the checker's output names every faulty leaf — jaxbp: ``report.failed``
  contains each faulty leaf's path; torch: its "with respect to input k" is a faulty leaf;
  check_grads / chex: the faulty leaf's ``keystr`` path appears in the message (it never does:
  both compare one inner product over the whole tree);
- **time**: wall seconds of that one call, in a process that has run the earlier rows, so a
  checker's first call on a new function includes its compilation (what a test suite pays);
- **error**: the checker raised something other than its failure signal (the message is in the
  JSON); **n/a**: it cannot run this case (reason in the footnotes).

The cases (each has a correct gradient and the planted bugs listed)
-------------------------------------------------------------------
Data come from ``numpy.random.default_rng(case seed)``; every loss is a mean over the batch.

1. ``logreg`` — logistic regression, params ``{"w": (5,), "b": ()}``, 32 examples.
   Bug *w sign*: the weight gradient with its sign flipped.
2. ``mlp_tanh`` — 4-8-3 tanh MLP, softmax cross-entropy, params ``{W1, b1, W2, b2}``, 16 examples.
   Bug *missing f′*: δ¹ = W2ᵀ δ² without ⊙ (1 − a²) (faulty: W1, b1).
   Bug *bias 1/m*: the output bias gradient summed over the batch without the 1/m (faulty: b2).
3. ``linreg_1000`` — least squares with ``{"w": (1000,), "b": ()}``, 64 examples.
   Bug *1 % one element*: element 417 of the w gradient × 1.01 (one element of 1000).
   Bug *50 % one coordinate*: element 417 × 1.5.
4. ``mlp_relu`` — 4-8-3 ReLU MLP with zero-initialised hidden biases and one all-zero (padding)
   example, so that 8 pre-activations sit exactly at the kink z = 0 (the hand gradient uses
   1[z > 0], as ``jax.nn.relu``'s derivative does): the correct row is the false-alarm test for
   kinks — a finite difference there sees the average of both slopes.
   Bug *f′ = a*: δ¹ multiplied by the activation a¹ instead of 1[z¹ > 0] (faulty: W1, b1).
5. ``layernorm`` — a linear map then layer norm with gain and bias, squared error,
   params ``{W: (6, 5), gamma: (6,), beta: (6,)}``, 16 examples.
   Bug *missing mean term*: ∂L/∂h without the − mean(∂L/∂x̂) term (faulty: W).
6. ``softmax_ce`` — softmax regression whose backward goes through the softmax explicitly
   (∂L/∂p = −y / p, then the softmax Jacobian), params ``{W: (4, 6), b: (4,)}``.
   Bug *Jacobian diagonal*: ∂L/∂z = p ⊙ ∂L/∂p, the diagonal of the Jacobian only (faulty: W, b).
7. ``gauss_nll`` — Gaussian negative log-likelihood with a learned log-variance s = x·Ws + bs
   beside the mean μ = x·Wm + bm, params ``{Wm, bm, Ws, bs}``.
   Bug *log-variance*: ∂L/∂s = ½(1 − (t − μ)²) without the factor e^(−s) (faulty: Ws, bs).
8. ``attention`` — one attention head on an 8 × 4 sequence, softmax(Q Kᵀ / √d) V against a
   target, params ``{Wq, Wk, Wv}`` (4 × 4 each).
   Bug *missing transpose*: ∂L/∂K = dS Q / √d instead of dSᵀ Q / √d (faulty: Wk).
9. ``scalar_empty`` — a scalar leaf and a zero-size leaf: ``{"w": (5,), "scale": (),
   "empty": (0,)}``, loss ½ mean((scale · x·w − t)²) + Σ empty².
   Bug *scalar leaf*: the gradient of ``scale`` halved.
10. ``transforms`` — the ``mlp_tanh`` network again, with bugs that eager code does not show.
    Bug *jit only*: ``grad_fn`` branches on ``isinstance(W1, jax.core.Tracer)`` and then scales
    the W1 gradient by 1.1 — the shape of real bugs in code that branches on concreteness; it
    fires whenever ``grad_fn`` is traced (``jax.jit``, and also ``jax.vmap``), never when it is
    called with arrays.
    Bug *vmap only*: the W1 gradient passes through an op with its own batching rule
    (``jax.custom_batching.custom_vmap``, like a fused kernel with a separate batched path) and
    that rule scales by 1.1; eager and jitted calls are correct.
    PyTorch runs the same maths eagerly (its correct row is the ``mlp_tanh`` maths), so both
    bugs are n/a for it.

That is 10 correct rows and 13 bug rows. The cases were written before the table was looked at
and are not tuned to any checker; a checker's verdicts change when its code does (jaxbp's will,
as its verifier changes), which is what the table measures.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib
import importlib.metadata
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch's threads share the cores with XLA

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.flatten_util  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "verify_compare.md"
CHECKERS = ("jaxbp", "check_grads", "chex", "torch")


# --- one array namespace for both frameworks ---------------------------------------------------


class JaxOps:
    name = "jax"
    tanh, exp, log, sqrt = staticmethod(jnp.tanh), staticmethod(jnp.exp), staticmethod(
        jnp.log), staticmethod(jnp.sqrt)  # fmt: skip
    sigmoid = staticmethod(jax.nn.sigmoid)
    softplus = staticmethod(jax.nn.softplus)
    relu = staticmethod(jax.nn.relu)  # derivative 0 at 0, like the hand 1[z > 0]

    @staticmethod
    def step(z):
        return (z > 0).astype(z.dtype)

    @staticmethod
    def sum(x, axis=None, keepdims=False):
        return jnp.sum(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def mean(x, axis=None, keepdims=False):
        return jnp.mean(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def logsumexp(x, axis):
        return jax.nn.logsumexp(x, axis=axis, keepdims=True)

    @staticmethod
    def scale_at(g, index, factor):
        return g.at[index].multiply(factor)


class TorchOps:
    name = "torch"

    def __init__(self):
        import torch

        self.torch = torch
        self.tanh, self.exp, self.log, self.sqrt = torch.tanh, torch.exp, torch.log, torch.sqrt
        self.sigmoid = torch.sigmoid
        self.softplus = torch.nn.functional.softplus
        self.relu = torch.relu

    def step(self, z):
        return (z > 0).to(z.dtype)

    def sum(self, x, axis=None, keepdims=False):
        return x.sum() if axis is None else x.sum(dim=axis, keepdim=keepdims)

    def mean(self, x, axis=None, keepdims=False):
        return x.mean() if axis is None else x.mean(dim=axis, keepdim=keepdims)

    def logsumexp(self, x, axis):
        return self.torch.logsumexp(x, dim=axis, keepdim=True)

    def scale_at(self, g, index, factor):
        g = g.clone()
        g[index] = g[index] * factor
        return g


def softmax(ops, z):
    return ops.exp(z - ops.logsumexp(z, -1))


# --- the cases -------------------------------------------------------------------------------


class Bug(NamedTuple):
    name: str
    grad: Callable  # grad(ops, p, *data) -> dict
    faulty: tuple[str, ...]
    jax_only: str | None = None  # why torch cannot run it, when it cannot


class Problem(NamedTuple):
    name: str
    what: str
    params: dict  # numpy float64
    data: tuple  # numpy arrays
    loss: Callable  # loss(ops, p, *data) -> scalar
    grad: Callable  # the correct hand gradient
    bugs: tuple[Bug, ...]


def _rng(seed):
    return np.random.default_rng(seed)


# 1. logistic regression on a dict pytree
def logreg_loss(ops, p, x, y):
    z = x @ p["w"] + p["b"]
    return ops.mean(ops.softplus(z) - y * z)


def logreg_grad(ops, p, x, y):
    r = (ops.sigmoid(x @ p["w"] + p["b"]) - y) / x.shape[0]
    return {"b": ops.sum(r), "w": r @ x}


def logreg_grad_sign(ops, p, x, y):
    g = logreg_grad(ops, p, x, y)
    return {"b": g["b"], "w": -g["w"]}


def logreg_problem():
    r = _rng(1)
    x = r.normal(size=(32, 5))
    y = (r.random(32) < 0.5).astype(np.float64)
    p = {"w": r.normal(size=5) * 0.5, "b": np.float64(0.1)}
    bugs = (Bug("w sign", logreg_grad_sign, ("w",)),)
    return Problem("logreg", "logistic regression, dict {w, b}", p, (x, y), logreg_loss,
                   logreg_grad, bugs)  # fmt: skip


# 2. / 4. / 10. a two-layer MLP with softmax cross-entropy
def mlp_loss(act):
    def loss(ops, p, x, Y):
        a1 = getattr(ops, act)(x @ p["W1"].T + p["b1"])
        z2 = a1 @ p["W2"].T + p["b2"]
        return ops.mean(ops.logsumexp(z2, -1)[:, 0] - ops.sum(Y * z2, -1))

    return loss


def mlp_grad(act, variant=None):
    def grad(ops, p, x, Y):
        m = x.shape[0]
        z1 = x @ p["W1"].T + p["b1"]
        a1 = getattr(ops, act)(z1)
        z2 = a1 @ p["W2"].T + p["b2"]
        d2 = (softmax(ops, z2) - Y) / m
        gb2 = ops.sum(d2 * m, 0) if variant == "bias 1/m" else ops.sum(d2, 0)
        back = d2 @ p["W2"]
        if variant == "missing f'":
            d1 = back
        elif act == "tanh":
            d1 = back * (1 - a1 * a1)
        elif variant == "f' = a":
            d1 = back * a1
        else:
            d1 = back * ops.step(z1)
        return {"W1": d1.T @ x, "W2": d2.T @ a1, "b1": ops.sum(d1, 0), "b2": gb2}

    return grad


def _mlp_data(seed, relu_kinks=False):
    r = _rng(seed)
    x = r.normal(size=(16, 4))
    Y = np.eye(3)[r.integers(0, 3, 16)]
    p = {
        "W1": r.normal(size=(8, 4)) * 0.7,
        "W2": r.normal(size=(3, 8)) * 0.7,
        "b1": r.normal(size=8) * 0.1,
        "b2": r.normal(size=3) * 0.1,
    }
    if relu_kinks:
        x[0] = 0.0  # a padding example
        p["b1"] = np.zeros(8)  # zero-initialised biases: z¹ = 0 exactly for that example
    return p, (x, Y)


def mlp_tanh_problem():
    p, data = _mlp_data(2)
    bugs = (
        Bug("missing f′", mlp_grad("tanh", "missing f'"), ("W1", "b1")),
        Bug("bias 1/m", mlp_grad("tanh", "bias 1/m"), ("b2",)),
    )
    return Problem("mlp_tanh", "4-8-3 tanh MLP, softmax CE", p, data, mlp_loss("tanh"),
                   mlp_grad("tanh"), bugs)  # fmt: skip


def mlp_relu_problem():
    p, data = _mlp_data(4, relu_kinks=True)
    bugs = (Bug("f′ = a", mlp_grad("relu", "f' = a"), ("W1", "b1")),)
    return Problem("mlp_relu", "4-8-3 ReLU MLP, 8 pre-activations exactly at the kink", p, data,
                   mlp_loss("relu"), mlp_grad("relu"), bugs)  # fmt: skip


# 3. one element of a 1000-element leaf
def linreg_loss(ops, p, x, t):
    r = x @ p["w"] + p["b"] - t
    return 0.5 * ops.mean(r * r)


def linreg_grad(ops, p, x, t):
    r = (x @ p["w"] + p["b"] - t) / x.shape[0]
    return {"b": ops.sum(r), "w": r @ x}


def linreg_grad_scaled(factor):
    def grad(ops, p, x, t):
        g = linreg_grad(ops, p, x, t)
        return {"b": g["b"], "w": ops.scale_at(g["w"], 417, factor)}

    return grad


def linreg_problem():
    r = _rng(3)
    x = r.normal(size=(64, 1000))
    t = r.normal(size=64)
    p = {"w": r.normal(size=1000) * 0.03, "b": np.float64(0.2)}
    bugs = (
        Bug("1 % one element", linreg_grad_scaled(1.01), ("w",)),
        Bug("50 % one coordinate", linreg_grad_scaled(1.5), ("w",)),
    )
    return Problem("linreg_1000", "least squares, w of 1000 elements", p, (x, t), linreg_loss,
                   linreg_grad, bugs)  # fmt: skip


# 5. layer norm
LN_EPS = 1e-5


def _ln_forward(ops, p, x):
    h = x @ p["W"].T
    mu = ops.mean(h, -1, keepdims=True)
    c = h - mu
    var = ops.mean(c * c, -1, keepdims=True)
    inv = 1 / ops.sqrt(var + LN_EPS)
    xhat = c * inv
    return xhat, inv, p["gamma"] * xhat + p["beta"]


def ln_loss(ops, p, x, t):
    _, _, y = _ln_forward(ops, p, x)
    return 0.5 * ops.mean(ops.sum((y - t) ** 2, -1))


def ln_grad_variant(missing_mean):
    def grad(ops, p, x, t):
        xhat, inv, y = _ln_forward(ops, p, x)
        dy = (y - t) / x.shape[0]
        dxhat = dy * p["gamma"]
        mean_term = 0 if missing_mean else ops.mean(dxhat, -1, keepdims=True)
        dh = inv * (dxhat - mean_term - xhat * ops.mean(dxhat * xhat, -1, keepdims=True))
        return {"W": dh.T @ x, "beta": ops.sum(dy, 0), "gamma": ops.sum(dy * xhat, 0)}

    return grad


def layernorm_problem():
    r = _rng(5)
    x = r.normal(size=(16, 5))
    t = r.normal(size=(16, 6))
    p = {"W": r.normal(size=(6, 5)), "beta": r.normal(size=6) * 0.1,
         "gamma": 1 + r.normal(size=6) * 0.1}  # fmt: skip
    bugs = (Bug("missing mean term", ln_grad_variant(True), ("W",)),)
    return Problem("layernorm", "linear → layer norm (gain, bias), squared error", p, (x, t),
                   ln_loss, ln_grad_variant(False), bugs)  # fmt: skip


# 6. softmax cross-entropy through the softmax's Jacobian
def sce_loss(ops, p, x, Y):
    z = x @ p["W"].T + p["b"]
    return -ops.mean(ops.sum(Y * (z - ops.logsumexp(z, -1)), -1))


def sce_grad_variant(diagonal_only):
    def grad(ops, p, x, Y):
        z = x @ p["W"].T + p["b"]
        pr = softmax(ops, z)
        dpr = -Y / pr / x.shape[0]
        if diagonal_only:
            dz = pr * dpr
        else:
            dz = pr * (dpr - ops.sum(dpr * pr, -1, keepdims=True))
        return {"W": dz.T @ x, "b": ops.sum(dz, 0)}

    return grad


def softmax_problem():
    r = _rng(6)
    x = r.normal(size=(24, 6))
    Y = np.eye(4)[r.integers(0, 4, 24)]
    p = {"W": r.normal(size=(4, 6)) * 0.5, "b": r.normal(size=4) * 0.1}
    bugs = (Bug("Jacobian diagonal", sce_grad_variant(True), ("W", "b")),)
    return Problem("softmax_ce", "softmax regression, backward through the softmax", p, (x, Y),
                   sce_loss, sce_grad_variant(False), bugs)  # fmt: skip


# 7. Gaussian NLL with a learned log-variance
def gauss_loss(ops, p, x, t):
    mu = x @ p["Wm"] + p["bm"]
    s = x @ p["Ws"] + p["bs"]
    r = t - mu
    return ops.mean(0.5 * (s + r * r * ops.exp(-s)))


def gauss_grad_variant(bug):
    def grad(ops, p, x, t):
        m = x.shape[0]
        mu = x @ p["Wm"] + p["bm"]
        s = x @ p["Ws"] + p["bs"]
        r = t - mu
        dmu = -r * ops.exp(-s) / m
        ds = 0.5 * (1 - r * r * (1 if bug else ops.exp(-s))) / m
        return {"Wm": dmu @ x, "Ws": ds @ x, "bm": ops.sum(dmu), "bs": ops.sum(ds)}

    return grad


def gauss_problem():
    r = _rng(7)
    x = r.normal(size=(32, 3))
    t = x @ np.array([0.5, -1.0, 0.3]) + r.normal(size=32) * 0.5
    p = {"Wm": r.normal(size=3) * 0.3, "Ws": r.normal(size=3) * 0.3, "bm": np.float64(0.0),
         "bs": np.float64(-0.5)}  # fmt: skip
    bugs = (Bug("log-variance", gauss_grad_variant(True), ("Ws", "bs")),)
    return Problem("gauss_nll", "Gaussian NLL, learned log-variance", p, (x, t), gauss_loss,
                   gauss_grad_variant(False), bugs)  # fmt: skip


# 8. attention scores
def _attn(ops, p, X):
    d = X.shape[1]
    Q, K, V = X @ p["Wq"], X @ p["Wk"], X @ p["Wv"]
    A = softmax(ops, Q @ K.T / math.sqrt(d))
    return Q, K, V, A


def attn_loss(ops, p, X, T):
    _, _, V, A = _attn(ops, p, X)
    O = A @ V
    return 0.5 * ops.sum((O - T) ** 2) / X.shape[0]


def attn_grad_variant(missing_transpose):
    def grad(ops, p, X, T):
        n, d = X.shape
        Q, K, V, A = _attn(ops, p, X)
        dO = (A @ V - T) / n
        dA = dO @ V.T
        dS = A * (dA - ops.sum(dA * A, -1, keepdims=True))
        dQ = dS @ K / math.sqrt(d)
        dK = (dS if missing_transpose else dS.T) @ Q / math.sqrt(d)
        return {"Wk": X.T @ dK, "Wq": X.T @ dQ, "Wv": X.T @ (A.T @ dO)}

    return grad


def attention_problem():
    r = _rng(8)
    X = r.normal(size=(8, 4))
    T = r.normal(size=(8, 4))
    p = {k: r.normal(size=(4, 4)) * 0.5 for k in ("Wk", "Wq", "Wv")}
    bugs = (Bug("missing transpose", attn_grad_variant(True), ("Wk",)),)
    return Problem("attention", "one attention head, 8 × 4 sequence", p, (X, T), attn_loss,
                   attn_grad_variant(False), bugs)  # fmt: skip


# 9. a scalar leaf and a zero-size leaf
def se_loss(ops, p, x, t):
    r = p["scale"] * (x @ p["w"]) - t
    return 0.5 * ops.mean(r * r) + ops.sum(p["empty"] * p["empty"])


def se_grad_variant(halve):
    def grad(ops, p, x, t):
        u = x @ p["w"]
        r = (p["scale"] * u - t) / x.shape[0]
        g_scale = ops.sum(r * u)
        return {"empty": 2 * p["empty"], "scale": 0.5 * g_scale if halve else g_scale,
                "w": p["scale"] * (r @ x)}  # fmt: skip

    return grad


def scalar_empty_problem():
    r = _rng(9)
    x = r.normal(size=(20, 5))
    t = r.normal(size=20)
    p = {"empty": np.zeros(0), "scale": np.float64(1.3), "w": r.normal(size=5) * 0.5}
    bugs = (Bug("scalar leaf", se_grad_variant(True), ("scale",)),)
    return Problem("scalar_empty", "a scalar leaf and a zero-size leaf", p, (x, t), se_loss,
                   se_grad_variant(False), bugs)  # fmt: skip


# 10. bugs that appear only under a transformation (JAX only)
def _jit_only_grad(ops, p, x, Y):
    g = mlp_grad("tanh")(ops, p, x, Y)
    if isinstance(p["W1"], jax.core.Tracer):  # the branch eager code never takes
        g["W1"] = g["W1"] * 1.1
    return g


@jax.custom_batching.custom_vmap
def _fused_identity(g):
    return g


@_fused_identity.def_vmap
def _fused_identity_batched(axis_size, in_batched, g):
    return g * 1.1, in_batched[0]  # the batched path's planted bug


def _vmap_only_grad(ops, p, x, Y):
    g = mlp_grad("tanh")(ops, p, x, Y)
    g["W1"] = _fused_identity(g["W1"])
    return g


def transforms_problem():
    p, data = _mlp_data(2)
    why = "the bug lives in JAX's tracing ({}); PyTorch runs the same maths eagerly"
    bugs = (
        Bug("jit only", _jit_only_grad, ("W1",), why.format("jit")),
        Bug("vmap only", _vmap_only_grad, ("W1",), why.format("vmap")),
    )
    return Problem("transforms", "the mlp_tanh network, bugs only under jit / vmap", p, data,
                   mlp_loss("tanh"), mlp_grad("tanh"), bugs)  # fmt: skip


PROBLEMS = (
    logreg_problem,
    mlp_tanh_problem,
    linreg_problem,
    mlp_relu_problem,
    layernorm_problem,
    softmax_problem,
    gauss_problem,
    attention_problem,
    scalar_empty_problem,
    transforms_problem,
)


# --- the checkers ----------------------------------------------------------------------------


class Outcome(NamedTuple):
    status: str  # "failed" (the checker rejected the gradient), "passed", "error", "n/a"
    seconds: float | None
    named: list  # leaf names the output names as faulty
    message: str
    extra: dict


def _keystr(name: str) -> str:
    return jax.tree_util.keystr((jax.tree_util.DictKey(name),))


@functools.cache
def _bind(fn, ops):
    """fn(ops, p, *data) as f(p, *data): one object per (fn, ops), so that the rows of one case
    share their loss_fn, as the tests of one model do (jaxbp keys its compiled oracles on it)."""
    return functools.partial(fn, ops)


def _first_lines(text: str, n: int = 6) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return "\n".join(lines[:n])


def run_jaxbp(problem, grad, params, data, leaf_names):
    from jaxbp import verify

    loss_fn = _bind(problem.loss, JaxOps)
    grad_fn = _bind(grad, JaxOps)
    t0 = time.perf_counter()
    report = verify.check(grad_fn, loss_fn, params, *data)
    dt = time.perf_counter() - t0
    failed = list(report.failed)
    named = [n for n in leaf_names if _keystr(n) in failed]
    statuses: dict = {}
    for row in report.rows:
        statuses[row.status] = statuses.get(row.status, 0) + 1
    bad = [r for r in report.rows if not r.ok]
    message = "; ".join(
        f"{r.oracle}/{getattr(r, 'transform', 'eager')} {r.path}: "
        + (r.problem or f"max abs {r.max_abs:.3g}")
        for r in bad[:8]
    )
    extra = {"failed": failed, "row_statuses": statuses,
             "seconds": report.meta.get("seconds"), "oracles": sorted({r.oracle for r in
                                                                      report.rows})}  # fmt: skip
    return Outcome("passed" if report.ok else "failed", dt, named, message, extra)


def _custom_vjp_loss(loss_fn, grad_fn, data):
    @jax.custom_vjp
    def f(p):
        return loss_fn(p, *data)

    def fwd(p):
        return loss_fn(p, *data), p

    def bwd(p, g):
        return (jax.tree.map(lambda t: g * t, grad_fn(p, *data)),)

    f.defvjp(fwd, bwd)
    return f


def run_check_grads(problem, grad, params, data, leaf_names):
    from jax.test_util import check_grads

    f = _custom_vjp_loss(_bind(problem.loss, JaxOps), _bind(grad, JaxOps), data)
    t0 = time.perf_counter()
    try:
        check_grads(f, (params,), order=1, modes=("rev",))
    except AssertionError as e:
        dt = time.perf_counter() - t0
        msg = str(e)
        named = [n for n in leaf_names if _keystr(n) in msg]
        return Outcome("failed", dt, named, _first_lines(msg), {})
    return Outcome("passed", time.perf_counter() - t0, [], "", {})


def run_chex(problem, grad, params, data, leaf_names):
    import chex

    loss_fn, grad_fn = _bind(problem.loss, JaxOps), _bind(grad, JaxOps)
    extra = {"chex": chex.__version__}

    def attempt(f, args):
        extra["atol_used"] = 0.01 * int(args[0].size)  # chex: atol (0.01) · f_args[0].size
        t0 = time.perf_counter()
        try:
            chex.assert_numerical_grads(f, args, 1, modes=("rev",))
        except AssertionError as e:
            msg = str(e)
            named = [n for n in leaf_names if _keystr(n) in msg]
            return Outcome("failed", time.perf_counter() - t0, named, _first_lines(msg), extra)
        return Outcome("passed", time.perf_counter() - t0, [], "", extra)

    try:  # the tree as it is, first
        return attempt(_custom_vjp_loss(loss_fn, grad_fn, data), (params,))
    except AttributeError as e:  # chex reads f_args[0].size
        extra["pytree"] = f"rejected ({e}); run on ravel_pytree(params)"
    flat, unravel = jax.flatten_util.ravel_pytree(params)

    @jax.custom_vjp
    def f(v):
        return loss_fn(unravel(v), *data)

    def fwd(v):
        return loss_fn(unravel(v), *data), v

    def bwd(v, g):
        return (g * jax.flatten_util.ravel_pytree(grad_fn(unravel(v), *data))[0],)

    f.defvjp(fwd, bwd)
    return attempt(f, (flat,))


@functools.cache
def _torch_ops():
    return TorchOps()


def run_torch(problem, grad, params, data, leaf_names, *, jax_only=None):
    try:
        import torch
    except ImportError:
        return Outcome("n/a", None, [], "", {"reason": "PyTorch is not installed"})
    if jax_only:
        return Outcome("n/a", None, [], "", {"reason": jax_only})
    ops = _torch_ops()
    keys = list(leaf_names)
    leaves = [torch.tensor(np.asarray(params[k]), dtype=torch.float64, requires_grad=True)
              for k in keys]  # fmt: skip
    data_t = tuple(torch.tensor(np.asarray(d), dtype=torch.float64) for d in data)

    class Hand(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *ls):
            ctx.save_for_backward(*ls)
            return problem.loss(ops, dict(zip(keys, ls, strict=True)), *data_t)

        @staticmethod
        def backward(ctx, g):
            g_hand = grad(ops, dict(zip(keys, ctx.saved_tensors, strict=True)), *data_t)
            return tuple(g * g_hand[k] for k in keys)

    # torch.autograd.gradcheck is the function; its module holds the error class
    GradcheckError = importlib.import_module("torch.autograd.gradcheck").GradcheckError
    t0 = time.perf_counter()
    try:
        torch.autograd.gradcheck(lambda *ls: Hand.apply(*ls), tuple(leaves))
    except GradcheckError as e:
        dt = time.perf_counter() - t0
        msg = str(e)
        hit = re.search(r"with respect to input (\d+)", msg)
        named = [keys[int(hit.group(1))]] if hit else []
        return Outcome("failed", dt, named, _first_lines(msg, 3),
                       {"input": int(hit.group(1)) if hit else None})  # fmt: skip
    return Outcome("passed", time.perf_counter() - t0, [], "", {"torch": torch.__version__})


RUNNERS = {"jaxbp": run_jaxbp, "check_grads": run_check_grads, "chex": run_chex,
           "torch": run_torch}  # fmt: skip


def run_one(checker, problem, grad, bug):
    params = jax.tree.map(jnp.asarray, problem.params)
    data = tuple(jnp.asarray(d) for d in problem.data)
    leaf_names = [p[0].key for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    kwargs = {"jax_only": bug.jax_only if bug else None} if checker == "torch" else {}
    t0 = time.perf_counter()
    try:
        return RUNNERS[checker](problem, grad, params, data, leaf_names, **kwargs)
    except Exception as e:  # the checker itself broke: an error, not a verdict
        return Outcome("error", time.perf_counter() - t0, [], f"{type(e).__name__}: {e}",
                       {"traceback": traceback.format_exc(limit=6)})  # fmt: skip


def sanity(problem) -> None:
    """The cases themselves, before any checker sees them: each correct hand gradient equals
    ``jax.grad`` of its loss, each bug differs from it on exactly its faulty leaves (eagerly, or
    under its transformation), and the torch loss and gradient equal JAX's."""
    params = jax.tree.map(jnp.asarray, problem.params)
    data = tuple(jnp.asarray(d) for d in problem.data)
    loss_fn = _bind(problem.loss, JaxOps)
    ref = jax.grad(loss_fn)(params, *data)

    def close(a, b):
        a, b = np.asarray(a), np.asarray(b)
        return np.allclose(a, b, rtol=1e-9, atol=1e-9 * max(np.max(np.abs(b), initial=0), 1e-30))

    hand = _bind(problem.grad, JaxOps)(params, *data)
    bad = [k for k in ref if not close(hand[k], ref[k])]
    assert not bad, f"{problem.name}: the correct gradient differs from jax.grad on {bad}"
    for bug in problem.bugs:
        fn = _bind(bug.grad, JaxOps)
        if bug.name == "jit only":
            g = jax.jit(fn)(params, *data)
        elif bug.name == "vmap only":
            stacked = jax.tree.map(lambda t: jnp.stack([t, t]), params)
            g = jax.tree.map(
                lambda t: t[0], jax.vmap(fn, in_axes=(0, *[None] * len(data)))(stacked, *data)
            )
        else:
            g = fn(params, *data)
        differ = sorted(k for k in ref if not close(g[k], ref[k]))
        assert differ == sorted(bug.faulty), (problem.name, bug.name, differ)
    try:
        import torch
    except ImportError:
        return
    ops = _torch_ops()
    p_t = {k: torch.tensor(np.asarray(v), dtype=torch.float64) for k, v in problem.params.items()}
    d_t = tuple(torch.tensor(np.asarray(d), dtype=torch.float64) for d in problem.data)
    assert close(problem.loss(ops, p_t, *d_t).item(), float(loss_fn(params, *data))), problem.name
    g_t = problem.grad(ops, p_t, *d_t)
    bad = [k for k in ref if not close(g_t[k].numpy(), ref[k])]
    assert not bad, f"{problem.name}: torch's gradient differs from JAX's on {bad}"


# --- the record and the table ----------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git() -> dict:
    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10).stdout.strip()  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "--short", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}  # fmt: skip


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "backend": jax.default_backend(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "versions": {d: _version(d) for d in ("jax", "jaxlib", "jaxbp", "chex", "torch", "numpy")},
        "git": _git(),
    }


def verdict(kind: str, outcome: dict) -> str:
    s = outcome["status"]
    if s == "n/a":
        return "n/a"
    if s == "error":
        return "error"
    if kind == "bug":
        return "caught" if s == "failed" else "missed"
    return "false alarm" if s == "failed" else "ok"


def cell(row: dict, checker: str, notes: list) -> str:
    o = row["checkers"][checker]
    v = verdict(row["kind"], o)
    if v in ("n/a", "error"):
        why = o["extra"].get("reason") or o["message"].splitlines()[0][:160]
        if why not in notes:
            notes.append(why)
        mark = f"{v} [{notes.index(why) + 1}]"
        return mark if o["seconds"] is None else f"{mark} · {o['seconds']:.2f} s"
    text = f"**{v}**" if v in ("caught", "false alarm") else v
    if row["kind"] == "bug" and v == "caught":
        text += {"all": " · leaf ✓", "none": " · leaf ✗"}.get(
            named_kind(row, checker), f" · leaf {len(set(row['faulty']) & set(o['named']))}"
            f" of {len(row['faulty'])}")  # fmt: skip
    others = [p for p in o["extra"].get("failed", []) if p not in map(_keystr, row["faulty"])]
    if others:
        text += f" (+ {', '.join(others)})"
    return f"{text} · {o['seconds']:.2f} s"


def named_kind(row: dict, checker: str) -> str:
    """Whether the output names all faulty leaves ("all"), some ("some") or none ("none")."""
    hit = set(row["faulty"]) & set(row["checkers"][checker]["named"])
    return "all" if hit == set(row["faulty"]) else ("some" if hit else "none")


def summary(rows: list, checkers) -> list[str]:
    out = ["| checker | bugs caught | faulty leaf named | false alarms | n/a | errors | "
           "total s |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for c in checkers:
        bugs = [r for r in rows if r["kind"] == "bug"]
        good = [r for r in rows if r["kind"] == "correct"]
        vb = [verdict("bug", r["checkers"][c]) for r in bugs]
        vg = [verdict("correct", r["checkers"][c]) for r in good]
        ran_b = [v for v in vb if v in ("caught", "missed")]
        ran_g = [v for v in vg if v in ("ok", "false alarm")]
        caught = [r for r in bugs if verdict("bug", r["checkers"][c]) == "caught"]
        named = sum(1 for r in caught if named_kind(r, c) == "all")
        partly = sum(1 for r in caught if named_kind(r, c) == "some")
        na = vb.count("n/a") + vg.count("n/a")
        err = vb.count("error") + vg.count("error")
        total = sum(r["checkers"][c]["seconds"] or 0.0 for r in rows)
        out.append(
            f"| {c} | {ran_b.count('caught')} / {len(ran_b)} | {named} / {len(ran_b)}"
            f"{f' (+ {partly} partly)' if partly else ''} | "
            f"{ran_g.count('false alarm')} / {len(ran_g)} | {na} | {err} | {total:.1f} |"
        )
    return out


def markdown(record: dict) -> str:
    m = record["machine"]
    v = m["versions"]
    checkers = record["checkers"]
    lines = [
        "# Gradient checkers compared: planted bugs",
        "",
        f"Generated by `{record['command']}` on {record['date']} ({record['wall_s']:.0f} s). "
        f"Machine: {m['cpu']}, {m['cores']} cores, JAX backend {m['backend']}, load average "
        f"{m['loadavg'][0]:.2f} at the start. Versions: jax {v['jax']}, jaxbp {v['jaxbp']} (git "
        f"{m['git']['commit']}{', uncommitted changes' if m['git']['dirty'] else ''}), chex "
        f"{v['chex']}, torch {v['torch'] or 'not installed'}, numpy {v['numpy']}, Python "
        f"{m['python']}. float64 throughout; the cases and the checkers' settings are described "
        "in the docstring of `benchmarks/verify_compare.py`.",
        "",
        *summary(record["rows"], checkers),
        "",
        "| case | row | " + " | ".join(checkers) + " |",
        "|---|---|" + "---|" * len(checkers),
    ]
    notes: list[str] = []
    for row in record["rows"]:
        label = "correct" if row["kind"] == "correct" else f"bug: {row['bug']}"
        if row["kind"] == "bug":
            label += f" ({', '.join(row['faulty'])})"
        lines.append(
            f"| {row['case']} | {label} | "
            + " | ".join(cell(row, c, notes) for c in checkers) + " |"
        )  # fmt: skip
    lines += [
        "",
        "**caught** / missed: a bug row failed / passed; ok / **false alarm**: a correct row "
        "passed / failed; leaf ✓: the checker's output names every faulty leaf, leaf k of n: "
        "some of them, leaf ✗: none (jaxbp: `report.failed`, other leaves it flagged in "
        'parentheses; torch: "with respect to input k", the first mismatching input only; '
        "check_grads and chex compare one inner product over the whole tree and name none); "
        "seconds: that one call, compilation included where the checker compiles.",
    ]
    if notes:
        lines += [""] + [f"[{i + 1}] {n}" for i, n in enumerate(notes)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="markdown file (JSON beside it)")
    ap.add_argument("--cases", help="comma-separated case names (default all)")
    ap.add_argument("--checkers", default=",".join(CHECKERS), help="comma-separated checkers")
    a = ap.parse_args(argv)
    checkers = [c.strip() for c in a.checkers.split(",") if c.strip()]
    bad = [c for c in checkers if c not in CHECKERS]
    if bad or not checkers:
        ap.error(f"--checkers: unknown {bad}; valid: {', '.join(CHECKERS)}")
    problems = [make() for make in PROBLEMS]
    if a.cases:
        wanted = [c.strip() for c in a.cases.split(",")]
        unknown = [c for c in wanted if c not in {p.name for p in problems}]
        if unknown:
            ap.error(f"--cases: unknown {unknown}; valid: {', '.join(p.name for p in problems)}")
        problems = [p for p in problems if p.name in wanted]
    for problem in problems:
        sanity(problem)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.UTC)
    t_start = time.perf_counter()
    info = machine()
    rows = []
    for problem in problems:
        variants = [(None, problem.grad)] + [(b, b.grad) for b in problem.bugs]
        for bug, grad in variants:
            row = {
                "case": problem.name,
                "what": problem.what,
                "kind": "correct" if bug is None else "bug",
                "bug": None if bug is None else bug.name,
                "faulty": [] if bug is None else list(bug.faulty),
                "checkers": {},
            }
            for c in checkers:
                o = run_one(c, problem, grad, bug)
                row["checkers"][c] = o._asdict()
                print(f"{problem.name:<13} {row['bug'] or 'correct':<20} {c:<12} "
                      f"{verdict(row['kind'], row['checkers'][c]):<12} "
                      f"{'' if o.seconds is None else f'{o.seconds:.2f} s'}",
                      file=sys.stderr, flush=True)  # fmt: skip
            rows.append(row)
    info["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    argv_text = " ".join(sys.argv[1:] if argv is None else argv)
    record = {
        "date": started.isoformat(timespec="seconds"),
        "wall_s": time.perf_counter() - t_start,
        "command": ("python benchmarks/verify_compare.py " + argv_text).strip(),
        "machine": info,
        "checkers": checkers,
        "rows": rows,
    }
    out.write_text(markdown(record))
    out.with_suffix(".json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(out.read_text())
    print(f"wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
