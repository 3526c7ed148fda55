"""The layer contract: a :class:`Layer` is a ``NamedTuple`` of pure functions.

Every layer of :mod:`jaxbp.layers` — and every composition of layers — is the same triple (plus
an optional fourth function for layers that carry running statistics)::

    params, out_shape = layer.init(key, in_shape)            # shapes of ONE example, no batch axis
    y, cache = layer.forward(params, x, key=None, train=False)    # x: (m, *in_shape)
    grads, dx = layer.backward(params, cache, dy)             # the hand-derived VJP
    params = layer.update_state(params, cache)                # running statistics (BatchNorm)

``backward`` is the layer's vector–Jacobian product written out by hand: given
dy = ∂E/∂y (the error δ arriving from above, one row per example) it returns ∂E/∂params (a pytree
like ``params``) and dx = ∂E/∂x (the δ handed to the layer below). No ``jax.grad``, ``jax.vjp``
or ``jax.linear_transpose`` is called inside any backward of this package; each one's docstring
holds its derivation (docs/derivation.md, § Layers; docs/conv_backward.md for the convolution).

Conventions:

- Data layout NHWC (batch, height, width, channels); convolution kernels HWIO; a dense layer's
  weight is the lecture's Θ, shape (n_out, n_in), with z = Θ a + b written row-wise as
  z = a Θᵀ + b.
- Parameters are dicts of arrays (``()`` for a layer without any); weights are named ``W…``,
  biases ``b…`` — the L2 penalty of :mod:`jaxbp.layers.network` falls on the ``W…`` leaves only
  (the lecture's "off the bias").
- ``backward`` returns sums over the batch (a VJP), not means: the 1/m of D = (1/m)Δ enters
  through the output error δ^(L) = (ŷ − y)/m that :mod:`jaxbp.layers.network` seeds.
- Running statistics (BatchNorm's running mean and variance) live in ``params["state"]``; they
  are not trained: ``update_state`` writes the new values the forward pass recorded in its cache,
  and ``backward`` returns their true derivative (zero in training mode, where the output does
  not depend on them).
- Keys are explicit and keyword-only: ``forward(..., key=k, train=True)`` for dropout;
  :func:`jaxbp.layers.Sequential` splits one key among its layers.
- Inputs are checked: ``forward`` checks ``x`` (and the parameters' shapes), ``backward``
  checks that ``dy`` has the shape of the output ``forward`` returned, and a mismatch is a
  ``ValueError`` naming the layer, the argument and both shapes (:func:`check_array`) — never an
  error from inside XLA, nor a gradient of the wrong shape. The checks read ``.shape`` only, so
  they run once, when ``jit`` traces, and cost nothing in the compiled step; under ``vmap`` they
  see the per-example shapes that the layer's code sees.
- Each public factory is decorated with :func:`register`: the layer it returns records how it
  was built (:class:`LayerSpec`, the ``spec`` field), so that a network can be written as a
  ``[[layers]]`` TOML spec and rebuilt (:mod:`jaxbp.layers.spec`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Shape = tuple[int, ...]
Params = Any
Cache = Any


def keep_params(params: Params, cache: Cache) -> Params:
    """``update_state`` of a layer without running statistics: ``params`` unchanged."""
    del cache
    return params


class Layer(NamedTuple):
    """A layer: init, forward and hand-derived backward as pure functions.

    (Not to be confused with :class:`jaxbp.Layer`, the ``(W, b)`` pair of the MLP's parameters.)

    Attributes:
      init: ``(key, in_shape) -> (params, out_shape)``; shapes exclude the batch axis.
      forward: ``(params, x, *, key=None, train=False) -> (y, cache)`` on a batch ``x`` of shape
        ``(m, *in_shape)``; ``cache`` holds what ``backward`` needs.
      backward: ``(params, cache, dy) -> (grads, dx)``, the hand-derived VJP: ``grads`` like
        ``params`` (∂E/∂params summed over the batch), ``dx`` = ∂E/∂x like ``x`` (``None`` for
        integer inputs, e.g. Embedding's indices).
      update_state: ``(params, cache) -> params`` with the running statistics the training
        forward pass recorded; the identity for stateless layers.
      name: a readable description, e.g. ``Conv2D(6, (5, 5), SAME)``.
      sublayers: the layers a combinator composes (``Sequential``'s in order, ``Residual``'s
        one), ``()`` for a single layer: what a verifier walks to name the wrong layer
        (:func:`jaxbp.verify.check_network`).
      compose: the combinator that built this layer from ``sublayers`` (``Sequential`` or
        ``Residual``), so that ``compose(*sublayers)`` builds it again; None for a single layer.
      spec: how the layer was built — a :class:`LayerSpec` (the registered factory's name and
        its arguments, defaults filled in) recorded by :func:`register`; None for a layer built
        by hand as ``Layer(...)``. :func:`jaxbp.layers.spec.to_spec` writes it out.
    """

    init: Callable[[Array, Shape], tuple[Params, Shape]]
    forward: Callable[..., tuple[Array, Cache]]
    backward: Callable[[Params, Cache, Array], tuple[Params, Array | None]]
    update_state: Callable[[Params, Cache], Params] = keep_params
    name: str = "Layer"
    sublayers: tuple = ()
    compose: Callable[..., Layer] | None = None
    spec: LayerSpec | None = None


# --- how a layer was built: its spec --------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """How a layer was built: ``LAYER_TYPES[type](**dict(kwargs))`` builds it again.

    Hashable (a frozen dataclass of tuples), so that a :class:`Layer` carrying it stays usable as
    a static argument of ``jit``; a leaf, not a pytree node, to ``jax.tree``.

    Attributes:
      type: the factory's registered name, e.g. ``"Dense"``.
      kwargs: ``((parameter, value), …)`` in the factory's parameter order, defaults filled in;
        lists made tuples, NumPy scalars Python numbers, a dtype its name (``"float32"``), the
        layers of a combinator the :class:`Layer` objects themselves (each with its own spec).
      built: the ``(init, forward, backward, update_state)`` of the layer the factory returned:
        a layer whose functions differ (``layer._replace(backward=…)``) is not what its spec
        builds, and :func:`jaxbp.layers.spec.to_spec` refuses it.
      problem: why the arguments could not be recorded (a value that is not hashable), else
        None; :func:`jaxbp.layers.spec.to_spec` refuses such a layer naming it.
    """

    type: str
    kwargs: tuple[tuple[str, Any], ...]
    built: tuple = dataclasses.field(default=(), compare=True, repr=False)
    problem: str | None = None

    @property
    def arguments(self) -> dict[str, Any]:
        """``kwargs`` as a dict."""
        return dict(self.kwargs)


LAYER_TYPES: dict[str, Callable[..., Layer]] = {}
"""Every registered layer type: name → the recording factory (filled by :func:`register`);
:mod:`jaxbp.layers.spec` exposes it and adds the presets and a user's own types."""

PRESETS: set[str] = set()
"""The registered names whose factory builds a whole network (``mlp``, ``lenet``): a spec that
is one such table is that network, not a ``Sequential`` around it."""


def functions(layer: Layer) -> tuple:
    """``(init, forward, backward, update_state)``: what :attr:`LayerSpec.built` compares."""
    return (layer.init, layer.forward, layer.backward, layer.update_state)


class _Unrecordable(Exception):
    pass


def _dtype_name(value) -> str:
    try:
        return jnp.dtype(value).name
    except TypeError:
        raise _Unrecordable(f"dtype {value!r} is not a dtype") from None


def _frozen(value, name: str):
    """``value`` as a spec records it (hashable, TOML-shaped where it can be)."""
    if value is None or isinstance(value, (bool, str, Layer)):
        return value
    if name == "dtype" or isinstance(value, np.dtype):
        return _dtype_name(value)
    if isinstance(value, type) and hasattr(value, "dtype"):  # jnp.float32, np.float64
        return _dtype_name(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v, name) for v in value)
    try:
        hash(value)
    except TypeError:
        raise _Unrecordable(f"{name} = {value!r} is not hashable") from None
    return value


def _record(type_name: str, signature: inspect.Signature, layer, args, kwargs):
    if not isinstance(layer, Layer):
        return layer  # not a layer: nothing to record (the factory's own business)
    try:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        recorded = tuple((k, _frozen(v, k)) for k, v in bound.arguments.items())
        spec = LayerSpec(type_name, recorded, functions(layer))
    except (_Unrecordable, TypeError) as e:
        spec = LayerSpec(type_name, (), functions(layer), f"{type_name}: {e}")
    return layer._replace(spec=spec)


def register(type_name: str, *, preset: bool = False):
    """Decorator: ``factory`` records its name and arguments in each layer it returns, and is
    registered in :data:`LAYER_TYPES` under ``type_name``.

    The returned function is ``factory`` with the same signature, docstring and errors; the
    :class:`Layer` it returns carries ``spec = LayerSpec(type_name, arguments, …)`` with the
    arguments bound by :func:`inspect.signature` (defaults filled in). Recording never fails a
    build: an argument that cannot be recorded leaves ``spec.problem`` set instead.

    Args:
      type_name: the name a ``[[layers]]`` table's ``type`` gives, e.g. ``"Dense"``.
      preset: the factory builds a whole network (added to :data:`PRESETS`).

    Raises:
      TypeError: ``type_name`` not a string, ``factory`` not callable.
      ValueError: ``type_name`` empty or already registered, naming it.
    """
    if not isinstance(type_name, str):
        raise TypeError(f"register: type_name must be a str, got {type(type_name).__name__}")
    if not type_name.strip():
        raise ValueError(f"register: type_name must be a non-empty name, got {type_name!r}")
    if type_name in LAYER_TYPES:
        raise ValueError(
            f"register: type_name {type_name!r} is already registered (to "
            f"{getattr(LAYER_TYPES[type_name], '__qualname__', LAYER_TYPES[type_name])!r}); "
            "choose another name"
        )

    def decorate(factory: Callable[..., Layer]) -> Callable[..., Layer]:
        if not callable(factory):
            raise TypeError(
                f"register: the factory for {type_name!r} must be callable, got "
                f"{type(factory).__name__} {factory!r}"
            )
        if type_name in LAYER_TYPES:
            raise ValueError(f"register: type_name {type_name!r} is already registered")
        signature = inspect.signature(factory)

        @functools.wraps(factory)
        def build(*args, **kwargs) -> Layer:
            return _record(type_name, signature, factory(*args, **kwargs), args, kwargs)

        build.layer_type = type_name
        LAYER_TYPES[type_name] = build
        if preset:
            PRESETS.add(type_name)
        return build

    return decorate


def check_shape(in_shape, rank: int | None, layer: str) -> Shape:
    """``in_shape`` as a tuple of positive ints of length ``rank`` (any rank for None).

    Raises:
      ValueError: naming the layer and the shape received.
    """
    try:
        shape = tuple(int(d) for d in in_shape)
    except TypeError:
        raise ValueError(f"{layer}: in_shape must be a tuple of ints, got {in_shape!r}") from None
    if rank is not None and len(shape) != rank:
        raise ValueError(
            f"{layer}: in_shape must have {rank} axes (one example, no batch axis), got {shape}"
        )
    if any(d < 1 for d in shape):
        raise ValueError(f"{layer}: in_shape axes must be positive, got {shape}")
    return shape


def positive_int(value, name: str, layer: str) -> int:
    """``value`` as an int ≥ 1, else ``ValueError`` naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{layer}: {name} must be a positive int, got {value!r}")
    return value


def pair(value, name: str, layer: str) -> tuple[int, int]:
    """An int or a pair of ints ≥ 1 as a pair (kernel sizes, windows, strides)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    try:
        a, b = value
    except (TypeError, ValueError):
        raise ValueError(
            f"{layer}: {name} must be an int or a pair of ints, got {value!r}"
        ) from None
    return positive_int(a, name, layer), positive_int(b, name, layer)


ANY_AXES = "…"
"""In a shape pattern of :func:`check_array`: any number of axes (none included)."""


def shape_text(shape) -> str:
    """A shape or a pattern as Python writes a tuple: ``(m, H, W, 3)``, ``(3,)``."""
    parts = [str(d) for d in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def _fits(shape: Shape, pattern) -> bool:
    if ANY_AXES in pattern:  # stands for as many free axes as the shape has to spare
        i = pattern.index(ANY_AXES)
        free = len(shape) - (len(pattern) - 1)
        if free < 0:
            return False
        pattern = (*pattern[:i], *(ANY_AXES,) * free, *pattern[i + 1 :])
    return len(shape) == len(pattern) and all(
        isinstance(want, str) or want == got for want, got in zip(pattern, shape, strict=True)
    )


def check_array(value, arg: str, pattern, layer: str, note: str = "") -> Shape:
    """``value``'s shape, once checked against ``pattern``.

    A layer calls this on each array it is handed, so that a mismatch is reported by the layer
    in its own terms rather than by XLA in a primitive's (or, worse, not at all: a backward that
    broadcasts a wrong-shaped ``dy`` returns gradients of the wrong shape). It reads ``.shape``
    only, which a tracer has too: under ``jit`` it runs once, at trace time, and costs nothing in
    the compiled program; under ``vmap`` it checks the per-example shapes the layer's code sees.

    Args:
      value: the array received.
      arg: its name in the call: ``x``, ``dy``, ``params['W']``.
      pattern: the shape required: an int is a required size, a name (``"m"``, ``"H"``) any
        size, :data:`ANY_AXES` any number of axes.
      layer: the layer's name (its ``Layer.name``, e.g. ``Conv2D(4, (3, 3), SAME)``).
      note: why that shape, appended to the message (e.g. which parameter fixes a size).

    Raises:
      TypeError: ``value`` is not an array.
      ValueError: ``{layer}: {arg} must have shape {pattern}, got shape {shape}[; {note}]``.
    """
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):
        raise TypeError(f"{layer}: {arg} must be an array, got {type(value).__name__}")
    shape = tuple(value.shape)
    if not _fits(shape, tuple(pattern)):
        raise ValueError(
            f"{layer}: {arg} must have shape {shape_text(pattern)}, got shape "
            f"{shape_text(shape)}" + (f"; {note}" if note else "")
        )
    return shape


def check_dy(dy, shape, layer: str) -> None:
    """``backward``'s check: ``dy`` = ∂E/∂y has the shape of the output ``forward`` returned.

    ``shape`` is that output's shape as the layer knows it from its cache; ``None`` (a shape
    cached as Python ints that came back from ``jit`` as traced values) checks only that ``dy``
    is an array.
    """
    if shape is None:
        check_array(dy, "dy", (ANY_AXES,), layer)
        return
    check_array(dy, "dy", shape, layer, "dy = ∂E/∂y has the shape of forward's output y")


def cached_shape(shape) -> Shape | None:
    """A shape a layer keeps in its cache, as ints; ``None`` when the cache came back from
    ``jit`` and is now traced (its values unknown while tracing)."""
    try:
        return tuple(int(d) for d in shape)
    except TypeError:  # jax.errors.ConcretizationTypeError is one
        return None


def check_params(params, patterns: Mapping[str, Any], layer: str, arg: str = "params") -> None:
    """``params`` is a dict holding each key of ``patterns`` with an array of that shape (a
    :func:`check_array` pattern), or a dict checked the same way (a nested dict of patterns).

    Parameters of another layer, or of the same layer built for another input, would otherwise
    compute silently wrong shapes or fail inside XLA.

    Raises:
      TypeError: ``params`` is not a dict, or a leaf is not an array.
      ValueError: a key missing, or ``params['W']`` (say) of the wrong shape, naming both shapes.
    """
    keys = ", ".join(map(repr, patterns))
    if not isinstance(params, Mapping):
        raise TypeError(
            f"{layer}: {arg} must be a dict with keys {keys}, got {type(params).__name__}"
        )
    if any(k not in params for k in patterns):
        got = ", ".join(map(repr, params)) or "none"
        raise ValueError(f"{layer}: {arg} must have keys {keys}, got keys {got}")
    for key, pattern in patterns.items():
        if isinstance(pattern, Mapping):
            check_params(params[key], pattern, layer, f"{arg}[{key!r}]")
        else:
            check_array(params[key], f"{arg}[{key!r}]", pattern, layer)
