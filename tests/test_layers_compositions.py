"""Hypothesis-generated compositions: random stacks of layers on random shapes, each network's
chained hand-derived backward (eq. L5) against jax.vjp and finite differences.

Two families, drawn layer by layer so that every shape is legal by construction:

- images (m, H, W, C) → [Conv2D | activation | MaxPool2D | AvgPool2D | BatchNorm]* → Flatten →
  [Dense | activation | LayerNorm | Dropout | Residual(Dense)]* → Dense(K);
- sequences (m, T, d) → [SelfAttention (causal or not) | LayerNorm | Residual(Dense) |
  activation]* → Flatten → Dense(K).

Activations are the smooth ones (tanh, softplus, sigmoid) so that finite differences never cross
a relu kink; max pooling's routing is still exercised (its inputs are continuous, ties have
probability zero). On failure hypothesis shrinks to the smallest failing stack, printed by name.
"""

import jax
import jax.numpy as jnp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxbp import layers

F64 = jnp.float64
SMOOTH = ("tanh", "softplus", "sigmoid")
QUICK = settings(max_examples=2, deadline=None, derandomize=True, database=None)
THOROUGH = settings(max_examples=15, deadline=None, derandomize=True, database=None)


def _conv_out(size, k, s, pad):
    return (size - k) // s + 1 if pad == "VALID" else -(-size // s)


@st.composite
def image_networks(draw):
    """A random image network and its one-example input shape (H, W, C)."""
    shape = h, w, c = draw(st.integers(4, 7)), draw(st.integers(4, 7)), draw(st.integers(1, 2))
    stack = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["conv", "act", "maxpool", "avgpool", "batchnorm"]))
        if kind == "conv":
            k, s = draw(st.integers(1, min(3, h, w))), draw(st.integers(1, 2))
            pad, c = draw(st.sampled_from(["VALID", "SAME"])), draw(st.integers(1, 3))
            stack.append(layers.Conv2D(c, k, strides=s, padding=pad, dtype=F64))
            h, w = _conv_out(h, k, s, pad), _conv_out(w, k, s, pad)
        elif kind == "act":
            stack.append(layers.Elementwise(draw(st.sampled_from(SMOOTH))))
        elif kind in ("maxpool", "avgpool") and min(h, w) >= 2:
            s = draw(st.integers(1, 2))
            stack.append((layers.MaxPool2D if kind == "maxpool" else layers.AvgPool2D)(2, s))
            h, w = _conv_out(h, 2, s, "VALID"), _conv_out(w, 2, s, "VALID")
        elif kind == "batchnorm":
            # after a nonlinearity: straight after a conv, BatchNorm cancels the conv's bias (and a
            # 1-channel kernel's scale), whose true gradient is then zero and both sides rounding
            # noise that no relative tolerance can judge (the attention key bias, likewise)
            act = layers.Elementwise(draw(st.sampled_from(SMOOTH)))
            stack += [act, layers.BatchNorm(dtype=F64)]
    stack.append(layers.Flatten())
    n = h * w * c
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["dense", "act", "layernorm", "dropout", "residual"]))
        if kind == "dense":
            n = draw(st.integers(2, 5))
            stack.append(layers.Dense(n, dtype=F64))
        elif kind == "act":
            stack.append(layers.Elementwise(draw(st.sampled_from(SMOOTH))))
        elif kind == "layernorm" and n > 1:
            stack.append(layers.LayerNorm(dtype=F64))
        elif kind == "dropout":
            stack.append(layers.Dropout(0.25))
        elif kind == "residual":
            stack.append(
                layers.Residual(layers.Sequential(layers.Dense(n, dtype=F64), layers.Tanh()))
            )
    stack.append(layers.Dense(draw(st.integers(2, 3)), dtype=F64))
    return layers.Sequential(*stack), shape


@st.composite
def sequence_networks(draw):
    """A random attention network and its one-example input shape (T, d)."""
    t, d = draw(st.integers(1, 4)), draw(st.sampled_from([2, 4]))
    stack = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["attention", "layernorm", "residual", "act"]))
        if kind == "attention":
            heads = draw(st.sampled_from([1, 2]))
            causal = draw(st.booleans())
            stack.append(layers.SelfAttention(heads, d, causal=causal, dtype=F64))
        elif kind == "layernorm":
            stack.append(layers.LayerNorm(dtype=F64))
        elif kind == "residual":
            stack.append(layers.Residual(layers.Dense(d, dtype=F64)))
        else:
            stack.append(layers.Elementwise(draw(st.sampled_from(SMOOTH))))
    stack += [layers.Flatten(), layers.Dense(draw(st.integers(2, 3)), dtype=F64)]
    return layers.Sequential(*stack), (t, d)


def _check(network, seed):
    model, in_shape = network
    params, _ = model.init(jax.random.key(seed), in_shape)
    x = jax.random.normal(jax.random.key(seed + 1), (3, *in_shape), F64)
    report = layers.check_layer(
        model, params, x, key=jax.random.key(seed + 2), train=True, transforms=("vmap",)
    )
    assert report.ok, f"{model.name} on {in_shape}:\n{report}"


@pytest.mark.slow
@QUICK
@given(image_networks(), st.integers(0, 2**16))
def test_random_image_networks(network, seed):
    _check(network, seed)


@pytest.mark.slow
@QUICK
@given(sequence_networks(), st.integers(0, 2**16))
def test_random_attention_networks(network, seed):
    _check(network, seed)


@pytest.mark.slow
@THOROUGH
@given(image_networks(), st.integers(0, 2**16))
def test_many_random_image_networks(network, seed):
    _check(network, seed)


@pytest.mark.slow
@THOROUGH
@given(sequence_networks(), st.integers(0, 2**16))
def test_many_random_attention_networks(network, seed):
    _check(network, seed)
