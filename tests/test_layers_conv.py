"""Conv2D's hand-derived backward (eqs. L7–L9) against jax.vjp, jax.jvp and finite differences.

Float64 throughout (conftest): the backward must match ``jax.vjp`` to ~1e-12 relative (the
default tolerances of :func:`jaxbp.layers.check_layer`). The mutation tests build the three
classic wrong backwards of docs/conv_backward.md and assert that the verifier catches each one
and names the leaf it broke.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxbp import layers
from jaxbp.layers.base import pair
from jaxbp.layers.conv import (
    Conv2D,
    axis_pads,
    col2im,
    im2col_is_faster,
    patches,
    unreached,
    window_geometry,
)
from jaxbp.layers.models import lenet

VJP_RTOL = 1e-12  # float64: hand backward vs jax.vjp, relative (STYLE.md)
N_PAIRS = 2  # random cotangents per oracle: the checker's minimum keeps the file fast

# (in_shape, features, kernel_size, strides, padding): kernels 1..5, strides 1..3, pairs, both
# paddings, strides that leave rows no window reaches ((9 − 5) mod 3 = 1, (7 − 5) mod 3 = 2).
CASES = [
    pytest.param(((5, 5, 2), 3, 1, 1, "VALID"), marks=pytest.mark.slow),
    ((7, 6, 2), 2, (3, 2), (2, 1), "SAME"),
    ((9, 7, 2), 2, 5, 3, "VALID"),
    pytest.param(((7, 8, 3), 2, 3, 2, "SAME"), marks=pytest.mark.slow),
    pytest.param(((8, 9, 1), 3, 4, 3, "SAME"), marks=pytest.mark.slow),
    pytest.param(((6, 5, 4), 2, 2, (1, 3), "VALID"), marks=pytest.mark.slow),
]


def init_spec(layer, in_shape):
    """``layer.init``'s parameter shapes/dtypes and out_shape, traced only (nothing compiled)."""
    out = {}

    def init(key):
        params, out["shape"] = layer.init(key, in_shape)
        return params

    return jax.eval_shape(init, jax.random.key(0)), out["shape"]


def make(in_shape, features, kernel_size, strides, padding, *, seed=0, batch=2, algorithm="auto"):
    """The layer, standard-normal float64 parameters (a non-zero bias too), out_shape and x.

    NumPy draws, not ``jax.random``: eager random draws compile once per shape, which is most
    of the time of a small test on a busy machine.
    """
    layer = Conv2D(features, kernel_size, strides, padding, algorithm=algorithm, dtype=jnp.float64)
    spec, out_shape = init_spec(layer, in_shape)
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), s.dtype), spec)
    x = jnp.asarray(rng.standard_normal((batch, *in_shape)), jnp.float64)
    return layer, params, out_shape, x


def worst_vjp_rel(report) -> float:
    """The largest ‖hand − jax.vjp‖ / ‖jax.vjp‖ over the vjp rows (jit, eager, vmap). Elementwise
    max_rel can exceed 1e-12 at entries that are sums cancelling to near zero; the rows' own
    verdict (rtol 1e-12 plus an atol from the leaf's scale) covers those."""
    return max(r.norm_rel for r in report.rows if r.oracle == "vjp")


def case_id(c):
    return f"{c[0]}-k{c[2]}-s{c[3]}-{c[4]}"


@pytest.mark.parametrize("algorithm", ["conv", "im2col"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_check_layer_passes(case, algorithm):
    layer, params, _, x = make(*case, algorithm=algorithm)
    report = layers.check_layer(layer, params, x, n_pairs=N_PAIRS)
    report.raise_if_failed()
    assert {r.path for r in report.rows} == {"params['W']", "params['b']", "x"}
    assert {r.transform for r in report.rows} >= {"jit", "eager", "vmap"}
    assert worst_vjp_rel(report) <= VJP_RTOL


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["conv", "im2col"])
def test_backward_matches_vjp_on_every_geometry_of_the_issue(algorithm):
    """kernel 1..5 × stride 1..3 × VALID/SAME on an odd input, hand vs jax.vjp elementwise."""
    x = jax.random.normal(jax.random.key(1), (2, 7, 6, 2), jnp.float64)
    for k in range(1, 6):
        for s in (1, 2, 3, (2, 1)):
            for padding in ("VALID", "SAME"):
                layer, params, _, _ = make(x.shape[1:], 2, k, s, padding, algorithm=algorithm)

                @jax.jit
                def both(params, x, layer=layer):
                    y, cache = layer.forward(params, x)
                    c = jax.random.normal(jax.random.key(2), y.shape, y.dtype)
                    _, vjp = jax.vjp(lambda p, x: layer.forward(p, x)[0], params, x)
                    return layer.backward(params, cache, c), vjp(c)

                hand, ref = both(params, x)
                for h, r in zip(jax.tree.leaves(hand), jax.tree.leaves(ref), strict=True):
                    np.testing.assert_allclose(h, r, rtol=VJP_RTOL, atol=0, err_msg=layer.name)


@pytest.mark.parametrize("size, k, s", [(7, 3, 2), (8, 4, 3), (5, 1, 3), (4, 5, 2)])
def test_same_padding_is_jax_lax_same(size, k, s):
    assert [axis_pads(size, k, s, "SAME")] == lax.padtype_to_pads((size,), (k,), (s,), "SAME")
    layer, params, _, x = make((size, size + 1, 2), 2, k, s, "SAME", algorithm="conv")
    im2col = Conv2D(2, k, s, "SAME", algorithm="im2col", dtype=jnp.float64)

    @jax.jit
    def both(params, x):
        want = lax.conv_general_dilated(
            x, params["W"], (s, s), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return layer.forward(params, x)[0], im2col.forward(params, x)[0], want + params["b"]

    y, y_im2col, want = both(params, x)
    np.testing.assert_array_equal(y, want)  # the same XLA convolution: bit for bit
    np.testing.assert_allclose(y_im2col, want, rtol=1e-12, atol=1e-12 * float(abs(want).max()))
    assert y.shape[1:3] == (-(-size // s), -(-(size + 1) // s))  # ⌈H/s⌉


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
@pytest.mark.parametrize("k, s", [(1, 1), (3, 2), ((5, 2), (3, 1)), (4, 3)])
def test_init_shape_is_the_forward_shape(k, s, padding):
    layer = Conv2D(4, k, s, padding, dtype=jnp.float64)
    params, out_shape = init_spec(layer, (9, 7, 3))
    x = jax.ShapeDtypeStruct((2, 9, 7, 3), jnp.float64)
    y = jax.eval_shape(lambda p, x: layer.forward(p, x)[0], params, x)
    assert y.shape == (2, *out_shape) and y.dtype == jnp.float64
    kh, kw = (k, k) if isinstance(k, int) else k
    assert params["W"].shape == (kh, kw, 3, 4) and params["b"].shape == (4,)
    assert params["W"].dtype == params["b"].dtype == jnp.float64


@pytest.mark.parametrize("algorithm", ["conv", "im2col"])
def test_unreached_rows_get_zero_gradient_and_db_is_the_sum_of_delta(algorithm):
    # H = 8, k = 3, s = 3, VALID: windows read rows 0..5, rows 6 and 7 never.
    assert unreached(8, 3, 3, (0, 0)) == 2
    layer, params, _, x = make((8, 8, 1), 2, 3, 3, "VALID", algorithm=algorithm)

    @jax.jit
    def backward(params, x):
        y, cache = layer.forward(params, x)
        delta = jax.random.normal(jax.random.key(3), y.shape, y.dtype)
        return delta, layer.backward(params, cache, delta)

    delta, (grads, dx) = backward(params, x)
    assert np.all(dx[:, 6:, :, :] == 0) and np.all(dx[:, :, 6:, :] == 0)
    assert np.all(dx[:, :6, :6, :] != 0)
    np.testing.assert_allclose(grads["b"], delta.sum(axis=(0, 1, 2)), rtol=1e-14)


# --- im2col: the same equations as a dense layer on patches ----------------------------------


IM2COL_GEOMETRIES = [  # (in_shape, kernel, strides, padding): SAME/VALID, strides, rectangles
    ((7, 6, 3), 3, 1, "SAME"),
    ((9, 7, 2), 5, 3, "VALID"),
    ((7, 6, 2), (3, 2), (2, 1), "SAME"),
    ((8, 9, 1), 4, 3, "SAME"),
]


def test_im2col_computes_the_convolutions_values():
    """Forward, ∂E/∂W, ∂E/∂b and ∂E/∂x of the two algorithms agree in float64 to rounding."""
    for in_shape, k, s, padding in IM2COL_GEOMETRIES:
        conv, params, _, x = make(in_shape, 3, k, s, padding, algorithm="conv")
        im2col = Conv2D(3, k, s, padding, algorithm="im2col", dtype=jnp.float64)

        @jax.jit
        def both(params, x, conv=conv, im2col=im2col):
            out = []
            for layer in (conv, im2col):
                y, cache = layer.forward(params, x)
                delta = jnp.cos(jnp.arange(y.size, dtype=y.dtype)).reshape(y.shape)
                out.append((y, layer.backward(params, cache, delta)))
            return out

        want, got = both(params, x)
        for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12 * float(jnp.max(abs(w))))


def test_col2im_is_the_transpose_of_patches():
    """⟨patches(a), X⟩ = ⟨a, col2im(X)⟩ for every geometry: col2im is the gather's adjoint."""
    rng = np.random.default_rng(4)
    for (H, W, C), k, s, padding in IM2COL_GEOMETRIES:
        kernel, strides = pair(k, "k", "test"), pair(s, "s", "test")
        pads, out = window_geometry((H, W), kernel, strides, padding, "test", "kernel", "a")
        padded = tuple(n + lo + hi for n, (lo, hi) in zip((H, W), pads, strict=True))
        a = jnp.asarray(rng.standard_normal((2, *padded, C)))
        X = jnp.asarray(rng.standard_normal((2, *out, kernel[0] * kernel[1], C)))
        lhs = jnp.vdot(patches(a, kernel, strides, out), X)
        rhs = jnp.vdot(a, col2im(X, kernel, strides, padded))
        np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


@pytest.mark.parametrize(
    "out_spatial, kernel, want",
    [
        ((4, 4), (5, 5), True),
        ((5, 5), (5, 5), True),
        ((8, 8), (5, 5), False),
        ((1, 9), (3, 3), True),
        ((2, 5), (3, 3), False),
        ((14, 14), (5, 5), False),
    ],
)
def test_auto_takes_im2col_only_where_the_output_is_no_larger_than_the_kernel(
    out_spatial, kernel, want
):
    assert im2col_is_faster(out_spatial, kernel) is want
    # the layer follows the rule: SAME, stride 1 keeps the input's spatial shape
    layer, params, _, x = make((*out_spatial, 2), 2, kernel, 1, "SAME")
    forward = str(jax.make_jaxpr(lambda p, x: layer.forward(p, x)[0])(params, x))
    y, cache = layer.forward(params, x)
    backward = str(jax.make_jaxpr(layer.backward)(params, cache, y))
    for text in (forward, backward):
        assert ("conv_general_dilated" in text) is not want


def test_im2col_mutation_col2im_without_the_stride_is_caught_and_named():
    """col2im with no s − 1 zeros between the blocks' rows (the stride forgotten in ∂E/∂x):
    the shapes still fit (blocks padded at the end instead), the values are wrong at x."""
    in_shape, features, k, _, _ = MUTATION_CASE
    layer, params, _, x = make(*MUTATION_CASE, algorithm="im2col")

    def wrong(params, cache, dy):
        grads, _ = layer.backward(params, cache, dy)
        _, _, pads, _ = _geometry(cache)
        padded = [n + lo + hi for n, (lo, hi) in zip(cache.shape[1:3], pads, strict=True)]
        theta = params["W"].reshape(-1, features)
        dX = (dy.reshape(-1, features) @ theta.T).reshape(*dy.shape[:3], k * k, in_shape[2])
        total = 0
        for p in range(k):
            for q in range(k):
                block = dX[:, :, :, p * k + q, :]
                total = total + jnp.pad(
                    block,
                    (
                        (0, 0),
                        (p, padded[0] - p - dy.shape[1]),
                        (q, padded[1] - q - dy.shape[2]),
                        (0, 0),
                    ),
                )
        (top, _), (left, _) = pads
        return grads, total[:, top : top + in_shape[0], left : left + in_shape[1], :]

    report = layers.check_layer(layer._replace(backward=wrong), params, x, n_pairs=N_PAIRS)
    assert report.failed == ["x"]


@pytest.mark.parametrize("check", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_float32_weights_on_float64_data_promote_like_dense(check):
    """y in the promoted dtype (as Dense's x @ Θᵀ), each gradient in its own leaf's dtype."""
    layer = Conv2D(2, 3, 2, "SAME")  # float32 parameters
    spec, _ = init_spec(layer, (5, 5, 2))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), s.dtype), spec)
    x = jnp.asarray(rng.standard_normal((2, 5, 5, 2)), jnp.float64)
    y, cache = jax.eval_shape(layer.forward, params, x)
    grads, dx = jax.eval_shape(layer.backward, params, cache, y)
    assert y.dtype == jnp.float64 and dx.dtype == jnp.float64
    assert grads["W"].dtype == grads["b"].dtype == jnp.float32
    if check:
        layers.check_layer(layer, params, x, n_pairs=N_PAIRS).raise_if_failed()


def test_lenet_builds_on_conv2d_and_maxpool():
    model = lenet(10, dtype=jnp.float64)
    for size in (8, 28):
        params, out_shape = init_spec(model, (size, size, 1))
        x = jax.ShapeDtypeStruct((2, size, size, 1), jnp.float64)

        def forward_backward(params, x):
            y, cache = model.forward(params, x)
            return y, model.backward(params, cache, y)[1]

        y, dx = jax.eval_shape(forward_backward, params, x)
        assert out_shape == (10,) and y.shape == (2, 10) and dx.shape == x.shape


@pytest.mark.parametrize(
    "make_layer, needle",
    [
        (lambda: Conv2D(0, 3), "features must be a positive int, got 0"),
        (lambda: Conv2D(2, (3, 0)), "kernel_size must be a positive int, got 0"),
        (lambda: Conv2D(2, "3"), "kernel_size must be an int or a pair of ints, got '3'"),
        (lambda: Conv2D(2, 3, strides=(1, 2, 3)), "strides must be an int or a pair"),
        (lambda: Conv2D(2, 3, strides=0), "strides must be a positive int, got 0"),
        (lambda: Conv2D(2, 3, padding="FULL"), "padding must be 'VALID' or 'SAME', got 'FULL'"),
        (lambda: Conv2D(2, 3, padding=1), "padding must be 'VALID' or 'SAME', got 1"),
        (lambda: Conv2D(2, 3, scheme="xavier"), "scheme must be one of he, glorot"),
        (
            lambda: Conv2D(2, 3, algorithm="gemm"),
            "algorithm must be one of auto, conv, im2col, got 'gemm'",
        ),
    ],
)
def test_bad_arguments_are_named(make_layer, needle):
    with pytest.raises(ValueError, match="Conv2D") as info:
        make_layer()
    assert needle in str(info.value)


@pytest.mark.parametrize(
    "in_shape, needle",
    [
        ((8, 8), "in_shape must have 3 axes"),
        ((2, 8, 8, 1), "in_shape must have 3 axes"),
        ((4, 8, 1), "kernel_size (5, 3) is larger than the VALID input's spatial shape (4, 8)"),
        ((8, 2, 1), "kernel_size (5, 3) is larger than the VALID input's spatial shape (8, 2)"),
    ],
)
def test_bad_in_shape_is_named(in_shape, needle):
    with pytest.raises(ValueError) as info:
        Conv2D(2, (5, 3)).init(jax.random.key(0), in_shape)
    assert needle in str(info.value)


def test_small_input_is_fine_with_same_padding():
    _, out_shape = init_spec(Conv2D(2, 5, padding="SAME"), (2, 3, 1))
    assert out_shape == (2, 3, 2)


def test_unbatched_input_is_named():
    layer, params, _, x = make((5, 5, 1), 2, 3, 1, "VALID")
    with pytest.raises(ValueError, match=r"VALID\): x must have shape \(m, H, W, 1\), got shape"):
        layer.forward(params, x[0])


# --- mutations: the classic mistakes of docs/conv_backward.md, each caught and named ----------


MUTATION_CASE = ((9, 8, 2), 3, 3, 2, "SAME")  # in_shape, features, kernel, stride, padding


def _right_backward(params, cache, dy):
    return Conv2D(*MUTATION_CASE[1:], dtype=jnp.float64).backward(params, cache, dy)


def _geometry(a):
    _, _, k, s, padding = MUTATION_CASE
    pads = [axis_pads(n, k, s, padding) for n in a.shape[1:3]]
    r = [unreached(n, k, s, p) for n, p in zip(a.shape[1:3], pads, strict=True)]
    return k, s, pads, r


def backward_without_flip(params, cache, dy):
    """dx = δ ∗ W instead of δ ∗ rot180(W): the kernel flip forgotten (dW and db right)."""
    grads, _ = _right_backward(params, cache, dy)
    k, s, pads, r = _geometry(cache)
    dx = lax.conv_general_dilated(
        dy,
        params["W"],  # should be params["W"][::-1, ::-1]
        (1, 1),
        [(k - 1 - lo, k - 1 - hi + ri) for (lo, hi), ri in zip(pads, r, strict=True)],
        lhs_dilation=(s, s),
        dimension_numbers=("NHWC", "HWOI", "NHWC"),
    )
    return grads, dx


def backward_without_stride_dilation(params, cache, dy):
    """dx from δ as if the stride were 1 (no lhs_dilation), padded out to x's shape."""
    grads, _ = _right_backward(params, cache, dy)
    k, _, pads, _ = _geometry(cache)
    # The full correlation of the undilated δ, the forward's low padding cropped, zeros padded
    # on the high side up to x's size: the shape comes out right, only the values are wrong.
    padding = [
        (k - 1 - lo, n - n_dy + lo)
        for n, n_dy, (lo, _) in zip(cache.shape[1:3], dy.shape[1:3], pads, strict=True)
    ]
    dx = lax.conv_general_dilated(
        dy,
        params["W"][::-1, ::-1],
        (1, 1),
        padding,
        dimension_numbers=("NHWC", "HWOI", "NHWC"),
    )
    return grads, dx


def backward_dW_as_convolution(params, cache, dy):
    """∂E/∂W taken as a convolution (flipped result) instead of the correlation Σ δ ⋆ a."""
    grads, dx = _right_backward(params, cache, dy)
    return {"W": grads["W"][::-1, ::-1], "b": grads["b"]}, dx


@pytest.mark.parametrize(
    "wrong, leaf",
    [
        (backward_without_flip, "x"),
        (backward_without_stride_dilation, "x"),
        pytest.param(backward_dW_as_convolution, "params['W']", marks=pytest.mark.slow),
    ],
    ids=["flip-forgotten", "stride-ignored", "dW-flipped"],
)
def test_mutation_is_caught_and_named(wrong, leaf):
    layer, params, _, x = make(*MUTATION_CASE)
    # a bug in the values, not in the shapes (those would fail check_vjp's shape row instead)
    y, cache = jax.eval_shape(layer.forward, params, x)
    right = jax.eval_shape(layer.backward, params, cache, y)
    assert jax.eval_shape(wrong, params, cache, y) == right

    report = layers.check_layer(layer._replace(backward=wrong), params, x, n_pairs=N_PAIRS)
    assert not report.ok
    assert report.failed == [leaf]
    failing = {r.oracle for r in report.rows if not r.ok}
    assert "vjp" in failing and "⟨Jt,c⟩ = ⟨t,Jᵀc⟩ fd" in failing  # autodiff and fd both see it
    with pytest.raises(AssertionError, match="failed at 1 leaf"):
        report.raise_if_failed()
