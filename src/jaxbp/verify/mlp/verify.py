"""``verify_mlp``: every verifier check on one generated MLP problem — what ``jaxbp verify`` and the
experiment runner's shadow verification call.

Sections, each a :class:`~jaxbp.verify.Report`:

- ``gradient``: the chosen hand gradient against rev / fwd / fd of the reference cost
  (:func:`~jaxbp.verify.check`), kinks watched for relu / leaky_relu;
- ``sources``: every other jaxbp gradient path — the per-sample ``lax.scan`` loop (B5),
  ``jax.grad`` through the custom VJP, the computational graph (G1–G4), per-example gradients —
  against ``jax.grad`` of the reference cost;
- ``deltas``: every δ^(l) against autodiff's ∂J/∂z^(l) through zero probes, and the forward cache;
- ``transforms``: eager, ``jit``, ``vmap``, ``jit∘vmap``, mean of per-example = batch,
  recompilation guard;
- ``backward_vjp`` / ``loss_vjp``: dot-product identity, zero cotangent, linearity.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxbp import sources
from jaxbp.forward import as_targets
from jaxbp.verify.check import MODES, check
from jaxbp.verify.mlp import reference
from jaxbp.verify.mlp.deltas import check_deltas
from jaxbp.verify.mlp.identities import check_backward, check_loss_vjp
from jaxbp.verify.mlp.transforms import (
    compare_trees,
    per_example_rows,
    reference_value_and_grad,
)
from jaxbp.verify.oracles import DEFAULT_FD_BUDGET, DEFAULT_PROJECTIONS
from jaxbp.verify.report import Report, _jsonable, default_rtol, environment

SECTIONS = ("gradient", "sources", "deltas", "transforms", "backward_vjp", "loss_vjp")
"""The checks :func:`verify_mlp` runs, in order (module docstring)."""

GRAD_SOURCES = ("manual", "graph", "scan", "custom_vjp")
"""The names of :data:`jaxbp.sources.SOURCES` that ``verify_mlp`` can put under the ``gradient``
section's three oracles: the hand gradients (``autodiff`` is the reference they are checked against;
``vmap`` is checked per example in the ``sources`` and ``transforms`` sections)."""


def gradient_source(name: str):
    """The ``value_and_grad``-contract function for a source name (see :data:`GRAD_SOURCES`)."""
    return sources.source(name, among=GRAD_SOURCES)


def make_problem(sizes, *, activation, output, dtype, batch: int, seed: int):
    """Parameters, inputs and real targets from a random teacher network (as ``jaxbp demo``).

    Targets are real (m, K) arrays for every output — one-hot rows for softmax_ce — so that the
    custom VJP's target cotangent is exercised too.
    """
    if isinstance(activation, list):
        activation = tuple(activation)
    return _make_problem(jax.random.key(seed), tuple(sizes), activation=activation,
                         output=output, dtype=jnp.dtype(dtype), batch=batch)  # fmt: skip


@functools.partial(jax.jit, static_argnames=("sizes", "activation", "output", "dtype", "batch"))
def _make_problem(key, sizes, *, activation, output, dtype, batch):
    import jaxbp

    k_params, k_x, k_teacher = jax.random.split(key, 3)
    params = jaxbp.init_params(k_params, sizes, dtype=dtype)
    x = jax.random.normal(k_x, (batch, sizes[0]), dtype)
    teacher = jaxbp.init_params(k_teacher, sizes, scheme="he", dtype=dtype)
    logits = jaxbp.forward(teacher, x, activation=activation, output="identity_mse").z[-1]
    if output == "softmax_ce":
        y = jax.nn.one_hot(jnp.argmax(logits, axis=1), sizes[-1], dtype=dtype)
    elif output == "sigmoid_bce":
        y = (logits > 0).astype(dtype)
    else:
        y = logits
    return params, x, y


@dataclasses.dataclass(frozen=True)
class MLPVerification:
    """The result of :func:`verify_mlp`.

    Attributes:
      config: the problem (sizes, activation, output, l2, dtype, modes, batch, seed, grad).
      sections: name → :class:`~jaxbp.verify.Report`, in the order they ran.
      seconds: wall time per section and in total.
    """

    config: dict
    sections: dict
    seconds: dict

    @property
    def ok(self) -> bool:
        """True when every section passed."""
        return all(r.ok for r in self.sections.values())

    @property
    def failed(self) -> dict[str, list[str]]:
        """Section → failing paths, for the sections that failed."""
        return {name: r.failed for name, r in self.sections.items() if not r.ok}

    def summary(self) -> list[dict]:
        """The deciding row of every (section, oracle): the judged row with the largest
        error / bound, its error and the bound it was judged against."""
        out = []
        for name, report in self.sections.items():
            for oracle in dict.fromkeys(r.oracle for r in report.rows):
                rows = [r for r in report.rows if r.oracle == oracle]
                judged = [r for r in rows if r.status in ("pass", "FAIL")] or rows
                w = max(judged, key=lambda r: (not r.ok, r.margin))
                out.append({
                    "section": name, "oracle": oracle, "path": w.path, "error": w.error,
                    "bound": w.bound, "margin": w.margin, "max_abs": w.max_abs,
                    "max_rel": w.max_rel, "norm_rel": w.norm_rel, "rtol": w.rtol,
                    "ok": all(r.ok for r in rows),
                })  # fmt: skip
        return out

    def tables(self) -> str:
        """Every section's table."""
        return "\n\n".join(f"[{name}] {report}" for name, report in self.sections.items())

    def __str__(self) -> str:
        lines = [self.tables(), "", "deciding row per oracle (error against its bound):"]
        for s in self.summary():
            verdict = "pass" if s["ok"] else "FAIL"
            lines.append(
                f"  {s['section']:<13} {s['oracle']:<22} {s['path']:<14} "
                f"error {s['error']:.2e}  bound {s['bound']:.2e}  {verdict}"
            )
        lines.append(f"total {self.seconds.get('total', float('nan')):.2f} s: "
                     + ("PASS" if self.ok else f"FAIL {self.failed}"))  # fmt: skip
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """A JSON-ready record with top-level ``ok``."""
        return _jsonable({
            "ok": self.ok, "failed": self.failed, "config": self.config, "seconds": self.seconds,
            "summary": self.summary(), "environment": environment(),
            "sections": {name: r.to_dict() for name, r in self.sections.items()},
        })  # fmt: skip

    def to_json(self, **kwargs) -> str:
        kwargs.setdefault("indent", 2)
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)


def verify_mlp(
    sizes: Sequence[int] | None = None,
    *,
    activation="sigmoid",
    output: str = "softmax_ce",
    l2: float = 0.0,
    dtype="float64",
    modes: Sequence[str] = MODES,
    batch: int = 16,
    seed: int = 0,
    grad: str = "manual",
    fd_budget: int | str | None = DEFAULT_FD_BUDGET,
    n_projections: int = DEFAULT_PROJECTIONS,
    params=None,
    data=None,
    sections: Sequence[str] = SECTIONS,
) -> MLPVerification:
    """Runs every check on one MLP problem.

    Args:
      sizes: layer widths, input first (taken from ``params`` when those are given).
      activation: hidden activation name, or one per hidden layer.
      output: ``softmax_ce`` | ``sigmoid_bce`` | ``identity_mse``.
      l2: λ ≥ 0.
      dtype: ``"float32"`` or ``"float64"`` (float64 needs ``jax_enable_x64``); taken from
        ``params`` when those are given.
      modes: oracles of the ``gradient`` section.
      batch: number of generated examples m (when ``data`` is not given).
      seed: seed of the generated parameters and data, and of the random directions.
      grad: which hand gradient the ``gradient`` section checks (:data:`GRAD_SOURCES`).
      fd_budget, n_projections: as for :func:`~jaxbp.verify.check`.
      params: parameters to verify at instead of fresh ones — e.g. a training run's current
        parameters (shadow verification).
      data: ``(x, y)`` to verify on instead of generated data (labels or targets).
      sections: which of :data:`SECTIONS` to run (default all), e.g. ``("gradient",)`` for a
        cheap shadow check during training.

    Returns:
      An :class:`MLPVerification`: ``.ok``, ``.failed``, ``.sections``, ``str()`` tables,
      ``.to_dict()`` / ``.to_json()`` with top-level ``"ok"``.

    Raises:
      ValueError: bad sizes, names, dtype, batch, λ or source — naming the argument.
    """
    from jaxbp.params import check_params, layer_sizes
    from jaxbp.validation import check_call

    if params is not None:
        params = check_params(params)
        given = tuple(sizes) if sizes is not None else None
        sizes = layer_sizes(params)
        if given is not None and given != sizes:
            raise ValueError(f"sizes: {list(given)} differ from the params' widths {list(sizes)}")
        dtype = params[0].W.dtype
    if sizes is None:
        raise ValueError("sizes: give the layer widths, or params to take them from")
    dtype = jnp.dtype(dtype)
    if dtype not in (jnp.float32, jnp.float64):
        raise ValueError(f"dtype: expected float32 or float64, got {dtype}")
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            "dtype: float64 needs 64-bit mode; call jax.config.update('jax_enable_x64', True) first"
        )
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch: expected an integer ≥ 1, got {batch!r}")
    source = gradient_source(grad)
    unknown = [name for name in sections if name not in SECTIONS]
    if unknown or not sections:
        raise ValueError(
            f"sections: unknown {unknown or list(sections)!r}; valid sections are "
            f"{', '.join(SECTIONS)}"
        )
    sizes = tuple(sizes)
    if params is None or data is None:
        p0, x0, y0 = make_problem(sizes, activation=activation, output=output, dtype=dtype,
                                  batch=batch, seed=seed)  # fmt: skip
        params = p0 if params is None else params
        x, y = (x0, y0) if data is None else data
    else:
        x, y = data
    params, x, y, activation, output = check_call(params, x, y, activation, output, l2)
    names = dict(activation=activation, output=output)
    kw = dict(names, l2=l2)
    config = {"sizes": list(sizes), "activation": activation, "output": output, "l2": float(l2),
              "dtype": str(dtype), "modes": list(modes), "batch": int(x.shape[0]), "seed": seed,
              "grad": grad, "fd_budget": fd_budget, "n_projections": n_projections,
              "sections": list(sections)}  # fmt: skip
    reports: dict[str, Report] = {}
    seconds: dict[str, float] = {}
    start = time.perf_counter()

    def timed(name, fn):
        if name not in sections:
            return
        t0 = time.perf_counter()
        reports[name] = fn()
        seconds[name] = time.perf_counter() - t0

    watched = {"relu", "leaky_relu"} & set(reference.activation_names(activation, len(params) - 1))
    kinks = (
        _cached_partial(_kinks, activation=activation) if watched else None
    )  # relu / leaky_relu layers
    timed("gradient", lambda: check(
        functools.partial(source, **kw), _cached_partial(_reference_cost, **kw), params, x, y,
        modes=modes, key=seed, fd_budget=fd_budget, n_projections=n_projections, kinks=kinks,
        transforms=(),  # the transforms section checks them, per example too
        title=f"{grad} gradient vs " + ", ".join(modes),
    ))  # fmt: skip
    timed("sources", lambda: _sources(params, x, y, grad, kw))
    timed("deltas", lambda: check_deltas(params, x, y, **kw))
    from jaxbp.verify.mlp.transforms import check_transforms

    timed("transforms", lambda: check_transforms(params, x, y, value_and_grad_fn=source,
                                                 key=seed, **kw))  # fmt: skip
    timed("backward_vjp", lambda: check_backward(params, x, key=seed, **names))
    # the custom VJP is checked w.r.t. real targets too: labels become one-hot rows
    y_real = as_targets(jnp.asarray(y), sizes[-1], dtype)
    timed("loss_vjp", lambda: check_loss_vjp(params, x, y_real, l2, key=seed, **names))
    seconds["total"] = time.perf_counter() - start
    return MLPVerification(config, reports, seconds)


def _cached_partial(fn, **kw):
    """One ``functools.partial`` object per (fn, keywords), so that the oracles' ``jax.jit``
    caches — keyed on the loss function's identity — hit when the same problem is verified again."""
    return _partial(fn, tuple(sorted(kw.items())))


@functools.lru_cache(maxsize=256)
def _partial(fn, items):
    return functools.partial(fn, **dict(items))


def _reference_cost(params, x, y, *, activation, output, l2):
    return reference.cost(params, x, y, activation=activation, output=output, l2=l2)


def _kinks(params, x, y, *, activation):
    del y
    return reference.kinked_preactivations(params, x, activation=activation)


def _sources(params, x, y, grad: str, kw: dict) -> Report:
    """Every jaxbp gradient path other than ``grad`` against ``jax.grad`` of the reference cost."""
    dtype = params[0].W.dtype
    rtol = default_rtol(dtype, "analytic")
    names = {k: kw[k] for k in ("activation", "output")}
    J_ref, g_ref = reference_value_and_grad(params, x, y, jnp.asarray(kw["l2"], dtype), **names)
    rows = []
    for name in GRAD_SOURCES:
        if name == grad:
            continue
        from jaxbp.verify.report import compare

        J, g = gradient_source(name)(params, x, y, **kw)
        rows.append(compare(J, J_ref, oracle=name, path="(value)", rtol=rtol, method="scalar",
                            order=-1))  # fmt: skip
        rows += compare_trees(g, g_ref, oracle=name, rtol=rtol)
    rows += per_example_rows(params, x, y, rtol=rtol, **names)
    return Report("every other gradient source vs jax.grad", tuple(rows), {"rtol": rtol})
