"""The computational-graph view (G1–G4): an independent third gradient, equal to the δ recursion
and to jax.grad."""

import ast
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
import jaxbp.graph
from helpers import RTOL_F64, assert_tree_close, rtol_for
from verify_support import numpy_problem


@pytest.mark.parametrize(
    ("sizes", "activation", "output"),
    [([3, 2], "sigmoid", "softmax_ce"), ([3, 2], "sigmoid", "identity_mse"),
     ([4, 5, 3], "relu", "sigmoid_bce"), ([4, 5, 6, 3], ("tanh", "elu"), "identity_mse"),
     ([2, 1, 3, 2], ("leaky_relu", "softplus"), "softmax_ce"), ([3, 4, 2], "identity", "sigmoid_bce")],
)  # fmt: skip
def test_graph_equals_delta_recursion_and_autodiff(sizes, activation, output):
    params, x, y = numpy_problem(sizes, output=output, m=5, seed=len(sizes))
    kw = dict(activation=activation, output=output, l2=0.6)
    J, grads = jaxbp.graph.value_and_grad(params, x, y, **kw)
    J_bp, grads_bp = jaxbp.value_and_grad(params, x, y, **kw)
    J_ad, grads_ad = jaxbp.autodiff_value_and_grad(params, x, y, **kw)
    np.testing.assert_allclose(J, J_ad, rtol=RTOL_F64)
    assert_tree_close(grads, grads_ad, RTOL_F64)
    assert_tree_close(grads, grads_bp, RTOL_F64)


def test_float32_and_structure():
    params, x, y = numpy_problem([4, 5, 3], dtype=jnp.float32, m=7)
    J, grads = jaxbp.graph.value_and_grad(params, x, y, activation="tanh")
    _, grads_ad = jaxbp.autodiff_value_and_grad(params, x, y, activation="tanh")
    assert J.dtype == jnp.float32
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert_tree_close(grads, grads_ad, rtol_for(jnp.float32))


def test_same_contract_as_value_and_grad():
    params, x, y = numpy_problem([4, 5, 3], m=6)
    kw = dict(activation="tanh")
    # integer labels = one-hot targets; a single example is a batch of one
    _, by_label = jaxbp.graph.value_and_grad(params, x, y, **kw)
    _, by_onehot = jaxbp.graph.value_and_grad(params, x, jax.nn.one_hot(y, 3), **kw)
    assert_tree_close(by_label, by_onehot, RTOL_F64)
    _, one = jaxbp.graph.value_and_grad(params, x[0], y[0], **kw)
    _, one_ref = jaxbp.value_and_grad(params, x[:1], y[:1], **kw)
    assert_tree_close(one, one_ref, RTOL_F64)
    # the same validation errors, naming the argument
    for bad in [dict(x=x[:, :3]), dict(y=y[:4]), dict(activation="swish"), dict(l2=-1.0)]:
        args = dict(x=x, y=y, **kw)
        args.update(bad)
        with pytest.raises(ValueError) as ours:
            jaxbp.graph.value_and_grad(params, args.pop("x"), args.pop("y"), **args)
        args = dict(x=x, y=y, **kw)
        args.update(bad)
        with pytest.raises(ValueError) as core:
            jaxbp.value_and_grad(params, args.pop("x"), args.pop("y"), **args)
        assert str(ours.value) == str(core.value)


def test_under_jit_and_vmap():
    params, x, y = numpy_problem([4, 5, 3], m=6)
    kw = dict(activation="sigmoid", l2=0.2)
    jitted = jax.jit(lambda p, x_, y_: jaxbp.graph.value_and_grad(p, x_, y_, **kw))
    assert_tree_close(jitted(params, x, y), jaxbp.value_and_grad(params, x, y, **kw), RTOL_F64)
    per = jax.vmap(lambda x_t, y_t: jaxbp.graph.value_and_grad(params, x_t, y_t, **kw)[1])(x, y)
    per_ref = jax.vmap(lambda x_t, y_t: jaxbp.value_and_grad(params, x_t, y_t, **kw)[1])(x, y)
    assert_tree_close(per, per_ref, RTOL_F64)


def test_l2_never_touches_biases():
    params, x, y = numpy_problem([4, 5, 3], m=6)
    _, plain = jaxbp.graph.value_and_grad(params, x, y, activation="tanh")
    _, reg = jaxbp.graph.value_and_grad(params, x, y, activation="tanh", l2=2.0)
    for p, g0, g1 in zip(params, plain, reg, strict=True):
        np.testing.assert_array_equal(g0.b, g1.b)
        np.testing.assert_allclose(g1.W - g0.W, 2.0 / 6 * p.W, rtol=1e-12)


def _problem(output="softmax_ce"):
    return numpy_problem([3, 4, 2], output=output, m=5, labels=False)


def test_every_node_stores_its_value_and_local_derivatives():
    params, x, y = _problem()
    meta = {}

    def trace(p, x_, y_):  # traced abstractly (jax.eval_shape): no compilation
        graph = jaxbp.graph.build(p, x_, y_, activation="tanh", output="softmax_ce", l2=0.3)
        meta["graph"] = [
            (n.name, n.kind, n.a.shape, n.inputs, len(n.f_prime), n.axis) for n in graph.nodes
        ]
        meta["products"] = graph.products
        return graph.nodes[-1].a

    jax.eval_shape(trace, params, x, y)
    nodes = meta["graph"]
    assert nodes[-1][0] == "E" and nodes[-1][2] == ()
    for n, (_, kind, _, inputs, n_prime, _) in enumerate(nodes):
        assert kind in {"input", "elementwise", "sum", "jacobian", "bias_unit"}
        assert all(i < n for i in inputs)  # topological order
        if kind in {"elementwise", "sum", "jacobian"}:
            assert n_prime == len(inputs)  # one local derivative per input
    # (m, n_out, n_in + 1): O_i v_{j,i} for every example t
    assert nodes[meta["products"][0]][2] == (5, 4, 4)
    assert [kind for _, kind, *_ in nodes].count("jacobian") == 1  # log-softmax (S2)


@jax.jit
def _backward_twice(params, x, y):
    graph = jaxbp.graph.build(params, x, y, activation="tanh", output="sigmoid_bce", l2=0.3)
    b1, b2 = jaxbp.graph.backward(graph), jaxbp.graph.backward(graph)
    at_theta = [b1[i] for i in graph.params]
    return b1, b2, jaxbp.graph.parameter_gradients(graph, b1), at_theta


def test_backward_is_repeatable_and_the_lecture_formula_holds():
    params, x, y = _problem("sigmoid_bce")
    b1, b2, grads, at_theta = _backward_twice(params, x, y)
    for u, v in zip(b1, b2, strict=True):
        if u is not None:
            np.testing.assert_array_equal(u, v)  # no state accumulated between calls
    # Σ_t O_i b_{j,i} at the product node (+ the penalty's) = what accumulated at the node Θ^(l)
    for theta_grad, b_theta in zip(jaxbp.to_theta(grads), at_theta, strict=True):
        np.testing.assert_allclose(theta_grad, b_theta, rtol=1e-13)
    assert b1[-1] == 1.0  # b_E = 1
    _, grads_ad = jaxbp.autodiff_value_and_grad(params, x, y, activation="tanh",
                                                output="sigmoid_bce", l2=0.3)  # fmt: skip
    assert_tree_close(grads, grads_ad, RTOL_F64)


def test_independent_of_the_delta_recursion():
    tree = ast.parse(inspect.getsource(jaxbp.graph))
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not imported & {"jaxbp.backprop", "jaxbp.per_sample", "jaxbp.vjp", "jaxbp.autodiff"}
