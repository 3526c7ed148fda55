"""The hand result under test: what ``grad_fn`` returned, leaf by leaf, and the row factory
that judges one leaf with its own tolerances (used by every part of :func:`jaxbp.verify.check`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.verify import fd
from jaxbp.verify.report import Row, compare


def parse_gradient(out, treedef, name: str = "grad_fn", value_ndim: int = 0):
    """``(value or None, grads leaves)`` from what a gradient function returned.

    Accepted: the grads tree (the structure of the parameters; a leaf may be anything, it is
    judged in its own row), or ``(value, grads)`` with a scalar value.

    Raises:
      TypeError: any other structure, naming both; ValueError: a value that is not a scalar.
    """
    if jax.tree.structure(out) == treedef:
        return None, treedef.flatten_up_to(out)
    if isinstance(out, (tuple, list)) and len(out) == 2:
        try:
            leaves = treedef.flatten_up_to(out[1])
        except (ValueError, TypeError):
            leaves = None
        if leaves is not None:
            if np.ndim(out[0]) != value_ndim:
                raise ValueError(
                    f"{name}: returned (value, grads) with a value of shape {np.shape(out[0])}; "
                    "the value must be a scalar (for shape (1,), index it or use jnp.squeeze)"
                )
            return out[0], leaves
    try:
        return None, treedef.flatten_up_to(out)
    except (ValueError, TypeError):
        pass
    raise TypeError(
        f"{name}: returned a tree of structure {jax.tree.structure(out)}; expected the structure "
        f"of the parameters, {treedef}, or a pair (value, grads)"
    )


def hand_gradient(grad_fn: Callable, params, args: tuple):
    """Calls ``grad_fn(params, *args)`` → ``(value or None, grads tree)`` (see :func:`parse_gradient`)."""
    treedef = jax.tree.structure(params)
    value, leaves = parse_gradient(grad_fn(params, *args), treedef)
    return value, jax.tree_util.tree_unflatten(treedef, leaves)


def leaf_problem(raw, param) -> tuple[np.ndarray | None, str | None]:
    """The hand leaf as float64 of the parameter's shape, and what is wrong with it (or None)."""
    p_shape, p_dtype = tuple(np.shape(param)), jnp.result_type(param)
    if raw is None:
        return None, f"grad_fn returned None; expected a {p_dtype} array of shape {p_shape}"
    if isinstance(raw, (bool, int, float, complex)):
        return None, (
            f"grad_fn returned a Python {type(raw).__name__} ({raw!r}); expected a {p_dtype} array "
            f"of shape {p_shape}"
        )
    try:
        dtype = jnp.result_type(raw)
        shape = tuple(np.shape(raw))
    except TypeError:
        return None, f"grad_fn returned {type(raw).__name__}; expected a {p_dtype} array"
    if not jnp.issubdtype(dtype, jnp.floating):
        return None, f"grad_fn returned dtype {dtype} (shape {shape}); expected {p_dtype} {p_shape}"
    if shape != p_shape:
        return None, f"grad_fn returned shape {shape}, the parameter has shape {p_shape}"
    values = np.asarray(raw, np.float64)
    if dtype != p_dtype:
        return values, f"grad_fn returned dtype {dtype}, the parameter has dtype {p_dtype}"
    return values, None


@dataclasses.dataclass
class State:
    """What every row of one check needs: the leaves' names, dtypes, hand values, tolerances.

    Attributes:
      paths: every leaf's display path.
      dtypes: checked leaf → the parameter's dtype (shown in the rows).
      idx: the checked leaves' flat indices.
      hand: checked leaf → what the oracle rows judge (float64 host array): the hand result, or,
        for a 16-bit leaf, its evaluation one precision up (:mod:`jaxbp.verify.rounding`).
      usable: checked leaf → whether grad_fn returned an array of the right shape for it.
      rtol_for: ``(oracle, i) → rtol`` (given, else the default of ``judged[i]``, or of the
        parameter's dtype for ``rounding`` and the transformations).
      atol_of: ``(oracle, path) → atol or None``.
      low: checked leaf → the hand result as computed (what the transformations reproduce).
      judged: checked leaf → the dtype the oracle rows judge ``hand`` in.
      allowance: checked leaf → ``(array, source)``, the ``rounding`` allowance of a 16-bit leaf.
      oracle_allowance: whether the oracle rows take that allowance too (no clean float32 run).
      oracle_note: checked leaf → a note for the oracle rows, or None.
      defined: whether the loss is finite at the point (else every oracle row is undefined).
    """

    paths: tuple
    dtypes: dict
    idx: list
    hand: dict
    usable: dict
    rtol_for: Callable
    atol_of: Callable
    low: dict = dataclasses.field(default_factory=dict)
    judged: dict = dataclasses.field(default_factory=dict)
    allowance: dict = dataclasses.field(default_factory=dict)
    oracle_allowance: bool = False
    oracle_note: dict = dataclasses.field(default_factory=dict)
    defined: bool = True

    ORACLES = ("rev", "fwd", "fd")

    def row(self, hand, ref, oracle, i, *, transform="eager", tol_key=None, atol=None,
            allowance=None, **kw) -> Row:  # fmt: skip
        """compare() with this leaf's tolerances; ``atol`` is the default floor (None: leaf-scaled).

        A 16-bit leaf's ``rounding`` row and its transformations (and its ``rev`` row, where it
        has no clean float32 run) add the leaf's measured rounding allowance elementwise; the
        directional rows add it themselves (:mod:`jaxbp.verify.directions`). The oracle rows are
        undefined where the loss is."""
        key = tol_key or oracle
        given = self.atol_of(key, self.paths[i])
        oracle_row = key in self.ORACLES
        elementwise = key in ("rounding", "jit", "vmap") or (key == "rev" and self.oracle_allowance)
        if allowance is None and given is None and elementwise and i in self.allowance:
            values, source = self.allowance[i]
            kw.setdefault("allowance_name", "rounding")
            kw.setdefault("bound_source", source)
            allowance = np.broadcast_to(values, np.shape(hand))
        note = self.oracle_note.get(i) if oracle_row else None
        if note:
            kw["note"] = f"{kw['note']}; {note}" if kw.get("note") else note
        if oracle_row and not self.defined:
            kw["defined"] = np.zeros(np.shape(hand), bool)
        row = compare(
            hand,
            ref,
            oracle=oracle,
            path=self.paths[i],
            rtol=self.rtol_for(key, i),
            atol=atol if given is None else given,
            allowance=allowance,
            order=i,
            dtype=self.dtypes[i],
            **kw,
        )
        row = dataclasses.replace(row, transform=transform)
        if not self.usable[i]:
            row = dataclasses.replace(
                row, ok=False, status=None, margin=math.inf,
                problem="no usable hand values (see the grad_fn row)",
            )  # fmt: skip
        return row


def leaf_scales(leaves, checked) -> list[float]:
    rms = np.array([
        float(np.sqrt(np.mean(np.asarray(leaf, np.float64) ** 2))) if c and np.size(leaf) else 0.0
        for leaf, c in zip(leaves, checked, strict=True)
    ])  # fmt: skip
    return list(fd.scales(rms))
