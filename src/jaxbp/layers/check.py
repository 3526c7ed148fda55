"""Verifying a layer's hand-derived backward with the generic checker, as any user can for theirs.

:func:`check_layer` hands ``forward`` and ``backward`` to :func:`jaxbp.verify.check_vjp` — the
rule against ``jax.vjp`` of the forward pass (run one precision up), the dot-product identity
with ``jax.jvp`` and with central finite differences, zero cotangent and linearity, leaf by leaf
(rows ``params[…]['W']``, ``x``) — and adds two transformation rows per leaf:

- ``eager`` — the backward run op by op (no ``jit``) against ``jax.vjp`` of the forward;
- ``vmap`` — the backward ``vmap``ped over a stack of cotangents against ``jax.vmap`` of
  ``jax.vjp``'s function.

Example:
  >>> layer = jaxbp.layers.Conv2D(4, 3, strides=2, padding="SAME")
  >>> params, _ = layer.init(jax.random.key(0), (9, 9, 3))
  >>> x = jax.random.normal(jax.random.key(1), (2, 9, 9, 3))
  >>> check_layer(layer, params, x).raise_if_failed()
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.layers.base import Layer
from jaxbp.verify.report import Report, compare
from jaxbp.verify.rules import check_vjp
from jaxbp.verify.tolerance import default_rtol

TRANSFORMS = ("eager", "vmap")
"""The transformation rows :func:`check_layer` adds to the jitted rule's (``jit``) rows."""


def check_layer(
    layer: Layer,
    params,
    x,
    *,
    key=None,
    train: bool = False,
    seed: int = 0,
    n_pairs: int = 3,
    rtol=None,
    atol=None,
    transforms: tuple[str, ...] = TRANSFORMS,
) -> Report:
    """Every check of ``layer.backward`` at ``(params, x)``: a :class:`~jaxbp.verify.Report`.

    Args:
      layer: the layer (or a composition).
      params: its parameters.
      x: a batch of inputs.
      key: the forward pass's key (dropout); the same key in every call, so the forward pass is
        a fixed function of (params, x).
      train: training mode (batch statistics, dropout on).
      seed: the checker's random cotangents and tangents.
      n_pairs: random cotangents per oracle.
      rtol, atol: as for :func:`~jaxbp.verify.check_vjp`.
      transforms: which of :data:`TRANSFORMS` to add to the (jitted) rule's rows. ``eager`` runs
        the backward op by op, which compiles every primitive separately: seconds for a deep
        network, so checks of long compositions may leave it to their layers' own checks.
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"layer: must be a jaxbp.layers.Layer, got {type(layer).__name__}")
    unknown = sorted(set(transforms) - set(TRANSFORMS))
    if unknown or isinstance(transforms, str):
        raise ValueError(
            f"transforms: must be a tuple of {', '.join(TRANSFORMS)}, got {transforms!r}"
        )

    def f(p, x):
        return layer.forward(p, x, key=key, train=train)[0]

    def rule(primals, c):
        p, x = primals
        _, cache = layer.forward(p, x, key=key, train=train)
        return layer.backward(p, cache, c)

    report = check_vjp(
        f,
        rule,
        params,
        x,
        names=("params", "x"),
        key=seed,
        n_pairs=n_pairs,
        rtol=rtol,
        atol=atol,
        title=f"{layer.name}: hand-derived backward vs jax.vjp and finite differences",
    )
    rows = list(report.rows) + _transform_rows(f, rule, params, x, seed, rtol, transforms)
    return dataclasses.replace(report, rows=tuple(rows))


def _float_leaves(tree, prefix):
    return [
        (prefix + jax.tree_util.keystr(path), leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]


def _transform_rows(f, rule, params, x, seed, rtol, transforms):
    k1, k2 = jax.random.split(jax.random.key(seed + 1))
    y = jax.eval_shape(f, params, x)
    c = jax.random.normal(k1, y.shape, y.dtype)
    cs = jax.random.normal(k2, (2, *y.shape), y.dtype)

    def reference(c):
        return jax.vjp(f, params, x)[1](c)

    runs = []
    if "eager" in transforms:
        eager = rule((params, x), c)  # op by op: no jit around the rule
        runs.append(("eager", eager, jax.jit(reference)(c)))
    if "vmap" in transforms:
        batched = jax.jit(jax.vmap(lambda ci: rule((params, x), ci)))(cs)
        runs.append(("vmap", batched, jax.jit(jax.vmap(reference))(cs)))
    rows = []
    order = 0
    for transform, hand, want in runs:
        for prefix, h_tree, r_tree in (("params", hand[0], want[0]), ("x", hand[1], want[1])):
            if h_tree is None:
                continue
            for (path, h), (_, r) in zip(
                _float_leaves(h_tree, prefix), _float_leaves(r_tree, prefix), strict=True
            ):
                tol = rtol if isinstance(rtol, float) else default_rtol(jnp.result_type(h))
                row = compare(
                    np.asarray(h),
                    np.asarray(r),
                    oracle="vjp",
                    path=path,
                    rtol=tol,
                    method=f"jax.vjp, {transform}",
                    order=order,
                )
                rows.append(dataclasses.replace(row, transform=transform))
                order += 1
    return rows
