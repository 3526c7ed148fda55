"""BatchNorm and LayerNorm (eqs. L12–L14): hand-derived backwards against jax.vjp and finite
differences, the running statistics of update_state, and the coupling mutation caught and named.

Parameters are perturbed away from their initial 1 / 0 (and the running statistics away from
0 / 1) so that every term of the backward is exercised with non-trivial values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from jaxbp import layers
from jaxbp.layers.normalization import BatchNorm, LayerNorm

F64 = jnp.float64
VJP_RTOL = 1e-12  # float64: hand backward vs jax.vjp, norm-relative (STYLE.md)
N_PAIRS = 2  # random cotangents per oracle: the checker's minimum keeps the file fast
# The eager row compiles every primitive separately (seconds each): one case per layer runs it,
# the others the jitted and vmapped rows only.
EAGER = ("eager", "vmap")
VMAP = ("vmap",)
STATE_PATHS = {"params['state']['mean']", "params['state']['var']"}


def perturbed(params, seed):
    """Every float leaf moved by N(0, 0.3²); running variances kept positive."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    moved = [
        leaf + 0.3 * jax.random.normal(k, leaf.shape, leaf.dtype)
        for leaf, k in zip(leaves, keys, strict=True)
    ]
    params = jax.tree.unflatten(tree, moved)
    if "state" in params:
        params["state"]["var"] = jnp.abs(params["state"]["var"]) + 0.2
    return params


def make(layer, in_shape, m, seed=0):
    params, out_shape = layer.init(jax.random.key(seed), in_shape)
    assert out_shape == in_shape
    x = 1.5 * jax.random.normal(jax.random.key(seed + 1), (m, *in_shape), F64) + 0.7
    return perturbed(params, seed + 2), x


def worst_vjp_rel(report) -> float:
    """The largest ‖hand − jax.vjp‖ / ‖jax.vjp‖ over the vjp rows (jit, eager, vmap)."""
    return max(r.norm_rel for r in report.rows if r.oracle == "vjp" and r.norm_rel == r.norm_rel)


# --- check_layer -------------------------------------------------------------------------------

BN_CASES = [
    ((3,), 4, True, EAGER),
    ((3,), 4, False, ()),  # the jitted rows; the vmap row runs in training mode
    ((3, 2, 2), 2, True, VMAP),  # NHWC: statistics over m·H·W = 8 values per channel
    pytest.param((3, 2, 2), 2, False, VMAP, marks=pytest.mark.slow),
    pytest.param((3,), 4, False, EAGER, marks=pytest.mark.slow),
    pytest.param((2,), 1, True, EAGER, marks=pytest.mark.slow),  # one example: σ² = 0, â = 0
    pytest.param((4, 3, 2), 3, True, EAGER, marks=pytest.mark.slow),
    pytest.param((3, 2, 2), 2, True, EAGER, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("in_shape, m, train, transforms", BN_CASES, ids=str)
def test_batchnorm_check_layer_passes(in_shape, m, train, transforms):
    params, x = make(BatchNorm(dtype=F64), in_shape, m)
    report = layers.check_layer(
        BatchNorm(dtype=F64), params, x, train=train, n_pairs=N_PAIRS, transforms=transforms
    )
    report.raise_if_failed()
    assert {r.path for r in report.rows} == {
        "x",
        "params['scale']",
        "params['offset']",
        *STATE_PATHS,
    }
    assert worst_vjp_rel(report) <= VJP_RTOL


@pytest.mark.parametrize(
    "in_shape, transforms",
    [((3, 4), VMAP), pytest.param((5,), EAGER, marks=pytest.mark.slow)],
    ids=["sequence", "rows"],
)
def test_layernorm_check_layer_passes(in_shape, transforms):
    params, x = make(LayerNorm(dtype=F64), in_shape, 3)
    report = layers.check_layer(
        LayerNorm(dtype=F64), params, x, n_pairs=N_PAIRS, transforms=transforms
    )
    report.raise_if_failed()
    assert {r.path for r in report.rows} == {"x", "params['scale']", "params['offset']"}
    assert worst_vjp_rel(report) <= VJP_RTOL


def test_batchnorm_state_gradients():
    """Training mode: y does not depend on the running statistics, so their gradient is exactly
    zero; evaluation mode: it is not (the true derivative, eq. L13)."""
    layer = BatchNorm(dtype=F64)
    params, x = make(layer, (3,), 4)
    dy = jax.random.normal(jax.random.key(9), x.shape, F64)
    for train in (True, False):
        _, cache = layer.forward(params, x, train=train)
        grads, _ = layer.backward(params, cache, dy)
        for k in ("mean", "var"):
            zero = bool(jnp.all(grads["state"][k] == 0))
            assert zero is train, (train, k, grads["state"][k])


# --- running statistics ------------------------------------------------------------------------


@pytest.mark.parametrize("in_shape", [(3,), (2, 2, 3)], ids=["rows", "nhwc"])
def test_update_state_is_the_momentum_formula_and_eval_uses_it(in_shape):
    layer = BatchNorm(momentum=0.8, epsilon=1e-3, dtype=F64)
    params, x = make(layer, in_shape, 4)
    axes = tuple(range(x.ndim - 1))
    y, cache = layer.forward(params, x, train=True)
    new = layer.update_state(params, cache)

    mu, var = jnp.mean(x, axis=axes), jnp.var(x, axis=axes)  # biased, as documented
    old = params["state"]
    assert jnp.allclose(new["state"]["mean"], 0.8 * old["mean"] + 0.2 * mu, rtol=1e-14)
    assert jnp.allclose(new["state"]["var"], 0.8 * old["var"] + 0.2 * var, rtol=1e-14)
    for k in ("scale", "offset"):
        assert new[k] is params[k]
    # training mode normalised by the batch's own statistics
    want = params["scale"] * (x - mu) / jnp.sqrt(var + 1e-3) + params["offset"]
    assert jnp.allclose(y, want, rtol=1e-13, atol=1e-13)

    # evaluation mode: the running statistics, and update_state leaves params alone
    y_eval, cache_eval = layer.forward(new, x, train=False)
    s = new["state"]
    want = new["scale"] * (x - s["mean"]) / jnp.sqrt(s["var"] + 1e-3) + new["offset"]
    assert jnp.allclose(y_eval, want, rtol=1e-13, atol=1e-13)
    assert layer.update_state(new, cache_eval) is new


def test_update_state_under_jit_keeps_the_dtype():
    layer = BatchNorm(dtype=jnp.float32)
    params, _ = layer.init(jax.random.key(0), (3,))
    x = jax.random.normal(jax.random.key(1), (4, 3), F64)  # a float64 batch, float32 state

    @jax.jit
    def step(p, x):
        _, cache = layer.forward(p, x, train=True)
        return layer.update_state(p, cache)

    new = step(params, x)
    assert jax.tree.map(lambda a: a.dtype, new) == jax.tree.map(lambda a: a.dtype, params)
    assert jnp.allclose(new["state"]["mean"], 0.1 * jnp.mean(x, axis=0), rtol=1e-6)


def test_sequential_dense_batchnorm_relu_update_state():
    model = layers.Sequential(layers.Dense(3, dtype=F64), BatchNorm(dtype=F64), layers.Relu())
    params, _ = model.init(jax.random.key(0), (2,))
    x = jax.random.normal(jax.random.key(1), (4, 2), F64)
    _, cache = model.forward(params, x, train=True)
    new = model.update_state(params, cache)

    z = x @ params[0]["W"].T + params[0]["b"]  # BatchNorm's input
    assert jnp.allclose(new[1]["state"]["mean"], 0.1 * jnp.mean(z, axis=0), rtol=1e-14)
    assert jnp.allclose(new[1]["state"]["var"], 0.9 + 0.1 * jnp.var(z, axis=0), rtol=1e-14)
    assert new[0] is params[0] and new[2] is params[2]
    # a second step starts from the first's statistics
    _, cache = model.forward(new, x, train=True)
    newer = model.update_state(new, cache)
    assert jnp.allclose(newer[1]["state"]["mean"], 0.19 * jnp.mean(z, axis=0), rtol=1e-14)


# --- mutations ---------------------------------------------------------------------------------


def backward_without_coupling(params, cache, dy):
    """Batch norm's μ and σ treated as constants in training mode: δ_in = γ s δ (the Σ terms of
    eq. L12 dropped). Parameter and state gradients right."""
    grads, _ = BatchNorm(dtype=F64).backward(params, cache, dy)
    return grads, params["scale"] * cache["inv_std"] * dy


def layernorm_scale_outside_sums(params, cache, dy):
    """LayerNorm with γ factored out of the sums, as it may be for BatchNorm (one γ per channel)
    but not here (one γ per summed feature): δ_in = (γ s/N)(N δ − Σδ − â Σ δ â)."""
    grads, _ = LayerNorm(dtype=F64).backward(params, cache, dy)
    x_hat, inv_std = cache
    n = dy.shape[-1]
    sum_dy = jnp.sum(dy, axis=-1, keepdims=True)
    sum_dy_xhat = jnp.sum(dy * x_hat, axis=-1, keepdims=True)
    return grads, params["scale"] * inv_std / n * (n * dy - sum_dy - x_hat * sum_dy_xhat)


@pytest.mark.parametrize(
    "layer, wrong, in_shape",
    [
        (BatchNorm(dtype=F64), backward_without_coupling, (3,)),
        pytest.param(
            BatchNorm(dtype=F64), backward_without_coupling, (2, 2, 3), marks=pytest.mark.slow
        ),
        pytest.param(
            LayerNorm(dtype=F64), layernorm_scale_outside_sums, (4,), marks=pytest.mark.slow
        ),
    ],
    ids=[
        "batchnorm-coupling-dropped",
        "batchnorm-coupling-dropped-nhwc",
        "layernorm-scale-factored",
    ],
)
def test_mutation_is_caught_and_named(layer, wrong, in_shape):
    params, x = make(layer, in_shape, 4)
    report = layers.check_layer(
        layer._replace(backward=wrong), params, x, train=True, n_pairs=N_PAIRS, transforms=()
    )  # the jitted rows are enough to catch it
    assert report.ok is False
    assert report.failed == ["x"]
    failing = {r.oracle for r in report.rows if not r.ok}
    assert "vjp" in failing and "⟨Jt,c⟩ = ⟨t,Jᵀc⟩ fd" in failing  # autodiff and fd both see it
    with pytest.raises(AssertionError, match="failed at 1 leaf"):
        report.raise_if_failed()


def test_eval_mode_has_no_coupling():
    """The same elementwise backward IS right in evaluation mode (eq. L13): μ, σ are constants."""
    layer = BatchNorm(dtype=F64)
    params, x = make(layer, (3,), 4)
    _, cache = layer.forward(params, x, train=False)
    dy = jax.random.normal(jax.random.key(5), x.shape, F64)
    _, dx = layer.backward(params, cache, dy)
    assert jnp.allclose(dx, backward_without_coupling(params, cache, dy)[1], rtol=1e-15)


# --- bad arguments -----------------------------------------------------------------------------


def test_bad_arguments_are_named():
    for bad in (-0.1, 1.5, float("nan"), "0.9", True):
        with pytest.raises(ValueError, match="BatchNorm: momentum must be"):
            BatchNorm(momentum=bad)
    for bad in (0, -1e-5, float("inf")):
        with pytest.raises(ValueError, match="epsilon must be"):
            BatchNorm(epsilon=bad)
        with pytest.raises(ValueError, match="LayerNorm: epsilon must be"):
            LayerNorm(epsilon=bad)
    with pytest.raises(
        ValueError, match=r"BatchNorm\(.*\): in_shape needs a channel axis, got \(\)"
    ):
        BatchNorm().init(None, ())
    params, _ = BatchNorm(dtype=F64).init(None, (3,))
    with pytest.raises(
        ValueError, match=r"BatchNorm\(.*\): x must have shape \(m, …, 3\), got shape \(4, 2\)"
    ):
        BatchNorm().forward(params, jnp.ones((4, 2)))
    with pytest.raises(ValueError, match=r"got shape \(3,\)"):
        BatchNorm().forward(params, jnp.ones((3,)))  # no batch axis
    params, _ = LayerNorm(dtype=F64).init(None, (3,))
    with pytest.raises(ValueError, match=r"LayerNorm\(.*\): x must have .* got shape \(4, 2\)"):
        LayerNorm().forward(params, jnp.ones((4, 2)))
