"""The JAX training steps the benchmark times: one gradient source each, same optimizer.

A step is forward pass, gradient and optimizer update in one ``jit``, with the parameter and
optimizer-state buffers donated so that XLA updates them in place — what a training loop runs.
The gradient sources, each a table label for a source of the registry :mod:`jaxbp.sources`
(:data:`METHOD_SOURCES`), called without ``l2`` (no penalty):

========== ============ =================================================================
label      source       gradient
========== ============ =================================================================
hand       manual       :func:`jaxbp.value_and_grad` — the batched δ recursion (eqs. B1–B4)
scan       scan         :func:`jaxbp.scan_value_and_grad` — the lecture's per-sample loop (B5)
vmap       vmap         mean of per-example δ aᵀ by ``jax.vmap``
custom_vjp custom_vjp   ``jax.value_and_grad(jaxbp.loss)`` — reverse mode calling our rule
autodiff   autodiff     :func:`jaxbp.autodiff_value_and_grad` — plain ``jax.grad`` of the cost
========== ============ =================================================================
"""

from __future__ import annotations

import contextlib
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxbp
from jaxbp import sources
from jaxbp.bench.configs import Config, n_params

METHOD_SOURCES = {
    "hand": "manual",
    "scan": "scan",
    "vmap": "vmap",
    "custom_vjp": "custom_vjp",
    "autodiff": "autodiff",
}
"""The benchmark's table label of each JAX method → its name in :data:`jaxbp.sources.SOURCES`."""

JAX_METHODS = tuple(METHOD_SOURCES)

PER_EXAMPLE_LIMIT_BYTES = 2 << 30
"""``vmap`` materialises m per-example gradients; above this many bytes it is skipped."""


class Prepared(NamedTuple):
    """A method ready to time, or the reason it is not.

    Attributes:
      status: ``ok``, ``skipped``, ``not installed`` or ``unsupported``.
      run: ``run(n)`` performing n training steps and blocking on the last (None unless ok).
      compile_s: seconds to lower and compile the step (None where there is no compile).
      memory_bytes: XLA's buffers for the step: arguments + outputs + temporaries − donated
        aliases (None where not measured).
      reason: why the method is not ``ok``; empty otherwise.
      params: ``params()`` → the current parameters as a tuple of ``Layer`` of numpy arrays in
        jaxbp's layout (W: (n_out, n_in)), to check that every method trains the same network.
      device: where a peer runs when that is not obvious (``cpu``, ``cuda``); empty for JAX.
    """

    status: str
    run: object = None
    compile_s: float | None = None
    memory_bytes: int | None = None
    reason: str = ""
    params: object = None
    device: str = ""


class Problem(NamedTuple):
    """One configuration's data: initial parameters, inputs and integer labels."""

    params: jaxbp.params.Params
    x: jax.Array
    y: jax.Array


def make_problem(config: Config, *, dtype=jnp.float32, seed: int = 0) -> Problem:
    """Glorot-initialised parameters, standard-normal inputs and uniform labels, from ``seed``."""
    k_p, k_x, k_y = jax.random.split(jax.random.key(seed), 3)
    params = jaxbp.init_params(k_p, config.sizes, scheme="glorot", dtype=dtype)
    x = jax.random.normal(k_x, (config.batch, config.sizes[0]), dtype)
    y = jax.random.randint(k_y, (config.batch,), 0, config.sizes[-1])
    return Problem(params, x, y)


def value_and_grad_fn(method: str, activation):
    """``(params, x, y) -> (J, grads)`` for a JAX method name (module docstring)."""
    if method not in METHOD_SOURCES:
        raise ValueError(f"method: unknown JAX method {method!r}; valid: {', '.join(JAX_METHODS)}")
    fn = sources.source(METHOD_SOURCES[method])
    kw = dict(activation=activation, output="softmax_ce")
    return lambda p, x, y: fn(p, x, y, **kw)


def make_step(value_and_grad, optimizer: optax.GradientTransformation):
    """The jitted training step ``(params, opt_state, x, y) -> (params, opt_state, J)``.

    The optimizer update runs inside the same ``jit`` as the gradient, and ``params`` and
    ``opt_state`` are donated: their buffers are reused for the updated values.
    """

    def step(params, opt_state, x, y):
        J, grads = value_and_grad(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, J

    return jax.jit(step, donate_argnums=(0, 1))


def memory_bytes(compiled) -> int | None:
    """Arguments + outputs + temporaries − aliased (donated) bytes of a compiled step."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # some backends do not implement it
        return None
    if m is None:
        return None
    return int(
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        + m.temp_size_in_bytes
        - m.alias_size_in_bytes
    )


def prepare_jax(
    method: str,
    problem: Problem,
    *,
    activation="sigmoid",
    lr: float = 0.1,
    precision: str | None = None,
) -> Prepared:
    """Compiles the training step of ``method`` and returns its runner (see :class:`Prepared`).

    Args:
      method: one of :data:`JAX_METHODS`.
      problem: parameters and data; the parameters are copied (the step donates its copy).
      activation: hidden activation name.
      lr: SGD learning rate.
      precision: ``jax.default_matmul_precision`` for the step (e.g. ``"bfloat16"``), or None.
    """
    params, x, y = problem
    if method == "vmap":
        need = x.shape[0] * n_params([p.W.shape[1] for p in params] + [params[-1].W.shape[0]])
        need *= x.dtype.itemsize
        if need > PER_EXAMPLE_LIMIT_BYTES:
            return Prepared(
                "skipped",
                reason=f"m per-example gradients need {need / 2**30:.1f} GiB "
                f"(limit {PER_EXAMPLE_LIMIT_BYTES / 2**30:.0f} GiB)",
            )
    optimizer = optax.sgd(lr)
    step = make_step(value_and_grad_fn(method, activation), optimizer)
    state = [jax.tree.map(jnp.array, params)]  # a private copy: the step donates it
    state.append(optimizer.init(state[0]))
    ctx = jax.default_matmul_precision(precision) if precision else contextlib.nullcontext()
    with ctx:
        t0 = time.perf_counter()
        compiled = step.lower(state[0], state[1], x, y).compile()
        compile_s = time.perf_counter() - t0

    def run(n: int) -> None:
        out = None
        for _ in range(n):
            state[0], state[1], J = compiled(state[0], state[1], x, y)
            out = J
        jax.block_until_ready((state[0], out))

    def current():
        return tuple(jaxbp.Layer(np.asarray(p.W), np.asarray(p.b)) for p in state[0])

    return Prepared("ok", run, compile_s, memory_bytes(compiled), params=current)
