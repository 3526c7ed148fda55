"""The autodiff reference, and the cost J(Θ) itself against an independent numpy transcription
of the lecture's formulas in the course's Θ layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from test_backprop import make_problem


def _lecture_cost(thetas, x, y_onehot, lam, output, act):
    """J(Θ) written from the slides: bias column first, sums over i and k, λ/(2m) off j = 0."""
    m = x.shape[0]
    a = np.asarray(x)
    for l, theta in enumerate(thetas):
        z = np.hstack([np.ones((m, 1)), a]) @ np.asarray(theta).T
        a = act(z) if l < len(thetas) - 1 else z
    if output == "softmax_ce":
        h = np.exp(a - a.max(1, keepdims=True))
        h /= h.sum(1, keepdims=True)
        J = -np.sum(y_onehot * np.log(h)) / m
    elif output == "sigmoid_bce":
        h = 1 / (1 + np.exp(-a))
        J = -np.sum(y_onehot * np.log(h) + (1 - y_onehot) * np.log(1 - h)) / m
    else:
        J = 0.5 * np.sum((a - y_onehot) ** 2) / m
    return J + lam / (2 * m) * sum(np.sum(np.asarray(t)[:, 1:] ** 2) for t in thetas)


@pytest.mark.parametrize("output", sorted(jaxbp.OUTPUTS))
def test_cost_matches_lecture_formula(output):
    params, x, y = make_problem(2, output, seed=3)
    y1 = jax.nn.one_hot(y, 3, dtype=jnp.float64) if output == "softmax_ce" else y
    expected = _lecture_cost(jaxbp.to_theta(params), x, np.asarray(y1), 0.9, output, np.tanh)
    J = jaxbp.cost(params, x, y, activation="tanh", output=output, l2=0.9)
    np.testing.assert_allclose(J, expected, rtol=1e-13)
    J_ad, _ = jaxbp.autodiff_value_and_grad(params, x, y, activation="tanh", output=output, l2=0.9)
    np.testing.assert_allclose(J_ad, expected, rtol=1e-13)


def test_autodiff_is_jax_grad_of_cost():
    params, x, y = make_problem(2, "softmax_ce")
    J, g = jaxbp.autodiff_value_and_grad(params, x, y, activation="relu")
    J2, g2 = jax.value_and_grad(jaxbp.cost)(params, x, y, activation="relu")
    np.testing.assert_array_equal(J, J2)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-15)


def test_autodiff_matches_central_differences():
    """An oracle independent of JAX's AD: central differences on one weight and one bias."""
    params, x, y = make_problem(1, "sigmoid_bce", seed=4)
    _, g = jaxbp.autodiff_value_and_grad(params, x, y, activation="sigmoid", output="sigmoid_bce")
    h = 1e-6
    for leaf, index in (("W", (2, 3)), ("b", (1,))):

        def J(eps, leaf=leaf, index=index):
            layer = params[0]._replace(**{leaf: getattr(params[0], leaf).at[index].add(eps)})
            return float(
                jaxbp.cost((layer, params[1]), x, y, activation="sigmoid", output="sigmoid_bce")
            )

        fd = (J(h) - J(-h)) / (2 * h)
        np.testing.assert_allclose(getattr(g[0], leaf)[index], fd, rtol=1e-7)
