"""Input validation for the public API: every error names the argument and what was received.

Shape checks are static and run under ``jit`` too. Value checks (label range, finite non-negative
l2) need concrete values and run only when the value is not a tracer — i.e. on eager calls,
which is where a user's data first enters.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.activations import resolve
from jaxbp.losses import get_output
from jaxbp.params import Params, check_params


def is_concrete(value) -> bool:
    """True when ``value`` is not an abstract tracer (its value can be inspected)."""
    return not isinstance(value, jax.core.Tracer)


def static_names(activation, output: str):
    """Normalises the name arguments to hashable values usable as static jit arguments."""
    get_output(output)
    if isinstance(activation, (list, tuple)):
        activation = tuple(activation)
    elif not isinstance(activation, str):
        raise TypeError(
            f"activation: expected a name or a sequence of names, got {type(activation).__name__}"
        )
    return activation, output


def check_l2(l2) -> None:
    """Raises ValueError for a negative or non-finite L2 coefficient λ (when concrete)."""
    if jnp.ndim(l2) != 0:
        raise ValueError(f"l2: expected a scalar, got shape {jnp.shape(l2)}")
    if is_concrete(l2):
        value = float(l2)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"l2: must be a finite number ≥ 0, got {value!r}")


def check_x(params: Params, x) -> None:
    """Checks that ``x`` is (m, n_in) with m ≥ 1 for this network."""
    n_in = jnp.shape(params[0].W)[1]
    shape = jnp.shape(x)
    if len(shape) != 2:
        raise ValueError(
            f"x: expected a 2-D array (m, {n_in}), one example per row (or one example of "
            f"shape ({n_in},)), got shape {shape}"
        )
    if shape[0] == 0:
        raise ValueError(f"x: empty batch, got shape {shape}; need at least one example")
    if shape[1] != n_in:
        raise ValueError(
            f"x: the network expects {n_in} input features (layer 0 W is "
            f"{jnp.shape(params[0].W)}), got x of shape {shape}"
        )


def check_y(params: Params, x, y, output: str) -> None:
    """Checks targets: (m, K) real, or integer labels (m,) in [0, K) for softmax_ce."""
    m = jnp.shape(x)[0]
    k = jnp.shape(params[-1].W)[0]
    shape = jnp.shape(y)
    dtype = jnp.result_type(y)
    if jnp.issubdtype(dtype, jnp.integer) and len(shape) == 1:
        if output != "softmax_ce":
            raise ValueError(
                f"y: integer labels of shape {shape} are accepted only for output='softmax_ce'; "
                f"output={output!r} needs targets of shape ({m}, {k})"
            )
        if shape[0] != m:
            raise ValueError(f"y: {shape[0]} labels for {m} rows of x; x and y row counts differ")
        if is_concrete(y) and shape[0] > 0:
            labels = np.asarray(y)
            bad = np.flatnonzero((labels < 0) | (labels >= k))
            if bad.size:
                i = int(bad[0])
                raise ValueError(
                    f"y: label {int(labels[i])} at row {i} is out of range [0, {k}) for an output "
                    f"layer of width {k} ({bad.size} bad label(s) in all)"
                )
        return
    if len(shape) != 2:
        raise ValueError(
            f"y: expected targets of shape ({m}, {k})"
            + (" or integer labels of shape (m,)" if output == "softmax_ce" else "")
            + f", got shape {shape} and dtype {dtype}"
        )
    if shape[0] != m:
        raise ValueError(f"y: {shape[0]} rows for {m} rows of x; x and y row counts differ")
    if shape[1] != k:
        raise ValueError(
            f"y: width {shape[1]} differs from the output layer's width {k} "
            f"(last W has shape {jnp.shape(params[-1].W)})"
        )


def as_batch(x, y):
    """A single example — x of shape (n,) with y of shape (K,) or a scalar label — as a batch of
    one, so that ``jax.vmap`` over rows of the public functions gives per-example results."""
    if jnp.ndim(x) == 1:
        x = jnp.asarray(x)[None]
        if y is not None:
            y = jnp.asarray(y)[None]  # a scalar label becomes (1,), a target vector (1, K)
    return x, y


def check_call(params, x, y, activation, output, l2=0.0):
    """All checks of a public call.

    Returns:
      ``(params, x, y, activation, output)``: params as a tuple of ``Layer``, a single example
      (x of shape (n,)) made a batch of one, and the names in a hashable form for ``jit``.
    """
    params = check_params(params)
    activation, output = static_names(activation, output)
    resolve(activation, len(params) - 1)
    x, y = as_batch(x, y)
    check_x(params, x)
    if y is not None:
        check_y(params, x, y, output)
    check_l2(l2)
    return params, x, y, activation, output
