"""Each activation of :mod:`jaxbp.activations` as a layer: a = f(z), δ_z = δ_a ⊙ f′(z).

Backward is the second half of the lecture's δ recursion δ^(l) = (Θ^(l))ᵀ δ^(l+1) ⊙ f′(z^(l))
(docs/derivation.md, eq. B2): the dense layer above hands back (Θ^(l))ᵀ δ^(l+1), this layer
multiplies by f′(z^(l)) elementwise, with the same f′ (and kink convention) as the MLP.
"""

from __future__ import annotations

from jaxbp.activations import ACTIVATIONS, get_activation
from jaxbp.layers.base import ANY_AXES, Layer, check_array, check_dy, check_shape, register


@register("Elementwise")
def Elementwise(activation: str) -> Layer:
    """The activation ``activation`` (a name of :data:`jaxbp.activations.ACTIVATIONS`) as a layer.

    Raises:
      ValueError: an unknown name, listing the valid ones; (from ``backward``) a ``dy`` not of
        x's shape.
    """
    act = get_activation(activation)

    def init(key, in_shape):
        del key
        return (), check_shape(in_shape, None, act.name)

    def forward(params, x, *, key=None, train=False):
        del params, key, train
        check_array(x, "x", ("m", ANY_AXES), act.name)
        a = act.f(x)
        return a, (x, a)

    def backward(params, cache, dy):
        del params
        z, a = cache
        check_dy(dy, z.shape, act.name)
        return (), dy * act.f_prime(z, a)  # δ ⊙ f′(z)   (eq. B2)

    return Layer(init, forward, backward, name=act.name)


@register("Sigmoid")
def Sigmoid() -> Layer:
    """σ as a layer (eq. A1)."""
    return Elementwise("sigmoid")


@register("Tanh")
def Tanh() -> Layer:
    """tanh as a layer (eq. A2)."""
    return Elementwise("tanh")


@register("Relu")
def Relu() -> Layer:
    """relu as a layer (eq. A3)."""
    return Elementwise("relu")


@register("LeakyRelu")
def LeakyRelu() -> Layer:
    """leaky relu as a layer (eq. A4)."""
    return Elementwise("leaky_relu")


@register("Softplus")
def Softplus() -> Layer:
    """softplus as a layer (eq. A5)."""
    return Elementwise("softplus")


@register("Elu")
def Elu() -> Layer:
    """elu as a layer (eq. A6)."""
    return Elementwise("elu")


@register("Identity")
def Identity() -> Layer:
    """The identity as a layer (eq. A7)."""
    return Elementwise("identity")


NAMES = tuple(ACTIVATIONS)
