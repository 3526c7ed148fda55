"""Any ``grad_fn`` under ``jax.jit`` and ``jax.vmap`` (issue: bugs that appear only when jitted or
batched): each transformed result is compared with the eager one at the same point.

- ``jit``: ``jax.jit(grad_fn)`` at the point of the check (array arguments traced, the others
  static) against ``grad_fn`` called eagerly there.
- ``vmap``: ``jax.vmap(grad_fn)`` over a batch of :data:`VMAP_SIZE` distinct copies of the
  parameters (each checked leaf moved by 5 % of its scale along its own random direction; the
  other arguments shared), each member against ``grad_fn`` called eagerly at that copy.

The eager result itself is judged by the oracles; these rows say only whether the transformation
changes it (tolerance: the parameter dtype's analytic rtol). A ``grad_fn`` that cannot run under
the transformation gets a failing row that quotes the error.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.verify.hand import leaf_problem, leaf_scales, parse_gradient
from jaxbp.verify.oracles import join_args, split_args
from jaxbp.verify.report import Row, compare

TRANSFORMS = ("jit", "vmap")
"""The transformations :func:`jaxbp.verify.check` runs ``grad_fn`` under by default."""

VMAP_SIZE = 2
"""Distinct parameter copies in the ``vmap`` batch."""

COPY_SPREAD = 0.05
"""How far each copy moves a checked leaf, in units of the leaf's scale."""


def check_transforms_arg(transforms) -> tuple[str, ...]:
    """``transforms=`` as a tuple of known names (a comma-separated string is accepted)."""
    if transforms is None:
        return ()
    if isinstance(transforms, str):
        transforms = tuple(t.strip() for t in transforms.split(",") if t.strip())
    transforms = tuple(transforms)
    bad = [t for t in transforms if t not in TRANSFORMS]
    if bad:
        raise ValueError(
            f"transforms: unknown {bad!r}; valid transformations are {', '.join(TRANSFORMS)} "
            "(or () for none)"
        )
    return tuple(dict.fromkeys(transforms))


@functools.partial(jax.jit, static_argnames=("grad_fn", "static_spec"))
def _jitted(grad_fn, static_spec, tree, dynamic):
    return grad_fn(tree, *join_args(dynamic, static_spec))


def run_jit(grad_fn: Callable, tree, args: tuple):
    """``jax.jit(grad_fn)(tree, *args)`` with the non-array arguments static (compiled once per
    grad_fn, argument shapes and static values)."""
    dynamic, static_spec = split_args(args)
    return _jitted(grad_fn, static_spec, tree, dynamic)


def copies(rng: np.random.Generator, leaves: list, checked, scales, n: int) -> list[list]:
    """``n`` copies of ``leaves``: checked leaves moved by COPY_SPREAD · scale · N(0, 1)."""
    out = []
    for _ in range(n):
        copy = []
        for leaf, c, s in zip(leaves, checked, scales, strict=True):
            if c:
                arr = np.asarray(leaf)
                noise = rng.standard_normal(arr.shape) * COPY_SPREAD * s
                copy.append((arr.astype(np.float64) + noise).astype(arr.dtype))
            else:
                copy.append(leaf)
        out.append(copy)
    return out


def run_vmap(grad_fn: Callable, treedef, copies_: list[list], args: tuple):
    """``jax.vmap(grad_fn)`` over the stacked copies (every leaf stacked; ``args`` shared)."""
    # stacked on the host where possible (an eager stack compiles a kernel per shape)
    stacked = [_stack([c[i] for c in copies_]) for i in range(len(copies_[0]))]
    tree = jax.tree_util.tree_unflatten(treedef, stacked)
    return jax.vmap(lambda t: grad_fn(t, *args))(tree)


def _stack(values):
    if all(isinstance(v, (np.ndarray, jax.Array)) and not jnp.issubdtype(v.dtype, jax.dtypes.prng_key)
           for v in values):  # fmt: skip
        return jax.device_put(np.stack([np.asarray(v) for v in values]))
    return jnp.stack([jnp.asarray(v) for v in values])


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


# --- rows -----------------------------------------------------------------------------------------
def transform_rows(state, grad_c, tree, rest, treedef, value, leaves, checked, transforms,
                    rng) -> tuple[list[Row], dict]:  # fmt: skip
    rows, seconds = [], {}
    if "jit" in transforms:
        t0 = time.perf_counter()
        rows += _jit_rows(state, grad_c, tree, rest, treedef, value)
        seconds["jit"] = time.perf_counter() - t0
    if "vmap" in transforms:
        t0 = time.perf_counter()
        scales = leaf_scales(leaves, checked)
        rows += _vmap_rows(state, grad_c, leaves, checked, scales, treedef, rest, rng)
        seconds["vmap"] = time.perf_counter() - t0
    return rows, seconds


def _jit_rows(state, grad_c, tree, rest, treedef, value) -> list[Row]:
    try:
        out = run_jit(grad_c, tree, rest)
        v_jit, raw = parse_gradient(out, treedef, "grad_fn under jit")
    except Exception as e:  # noqa: BLE001 — the user's grad_fn failing under jit is a verdict
        return [_broken("jit", e)]
    rows = []
    if value is not None and v_jit is not None:
        given = state.rtol_for("jit", state.idx[0])
        rows.append(dataclasses.replace(
            compare(v_jit, value, oracle="eager", path="(value)", method="scalar", rtol=given,
                    order=-1), transform="jit"))  # fmt: skip
    for i in state.idx:
        if not state.usable[i]:
            continue
        got, problem = leaf_problem(raw[i], np.zeros(state.low[i].shape, state.dtypes[i]))
        ref = state.low[i]
        row = state.row(got if got is not None else np.full(ref.shape, np.nan), ref, "eager", i,
                        transform="jit", tol_key="jit")  # fmt: skip
        if problem:
            row = dataclasses.replace(row, ok=False, status="FAIL", problem=f"under jit: {problem}")
        rows.append(row)
    return rows


def _vmap_rows(state, grad_c, leaves, checked, scales, treedef, rest, rng) -> list[Row]:
    members = copies(rng, leaves, checked, scales, VMAP_SIZE)
    eager = []
    for c in members:
        _, raw = parse_gradient(grad_c(jax.tree_util.tree_unflatten(treedef, c), *rest), treedef)
        eager.append(raw)
    try:
        _, batched = parse_gradient(run_vmap(grad_c, treedef, members, rest), treedef,
                                    "grad_fn under vmap", value_ndim=1)  # fmt: skip
    except Exception as e:  # noqa: BLE001 — the user's grad_fn failing under vmap is a verdict
        return [_broken("vmap", e)]
    rows = []
    for i in state.idx:
        if not state.usable[i]:
            continue
        ref = np.stack([np.asarray(e[i], np.float64) for e in eager])
        got = batched[i]
        if got is None or tuple(np.shape(got)) != ref.shape:
            row = state.row(np.full(ref.shape, np.nan), ref, "eager", i, transform="vmap",
                            tol_key="vmap", method=f"{VMAP_SIZE} copies")  # fmt: skip
            rows.append(dataclasses.replace(row, problem=f"under vmap: grad_fn returned shape "
                                            f"{np.shape(got)}, expected {ref.shape}"))  # fmt: skip
            continue
        rows.append(state.row(np.asarray(got, np.float64), ref, "eager", i, transform="vmap",
                              tol_key="vmap", method=f"{VMAP_SIZE} copies"))  # fmt: skip
    return rows


def _broken(transform: str, e: BaseException) -> Row:
    return Row("eager", "(grad_fn)", (), "-", "call", 0, math.inf, math.inf, math.inf, None,
               math.nan, math.nan, math.nan, math.nan, False, transform=transform,
               problem=f"grad_fn failed under {transform}: {first_line(e)}")  # fmt: skip
