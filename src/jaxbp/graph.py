"""The lecture's computational-graph view of backpropagation — a third, independent gradient.

The *extended network* is the network with its cost attached, for all m training examples at once
(they are known in advance). It is a graph of primitive nodes. In the forward pass each node n
computes and stores (docs/derivation.md, eqs. G1–G4)

  a_n   the value of its primitive f on its inputs                                (G1)
  f′_n  the local derivative of f with respect to each input, at those inputs      (G1)

and the backward pass visits the nodes in reverse order, accumulating into every input the
cumulative derivative of the error E with respect to that input

  b_in += b_n · f′_n        (summed over the broadcast / reduced axes)            (G2)

starting from b_E = 1. A weight v_{j,i} enters the graph at one "product" node per example,
O_i · v_{j,i}, whose local derivative with respect to v_{j,i} is O_i; so

  ∂E/∂v_{j,i} = Σ_t O^(t)_i b^(t)_{j,i}      (the lecture's O_i b_{j,i}, over all m copies)  (G3)

with O_0 = 1 the bias unit, making v_{j,0} the bias. The L2 penalty is one more node on the
weights (R1), its local derivative (λ/m) v_{j,i} off the bias column (G4).

Primitives (one node each, values carried for every example): ``bias_unit`` (O = [1 | a]),
``product`` (O_i v_{j,i}), ``sum`` (over i, over the K outputs, or the mean over examples),
the hidden activation f with f′ from :mod:`jaxbp.activations` (A1–A7), ``log_softmax`` with
Jacobian δ_ij − ŷ_j (from S2), ``softplus``, elementwise products with targets, ``square``.

This implementation shares no code with :mod:`jaxbp.backprop`: it never forms a δ recursion, only
generic node-by-node accumulation. It stores the product node O_i v_{j,i} for every example
(m · Σ n_out (n_in + 1) numbers), so it is meant for small networks — it is the teaching view.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbp.activations import resolve
from jaxbp.cost import NO_PENALTY
from jaxbp.params import Layer, Params
from jaxbp.validation import check_call

Array = jax.Array


class Node(NamedTuple):
    """One primitive of the extended network.

    Attributes:
      name: what it computes, e.g. ``"layer 0 product O·v"``.
      kind: how b flows back: ``"input"`` (a leaf: data or parameter), ``"elementwise"``
        (broadcasting f′ per input), ``"sum"`` (reduction over ``axis``), ``"jacobian"`` (a vector
        function of the last axis; f′ is its Jacobian), ``"bias_unit"`` (O = [1 | a]).
      a: the forward value.
      inputs: indices of the input nodes.
      f_prime: local derivative w.r.t. each input (broadcastable against ``a`` for elementwise,
        against the input for ``sum``, (…, K, K) for ``jacobian``).
      axis: reduced axis of a ``sum`` node (``None``: all axes).
    """

    name: str
    kind: str
    a: Array
    inputs: tuple[int, ...] = ()
    f_prime: tuple = ()
    axis: int | None = None


class Graph(NamedTuple):
    """The extended network after the forward pass.

    Attributes:
      nodes: every node, in topological (forward) order; the last is E.
      params: indices of the parameter nodes Θ^(l) = [b | W], one per layer.
      products: indices of the product nodes O_i v_{j,i}, one per layer.
      penalties: indices of the L2 penalty nodes, one per layer.
    """

    nodes: tuple[Node, ...]
    params: tuple[int, ...]
    products: tuple[int, ...]
    penalties: tuple[int, ...]


def _sum_to_shape(value: Array, shape: tuple) -> Array:
    """Sums a broadcast result back to ``shape`` (the adjoint of broadcasting)."""
    lead = value.ndim - len(shape)
    value = jnp.sum(value, axis=tuple(range(lead))) if lead > 0 else value
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and value.shape[i] != 1)
    return jnp.sum(value, axis=axes, keepdims=True) if axes else value


def build(params: Params, x: Array, y: Array, *, activation, output: str, l2) -> Graph:
    """Forward pass over the extended network: every node's value a and local derivative f′ (G1).

    Args:
      params: tuple of ``Layer(W, b)``; x: (m, n) inputs; y: (m, K) real targets.
      activation, output, l2: as for :func:`value_and_grad`.
    """
    acts = resolve(activation, len(params) - 1)
    nodes: list[Node] = []

    def add(node: Node) -> int:
        nodes.append(node)
        return len(nodes) - 1

    m = x.shape[0]
    dtype = params[0].W.dtype
    a_idx = add(Node("a^(1) = x", "input", x.astype(dtype)))
    param_idx, product_idx = [], []
    for l, layer in enumerate(params):
        theta = jnp.concatenate([layer.b[:, None], layer.W], axis=1)  # Θ = [b | W]
        t_idx = add(Node(f"Θ[{l}] = [b | W]", "input", theta))
        param_idx.append(t_idx)
        a = nodes[a_idx].a
        ones = jnp.ones((m, 1), dtype)
        # O = [1 | a], shaped (m, 1, n_in + 1) to broadcast over the n_out units j.
        o_idx = add(Node(f"layer {l} O = [1 | a]", "bias_unit",
                         jnp.concatenate([ones, a], 1)[:, None, :], (a_idx,)))  # fmt: skip
        O = nodes[o_idx].a
        # O_i · v_{j,i} for every example t: (m, n_out, n_in + 1); f′ w.r.t. O is v, w.r.t. v is O.
        p_idx = add(Node(f"layer {l} product O·v", "elementwise", O * theta[None],
                         (o_idx, t_idx), (theta[None], O)))  # fmt: skip
        product_idx.append(p_idx)
        P = nodes[p_idx].a
        z_idx = add(Node(f"layer {l} z = Σ_i O·v", "sum", jnp.sum(P, axis=-1), (p_idx,),
                         (jnp.ones_like(P),), axis=-1))  # fmt: skip
        z = nodes[z_idx].a
        if l < len(acts):
            f = acts[l]
            a_new = f.f(z)
            a_idx = add(Node(f"layer {l} a = {f.name}(z)", "elementwise", a_new, (z_idx,),
                             (f.f_prime(z, a_new),)))  # fmt: skip
        else:
            logits_idx = z_idx

    z = nodes[logits_idx].a
    y_idx = add(Node("y", "input", y))
    if output == "softmax_ce":
        ls = z - jax.nn.logsumexp(z, axis=-1, keepdims=True)
        y_hat = jnp.exp(ls)
        eye = jnp.eye(z.shape[-1], dtype=dtype)
        # ∂ log ŷ_i / ∂z_j = (1/ŷ_i) ŷ_i (δ_ij − ŷ_j) = δ_ij − ŷ_j   (from S2)
        ls_idx = add(Node("log ŷ = log softmax(z)", "jacobian", ls, (logits_idx,),
                          (eye - y_hat[:, None, :],)))  # fmt: skip
        c_idx = add(Node("−y ⊙ log ŷ", "elementwise", -y * ls, (ls_idx, y_idx), (-y, -ls)))
    elif output == "sigmoid_bce":
        sp_idx = add(Node("softplus(z)", "elementwise", jax.nn.softplus(z), (logits_idx,),
                          (jax.nn.sigmoid(z),)))  # fmt: skip
        yz_idx = add(Node("y ⊙ z", "elementwise", y * z, (logits_idx, y_idx), (y, z)))
        c_idx = add(Node("softplus(z) − y ⊙ z", "elementwise",
                         nodes[sp_idx].a - nodes[yz_idx].a, (sp_idx, yz_idx),
                         (jnp.ones_like(z), -jnp.ones_like(z))))  # fmt: skip
    else:  # identity_mse
        r_idx = add(Node("r = z − y", "elementwise", z - y, (logits_idx, y_idx),
                         (jnp.ones_like(z), -jnp.ones_like(z))))  # fmt: skip
        r = nodes[r_idx].a
        c_idx = add(Node("½ r²", "elementwise", 0.5 * r * r, (r_idx,), (r,)))
    c = nodes[c_idx].a
    cost_idx = add(Node("cost per example Σ_k", "sum", jnp.sum(c, axis=-1), (c_idx,),
                        (jnp.ones_like(c),), axis=-1))  # fmt: skip
    per = nodes[cost_idx].a
    data_idx = add(Node("(1/m) Σ_t", "sum", jnp.sum(per) / m, (cost_idx,),
                        (jnp.full_like(per, 1.0 / m),), axis=None))  # fmt: skip
    penalties = []
    for l, t_idx in enumerate(param_idx):
        theta = nodes[t_idx].a
        mask = jnp.ones_like(theta).at[:, 0].set(0)  # no penalty on the bias column j = 0
        penalties.append(add(Node(f"(λ/2m) Σ W[{l}]²", "sum",
                                  l2 / (2 * m) * jnp.sum(mask * theta**2), (t_idx,),
                                  ((l2 / m) * mask * theta,), axis=None)))  # fmt: skip
    terms = [data_idx, *penalties]
    total = sum(nodes[i].a for i in terms)
    add(Node("E", "elementwise", total, tuple(terms), tuple(jnp.ones_like(total) for _ in terms)))
    return Graph(tuple(nodes), tuple(param_idx), tuple(product_idx), tuple(penalties))


def backward(graph: Graph) -> list:
    """The backward pass: b for every node, from b_E = 1 down to the inputs (G2).

    Returns a fresh list each call (no state kept in the nodes: calling it twice gives the same
    answer, unlike an in-place ``grad +=``).
    """
    nodes = graph.nodes
    b: list = [None] * len(nodes)
    b[-1] = jnp.ones_like(nodes[-1].a)
    for n in reversed(range(len(nodes))):
        node, b_n = nodes[n], b[n]
        if b_n is None or node.kind == "input":
            continue
        for k, i in enumerate(node.inputs):
            shape = nodes[i].a.shape
            if node.kind == "elementwise":
                contribution = _sum_to_shape(b_n * node.f_prime[k], shape)
            elif node.kind == "sum":
                expanded = b_n if node.axis is None else jnp.expand_dims(b_n, node.axis)
                contribution = expanded * node.f_prime[k]
            elif node.kind == "jacobian":
                contribution = jnp.einsum("...i,...ij->...j", b_n, node.f_prime[k])
            elif node.kind == "bias_unit":
                contribution = b_n[:, 0, 1:]  # the constant O_0 = 1 has no input
            else:
                raise ValueError(f"graph: node {node.name!r} has unknown kind {node.kind!r}")
            b[i] = contribution if b[i] is None else b[i] + contribution
    return b


def parameter_gradients(graph: Graph, b: list) -> Params:
    """∂E/∂v_{j,i} = Σ_t O_i b_{j,i} at each layer's product node, plus the penalty's (G3, G4).

    Equal to b at the parameter node Θ^(l), which accumulated exactly these contributions; the
    product-node form is written out here as the lecture states it.
    """
    grads = []
    for p_idx, r_idx in zip(graph.products, graph.penalties, strict=True):
        O = graph.nodes[graph.nodes[p_idx].inputs[0]].a[:, 0, :]  # (m, n_in + 1)
        g = jnp.einsum("ti,tji->ji", O, b[p_idx])  # Σ_t O_i b_{j,i}   (G3)
        g = g + b[r_idx] * graph.nodes[r_idx].f_prime[0]  # the L2 node's b · f′   (G4)
        grads.append(Layer(W=g[:, 1:], b=g[:, 0]))
    return tuple(grads)


def value_and_grad(
    params: Params, x: Array, y: Array, *, activation="sigmoid", output="softmax_ce", l2=NO_PENALTY
):
    """J(Θ) and its gradient through the computational graph of the extended network (G1–G4).

    Same contract and checks as :func:`jaxbp.value_and_grad`; an independent implementation for
    small networks (memory m · Σ n_out (n_in + 1)). The graph always has its penalty node;
    with no penalty (``l2=None``) it is given λ = 0, which gives the same values.

    Example:
      >>> J, grads = jaxbp.graph.value_and_grad(params, x, labels, activation="tanh")
    """
    l2 = 0.0 if l2 is NO_PENALTY else l2
    params, x, y, activation, output = check_call(params, x, y, activation, output, l2)
    return _value_and_grad(params, x, y, l2, activation, output)


@functools.partial(jax.jit, static_argnames=("activation", "output"))
def _value_and_grad(params, x, y, l2, activation, output):
    from jaxbp.forward import as_targets

    dtype = params[0].W.dtype
    y = as_targets(y, params[-1].W.shape[0], dtype)
    graph = build(params, x, y, activation=activation, output=output, l2=l2)
    b = backward(graph)
    return graph.nodes[-1].a, parameter_gradients(graph, b)
