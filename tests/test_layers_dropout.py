"""Dropout (eq. L15): rate is the probability of DROPPING; inverted scaling; the mask in the
cache; the hand backward against jax.vjp with a fixed key; the mask's statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from jaxbp import layers
from jaxbp.layers.dropout import Dropout

F64 = jnp.float64
N_PAIRS = 2


def x_of(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape, F64)


@pytest.mark.parametrize(
    "shape, train, transforms",
    [
        ((4, 5), True, ("vmap",)),
        pytest.param((4, 5), True, ("eager", "vmap"), marks=pytest.mark.slow),
        pytest.param((3, 2, 4), True, ("vmap",), marks=pytest.mark.slow),
        ((4, 5), False, ()),  # the identity: the jitted rows suffice
    ],
    ids=["train", "train-eager", "train-sequence", "eval"],
)
def test_check_layer_passes(shape, train, transforms):
    layer = Dropout(0.4)
    x = x_of(shape)
    report = layers.check_layer(
        layer, (), x, key=jax.random.key(7), train=train, n_pairs=N_PAIRS, transforms=transforms
    )
    report.raise_if_failed()
    assert {r.path for r in report.rows} == {"x"}
    # y is linear in x for a fixed mask: the hand VJP is the reference to the last bit
    assert max(r.norm_rel for r in report.rows if r.oracle == "vjp") == 0.0


def test_forward_and_backward_use_the_cached_mask():
    layer = Dropout(0.25)
    x = x_of((6, 7))
    y, (mask, shape) = layer.forward((), x, key=jax.random.key(1), train=True)
    assert mask.dtype == jnp.bool_ and mask.shape == x.shape == shape
    assert jnp.array_equal(y, jnp.where(mask, x / 0.75, 0.0))  # kept entries scaled by 1/(1−rate)
    dy = x_of((6, 7), seed=2)
    grads, dx = layer.backward((), (mask, shape), dy)
    assert grads == ()
    assert jnp.array_equal(dx, jnp.where(mask, dy / 0.75, 0.0))  # δ ⊙ mask/(1 − rate)


def test_mask_statistics():
    """rate is the fraction DROPPED (stax's rate was the fraction kept)."""
    rate, n = 0.3, 200_000
    x = jnp.ones((n,), F64)
    y, (mask, _) = Dropout(rate).forward((), x, key=jax.random.key(0), train=True)
    dropped = 1 - float(jnp.mean(mask))
    sigma = (rate * (1 - rate) / n) ** 0.5
    assert abs(dropped - rate) < 5 * sigma, dropped
    assert abs(float(jnp.mean(y)) - 1.0) < 5 * sigma / (1 - rate)  # E[y] = x: inverted dropout
    assert jnp.array_equal(jnp.unique(y), jnp.array([0.0, 1 / (1 - rate)], F64))


def test_keys_decide_the_mask():
    layer, x = Dropout(0.5), x_of((8, 16))
    first = layer.forward((), x, key=jax.random.key(3), train=True)[1][0]
    again = layer.forward((), x, key=jax.random.key(3), train=True)[1][0]
    other = layer.forward((), x, key=jax.random.key(4), train=True)[1][0]
    assert jnp.array_equal(first, again)  # a fixed key: deterministic
    assert not jnp.array_equal(first, other)  # another key: another mask


def test_sequential_gives_two_dropouts_different_masks():
    model = layers.Sequential(Dropout(0.5), Dropout(0.5))
    params, _ = model.init(jax.random.key(0), (64,))
    _, caches = model.forward(params, x_of((4, 64)), key=jax.random.key(1), train=True)
    (mask1, _), (mask2, _) = caches
    assert not jnp.array_equal(mask1, mask2)


def test_identity_in_eval_mode_and_at_rate_zero():
    x = x_of((3, 4))
    y, cache = Dropout(0.5).forward((), x, train=False)
    assert y is x and cache == (None, (3, 4))  # no mask; x's shape, for dy's check
    y, cache = Dropout(0.0).forward((), x, key=jax.random.key(0), train=True)
    assert y is x and cache == (None, (3, 4))
    dy = x_of((3, 4), seed=1)
    assert Dropout(0.5).backward((), cache, dy)[1] is dy


def test_train_without_key_is_named():
    with pytest.raises(
        ValueError, match=r"^Dropout\(rate=0.5\): key must be a PRNG key when train=True"
    ):
        Dropout(0.5).forward((), x_of((2, 3)), train=True)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), "0.5", True, None])
def test_bad_rate_is_named(rate):
    with pytest.raises(ValueError, match=r"Dropout: rate .*must be .*\[0, 1\), got"):
        Dropout(rate)


def test_init_keeps_the_shape():
    assert Dropout(0.1).init(None, (3, 4)) == ((), (3, 4))
