"""Bad input: a clear ValueError/TypeError naming the argument and what was received."""

import jax
import jax.numpy as jnp
import pytest

import jaxbp

PARAMS = jaxbp.init_params(jax.random.key(0), [4, 5, 3], dtype=jnp.float64)
X = jnp.ones((6, 4))
Y = jnp.array([0, 1, 2, 0, 1, 2])

ENTRY_POINTS = [
    jaxbp.value_and_grad,
    jaxbp.autodiff_value_and_grad,
    jaxbp.loss,
    jaxbp.scan_value_and_grad,
    jaxbp.per_example_grads,
]


@pytest.mark.parametrize("fn", ENTRY_POINTS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((X, Y[:5]), {}, r"y: 5 labels for 6 rows of x; x and y row counts differ"),
        ((X, jnp.ones((5, 3))), {}, r"y: 5 rows for 6 rows of x"),
        ((X, jnp.ones((6, 4))), {}, r"y: width 4 differs from the output layer's width 3"),
        ((X, jnp.array([0, 1, 3, 0, 1, 2])), {}, r"y: label 3 at row 2 is out of range \[0, 3\)"),
        ((X, jnp.array([0, -1, 2, 0, 1, 2])), {}, r"y: label -1 at row 1"),
        (
            (jnp.ones((6, 7)), Y),
            {},
            r"x: the network expects 4 input features .* got x of shape \(6, 7\)",
        ),
        ((jnp.ones((0, 4)), Y[:0]), {}, r"x: empty batch"),
        ((jnp.ones((2, 3, 4)), Y), {}, r"x: expected a 2-D array"),
        (
            (X, Y),
            {"activation": "swish"},
            r"activation: unknown name 'swish'; valid names are sigmoid",
        ),
        ((X, Y), {"output": "hinge"}, r"output: unknown name 'hinge'; valid names are softmax_ce"),
        ((X, Y), {"activation": ("relu", "tanh")}, r"activation: got 2 names"),
        ((X, jnp.ones((6, 3))), {"output": "sigmoid_bce", "activation": "tanh"}, None),
        ((X, Y), {"output": "sigmoid_bce"}, r"y: integer labels .* only for output='softmax_ce'"),
    ],
)
def test_bad_input(fn, args, kwargs, match):
    if match is None:  # the well-formed control case
        fn(PARAMS, *args, **kwargs)
        return
    with pytest.raises(ValueError, match=match):
        fn(PARAMS, *args, **kwargs)


@pytest.mark.parametrize("l2", [-1.0, float("nan"), float("inf")])
@pytest.mark.parametrize("fn", [jaxbp.value_and_grad, jaxbp.loss, jaxbp.autodiff_value_and_grad])
def test_bad_l2(fn, l2):
    with pytest.raises(ValueError, match=r"l2: must be a finite number ≥ 0, got"):
        fn(PARAMS, X, Y, l2=l2)


def test_layers_that_do_not_chain():
    bad = (PARAMS[0], jaxbp.Layer(jnp.ones((3, 7)), jnp.ones(3)))
    with pytest.raises(ValueError, match=r"params: layer 1 W has shape \(3, 7\)"):
        jaxbp.value_and_grad(bad, X, Y)


def test_shape_checks_still_run_under_jit():
    f = jax.jit(lambda x, y: jaxbp.value_and_grad(PARAMS, x, y))
    with pytest.raises(ValueError, match="y: 5 labels for 6 rows"):
        f(X, Y[:5])


def test_activation_of_wrong_type():
    with pytest.raises(
        TypeError, match="activation: expected a name or a sequence of names, got int"
    ):
        jaxbp.value_and_grad(PARAMS, X, Y, activation=3)
