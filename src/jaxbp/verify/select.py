"""What :func:`jaxbp.verify.check` differentiates and with which tolerance: ``wrt=`` and the
per-mode / per-leaf tolerance mappings, resolved once into plain tables.

``wrt`` selects the leaves whose gradient is checked; the others (PRNG keys, integer counters,
frozen weights) are held fixed and their entries of the hand gradient are ignored:

- ``None``: every floating-point leaf of ``params`` (integer, boolean and key leaves are left out
  automatically, and the report's metadata lists them);
- an int or a tuple of ints: *argnums* of ``loss_fn(params, *args)`` (0 is ``params``);
  ``grad_fn`` then returns a tuple of gradients, one per argnum, as ``jax.grad(argnums=...)``
  does (one tree for a single int); the leaves are named ``args[i]…``;
- a callable ``(path, leaf) -> bool`` on each leaf's ``jax.tree_util.keystr`` path;
- a pytree of bools with the structure of ``params`` (or a prefix of it), as optax's masks;
- a pair ``(argnums, predicate_or_mask)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

ORACLE_KEYS = ("rev", "fwd", "fd", "value", "jit", "vmap", "rounding")
"""Keys a tolerance mapping may use for a whole oracle (or transformation, or the value row)."""


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which leaves of the (combined) primal tree are checked.

    Attributes:
      argnums: the argnums of ``loss_fn`` that form the differentiated tree, or None for plain
        ``params`` (argnum 0, named without an ``args[0]`` prefix).
      paths: every leaf's display path, in tree order.
      checked: per leaf, whether it is checked.
      skipped: ``{path: why}`` for the leaves left out.
    """

    argnums: tuple[int, ...] | None
    paths: tuple[str, ...]
    checked: tuple[bool, ...]
    skipped: dict


def _is_int_tuple(value) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, tuple)
        and value
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )


def split_wrt(wrt):
    """``(argnums or None, leaf selector or None)`` from the forms listed in the module docstring.

    Raises:
      TypeError: anything else.
    """
    if wrt is None:
        return None, None
    if _is_int_tuple(wrt):
        return wrt, None
    if (
        isinstance(wrt, tuple)
        and len(wrt) == 2
        and _is_int_tuple(wrt[0])
        and not _is_int_tuple(wrt)
    ):
        return wrt[0], wrt[1]
    if callable(wrt) or isinstance(wrt, (dict, list, tuple)) or hasattr(wrt, "_fields"):
        return None, wrt
    raise TypeError(
        "wrt: expected None, argnums (an int or a tuple of ints), a predicate (path, leaf) -> "
        f"bool, a pytree of bools shaped like params, or (argnums, selector); got {wrt!r}"
    )


def combine(loss_fn: Callable, grad_fn: Callable, params, args: tuple, argnums):
    """With argnums, the tuple of the selected primals and the functions of it; else unchanged.

    Returns:
      ``(primal tree, rest args, loss_fn', grad_fn', to_call)`` where ``loss_fn'(tree, *rest)``
      and ``grad_fn'(tree, *rest)`` take the combined tree, and ``to_call(tree, rest)`` rebuilds
      the original positional arguments.
    """
    if argnums is None:
        return params, args, loss_fn, grad_fn
    single = isinstance(argnums, int)
    nums = (argnums,) if single else tuple(argnums)
    full = (params, *args)
    bad = [n for n in nums if not 0 <= n < len(full)]
    if bad or len(set(nums)) != len(nums):
        raise ValueError(
            f"wrt: argnums {argnums!r} out of range or repeated; loss_fn takes {len(full)} "
            "positional arguments (params and args)"
        )
    rest_idx = tuple(i for i in range(len(full)) if i not in nums)
    tree = tuple(full[n] for n in nums)
    rest = tuple(full[i] for i in rest_idx)

    def rebuild(tree_, rest_):
        out = [None] * len(full)
        for n, t in zip(nums, tree_, strict=True):
            out[n] = t
        for i, r in zip(rest_idx, rest_, strict=True):
            out[i] = r
        return out

    def loss_c(tree_, *rest_):
        return loss_fn(*rebuild(tree_, rest_))

    def grad_c(tree_, *rest_):
        out = grad_fn(*rebuild(tree_, rest_))
        if single:
            if isinstance(out, tuple) and len(out) == 2 and _looks_like_value(out[0]):
                return out[0], (out[1],)
            return (out,)
        return out

    loss_c.__name__ = getattr(loss_fn, "__name__", "loss_fn")
    grad_c.__name__ = getattr(grad_fn, "__name__", "grad_fn")
    return tree, rest, loss_c, grad_c, nums


def _looks_like_value(x) -> bool:
    return np.ndim(x) == 0 and not isinstance(x, (tuple, list, dict))


def display_paths(key_paths, nums) -> tuple[str, ...]:
    """keystr paths; with argnums, ``args[i]`` + the path inside that argument."""
    out = []
    for kp in key_paths:
        if nums is None:
            out.append(jax.tree_util.keystr(kp))
        else:
            first, rest = kp[0], kp[1:]
            out.append(f"args[{nums[first.idx]}]" + jax.tree_util.keystr(tuple(rest)))
    return tuple(out)


def resolve(selector, tree, key_paths, paths) -> tuple[tuple[bool, ...], dict]:
    """Per leaf, whether it is checked, and why the others are not."""
    leaves = jax.tree.leaves(tree)
    n = len(leaves)
    if selector is None:
        chosen = [True] * n
    elif callable(selector) and not isinstance(selector, (dict, list, tuple)):
        chosen = []
        for p, leaf in zip(paths, leaves, strict=True):
            r = selector(p, leaf)
            if not isinstance(r, (bool, np.bool_)):
                raise TypeError(f"wrt: the predicate returned {r!r} for leaf {p}; expected a bool")
            chosen.append(bool(r))
    else:
        try:
            mask = jax.tree.map(
                lambda m, sub: jax.tree.map(lambda _: m, sub),
                selector,
                tree,
                is_leaf=lambda m: isinstance(m, (bool, np.bool_)),
            )
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"wrt: the mask's structure {jax.tree.structure(selector)} is not a prefix of "
                f"the parameters' {jax.tree.structure(tree)}"
            ) from e
        chosen = [bool(m) for m in jax.tree.leaves(mask)]
        if len(chosen) != n:
            raise ValueError(f"wrt: the mask has {len(chosen)} leaves for {n} parameter leaves")
    skipped = {}
    for i, (p, leaf) in enumerate(zip(paths, leaves, strict=True)):
        if not chosen[i]:
            skipped[p] = "left out by wrt"
            continue
        dtype = _dtype_of(leaf)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            chosen[i] = False
            skipped[p] = f"not differentiable (dtype {dtype})"
    return tuple(chosen), skipped


def _dtype_of(leaf):
    try:
        return jnp.result_type(leaf)
    except TypeError:
        return None


def tolerance_for(spec, name: str, paths, checked) -> Callable:
    """A function ``(oracle, path) -> float | None`` from a tolerance given as a number, a mapping
    ``{oracle: number}``, ``{path: number}``, ``{oracle: {path: number}}``, or None.

    A path key takes precedence over an oracle key. ``None`` means: the dtype's default.

    Raises:
      ValueError: a key that is neither an oracle nor a checked leaf's path, or a value that is
        not a number ≥ 0.
    """
    known = set(p for p, c in zip(paths, checked, strict=True) if c)

    def number(v, where):
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or math.isnan(v):
            raise ValueError(f"{name}: expected a number ≥ 0 for {where}, got {v!r}")
        return float(v)

    if spec is None:
        return lambda oracle, path: None
    if not isinstance(spec, Mapping):
        value = number(spec, "every oracle")
        return lambda oracle, path: value
    by_oracle, by_path, nested = {}, {}, {}
    for k, v in spec.items():
        if k in ORACLE_KEYS:
            if isinstance(v, Mapping):
                for p, w in v.items():
                    if p not in known:
                        raise ValueError(_unknown(name, p, known))
                    nested[(k, p)] = number(w, f"{k} {p}")
            else:
                by_oracle[k] = number(v, repr(k))
        elif k in known:
            by_path[k] = number(v, k)
        else:
            raise ValueError(_unknown(name, k, known))

    def lookup(oracle, path):
        for table, key in ((nested, (oracle, path)), (by_path, path), (by_oracle, oracle)):
            if key in table:
                return table[key]
        return None

    return lookup


def _unknown(name, key, known) -> str:
    listed = ", ".join(sorted(known)[:8]) + (" …" if len(known) > 8 else "")
    return (
        f"{name}: unknown key {key!r}; use an oracle ({', '.join(ORACLE_KEYS)}) or a checked "
        f"leaf's path ({listed})"
    )
