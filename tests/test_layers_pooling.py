"""MaxPool2D / AvgPool2D hand-derived backwards (eqs. L10–L11) against jax.vjp and differences.

Max pooling has kinks wherever two entries of a window tie: the check_layer tests use inputs with
well-separated distinct values (a shuffled grid, spacing 0.1), so no finite-difference step
crosses a tie; the tie rule itself (δ to the first maximum of the window in row-major order) is
tested separately against ``jax.vjp`` exactly, on inputs full of ties.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxbp import layers
from jaxbp.layers.pooling import AvgPool2D, MaxPool2D

VJP_RTOL = 1e-12  # float64: hand backward vs jax.vjp, relative (STYLE.md)
N_PAIRS = 2  # random cotangents per oracle: the checker's minimum keeps the file fast


def separated(shape, seed=0):
    """Distinct values 0.1 apart, shuffled, centred on zero (negatives meet the −∞ padding)."""
    n = int(np.prod(shape))
    values = np.random.default_rng(seed).permutation(n).reshape(shape)
    return jnp.asarray(0.1 * (values - n / 2), jnp.float64)


def out_shape_of(layer, in_shape):
    return layer.init(None, in_shape)[1]  # pooling has no parameters: the key is unused


def worst_vjp_rel(report) -> float:
    """The largest ‖hand − jax.vjp‖ / ‖jax.vjp‖ over the vjp rows (jit, eager, vmap). Elementwise
    max_rel can exceed 1e-12 at entries that are sums cancelling to near zero; the rows' own
    verdict (rtol 1e-12 plus an atol from the leaf's scale) covers those."""
    return max(r.norm_rel for r in report.rows if r.oracle == "vjp")


# (in_shape, window, strides, padding): non-overlapping, overlapping with SAME padding, pairs,
# strides that leave rows no window reaches ((8 − 3) mod 2 = 1, (5 − 2) mod 2 = 1).
LENET = ((7, 7, 2), 2, 2, "SAME")  # lenet's pooling: non-overlapping, one padded row and column
OVERLAPPING = ((7, 8, 2), 3, 2, "SAME")
MORE = [
    ((6, 6, 2), 2, None, "VALID"),
    ((8, 6, 1), (3, 2), (2, 1), "VALID"),
    ((5, 7, 3), 3, 1, "SAME"),
    ((9, 5, 2), (2, 3), (3, 2), "SAME"),
]
slow = pytest.mark.slow
CASES = [
    (MaxPool2D, LENET),
    (MaxPool2D, OVERLAPPING),
    (AvgPool2D, OVERLAPPING),
    pytest.param(AvgPool2D, LENET, marks=slow),
    *(pytest.param(pool, c, marks=slow) for c in MORE for pool in (MaxPool2D, AvgPool2D)),
]


def case_id(v):
    return v.__name__ if callable(v) else "{}-w{}-s{}-{}".format(*v)


@pytest.mark.parametrize("pool, case", CASES, ids=case_id)
def test_check_layer_passes(pool, case):
    in_shape, window, strides, padding = case
    layer = pool(window, strides, padding)
    x = separated((2, *in_shape))
    report = layers.check_layer(layer, (), x, n_pairs=N_PAIRS)
    report.raise_if_failed()
    assert {r.path for r in report.rows} == {"x"}
    assert {r.transform for r in report.rows} >= {"jit", "eager", "vmap"}
    assert worst_vjp_rel(report) <= VJP_RTOL


# --- the tie rule ------------------------------------------------------------------------------

TIE_GEOMETRIES = [
    (2, 2, "SAME"),  # lenet's pooling, on an odd input
    (3, 1, "SAME"),
    ((2, 3), (1, 2), "VALID"),
    pytest.param(3, 2, "SAME", marks=pytest.mark.slow),
    pytest.param(4, 3, "SAME", marks=pytest.mark.slow),
]


def hand_and_vjp(layer):
    """Both backwards, jitted, for a stack of cotangents ``dy`` (one per leading entry)."""

    @jax.jit
    def both(x, dy):
        y, cache = layer.forward((), x)
        _, vjp = jax.vjp(lambda x: layer.forward((), x)[0], x)
        hand = jax.vmap(lambda d: layer.backward((), cache, d)[1])(dy)
        return hand, jax.vmap(lambda d: vjp(d)[0])(dy)

    return both


def one_hots(y_shape):
    """Every one-hot cotangent: the backward of each is one row of the transposed Jacobian."""
    n = int(np.prod(y_shape))
    return jnp.eye(n, dtype=jnp.float64).reshape(n, *y_shape)


def tied_inputs(shape):
    rng = np.random.default_rng(7)
    return {
        "all-equal": jnp.ones(shape, jnp.float64),
        "all-equal-negative": jnp.full(shape, -3.0, jnp.float64),  # ties; a zero pad would win
        "three-levels": jnp.asarray(rng.integers(0, 3, shape), jnp.float64),
    }


@pytest.mark.parametrize("window, strides, padding", TIE_GEOMETRIES, ids=str)
def test_tie_rule_is_exactly_jax_vjp(window, strides, padding):
    """The whole transposed Jacobian (one-hot cotangents: each window's δ alone, no sums, so no
    rounding) equals jax.vjp's bit for bit on inputs full of ties; a random δ, whose shares
    overlapping windows sum in a different order, to rounding."""
    layer = MaxPool2D(window, strides, padding)
    shape = (1, 7, 6, 2)
    y_shape = (1, *out_shape_of(layer, shape[1:]))
    rng = np.random.default_rng(1)
    dy = jnp.concatenate([one_hots(y_shape), jnp.asarray(rng.standard_normal((2, *y_shape)))])
    both = hand_and_vjp(layer)  # one compilation for the three inputs
    for name, x in tied_inputs(shape).items():
        hand, ref = both(x, dy)
        message = f"{layer.name} on the {name} input"
        np.testing.assert_array_equal(hand[:-2], ref[:-2], err_msg=message)
        np.testing.assert_allclose(hand[-2:], ref[-2:], rtol=1e-15, atol=1e-15, err_msg=message)


def test_tie_goes_to_the_first_maximum_in_row_major_order():
    layer = MaxPool2D(2)
    both = hand_and_vjp(layer)
    x = jnp.ones((1, 4, 4, 1), jnp.float64)
    hand, ref = both(x, jnp.ones((1, 1, 2, 2, 1), jnp.float64))
    want = np.zeros((4, 4))
    want[::2, ::2] = 1  # the top-left entry of each window
    np.testing.assert_array_equal(hand[0, 0, :, :, 0], want)
    np.testing.assert_array_equal(ref[0, 0, :, :, 0], want)
    # a window [[0, 1], [1, 0]] in each corner: the 1 at offset (0, 1) comes first
    x = jnp.asarray(np.tile([[0.0, 1.0], [1.0, 0.0]], (2, 2))).reshape(1, 4, 4, 1)
    hand, ref = both(x, jnp.ones((1, 1, 2, 2, 1), jnp.float64))
    want = np.tile([[0.0, 1.0], [0.0, 0.0]], (2, 2))
    np.testing.assert_array_equal(hand[0, 0, :, :, 0], want)
    np.testing.assert_array_equal(ref[0, 0, :, :, 0], want)


def backward_to_every_maximum(params, cache, dy):
    """A plausible wrong tie rule: δ to every entry equal to the window's max."""
    x, y = cache
    kh, kw = 2, 2
    dx = jnp.zeros_like(x)
    for i in range(kh):
        for j in range(kw):
            idx = (slice(None), slice(i, None, kh), slice(j, None, kw), slice(None))
            dx = dx.at[idx].add(jnp.where(x[idx] == y, dy, 0.0))
    return (), dx


def test_the_tie_test_catches_a_rule_that_feeds_every_maximum():
    layer = MaxPool2D(2)
    wrong = layer._replace(backward=backward_to_every_maximum)
    x = jnp.ones((2, 6, 6, 2), jnp.float64)
    dy = jnp.asarray(np.random.default_rng(2).standard_normal((2, 3, 3, 2)), jnp.float64)
    both = hand_and_vjp(wrong)
    hand, ref = both(x, dy[None])
    assert not np.array_equal(hand, ref)
    # while at distinct values it is the right rule, so check_layer's separated inputs cannot see
    # the difference: ties need their own test.
    x = separated((2, 6, 6, 2))
    hand, ref = both(x, dy[None])
    np.testing.assert_array_equal(hand, ref)


# --- forward conventions and shapes ------------------------------------------------------------


def test_avg_pool_same_divides_by_the_window_area_padding_included():
    layer = AvgPool2D(3, 1, "SAME")
    y, _ = layer.forward((), jnp.ones((1, 4, 4, 1), jnp.float64))
    # corners see 4 real entries of 9, edges 6, the inside 9 — all divided by 9.
    want = np.array([[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]]) / 9
    np.testing.assert_allclose(y[0, :, :, 0], want, rtol=1e-15)


def test_max_pool_same_padding_is_never_the_maximum():
    layer = MaxPool2D(3, 2, "SAME")
    x = jnp.full((1, 5, 5, 1), -7.0, jnp.float64)
    y, _ = layer.forward((), x)
    np.testing.assert_array_equal(y, -7.0)


@pytest.mark.parametrize("pool", [MaxPool2D, AvgPool2D], ids=["max", "avg"])
@pytest.mark.parametrize("padding", ["VALID", "SAME"])
@pytest.mark.parametrize("window, strides", [(1, None), (2, None), (3, 2), ((2, 3), (3, 1))])
def test_init_shape_is_the_forward_shape(pool, window, strides, padding):
    layer = pool(window, strides, padding)
    out_shape = out_shape_of(layer, (7, 8, 3))
    y = jax.eval_shape(
        lambda x: layer.forward((), x)[0], jax.ShapeDtypeStruct((2, 7, 8, 3), jnp.float64)
    )
    assert y.shape == (2, *out_shape) and y.dtype == jnp.float64
    ref = jax.eval_shape(
        lambda x: lax.reduce_window(
            x,
            0.0,
            lax.add,
            (1, *layer_window(window), 1),
            (1, *layer_window(window if strides is None else strides), 1),
            padding,
        ),
        jax.ShapeDtypeStruct((2, 7, 8, 3), jnp.float64),
    )
    assert y.shape == ref.shape  # jax.lax's own VALID / SAME


def layer_window(w):
    return (w, w) if isinstance(w, int) else w


def test_strides_default_to_the_window():
    assert MaxPool2D(2).name == "MaxPool2D((2, 2), VALID)"
    assert MaxPool2D(3, 2, "same").name == "MaxPool2D((3, 3), strides=(2, 2), SAME)"
    assert out_shape_of(AvgPool2D((2, 3)), (8, 9, 1)) == (4, 3, 1)


@pytest.mark.parametrize("pool", [MaxPool2D, AvgPool2D], ids=["max", "avg"])
@pytest.mark.parametrize(
    "args, needle",
    [
        ((0,), "window must be a positive int, got 0"),
        (((2, 2, 2),), "window must be an int or a pair of ints, got (2, 2, 2)"),
        ((2, 0), "strides must be a positive int, got 0"),
        ((2, 2, "FULL"), "padding must be 'VALID' or 'SAME', got 'FULL'"),
    ],
)
def test_bad_arguments_are_named(pool, args, needle):
    with pytest.raises(ValueError, match=pool.__name__) as info:
        pool(*args)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    "in_shape, needle",
    [
        ((8, 8), "in_shape must have 3 axes"),
        ((2, 3, 1), "window (3, 3) is larger than the VALID input's spatial shape (2, 3)"),
    ],
)
def test_bad_in_shape_is_named(in_shape, needle):
    for pool in (MaxPool2D, AvgPool2D):
        with pytest.raises(ValueError, match=pool.__name__) as info:
            pool(3).init(None, in_shape)
        assert needle in str(info.value)
    assert out_shape_of(MaxPool2D(3, padding="SAME"), (2, 3, 1)) == (1, 1, 1)


def test_unbatched_input_is_named():
    with pytest.raises(
        ValueError, match=r"^MaxPool2D\(\(2, 2\), VALID\): x must have shape \(m, H, W, C\)"
    ):
        MaxPool2D(2).forward((), jnp.ones((4, 4, 1)))


# --- mutation: max-pool δ spread evenly over the window ----------------------------------------

MUTATION_CASE = ((7, 8, 2), 3, 2, "SAME")


def backward_spread_evenly(params, cache, dy):
    """Max pooling's δ shared evenly by the window (average pooling's rule), not routed."""
    x, _ = cache
    _, window, strides, padding = MUTATION_CASE
    return AvgPool2D(window, strides, padding).backward(params, x.shape, dy)


def test_mutation_spread_evenly_is_caught_and_named():
    in_shape, window, strides, padding = MUTATION_CASE
    layer = MaxPool2D(window, strides, padding)
    x = separated((2, *in_shape))
    report = layers.check_layer(layer._replace(backward=backward_spread_evenly), (), x, n_pairs=2)
    assert not report.ok
    assert report.failed == ["x"]
    failing = {r.oracle for r in report.rows if not r.ok}
    assert "vjp" in failing and "⟨Jt,c⟩ = ⟨t,Jᵀc⟩ fd" in failing
