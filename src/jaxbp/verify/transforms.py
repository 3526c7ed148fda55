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

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.verify.oracles import join_args, split_args

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
