"""A network as data: ``[[layers]]`` tables that write it to TOML and build it again.

Every public factory of :mod:`jaxbp.layers` is decorated with :func:`jaxbp.layers.base.register`,
so each :class:`~jaxbp.layers.Layer` it returns carries a :class:`~jaxbp.layers.base.LayerSpec`:
the factory's registered name and its arguments, defaults filled in. :func:`to_spec` writes a
network's specs out as a list of tables, one per layer of its top-level ``Sequential``::

    [{"type": "Reshape", "shape": [8, 8, 1]},
     {"type": "Conv2D", "features": 6, "kernel_size": 3, "strides": 1, "padding": "SAME", …},
     {"type": "Residual", "layer": {"type": "Sequential", "layers": [{…}, {…}]}},
     {"type": "Dense", "features": 10, "scheme": "he", "dtype": "float32"}]

— each table ``{"type": name, **arguments}``: a combinator's layers are tables again (the
``layers`` of a ``Sequential``, the one ``layer`` of a ``Residual``), a tuple is a list, a dtype
its name, and an argument that is None (a default such as the pools' ``strides``) is left out.
:func:`to_toml` writes the tables as TOML's array of tables ``[[layers]]``; :func:`from_spec`
(or :func:`from_toml`) builds ``Sequential(*layers)`` from them again, with lists turned back
into tuples and dtype names into dtypes, so that ``from_spec(to_spec(net))`` initialises, with
the same key, to the same parameters and computes the same outputs.

Presets (:data:`PRESETS`): :func:`mlp` and :func:`lenet` are registered as whole-network types.
The lecture's MLP cannot be written as its Dense and activation layers — its ``init`` draws what
:func:`jaxbp.init_params` draws (the ``ng`` scheme's random biases included), not what ``Dense``
does — so its spec is the one table ``{"type": "mlp", "sizes": […], "activation": …, "scheme":
…, "dtype": …}``, and a spec that is exactly one preset table builds that network itself (not a
``Sequential`` around it). ``lenet``'s network is an ordinary ``Sequential`` whose layers could be
listed one by one; the preset writes the one ``lenet`` table instead.

A user's own layer type — a factory returning a :class:`~jaxbp.layers.Layer` with its own hand
backward, defined outside jaxbp — joins with :func:`register_layer`; its layers then write and
build like the built-in ones.
"""

from __future__ import annotations

import inspect
import json
import math
import tomllib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax.numpy as jnp

from jaxbp.layers import models
from jaxbp.layers.attention import SelfAttention
from jaxbp.layers.augment import RandomShift
from jaxbp.layers.base import LAYER_TYPES, PRESETS, Layer, functions, register
from jaxbp.layers.combinators import Residual, Sequential
from jaxbp.layers.conv import Conv2D
from jaxbp.layers.dense import Dense
from jaxbp.layers.dropout import Dropout
from jaxbp.layers.elementwise import (
    Elementwise,
    Elu,
    Identity,
    LeakyRelu,
    Relu,
    Sigmoid,
    Softplus,
    Tanh,
)
from jaxbp.layers.embedding import Embedding
from jaxbp.layers.normalization import BatchNorm, LayerNorm
from jaxbp.layers.pooling import AvgPool2D, MaxPool2D
from jaxbp.layers.reshape import Flatten, Reshape

__all__ = [
    "BUILT_IN",
    "LAYER_TYPES",
    "PRESETS",
    "from_spec",
    "from_table",
    "from_toml",
    "lenet",
    "mlp",
    "register_layer",
    "to_spec",
    "to_table",
    "to_toml",
]

mlp = register("mlp", preset=True)(models.mlp)
""":func:`jaxbp.layers.models.mlp`, recording its spec ``{"type": "mlp", sizes, activation,
scheme, dtype}`` (it replaces its Sequential's ``init``, so it has no other)."""

lenet = register("lenet", preset=True)(models.lenet)
""":func:`jaxbp.layers.models.lenet`, recording its spec ``{"type": "lenet", num_classes,
channels, kernel_size, hidden, activation, dropout, dtype}``."""

BUILT_IN: tuple[str, ...] = tuple(
    f.layer_type
    for f in (
        Dense, Conv2D, MaxPool2D, AvgPool2D, BatchNorm, LayerNorm, Dropout, Embedding,
        SelfAttention, Elementwise, Sigmoid, Tanh, Relu, LeakyRelu, Softplus, Elu, Identity,
        Flatten, Reshape, RandomShift, Sequential, Residual, mlp, lenet,
    )
)  # fmt: skip
"""The names jaxbp registers itself (:data:`LAYER_TYPES` holds these and the user's)."""


def register_layer(name: str, factory: Callable[..., Layer] | None = None):
    """Registers a user's own layer type under ``name``, for ``[[layers]]`` specs.

    ``factory`` is any function returning a :class:`~jaxbp.layers.Layer` (with its own hand
    backward); its arguments must be what a TOML value can hold (ints, floats, strings,
    booleans, lists of them, other layers). Use the function this returns to build the layers —
    they record ``name`` and their arguments — or as a decorator: ``@register_layer("Scale")``.

    Args:
      name: the table's ``type``; not one already taken (built-in or registered before).
      factory: the layer factory; omitted, ``register_layer(name)`` is a decorator.

    Returns:
      The recording factory (same signature and docstring), also in :data:`LAYER_TYPES`.

    Raises:
      ValueError: ``name`` empty or already taken, naming it and the factory registered to it.
      TypeError: ``name`` not a string, ``factory`` not callable, naming what was received.
    """
    if not isinstance(name, str):
        raise TypeError(f"register_layer: name must be a str, got {type(name).__name__} {name!r}")
    if name in LAYER_TYPES:
        taken = LAYER_TYPES[name]
        raise ValueError(
            f"register_layer: name {name!r} is already taken by "
            f"{getattr(taken, '__module__', '?')}.{getattr(taken, '__qualname__', taken)!s}; "
            "choose another name"
        )
    if factory is None:
        return lambda f: register_layer(name, f)
    if not callable(factory):
        raise TypeError(
            f"register_layer: factory for {name!r} must be callable, got "
            f"{type(factory).__name__} {factory!r}"
        )
    return register(name)(factory)


# --- writing ------------------------------------------------------------------------------------
def _value(value, where: str):
    """A recorded argument as a TOML-shaped value."""
    if isinstance(value, Layer):
        return to_table(value, where)
    if isinstance(value, tuple):
        return [_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    raise ValueError(
        f"to_spec: {where} = {value!r} ({type(value).__name__}) has no TOML form; a spec "
        "holds ints, floats, strings, booleans, lists and layers"
    )


def _checked(layer: Layer, where: str):
    """``layer``'s spec, once it is known to build ``layer``."""
    if not isinstance(layer, Layer):
        raise TypeError(
            f"to_spec: {where} must be a jaxbp.layers.Layer, got {type(layer).__name__}"
        )
    spec = layer.spec
    if spec is None:
        raise ValueError(
            f"to_spec: {where} ({layer.name}) has no spec: it was built by hand as Layer(...), "
            "not by a registered factory; register its factory with "
            "jaxbp.layers.spec.register_layer and build it with that"
        )
    if spec.built != functions(layer):
        names = ("init", "forward", "backward", "update_state")
        pairs = zip(names, spec.built, functions(layer), strict=True)
        changed = ", ".join(f for f, a, b in pairs if a is not b)
        raise ValueError(
            f"to_spec: {where} ({layer.name}) is not what its spec builds: its {changed} "
            f"replaced after {spec.type} built it (layer._replace); register a factory for the "
            "changed layer instead"
        )
    if spec.problem is not None:
        raise ValueError(f"to_spec: {where} ({layer.name}) has no usable spec: {spec.problem}")
    return spec


def to_table(layer: Layer, where: str = "layer") -> dict[str, Any]:
    """One layer as its table ``{"type": name, **arguments}`` (a combinator's layers nested).

    Args:
      layer: a layer built by a registered factory.
      where: how error messages name it (``layers[2]``).

    Raises:
      TypeError: ``layer`` is not a :class:`~jaxbp.layers.Layer`.
      ValueError: a layer with no spec (built by hand as ``Layer(...)``), one whose functions
        were replaced after its factory built it (``layer._replace(backward=…)``), one whose
        spec could not be recorded, or an argument with no TOML form — naming the layer (by
        ``where`` and its name) and the argument.
    """
    spec = _checked(layer, where)
    table: dict[str, Any] = {"type": spec.type}
    factory = LAYER_TYPES.get(spec.type)
    parameters = inspect.signature(factory).parameters if factory else {}
    for key, value in spec.kwargs:
        if value is None:
            default = parameters[key].default if key in parameters else None
            if default is not None:
                raise ValueError(
                    f"to_spec: {where} ({layer.name}): {key} = None has no TOML form and is not "
                    f"the default ({default!r})"
                )
            continue  # TOML has no null: left out, the factory's default None applies
        table[key] = _value(value, f"{where}.{key}")
    return table


def to_spec(net: Layer) -> list[dict[str, Any]]:
    """A network as a list of tables, one per layer (the inverse of :func:`from_spec`).

    A :func:`~jaxbp.layers.Sequential` gives one table per layer; a preset (:data:`PRESETS`:
    ``mlp``, ``lenet``) the one table of its type. Nested combinators are nested tables:
    ``{"type": "Residual", "layer": {"type": "Sequential", "layers": [{…}, …]}}``.

    Raises:
      TypeError: ``net`` is not a :class:`~jaxbp.layers.Layer`.
      ValueError: ``net`` neither a Sequential nor a preset (wrap a single layer as
        ``Sequential(layer)``); any layer in it with no spec or a replaced function, or an
        argument with no TOML form — naming the layer by its place (``layers[3].layer``) and name.
    """
    if not isinstance(net, Layer):
        raise TypeError(f"to_spec: net must be a jaxbp.layers.Layer, got {type(net).__name__}")
    if net.spec is not None and net.spec.type in PRESETS:
        return [to_table(net, "net")]
    if net.spec is not None and net.spec.type != "Sequential":
        raise ValueError(
            f"to_spec: net must be a Sequential or a preset ({', '.join(sorted(PRESETS))}), got "
            f"{net.name} (type {net.spec.type!r}); write a single layer as Sequential(layer)"
        )
    spec = _checked(net, "net")
    return [to_table(layer, f"layers[{i}]") for i, layer in enumerate(spec.arguments["layers"])]


def _toml_value(value, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, f"{where}[{i}]") for i, v in enumerate(value)) + "]"
    if isinstance(value, Mapping):
        items = (f"{_key(k)} = {_toml_value(v, f'{where}.{k}')}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    raise ValueError(f"to_toml: {where} = {value!r} ({type(value).__name__}) has no TOML form")


def _key(key) -> str:
    if not isinstance(key, str):
        raise ValueError(f"to_toml: a key must be a str, got {key!r}")
    bare = key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)
    return key if bare else json.dumps(key, ensure_ascii=False)


def to_toml(tables: Sequence[Mapping[str, Any]], key: str = "layers") -> str:
    """``tables`` as TOML's array of tables: a ``[[layers]]`` header and ``key = value`` lines
    per table; nested layers (a Residual's ``layer``, a Sequential's ``layers``) as inline
    tables and arrays of inline tables on one line. ``tomllib.loads(to_toml(t))[key] == t``.

    Raises:
      ValueError: a value with no TOML form (None, an object), a non-string key, naming where.
      TypeError: ``tables`` not a sequence of mappings.
    """
    if isinstance(tables, (str, bytes, Mapping)) or not isinstance(tables, Sequence):
        raise TypeError(f"to_toml: tables must be a list of tables, got {type(tables).__name__}")
    lines: list[str] = []
    for i, table in enumerate(tables):
        if not isinstance(table, Mapping):
            raise TypeError(f"to_toml: tables[{i}] must be a table, got {type(table).__name__}")
        if lines:
            lines.append("")
        lines.append(f"[[{_key(key)}]]")
        for k, v in table.items():
            lines.append(f"{_key(k)} = {_toml_value(v, f'{key}[{i}].{k}')}")
    return "\n".join(lines) + "\n"


# --- reading ------------------------------------------------------------------------------------
def _built_value(value, name: str, where: str):
    """A table's value as the factory takes it: a table with ``type`` a layer, a list a tuple,
    a dtype's name a dtype."""
    if isinstance(value, Mapping) and "type" in value:
        return from_table(value, where)
    if isinstance(value, list):
        return tuple(_built_value(v, name, f"{where}[{i}]") for i, v in enumerate(value))
    if name == "dtype" and isinstance(value, str):
        try:
            return jnp.dtype(value)
        except TypeError:
            raise ValueError(f"{where}: dtype {value!r} is not a dtype name") from None
    return value


def from_table(table: Mapping[str, Any], where: str = "layer") -> Layer:
    """The layer one table describes: ``LAYER_TYPES[table["type"]](**arguments)``.

    Raises:
      TypeError: ``table`` not a mapping; ``type`` not a string; an argument of the wrong type
        (the factory's own error), prefixed with ``where`` and the type.
      ValueError: no ``type``; a ``type`` not registered (listing the registered names); an
        argument the factory does not take or a required one missing; a bad value (the
        factory's own error) — each prefixed with ``where`` (``layers[3]``) and the type.
    """
    if not isinstance(table, Mapping):
        raise TypeError(f"{where}: must be a table, got {type(table).__name__} {table!r}")
    if "type" not in table:
        raise ValueError(f"{where}: has no 'type' key (the layer's registered name), got {table!r}")
    kind = table["type"]
    if not isinstance(kind, str):
        raise TypeError(f"{where}: type must be a string, got {type(kind).__name__} {kind!r}")
    if kind not in LAYER_TYPES:
        raise ValueError(
            f"{where}: type {kind!r} is not a registered layer type; valid: "
            f"{', '.join(sorted(LAYER_TYPES))}"
        )
    factory = LAYER_TYPES[kind]
    parameters = inspect.signature(factory).parameters
    args: list = []
    kwargs: dict = {}
    for key, value in table.items():
        if key == "type":
            continue
        p = parameters.get(key)
        if p is None or p.kind is inspect.Parameter.VAR_KEYWORD:
            valid = [
                n for n, q in parameters.items() if q.kind is not inspect.Parameter.VAR_KEYWORD
            ]
            raise ValueError(
                f"{where} ({kind}): unknown argument {key!r} = {value!r}; {kind} takes "
                f"{', '.join(valid) or 'no arguments'}"
            )
        built = _built_value(value, key, f"{where}.{key}")
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            if not isinstance(value, list):
                raise TypeError(
                    f"{where} ({kind}): {key} must be a list, got {type(value).__name__} {value!r}"
                )
            args.extend(built)
        elif p.kind is inspect.Parameter.POSITIONAL_ONLY:
            args.append(built)  # in table order; the signature's order is checked by bind
        else:
            kwargs[key] = built
    try:
        inspect.signature(factory).bind(*args, **kwargs)
    except TypeError as e:
        raise ValueError(f"{where} ({kind}): {e}") from None
    try:
        return factory(*args, **kwargs)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where} ({kind}): {e}") from None


def from_spec(tables: Sequence[Mapping[str, Any]]) -> Layer:
    """The network a list of tables describes (the inverse of :func:`to_spec`).

    ``Sequential(*layers)``, one layer per table — except a list of exactly one preset table
    (:data:`PRESETS`), which is that preset's network itself.

    Raises:
      TypeError: ``tables`` not a list of tables (a string or a single table included).
      ValueError: an empty list; any table's error (:func:`from_table`), naming its index
        (``layers[3]``), its type and the argument.
    """
    if isinstance(tables, (str, bytes, Mapping)) or not isinstance(tables, Sequence):
        raise TypeError(
            f"from_spec: tables must be a list of tables (the [[layers]] array), got "
            f"{type(tables).__name__}"
        )
    if not tables:
        raise ValueError("from_spec: tables must hold at least one layer table, got none")
    built = [from_table(t, f"layers[{i}]") for i, t in enumerate(tables)]
    if len(tables) == 1 and isinstance(tables[0], Mapping) and tables[0]["type"] in PRESETS:
        return built[0]
    return Sequential(*built)


def from_toml(text: str, key: str = "layers") -> Layer:
    """The network of a TOML document's ``[[layers]]`` array (:func:`from_spec`).

    Raises:
      tomllib.TOMLDecodeError: text that is not TOML.
      ValueError: no ``key`` array in the document; and as :func:`from_spec`.
    """
    document = tomllib.loads(text)
    if key not in document:
        raise ValueError(
            f"from_toml: the document has no {key!r} array of tables; keys: "
            f"{', '.join(map(repr, document)) or 'none'}"
        )
    return from_spec(document[key])
