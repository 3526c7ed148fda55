"""What a rule check differentiates: the point (:class:`_Problem`: the float leaves, their
labels ``primals[i]…``, the int/bool leaves held fixed), the static descriptions of the inputs and
of f's output that key the compiled programs (:class:`_In`, :class:`_Out`), and the options,
validated where they are read."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.verify.rules.rows import SKIPPED, _err, _status_row


# --- static descriptions (hashable: they key the compiled programs) ----------------------------
class _Static:
    """A static jit argument: hashed by value where it can be, by identity otherwise."""

    __slots__ = ("value", "_key")

    def __init__(self, value):
        self.value = value
        try:
            hash(value)
            self._key = (type(value), value)
        except TypeError:
            self._key = None

    def __hash__(self):
        return hash(self._key) if self._key is not None else id(self.value)

    def __eq__(self, other):
        if not isinstance(other, _Static):
            return False
        if self._key is None or other._key is None:
            return self.value is other.value
        try:
            return bool(self._key == other._key)
        except Exception:  # noqa: BLE001  (an __eq__ that returns arrays)
            return self.value is other.value


def _zeros_for(shape, dtype):
    """What JAX uses for the (co)tangent of a leaf: zeros of its dtype, float0 for int/bool."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.inexact):
        return np.zeros(shape, dtype)
    return np.zeros(shape, jax.dtypes.float0)


@dataclasses.dataclass(frozen=True)
class _In:
    """The differentiated arguments: their tree, which flat leaves are floating, where they sit
    among f's positional arguments, and the nondiff arguments passed through untouched."""

    treedef: Any
    is_float: tuple
    shapes: tuple
    dtypes: tuple
    positions: tuple
    n_args: int
    nondiff: tuple = ()

    def args(self, floats, consts) -> tuple:
        """f's positional arguments with the float leaves ``floats`` and the others ``consts``."""
        it_f, it_c = iter(floats), iter(consts)
        leaves = [next(it_f) if fl else next(it_c) for fl in self.is_float]
        dargs = jax.tree.unflatten(self.treedef, leaves)
        full: list = [None] * self.n_args
        for p, a in zip(self.positions, dargs, strict=True):
            full[p] = a
        for p, s in self.nondiff:
            full[p] = s.value
        return tuple(full)

    def tangents(self, float_tangents) -> tuple:
        """A tangent for every differentiated argument: ``float_tangents`` on the float leaves,
        zeros (float0 for int/bool) elsewhere — what ``jax.jvp`` expects."""
        it = iter(float_tangents)
        leaves = [next(it) if fl else _zeros_for(s, d)
                  for fl, s, d in zip(self.is_float, self.shapes, self.dtypes, strict=True)]  # fmt: skip
        return tuple(jax.tree.unflatten(self.treedef, leaves))


@dataclasses.dataclass(frozen=True)
class _Out:
    """f's output: its tree and which leaves are floating (the differentiated ones)."""

    treedef: Any
    is_float: tuple
    shapes: tuple
    dtypes: tuple
    labels: tuple

    def floats(self, out) -> list:
        leaves = self.treedef.flatten_up_to(out)
        return [leaf for leaf, fl in zip(leaves, self.is_float, strict=True) if fl]

    def cotangent(self, float_cotangents):
        """A cotangent for the whole output: ``float_cotangents`` on the float leaves, zeros
        (float0 for int/bool) elsewhere — what a pullback of ``jax.vjp`` expects."""
        it = iter(float_cotangents)
        leaves = [next(it) if fl else _zeros_for(s, d)
                  for fl, s, d in zip(self.is_float, self.shapes, self.dtypes, strict=True)]  # fmt: skip
        return jax.tree.unflatten(self.treedef, leaves)

    @property
    def float_shapes(self) -> list:
        return [s for s, fl in zip(self.shapes, self.is_float, strict=True) if fl]

    @property
    def float_dtypes(self) -> list:
        return [d for d, fl in zip(self.dtypes, self.is_float, strict=True) if fl]

    @property
    def float_labels(self) -> list:
        return [lab for lab, fl in zip(self.labels, self.is_float, strict=True) if fl]


def _float_fn(fn, spec: _In, out: _Out, consts) -> Callable:
    """F(float leaves) → f's float output leaves (a list); the other leaves held fixed."""

    def F(floats):
        return out.floats(fn(*spec.args(floats, consts)))

    return F


def _cast_like(values, like) -> list:
    return [v.astype(w.dtype) for v, w in zip(values, like, strict=True)]


# --- the options ----------------------------------------------------------------------------------
def _require_callable(value, name: str) -> None:
    if not callable(value):
        raise TypeError(f"{name}: expected a callable, got {type(value).__name__}")


def _count(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer ≥ {minimum}, got {value!r}")
    return int(value)


def _tol_option(value, name: str, oracles: Sequence[str]) -> dict:
    """``rtol`` / ``atol``: None, one float for every oracle, or ``{oracle: value}``."""
    if value is None:
        return {}
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(oracles))
        if unknown:
            raise ValueError(
                f"{name}: unknown oracle(s) {', '.join(map(repr, unknown))}; expected keys among "
                + ", ".join(map(repr, oracles))
            )
        return {k: float(v) for k, v in value.items()}
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return {k: float(value) for k in oracles}
    raise TypeError(f"{name}: expected a float or an {{oracle: value}} dict, got {value!r}")


# --- the point ------------------------------------------------------------------------------------
_NUMBER = (jax.Array, np.ndarray, np.generic, int, float, bool, complex)


@dataclasses.dataclass
class _Problem:
    """One call's point: the static spec, the float leaves (host copies and as given), the other
    leaves, and the labels."""

    spec: _In
    labels: list  # one per float leaf
    orders: list  # flat leaf index of each float leaf
    floats: list  # host NumPy copies, in their dtypes
    given: list  # the float leaves as the caller gave them
    consts: list  # the non-float leaves, as arrays
    skipped: list  # rows for the non-float leaves

    @property
    def dtypes(self) -> list:
        return [x.dtype for x in self.floats]

    @property
    def shapes(self) -> list:
        return [x.shape for x in self.floats]


def _problem(primals: tuple, names, nondiff: tuple = (), hint: str = "") -> _Problem:
    if not primals:
        raise ValueError(
            "primals: none given; pass the point as positional arguments after the rule, "
            "e.g. check_vjp(f, vjp_fn, x, W)"
        )
    n_args = len(primals)
    if names is not None:
        names = tuple(names)
        if len(names) != n_args:
            raise ValueError(f"names: {len(names)} labels for {n_args} primals")
    positions = tuple(i for i in range(n_args) if i not in nondiff)
    dargs = tuple(primals[i] for i in positions)
    with_path, treedef = jax.tree_util.tree_flatten_with_path(dargs)
    is_float, shapes, dtypes = [], [], []
    labels, orders, floats, given, consts, skipped = [], [], [], [], [], []
    for k, (path, leaf) in enumerate(with_path):
        pos = positions[path[0].idx]
        label = (names[pos] if names is not None else f"primals[{pos}]") + jax.tree_util.keystr(
            path[1:]
        )
        if not isinstance(leaf, _NUMBER):
            raise TypeError(
                f"primals: leaf {label} is a {type(leaf).__name__}, not an array or a number" + hint
            )
        dtype = jnp.dtype(jnp.result_type(leaf))
        shape = tuple(np.shape(leaf))
        fl = bool(jnp.issubdtype(dtype, jnp.floating))
        is_float.append(fl)
        shapes.append(shape)
        dtypes.append(str(dtype))
        if fl:
            labels.append(label)
            orders.append(k)
            floats.append(np.asarray(leaf, dtype))
            given.append(leaf)
        else:
            consts.append(jnp.asarray(leaf))
            why = (
                "complex leaves are not checked"
                if jnp.issubdtype(dtype, jnp.complexfloating)
                else "not differentiable: its tangent and cotangent are float0, as in jax.vjp"
            )
            skipped.append(_status_row(SKIPPED, label, f"{dtype} leaf: {why}", order=k,
                                       shape=shape, dtype=str(dtype)))  # fmt: skip
    if not floats:
        listed = ", ".join(f"{r.path} {r.dtype}" for r in skipped)
        if any("complex" in r.dtype for r in skipped):
            raise TypeError(
                f"primals: only complex leaves to differentiate ({listed}); the rule checks "
                "compare real derivatives — check a complex function's rules with "
                "jaxbp.verify.check_grads, which handles complex inputs and outputs as JAX's does"
            )
        raise ValueError(f"primals: no floating-point leaf to differentiate (leaves: {listed})")
    spec = _In(treedef, tuple(is_float), tuple(shapes), tuple(dtypes), positions, n_args,
               tuple((p, _Static(primals[p])) for p in sorted(nondiff)))  # fmt: skip
    return _Problem(spec, labels, orders, floats, given, consts, skipped)


def _out_spec(fn, prob: _Problem, who: str) -> _Out:
    """f's output structure at the primals, from ``jax.eval_shape`` (naming ``who`` on failure)."""
    try:
        shapes = jax.eval_shape(lambda fl, cs: fn(*prob.spec.args(fl, cs)), prob.floats,
                                prob.consts)  # fmt: skip
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"{who}: could not be traced at the primals ({_err(e)})") from None
    with_path, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    if not with_path:
        raise ValueError(f"{who}: returns no array (output {treedef})")
    is_float, sh, dt, labels = [], [], [], []
    for path, leaf in with_path:
        if not hasattr(leaf, "dtype"):
            raise TypeError(f"{who}: output leaf out{jax.tree_util.keystr(path)} is not an array")
        is_float.append(bool(jnp.issubdtype(leaf.dtype, jnp.floating)))
        sh.append(tuple(leaf.shape))
        dt.append(str(leaf.dtype))
        labels.append("out" + jax.tree_util.keystr(path))
    if not any(is_float):
        raise ValueError(f"{who}: no floating-point output leaf to differentiate ({shapes})")
    return _Out(treedef, tuple(is_float), tuple(sh), tuple(dt), tuple(labels))
