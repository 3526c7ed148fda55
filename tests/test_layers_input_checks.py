"""Every layer checks what it is handed (jaxbp.layers.base, "Inputs are checked"): ``x`` and the
parameters at ``forward``, ``dy`` at ``backward``. A mismatch is one ``ValueError`` line naming
the layer (its ``name``), the argument and both shapes — not an error from inside XLA, and
never a gradient of the wrong shape."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import pytest

from jaxbp.layers import (
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    LayerNorm,
    MaxPool2D,
    RandomShift,
    Relu,
    Residual,
    SelfAttention,
    Sequential,
)
from jaxbp.layers.base import shape_text

F64 = jnp.float64
M = 2  # examples per batch


class Case(NamedTuple):
    """A layer, the example shape it is built for, and what its errors must say."""

    make: Callable  # () -> Layer
    in_shape: tuple  # one example's shape
    bad_x: tuple  # a batch shape forward must refuse
    x_pattern: str  # the shape the message asks for, as text
    named: tuple[str, str] | None = None  # the layers named for x and dy, if not the layer
    train: bool = False
    ints: bool = False  # integer inputs (Embedding's indices)

    def build(self):
        layer = self.make()
        params, _ = layer.init(jax.random.key(0), self.in_shape)
        return layer, params

    def x(self, shape):
        if self.ints:
            return jnp.zeros(shape, jnp.int32)
        return jax.random.normal(jax.random.key(1), shape, F64)

    def forward(self, layer, params, x):
        return layer.forward(params, x, key=jax.random.key(2), train=self.train)


CASES = {
    "Dense": Case(lambda: Dense(3, dtype=F64), (5,), (M, 4), "(m, …, 5)"),
    "Dense-sequence": Case(lambda: Dense(3, dtype=F64), (4, 5), (M, 4, 6), "(m, …, 5)"),
    "Conv2D": Case(
        lambda: Conv2D(4, 3, strides=2, padding="SAME", dtype=F64),
        (9, 9, 3),
        (M, 9, 9, 4),  # the case: 4-channel x, weights for 3
        "(m, H, W, 3)",
    ),
    "Conv2D-im2col": Case(
        lambda: Conv2D(4, 3, algorithm="im2col", dtype=F64), (5, 5, 3), (5, 5, 3), "(m, H, W, 3)"
    ),
    "MaxPool2D": Case(lambda: MaxPool2D(2), (4, 4, 2), (4, 4, 2), "(m, H, W, C)"),
    "AvgPool2D": Case(lambda: AvgPool2D(3, 2, "SAME"), (5, 5, 2), (M, 25, 2), "(m, H, W, C)"),
    "BatchNorm-train": Case(lambda: BatchNorm(dtype=F64), (3,), (M, 4), "(m, …, 3)", train=True),
    "BatchNorm-eval": Case(lambda: BatchNorm(dtype=F64), (4, 4, 3), (M, 4, 4, 2), "(m, …, 3)"),
    "LayerNorm": Case(lambda: LayerNorm(dtype=F64), (3, 4), (M, 3, 5), "(…, 4)"),
    "SelfAttention": Case(lambda: SelfAttention(2, 4, dtype=F64), (3, 5), (M, 3, 6), "(m, T, 5)"),
    "Embedding": Case(lambda: Embedding(6, 3, dtype=F64), (4,), (), "(m, …)", ints=True),
    "Relu": Case(Relu, (3,), (), "(m, …)"),
    "Dropout-train": Case(lambda: Dropout(0.5), (3,), (), "(m, …)", train=True),
    "Dropout-eval": Case(lambda: Dropout(0.5), (3,), (), "(m, …)"),
    "RandomShift-train": Case(
        lambda: RandomShift(1), (4, 4, 1), (4, 4, 1), "(m, H, W, C)", train=True
    ),
    "RandomShift-eval": Case(lambda: RandomShift(1), (4, 4, 1), (M, 16), "(m, H, W, C)"),
    "Flatten": Case(Flatten, (2, 3), (), "(m, …)"),
    # compositions: each layer checks its own x and dy, and names itself
    "Sequential": Case(
        lambda: Sequential(Dense(4, dtype=F64), Relu(), Dense(2, dtype=F64)),
        (5,),
        (M, 6),
        "(m, …, 5)",
        named=("Dense(4)", "Dense(2)"),
    ),
    "Residual": Case(
        lambda: Residual(Dense(5, dtype=F64)), (5,), (M, 6), "(m, …, 5)", named=("Dense(5)",) * 2
    ),
}


def expect_error(call, layer_name: str, arg: str, want: str, got) -> str:
    """``call()`` raises a one-line ValueError that starts with the layer's name and the
    argument and names the shape wanted and the shape received."""
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    head = f"{layer_name}: {arg} must have shape {want}, got shape {shape_text(got)}"
    assert message.startswith(head), message
    assert "\n" not in message
    return message


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_forward_names_a_wrong_x(case):
    layer, params = case.build()
    name = case.named[0] if case.named else layer.name
    expect_error(
        lambda: case.forward(layer, params, case.x(case.bad_x)),
        name,
        "x",
        case.x_pattern,
        case.bad_x,
    )


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_backward_names_a_wrong_dy(case):
    layer, params = case.build()
    y, cache = case.forward(layer, params, case.x((M, *case.in_shape)))
    name = case.named[1] if case.named else layer.name
    for bad in ((*y.shape[:-1], y.shape[-1] + 1), y.shape[1:]):  # a feature too many; no batch
        dy = jnp.ones(bad, y.dtype)
        message = expect_error(
            lambda dy=dy: layer.backward(params, cache, dy), name, "dy", shape_text(y.shape), bad
        )
        assert "forward's output" in message
    layer.backward(params, cache, jnp.ones_like(y))  # the right shape passes


def test_conv_backward_refuses_the_dy_it_once_turned_into_a_wrong_shaped_dW():
    """A (m, 5, 5, 4) dy for a VALID 3×3 kernel on 8×8 images (output 6×6) used to give
    dW of shape (4, 4, 3, 4) for the (3, 3, 3, 4) kernel, silently."""
    for algorithm in ("conv", "im2col"):
        layer = Conv2D(4, 3, algorithm=algorithm, dtype=F64)
        params, _ = layer.init(jax.random.key(0), (8, 8, 3))
        _, cache = layer.forward(params, jnp.ones((M, 8, 8, 3), F64))
        expect_error(
            lambda layer=layer, p=params, c=cache: layer.backward(p, c, jnp.ones((M, 5, 5, 4))),
            f"Conv2D(4, (3, 3), VALID, {algorithm})",
            "dy",
            "(2, 6, 6, 4)",
            (M, 5, 5, 4),
        )


def params_of(layer, in_shape):
    return layer.init(jax.random.key(0), in_shape)[0]


class ParamsCase(NamedTuple):
    """A layer handed ``other()``'s parameters: another layer's, or its own made inconsistent
    (``want is None``: a dict without the layer's keys)."""

    make: Callable
    other: Callable
    in_shape: tuple
    arg: str
    want: str | None
    got: tuple | None
    x_dtype: object = F64


PARAMS_CASES = {
    "Dense": ParamsCase(
        lambda: Dense(3, dtype=F64), lambda: params_of(Dense(4), (5,)), (5,), "params['W']",
        "(3, n_in)", (4, 5),
    ),
    "Conv2D": ParamsCase(
        lambda: Conv2D(4, 3, dtype=F64), lambda: params_of(Conv2D(4, 2), (6, 6, 3)), (6, 6, 3),
        "params['W']", "(3, 3, C_in, 4)", (2, 2, 3, 4),
    ),
    "BatchNorm": ParamsCase(
        lambda: BatchNorm(dtype=F64), lambda: params_of(Dense(3), (3,)), (3,), "params", None,
        None,
    ),
    "LayerNorm": ParamsCase(
        lambda: LayerNorm(dtype=F64), lambda: {"scale": jnp.ones(4), "offset": jnp.zeros(5)},
        (4,), "params['offset']", "(4,)", (5,),
    ),
    "SelfAttention": ParamsCase(
        lambda: SelfAttention(2, 4, dtype=F64), lambda: params_of(SelfAttention(2, 6), (3, 5)),
        (3, 5), "params['Wq']", "(4, d_in)", (6, 5),
    ),
    "Embedding": ParamsCase(
        lambda: Embedding(6, 3, dtype=F64), lambda: params_of(Embedding(7, 3), (4,)), (4,),
        "params['W']", "(6, 3)", (7, 3), jnp.int32,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", PARAMS_CASES.values(), ids=PARAMS_CASES.keys())
def test_forward_and_backward_name_parameters_of_another_layer(case):
    layer = case.make()
    params, other = params_of(layer, case.in_shape), case.other()
    x = jnp.zeros((M, *case.in_shape), case.x_dtype)
    y, cache = layer.forward(params, x)
    for call in (lambda: layer.forward(other, x), lambda: layer.backward(other, cache, y)):
        if case.want is None:
            with pytest.raises(
                ValueError, match=rf"^{re.escape(layer.name)}: params must have keys"
            ):
                call()
        else:
            expect_error(call, layer.name, case.arg, case.want, case.got)


def test_parameters_that_are_not_a_dict_are_named():
    layer = Dense(3)
    with pytest.raises(TypeError, match=r"^Dense\(3\): params must be a dict with keys 'W', 'b'"):
        layer.forward((jnp.ones((3, 5)), jnp.ones(3)), jnp.ones((M, 5)))
    with pytest.raises(TypeError, match=r"^Dense\(3\): x must be an array, got list"):
        layer.forward(layer.init(jax.random.key(0), (5,))[0], [[1.0] * 5])


def test_sequential_names_params_and_caches_of_another_length():
    model = Sequential(Dense(4), Relu())
    params, _ = model.init(jax.random.key(0), (5,))
    x = jnp.ones((M, 5))
    with pytest.raises(ValueError, match=r"^Sequential\(Dense\(4\), relu\): params must have 2 "):
        model.forward(params[:1], x)
    y, cache = model.forward(params, x)
    with pytest.raises(ValueError, match=r"cache must have 2 entries \(one per layer\), got 3"):
        model.backward(params, (*cache, None), y)
    with pytest.raises(TypeError, match=r"params must be a tuple of 2 entries .* got dict"):
        model.forward({"W": 1}, x)


def test_residual_names_a_layer_that_changes_the_shape():
    layer = Residual(Flatten())
    params, _ = layer.init(None, (4,))  # Flatten keeps (4,) …
    with pytest.raises(ValueError, match=r"Flatten maps x of shape \(2, 2, 2\) to \(2, 4\)"):
        layer.forward(params, jnp.ones((M, 2, 2)))  # … but not (2, 2)


def test_checks_run_when_jit_traces_and_see_per_example_shapes_under_vmap():
    layer = Conv2D(4, 3, padding="SAME")
    params, _ = layer.init(jax.random.key(0), (5, 5, 3))
    x = jnp.ones((M, 5, 5, 3))
    want = "(m, H, W, 3)"
    # under jit: raised while tracing, with the same message as eagerly
    expect_error(
        lambda: jax.jit(layer.forward)(params, x[..., :2]), layer.name, "x", want, x[..., :2].shape
    )
    # under vmap over a stack of batches: each call sees one batch (m, H, W, C) and passes …
    y, cache = jax.vmap(lambda xs: layer.forward(params, xs))(jnp.stack([x, x]))
    assert y.shape == (2, M, 5, 5, 4)
    # … and a stack of single images is named with the per-example shape the layer saw
    expect_error(
        lambda: jax.vmap(lambda xi: layer.forward(params, xi))(x), layer.name, "x", want, (5, 5, 3)
    )
    # backward vmapped over a stack of cotangents checks each one against the output's shape
    _, cache = layer.forward(params, x)
    grads, dx = jax.vmap(lambda d: layer.backward(params, cache, d))(jnp.ones((3, M, 5, 5, 4)))
    assert dx.shape == (3, M, 5, 5, 3)
    expect_error(
        lambda: jax.vmap(lambda d: layer.backward(params, cache, d))(jnp.ones((3, M, 5, 5, 3))),
        layer.name, "dy", "(2, 5, 5, 4)", (M, 5, 5, 3),
    )  # fmt: skip


def test_a_cached_shape_that_came_back_from_jit_still_checks_dy():
    """Dropout and RandomShift keep x's shape in the cache; out of ``jit`` it is an array."""
    layer = Dropout(0.5)
    x = jnp.ones((M, 3))
    _, cache = jax.jit(lambda x: layer.forward((), x))(x)
    expect_error(
        lambda: layer.backward((), cache, jnp.ones((M, 4))), layer.name, "dy", "(2, 3)", (M, 4)
    )
    # traced inside another jit, its values are unknown: nothing to compare, and no error
    dx = jax.jit(lambda c, d: layer.backward((), c, d)[1])(cache, jnp.ones((M, 3)))
    assert dx.shape == (M, 3)


def test_embedding_names_a_float_x_with_its_dtype():
    layer = Embedding(6, 3)
    params, _ = layer.init(jax.random.key(0), ())
    with pytest.raises(ValueError, match=r"^Embedding\(6, 3\): x must be an integer array of "):
        layer.forward(params, jnp.zeros((M,), jnp.float32))
