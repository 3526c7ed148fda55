"""The LeNet-style network of ``jaxbp train --model cnn``: shapes, checks, and its whole
hand-derived backward against autodiff."""

import jax
import jax.numpy as jnp
import pytest

from jaxbp import layers
from jaxbp.layers.models import lenet

F64 = jnp.float64


@pytest.mark.parametrize(
    ("image", "flat"), [((8, 8, 1), 2 * 2 * 16), ((28, 28, 1), 7 * 7 * 16)], ids=["digits", "mnist"]
)
@pytest.mark.slow
def test_lenet_shapes(image, flat):
    model = lenet(10)
    params, out_shape = model.init(jax.random.key(0), image)
    assert out_shape == (10,)
    dense = [p for p in params if isinstance(p, dict) and p.get("W") is not None]
    assert [p["W"].shape for p in dense] == [
        (5, 5, 1, 6),
        (5, 5, 6, 16),
        (120, flat),
        (84, 120),
        (10, 84),
    ]
    x = jnp.zeros((2, *image), jnp.float32)
    assert model.forward(params, x)[0].shape == (2, 10)


@pytest.mark.slow
def test_lenet_backward_matches_autodiff():
    model = lenet(3, channels=(2, 3), kernel_size=3, hidden=(4,), activation="tanh", dtype=F64)
    params, _ = model.init(jax.random.key(0), (6, 6, 1))
    x = jax.random.normal(jax.random.key(1), (2, 6, 6, 1), F64)
    # the layers' own tests run them eagerly; the whole network runs jitted and vmapped
    report = layers.check_layer(model, params, x, transforms=("vmap",))
    assert report.ok, report
    y = jax.nn.one_hot(jnp.array([0, 2]), 3, dtype=F64)
    hand, ref = jax.jit(
        lambda p: (
            layers.value_and_grad(model, p, x, y, output="softmax_ce", l2=0.1)[1],
            layers.autodiff_value_and_grad(model, p, x, y, output="softmax_ce", l2=0.1)[1],
        )
    )(params)
    for h, r in zip(jax.tree.leaves(hand), jax.tree.leaves(ref), strict=True):
        assert jnp.max(jnp.abs(h - r)) <= 1e-12 * jnp.max(jnp.abs(r))


def test_lenet_rejects_bad_sizes():
    with pytest.raises(ValueError, match=r"channels needs at least one conv block, got \(\)"):
        lenet(10, channels=())
    with pytest.raises(ValueError, match="num_classes must be a positive int, got 0"):
        lenet(0)
    with pytest.raises(ValueError, match="hidden must be a positive int, got -1"):
        lenet(10, hidden=(-1,))
    with pytest.raises(ValueError, match="unknown name 'swish'"):
        lenet(10, activation="swish")
