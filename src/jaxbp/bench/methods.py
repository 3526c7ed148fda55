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

``hand_bf16`` (:data:`BF16_METHOD`) is ``hand`` with ``precision="bf16"``: every product in
bfloat16 with float32 accumulation, float32 master parameters and update (MLP only).

The convolutional configuration (``Config.model`` set: LeNet, :mod:`jaxbp.layers`) has its own
three (:data:`CNN_METHODS`), from :mod:`jaxbp.layers.network` on the network of
:func:`jaxbp.layers.models.lenet`:

========== =================================================================================
label      gradient
========== =================================================================================
hand       :func:`jaxbp.layers.value_and_grad` — every layer's hand-derived backward, chained
custom_vjp ``jax.value_and_grad(jaxbp.layers.loss)`` — reverse mode calling that backward
autodiff   :func:`jaxbp.layers.autodiff_value_and_grad` — ``jax.grad`` of the same forward pass
========== =================================================================================

``scan`` and ``vmap`` are MLP-only sources and are ``unsupported`` there. The integer labels
become one-hot targets inside the step, the same for every method.
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
from jaxbp.bench.configs import Config, LeNet, n_params

METHOD_SOURCES = {
    "hand": "manual",
    "scan": "scan",
    "vmap": "vmap",
    "custom_vjp": "custom_vjp",
    "autodiff": "autodiff",
}
"""The benchmark's table label of each JAX method → its name in :data:`jaxbp.sources.SOURCES`."""

BF16_METHOD = "hand_bf16"
"""The hand-derived step with ``precision="bf16"`` (:func:`jaxbp.value_and_grad`): the products
in bfloat16 with float32 accumulation, float32 master parameters and update (MLP only)."""

JAX_METHODS = (*METHOD_SOURCES, BF16_METHOD)

CNN_METHODS = ("hand", "custom_vjp", "autodiff")
"""The JAX methods defined for the convolutional configuration (module docstring)."""

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
      detail: how a peer runs, shown beside ``device`` (torch's LeNet: its memory layout).
    """

    status: str
    run: object = None
    compile_s: float | None = None
    memory_bytes: int | None = None
    reason: str = ""
    params: object = None
    device: str = ""
    detail: str = ""


class Problem(NamedTuple):
    """One configuration's data: initial parameters, inputs and integer labels.

    Attributes:
      params: a tuple of :class:`jaxbp.Layer` (MLP), or the :mod:`jaxbp.layers` parameters of
        the LeNet (a tuple with one entry per layer: dicts ``{"W", "b"}`` or ``()``).
      x: (m, n_in) rows, or (m, H, W, C) images (NHWC).
      y: (m,) integer labels.
      model: None (MLP) or the :class:`~jaxbp.bench.configs.LeNet` that ``params`` belong to.
    """

    params: object
    x: jax.Array
    y: jax.Array
    model: LeNet | None = None


def lenet(spec: LeNet, activation: str = "relu", *, dtype=jnp.float32):
    """The :mod:`jaxbp.layers` network of ``spec`` (:func:`jaxbp.layers.models.lenet`)."""
    from jaxbp.layers.models import lenet as build

    return build(
        spec.classes,
        channels=spec.channels,
        kernel_size=spec.kernel,
        hidden=spec.hidden,
        activation=activation,
        dtype=dtype,
    )


def make_problem(config: Config, *, dtype=jnp.float32, seed: int = 0) -> Problem:
    """Initial parameters, standard-normal inputs and uniform labels, from ``seed``.

    MLP: Glorot-initialised :func:`jaxbp.init_params`. CNN: ``init`` of the LeNet's layers (He
    for the convolutions and dense layers, zero biases); the activation, which has no
    parameters, is chosen when a method is prepared.
    """
    k_p, k_x, k_y = jax.random.split(jax.random.key(seed), 3)
    spec = config.model
    if spec is None:
        params = jaxbp.init_params(k_p, config.sizes, scheme="glorot", dtype=dtype)
        x = jax.random.normal(k_x, (config.batch, config.sizes[0]), dtype)
        y = jax.random.randint(k_y, (config.batch,), 0, config.sizes[-1])
        return Problem(params, x, y)
    params, _ = lenet(spec, dtype=dtype).init(k_p, spec.image)
    x = jax.random.normal(k_x, (config.batch, *spec.image), dtype)
    y = jax.random.randint(k_y, (config.batch,), 0, spec.classes)
    return Problem(params, x, y, spec)


def value_and_grad_fn(method: str, activation):
    """``(params, x, y) -> (J, grads)`` for a JAX method name (module docstring)."""
    kw = dict(activation=activation, output="softmax_ce")
    if method == BF16_METHOD:
        return lambda p, x, y: jaxbp.value_and_grad(p, x, y, precision="bf16", **kw)
    if method not in METHOD_SOURCES:
        raise ValueError(f"method: unknown JAX method {method!r}; valid: {', '.join(JAX_METHODS)}")
    fn = sources.source(METHOD_SOURCES[method])
    return lambda p, x, y: fn(p, x, y, **kw)


def cnn_value_and_grad_fn(method: str, model, num_classes: int):
    """``(params, x, y) -> (J, grads)`` of the :mod:`jaxbp.layers` network ``model`` for a name
    of :data:`CNN_METHODS`; ``y`` holds integer labels, made one-hot inside."""
    from jaxbp import layers

    if method not in CNN_METHODS:
        raise ValueError(
            f"method: {method!r} is not defined for the CNN; valid: {', '.join(CNN_METHODS)}"
        )
    kw = dict(output="softmax_ce")

    def targets(x, y):
        return jax.nn.one_hot(y, num_classes, dtype=x.dtype)

    if method == "custom_vjp":

        def custom(p, x, y):
            Y = targets(x, y)
            return jax.value_and_grad(lambda q: layers.loss(model, q, x, Y, **kw))(p)

        return custom
    fn = layers.value_and_grad if method == "hand" else layers.autodiff_value_and_grad

    def value_and_grad(p, x, y):
        (J, _), grads = fn(model, p, x, targets(x, y), **kw)
        return J, grads

    return value_and_grad


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
    params, x, y, spec = problem
    if spec is not None:
        if method not in CNN_METHODS:
            return Prepared(
                "unsupported",
                reason=f"n/a: {method} is a source for the MLP only (jaxbp.sources); the CNN "
                f"has {', '.join(CNN_METHODS)}",
            )
        if not isinstance(activation, str):
            return Prepared("unsupported", reason="the CNN takes one activation name")
        vg = cnn_value_and_grad_fn(method, lenet(spec, activation, dtype=x.dtype), spec.classes)
    elif method == "vmap":
        need = x.shape[0] * n_params([p.W.shape[1] for p in params] + [params[-1].W.shape[0]])
        need *= x.dtype.itemsize
        if need > PER_EXAMPLE_LIMIT_BYTES:
            return Prepared(
                "skipped",
                reason=f"m per-example gradients need {need / 2**30:.1f} GiB "
                f"(limit {PER_EXAMPLE_LIMIT_BYTES / 2**30:.0f} GiB)",
            )
    if method == BF16_METHOD and x.dtype != jnp.float32:
        return Prepared(
            "unsupported",
            reason=f"bf16 compute keeps float32 master parameters; got dtype {x.dtype}",
        )
    if spec is None:
        vg = value_and_grad_fn(method, activation)
    optimizer = optax.sgd(lr)
    step = make_step(vg, optimizer)
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
        if spec is not None:
            return jax.tree.map(np.asarray, state[0])
        return tuple(jaxbp.Layer(np.asarray(p.W), np.asarray(p.b)) for p in state[0])

    return Prepared("ok", run, compile_s, memory_bytes(compiled), params=current)
