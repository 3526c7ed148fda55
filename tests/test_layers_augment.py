"""RandomShift (eq. L20): each training image translated by its own (u, v), zero fill; the
backward the opposite translation; identity in evaluation; the forgotten sign caught."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import layers
from jaxbp.layers.augment import RandomShift

F64 = jnp.float64


def x_of(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape, F64)


def translated(image, u, v):
    """The definition, pixel by pixel: y[h, w] = x[h − u, w − v] inside the image, else 0."""
    H, W, _ = image.shape
    out = np.zeros_like(image)
    for h in range(H):
        for w in range(W):
            if 0 <= h - u < H and 0 <= w - v < W:
                out[h, w] = image[h - u, w - v]
    return out


@pytest.mark.parametrize("max_shift, shape", [(1, (4, 8, 8, 1)), (2, (3, 5, 7, 2))])
def test_check_layer_passes(max_shift, shape):
    layer = RandomShift(max_shift)
    params, out_shape = layer.init(jax.random.key(0), shape[1:])
    assert params == () and out_shape == shape[1:]
    report = layers.check_layer(
        layer, params, x_of(shape), key=jax.random.key(5), train=True, n_pairs=2
    )
    report.raise_if_failed()
    # y is linear in x for fixed offsets and moves values only: the hand VJP is exact
    assert max(r.norm_rel for r in report.rows if r.oracle == "vjp") == 0.0


def test_forward_is_the_definition_and_backward_its_transpose():
    s, x = 2, x_of((6, 5, 7, 3))
    layer = RandomShift(s)
    y, cache = layer.forward((), x, key=jax.random.key(1), train=True)
    offsets, shape = cache
    assert offsets.shape == (6, 2) and int(jnp.max(jnp.abs(offsets))) <= s and shape == x.shape
    dy = x_of(x.shape, seed=2)
    grads, dx = layer.backward((), cache, dy)
    assert grads == ()
    for i, (u, v) in enumerate(np.asarray(offsets)):
        np.testing.assert_array_equal(y[i], translated(np.asarray(x[i]), u, v))
        # Tᵀ = T_(−u,−v): ∂E/∂x[h, w] = δ[h + u, w + v]
        np.testing.assert_array_equal(dx[i], translated(np.asarray(dy[i]), -u, -v))
    # ⟨T x, δ⟩ = ⟨x, Tᵀ δ⟩ (both sums of the same products, in another order)
    np.testing.assert_allclose(jnp.vdot(y, dy), jnp.vdot(x, dx), rtol=1e-13)


def test_offsets_cover_every_translation_and_each_example_draws_its_own():
    s, m = 1, 4000
    x = jnp.ones((m, 4, 4, 1), F64)
    _, (offsets, _) = RandomShift(s).forward((), x, key=jax.random.key(0), train=True)
    pairs, counts = np.unique(np.asarray(offsets), axis=0, return_counts=True)
    assert len(pairs) == (2 * s + 1) ** 2  # all nine (u, v), the identity among them
    p = 1 / len(pairs)
    assert np.all(np.abs(counts / m - p) < 5 * np.sqrt(p * (1 - p) / m)), counts


def test_keys_decide_and_evaluation_is_the_identity():
    layer, x = RandomShift(1), x_of((16, 8, 8, 1))
    first = layer.forward((), x, key=jax.random.key(3), train=True)[1][0]
    again = layer.forward((), x, key=jax.random.key(3), train=True)[1][0]
    other = layer.forward((), x, key=jax.random.key(4), train=True)[1][0]
    assert jnp.array_equal(first, again) and not jnp.array_equal(first, other)
    for y, cache in (layer.forward((), x), RandomShift(0).forward((), x, train=True)):
        assert cache == (None, x.shape) and y is x  # no offsets; x's shape, for dy's check
        assert layer.backward((), cache, x)[1] is x
    with pytest.raises(ValueError, match=r"^RandomShift\(max_shift=1\): key must be a PRNG key"):
        layer.forward((), x, train=True)


def test_bad_arguments_are_named():
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(ValueError, match=r"^RandomShift: max_shift must be an int ≥ 0"):
            RandomShift(bad)
    with pytest.raises(ValueError, match=r"max_shift 8 must be smaller.*\(8, 9, 1\)"):
        RandomShift(8).init(jax.random.key(0), (8, 9, 1))
    with pytest.raises(ValueError, match=r"in_shape must have 3 axes"):
        RandomShift(1).init(jax.random.key(0), (64,))
    with pytest.raises(ValueError, match=r"max_shift 2 must be smaller.*x of shape \(3, 2, 8, 1\)"):
        RandomShift(2).forward((), jnp.ones((3, 2, 8, 1)))


# --- mutation: the backward translated the same way as the forward ----------------------------


def test_mutation_same_direction_is_caught_and_named():
    """The classic slip: δ moved by (u, v) again instead of back by (−u, −v)."""
    s = 1
    layer = RandomShift(s)

    def backward_same_way(params, cache, dy):
        from jaxbp.layers.augment import _translate

        return (), _translate(dy, s - cache[0], s)

    report = layers.check_layer(
        layer._replace(backward=backward_same_way), (), x_of((4, 6, 6, 1)),
        key=jax.random.key(5), train=True, n_pairs=2,
    )  # fmt: skip
    assert not report.ok and report.failed == ["x"]
    failing = {r.oracle for r in report.rows if not r.ok}
    assert "vjp" in failing and "⟨Jt,c⟩ = ⟨t,Jᵀc⟩ fd" in failing
