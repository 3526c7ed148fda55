"""What the trainer trains: a :class:`Model`, a network bound to its architecture as a
``NamedTuple`` of pure functions, so that :mod:`jaxbp.train`, :mod:`jaxbp.shadow` and the
experiment runner treat the MLP and the CNN alike.

Both take rows of features, x: (m, n), and targets y: (m, K):

- :func:`mlp` — the lecture's network, parameters a tuple of ``jaxbp.Layer(W, b)``, its gradient
  any source of :data:`jaxbp.sources.SOURCES` (the δ recursion by default);
- :func:`cnn` — the LeNet-style network of :func:`jaxbp.layers.models.lenet` on images of
  ``image_shape`` (H, W, C): each row of x is reshaped to one image (row-major pixels, as IDX
  files and scikit-learn's digits store them) inside the model, so data, minibatches,
  checkpoints and predictions stay rows; parameters are the layers' tuple of dicts; its
  gradient a source of :data:`jaxbp.sources.LAYER_SOURCES` (the layers' hand-derived backward
  by default).

Example:
  >>> net = cnn((8, 8, 1), 10, channels=(6, 16), kernel_size=5, hidden=(120, 84))
  >>> params = net.init(jax.random.key(0))
  >>> J, grads = net.value_and_grad(params, x, y, l2=3.0)       # x: (m, 64), y: (m, 10)
  >>> J, logits = net.cost(params, x, y)                        # evaluation mode
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbp import sources
from jaxbp.cost import forward_cost
from jaxbp.forward import forward

Array = jax.Array
Params = object


class Model(NamedTuple):
    """A network as the trainer sees it (all functions pure and traceable).

    Attributes:
      init: ``key -> params``, freshly initialised parameters (dtype and scheme bound).
      value_and_grad: ``(params, x, y, *, l2=None) -> (J, grads)``, the gradient source that
        trains; ``l2=None`` means no L2 term.
      autodiff: the same by ``jax.grad`` of the forward pass: the shadow check's reference.
      cost: ``(params, x, y, *, l2=None) -> (J, logits)`` by the forward pass alone, in
        evaluation mode.
      logits: ``(params, x) -> (m, K)`` output-layer pre-activations, evaluation mode.
      output: the output layer's name (:data:`jaxbp.losses.OUTPUTS`).
      no_penalty: whether ``value_and_grad`` reads ``l2=None`` as "no L2 term at all" (every
        registered source does; the trainer then passes None for λ = 0).
      name: a readable description, e.g. ``mlp 64-256-10 relu``.
      stochastic: whether training draws random numbers (dropout masks, the augmentation's
        translations): ``value_and_grad`` and ``autodiff`` then take a ``key=`` (the same key
        gives the same draws to both), which the trainer folds from the run's key, the epoch
        and the step.
    """

    init: Callable[[Array], Params]
    value_and_grad: Callable[..., tuple[Array, Params]]
    autodiff: Callable[..., tuple[Array, Params]]
    cost: Callable[..., tuple[Array, Array]]
    logits: Callable[[Params, Array], Array]
    output: str
    no_penalty: bool = True
    name: str = "model"
    stochastic: bool = False


def mlp(
    sizes: Sequence[int] | None = None,
    *,
    activation="relu",
    output: str = "softmax_ce",
    source: Callable | None = None,
    scheme: str = "he",
    dtype=jnp.float32,
) -> Model:
    """The MLP of :mod:`jaxbp.params` / :mod:`jaxbp.backprop` as a :class:`Model`.

    Args:
      sizes: layer widths, input first (needed by ``init`` only: None gives a model that cannot
        initialise, for evaluating given parameters).
      activation, output: as for :func:`jaxbp.value_and_grad`.
      source: a gradient function with the contract of :func:`jaxbp.value_and_grad` (default:
        the δ recursion).
      scheme, dtype: the initialisation (:func:`jaxbp.init_params`).
    """
    from jaxbp.autodiff import autodiff_value_and_grad
    from jaxbp.backprop import value_and_grad as manual
    from jaxbp.params import init_params

    source = manual if source is None else source
    kw = dict(activation=activation, output=output)

    def init(key):
        if sizes is None:
            raise ValueError("sizes: this MLP model was built without layer sizes")
        return init_params(key, list(sizes), scheme=scheme, dtype=dtype)

    def value_and_grad(params, x, y, *, l2=None):
        return source(params, x, y, l2=l2, **kw)

    def autodiff(params, x, y, *, l2=None):
        return autodiff_value_and_grad(params, x, y, l2=l2, **kw)

    def cost(params, x, y, *, l2=None):
        fc = forward_cost(params, x, y, l2=l2, **kw)
        return fc.J, fc.cache.z[-1]

    def logits(params, x):
        return forward(params, x, **kw).z[-1]

    registered = any(source is fn for fn in sources.SOURCES.values())
    widths = "-".join(map(str, sizes)) if sizes is not None else "?"
    act = activation if isinstance(activation, str) else ",".join(activation)
    return Model(init, value_and_grad, autodiff, cost, logits, output, registered,
                 f"mlp {widths} {act}")  # fmt: skip


def cnn(
    image_shape: Sequence[int],
    num_classes: int,
    *,
    channels: Sequence[int],
    kernel_size: int,
    hidden: Sequence[int],
    activation: str = "relu",
    dropout: float = 0.0,
    shift: int = 0,
    output: str = "softmax_ce",
    grad: str = "manual",
    dtype=jnp.float32,
) -> Model:
    """The LeNet-style CNN (:func:`jaxbp.layers.models.lenet`) on rows of ``image_shape``
    images, as a :class:`Model`.

    Args:
      image_shape: (H, W, C) of one example; a row of x holds its H·W·C pixels, row-major.
      num_classes: K.
      channels, kernel_size, hidden, activation, dropout: the network (:func:`lenet`); with
        ``dropout`` > 0 the model is ``stochastic`` and its gradients need ``key=``.
      shift: augmentation: each training image translated by a random offset of up to
        ``shift`` pixels per axis (:func:`jaxbp.layers.RandomShift`, applied to the data
        before the network, so the parameters are the unshifted cnn's); > 0 makes the model
        ``stochastic`` too. Evaluation (``cost``, ``logits``) never shifts.
      output: the output layer (:data:`jaxbp.losses.OUTPUTS`).
      grad: a name of :data:`jaxbp.sources.LAYER_SOURCES`.
      dtype: the parameters' dtype.

    Raises:
      ValueError: a bad size, an unknown activation or source, naming it.
    """
    from jaxbp import layers
    from jaxbp.layers.models import lenet
    from jaxbp.losses import get_output

    shape = tuple(int(d) for d in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape: must be (H, W, C) of positive sizes, got {image_shape!r}")
    out = get_output(output)
    network = lenet(
        num_classes,
        channels=tuple(channels),
        kernel_size=kernel_size,
        hidden=tuple(hidden),
        activation=activation,
        dropout=dropout,
        dtype=dtype,
    )
    if isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift < min(shape[:2]):
        raise ValueError(
            f"shift: must be an int in [0, {min(shape[:2])}) for {shape[0]}×{shape[1]} images, "
            f"got {shift!r}"
        )
    augment = layers.RandomShift(shift)
    train_source = sources.layer_source(grad)
    reference = sources.LAYER_SOURCES["autodiff"]

    def images(x):  # rows → (m, H, W, C): the pixels of each row in row-major order
        return x.reshape(x.shape[0], *shape)

    def init(key):
        return network.init(key, shape)[0]

    stochastic = bool(dropout) or bool(shift)
    draws = " and ".join(
        ([f"dropout {dropout:g}"] if dropout else []) + ([f"shift {shift}"] if shift else [])
    )

    def needs_key(key):
        if stochastic and key is None:
            raise ValueError(f"key: this cnn has {draws}; its gradient needs key=")
        return key

    def training_images(x, key):
        """The augmentation is applied to the data, outside the network: its parameters are
        those of the unshifted cnn, and the dropout masks come from ``key`` as they would
        without it (the translations from a key folded off it)."""
        if not shift:
            return images(x)
        return augment.forward((), images(x), key=jax.random.fold_in(key, 1), train=True)[0]

    def value_and_grad(params, x, y, *, l2=None, key=None):
        key = needs_key(key)
        return train_source(
            network, params, training_images(x, key), y, output=output, l2=l2, key=key
        )

    def autodiff(params, x, y, *, l2=None, key=None):
        key = needs_key(key)
        return reference(network, params, training_images(x, key), y, output=output, l2=l2, key=key)

    def logits(params, x):
        return network.forward(params, images(x), train=False)[0]

    def cost(params, x, y, *, l2=None):
        z = logits(params, x)
        J = jnp.mean(out.cost(z, y)) + layers.penalty(params, l2, x.shape[0])
        return J, z

    name = (
        f"cnn {'x'.join(map(str, shape))} conv {','.join(map(str, channels))} k{kernel_size} "
        f"dense {','.join(map(str, hidden)) or 'none'} {activation}"
        + (f" dropout {dropout:g}" if dropout else "")
        + (f" shift {shift}" if shift else "")
    )
    return Model(init, value_and_grad, autodiff, cost, logits, output, True, name, stochastic)


def square_image(num_features: int) -> tuple[int, int, int] | None:
    """(s, s, 1) when ``num_features`` = s² (rows of square grey images), else None."""
    s = math.isqrt(num_features)
    return (s, s, 1) if s * s == num_features and s > 1 else None


def is_weight(path) -> bool:
    """Whether a parameter's tree path names a weight (``W``, ``W…``): the leaves the L2 term
    falls on in both models (the MLP's ``Layer.W``, the layers' ``"W…"`` keys), never a bias."""
    last = path[-1] if path else None
    name = getattr(last, "name", None)  # GetAttrKey of a NamedTuple field
    if name is None and isinstance(last, jax.tree_util.DictKey):
        name = str(last.key)
    return isinstance(name, str) and name.startswith("W")
