"""How long checking a gradient takes: ``jaxbp.verify.check`` beside ``jax.test_util.check_grads``.

The target (docs/verify.md, "How long a check takes"): checking the 784-512-512-10 float32 MLP
(669 706 parameters, batch 256) with :func:`jaxbp.verify.check`'s defaults, cold, takes no longer
than ``jax.test_util.check_grads(f, (params,), order=1, modes=("fwd", "rev"))`` on the same
function ``f = lambda p: jaxbp.cost(p, x, y)``, both in one process, whichever runs first; the
warm ratio is reported (``check`` runs three oracles over every element and two transformations,
``check_grads`` four evaluations and one JVP and VJP along one direction).

:func:`bench_verify` times, in this order:

1. **cold** — each checker once, compile included (what a test suite pays), in the order
   ``first`` says: whichever runs first pays what process-wide first use remains after the
   warm-up (the backend, the data, one small op), so the figure is measured both ways
   (``benchmarks/verify_speed.py --first``) and the target must hold in each;
2. **warm** — each checker again, up to ``repeats`` rounds (at least one; further rounds only
   while the warm ``check`` runs have used less than ``budget_s``), alternating which goes first;
   the median is reported;
3. for scale, one jitted ``jaxbp.value_and_grad`` (its compile time and the median of warm calls).

``check`` gets ``jaxbp.value_and_grad`` as ``grad_fn`` and ``jaxbp.cost`` as ``loss_fn``, the
activation passed by keyword through module-level functions (one per activation, so that the
verifier's compiled oracles, keyed on ``loss_fn``, are reused by the warm run as they would be in
a test suite). Nothing here prints: progress goes to an optional ``log`` callback. The result is
a plain JSON-able dict (:func:`bench_verify`'s docstring); :func:`render` prints it as a table.
"""

from __future__ import annotations

import datetime
import functools
import math
import statistics
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

TARGET_RATIO = 1.0
"""Cold jaxbp.verify.check time / cold jax.test_util.check_grads time must be at most this."""

TARGET_SIZES = (784, 512, 512, 10)
TARGET_BATCH = 256
TARGET_DTYPE = "float32"


@functools.cache
def _functions(activation: str):
    """``(grad_fn, loss_fn)`` for one activation, the same objects on every call."""
    import jaxbp

    def grad_fn(params, x, y):
        return jaxbp.value_and_grad(params, x, y, activation=activation)

    def loss_fn(params, x, y):
        return jaxbp.cost(params, x, y, activation=activation)

    grad_fn.__name__ = f"value_and_grad_{activation}"
    loss_fn.__name__ = f"cost_{activation}"
    return grad_fn, loss_fn


def _problem(sizes, batch, dtype, seed):
    import jaxbp

    k_init, k_x, k_y = jax.random.split(jax.random.key(seed), 3)
    params = jaxbp.init_params(k_init, list(sizes), dtype=dtype)
    x = jax.random.normal(k_x, (batch, sizes[0]), dtype)
    y = jax.random.randint(k_y, (batch,), 0, sizes[-1])
    jax.block_until_ready((params, x, y))
    return params, x, y


def _time_jaxbp(grad_fn, loss_fn, params, x, y) -> dict:
    from jaxbp import verify

    t0 = time.perf_counter()
    report = verify.check(grad_fn, loss_fn, params, x, y)
    wall = time.perf_counter() - t0
    seconds = {k: float(v) for k, v in (report.meta.get("seconds") or {}).items()}
    return {"s": wall, "ok": bool(report.ok), "failed": list(report.failed), "seconds": seconds}


def _time_check_grads(loss_fn, params, x, y) -> dict:
    from jax.test_util import check_grads

    def f(p):
        return loss_fn(p, x, y)

    t0 = time.perf_counter()
    error = None
    try:
        check_grads(f, (params,), order=1, modes=("fwd", "rev"))
    except AssertionError as e:  # a failing check still took this long
        error = str(e).strip().splitlines()[0] if str(e).strip() else "AssertionError"
    return {"s": time.perf_counter() - t0, "ok": error is None, "error": error}


def _time_value_and_grad(grad_fn, params, x, y, *, calls: int = 20) -> dict:
    step = jax.jit(grad_fn)
    t0 = time.perf_counter()
    jax.block_until_ready(step(params, x, y))
    compile_s = time.perf_counter() - t0
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        jax.block_until_ready(step(params, x, y))
        samples.append(time.perf_counter() - t0)
    return {"s": statistics.median(samples), "compile_s": compile_s, "calls": calls}


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 and math.isfinite(a) and math.isfinite(b) else None


def bench_verify(
    sizes: Sequence[int] = TARGET_SIZES,
    batch: int = TARGET_BATCH,
    dtype="float32",
    *,
    activation: str = "sigmoid",
    repeats: int = 3,
    budget_s: float = 60.0,
    seed: int = 0,
    first: str = "jaxbp",
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    """Times ``jaxbp.verify.check`` (defaults) against ``jax.test_util.check_grads`` on one MLP.

    Args:
      sizes: layer widths, input first (default the target's 784-512-512-10).
      batch: examples (default 256).
      dtype: the parameters' and inputs' dtype (default float32, the target's).
      activation: hidden activation (``sigmoid`` or ``relu`` for the target).
      repeats: at most this many warm rounds (each checker once per round); at least one runs.
      budget_s: no further warm round starts once the warm ``check`` runs have used this long.
      seed: parameters and data.
      first: which checker runs first cold, ``"jaxbp"`` or ``"check_grads"``.
      log: progress callback.

    Returns:
      A JSON-able dict: ``date``, ``sizes``, ``batch``, ``dtype``, ``activation``, ``n_params``,
      ``target_network`` (whether this is the target's network, batch and dtype),
      ``jaxbp_s`` / ``check_grads_s`` / ``ratio`` (each ``{"cold", "warm"}``; ratio = jaxbp /
      check_grads), ``warm_samples`` (``{"jaxbp": [...], "check_grads": [...]}``),
      ``value_and_grad_s`` (median warm call of the jitted ``jaxbp.value_and_grad``),
      ``value_and_grad_compile_s``, ``seconds`` (``report.meta["seconds"]``, cold and warm: the
      check's cost per oracle), ``jaxbp_ok`` / ``check_grads_ok`` (both verdicts, cold run),
      ``check_grads_error`` (its first line when it failed), ``target`` (the ratio threshold),
      ``target_met`` (``{"cold", "warm", "both"}``), ``check_grads_call``, ``check_call``, ``wall_s``.

    Raises:
      ValueError: bad sizes, batch, repeats or budget.
    """
    import jaxbp

    sizes = tuple(int(s) for s in sizes)
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"sizes: expected at least two widths ≥ 1, got {sizes!r}")
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch: expected an integer ≥ 1, got {batch!r}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats: expected an integer ≥ 1, got {repeats!r}")
    if not budget_s > 0:
        raise ValueError(f"budget_s: expected seconds > 0, got {budget_s!r}")
    if first not in ("jaxbp", "check_grads"):
        raise ValueError(f"first: expected 'jaxbp' or 'check_grads', got {first!r}")
    dtype = jnp.dtype(dtype)
    started = datetime.datetime.now(datetime.UTC)
    t_start = time.perf_counter()
    grad_fn, loss_fn = _functions(activation)

    # warm-up that shares nothing with either check: the backend, the data, one small op
    params, x, y = _problem(sizes, batch, dtype, seed)
    jax.block_until_ready(jnp.ones(3, dtype) + 1)
    n_params = sum(int(leaf.size) for leaf in jax.tree.leaves(params))

    log(f"verify: {'-'.join(map(str, sizes))}, batch {batch}, {dtype.name}: cold, {first} first")
    if first == "jaxbp":
        cold_j = _time_jaxbp(grad_fn, loss_fn, params, x, y)
        cold_c = _time_check_grads(loss_fn, params, x, y)
    else:
        cold_c = _time_check_grads(loss_fn, params, x, y)
        cold_j = _time_jaxbp(grad_fn, loss_fn, params, x, y)
    warm_j, warm_c = [], []
    for r in range(repeats):
        if r and sum(w["s"] for w in warm_j) >= budget_s:
            break
        log(f"verify: warm round {r + 1}")
        if r % 2 == 0:
            warm_j.append(_time_jaxbp(grad_fn, loss_fn, params, x, y))
            warm_c.append(_time_check_grads(loss_fn, params, x, y))
        else:
            warm_c.append(_time_check_grads(loss_fn, params, x, y))
            warm_j.append(_time_jaxbp(grad_fn, loss_fn, params, x, y))
    log("verify: jitted jaxbp.value_and_grad, for scale")
    vg = _time_value_and_grad(grad_fn, params, x, y)

    j_s = {"cold": cold_j["s"], "warm": statistics.median(w["s"] for w in warm_j)}
    c_s = {"cold": cold_c["s"], "warm": statistics.median(w["s"] for w in warm_c)}
    ratio = {k: _ratio(j_s[k], c_s[k]) for k in ("cold", "warm")}
    met = {"cold": ratio["cold"] is not None and ratio["cold"] <= TARGET_RATIO}
    warm_seconds = {
        k: statistics.median(w["seconds"].get(k, math.nan) for w in warm_j)
        for k in warm_j[0]["seconds"]
    }
    return {
        "date": started.isoformat(timespec="seconds"),
        "sizes": list(sizes),
        "batch": batch,
        "dtype": dtype.name,
        "activation": activation,
        "n_params": n_params,
        "target_network": sizes == TARGET_SIZES
        and batch == TARGET_BATCH
        and dtype.name == TARGET_DTYPE,
        "jaxbp_s": j_s,
        "check_grads_s": c_s,
        "ratio": ratio,
        "warm_samples": {
            "jaxbp": [w["s"] for w in warm_j],
            "check_grads": [w["s"] for w in warm_c],
        },
        "value_and_grad_s": vg["s"],
        "value_and_grad_compile_s": vg["compile_s"],
        "seconds": {"cold": cold_j["seconds"], "warm": warm_seconds},
        "jaxbp_ok": cold_j["ok"],
        "jaxbp_failed": cold_j["failed"],
        "check_grads_ok": cold_c["ok"],
        "check_grads_error": cold_c["error"],
        "target": TARGET_RATIO,
        "target_met": met,
        "first": first,
        "check_call": "jaxbp.verify.check(value_and_grad, cost, params, x, y)  # defaults",
        "check_grads_call": "check_grads(lambda p: cost(p, x, y), (params,), order=1, "
        'modes=("fwd", "rev"))',
        "jax": jax.__version__,
        "jaxbp": jaxbp.__version__,
        "backend": jax.default_backend(),
        "wall_s": time.perf_counter() - t_start,
    }


def _s(v) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.3g}"


def render(result: dict, *, markdown: bool = False) -> str:
    """The section as a small table: cold and warm seconds, the ratio, whether the target is met,
    one jitted value_and_grad for scale, and the check's cost per oracle."""
    r = result
    net = f"{'-'.join(map(str, r['sizes']))}, batch {r['batch']}, {r['dtype']}, {r['activation']}"
    head = (
        f"gradient check time ({net}, {r['n_params']:,} parameters): jaxbp.verify.check "
        f"(defaults) vs jax.test_util.check_grads (order 1, fwd+rev)"
    )
    if not r["target_network"]:
        head += f" — not the target's network ({'-'.join(map(str, TARGET_SIZES))}, batch "
        head += f"{TARGET_BATCH}, {TARGET_DTYPE})"

    rows = [
        ("", f"cold s (compile incl.; {r.get('first', 'jaxbp')} first)", "warm s"),
        ("jaxbp.verify.check", _s(r["jaxbp_s"]["cold"]), _s(r["jaxbp_s"]["warm"])),
        ("jax.test_util.check_grads", _s(r["check_grads_s"]["cold"]),
         _s(r["check_grads_s"]["warm"])),
        ("ratio check / check_grads", _s(r["ratio"]["cold"]), _s(r["ratio"]["warm"])),
        (f"target: cold ratio ≤ {r['target']:g}", "met" if r["target_met"]["cold"] else "UNMET",
         "(reported)"),
    ]  # fmt: skip
    oracles = list(dict.fromkeys([*r["seconds"]["cold"], *r["seconds"]["warm"]]))
    for k in oracles:
        rows.append(
            (
                f"{'' if markdown else '  '}check: {k}",
                _s(r["seconds"]["cold"].get(k)),
                _s(r["seconds"]["warm"].get(k)),
            )
        )
    rows.append(
        ("jitted value_and_grad", f"{_s(r['value_and_grad_compile_s'])} (compile)",
         _s(r["value_and_grad_s"]))
    )  # fmt: skip
    verdicts = (
        f"verdicts: check {'pass' if r['jaxbp_ok'] else 'FAIL ' + ', '.join(r['jaxbp_failed'])}, "
        f"check_grads {'pass' if r['check_grads_ok'] else 'FAIL: ' + str(r['check_grads_error'])}"
    )
    if markdown:
        lines = [head, "", "| " + " | ".join(rows[0]) + " |", "|---|---:|---:|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
        return "\n".join([*lines, "", verdicts])
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [head]
    for row in rows:
        lines.append(
            "  " + row[0].ljust(widths[0]) + "  " + row[1].rjust(widths[1]) + "  "
            + row[2].rjust(widths[2])
        )  # fmt: skip
    lines.append("  " + verdicts)
    return "\n".join(lines)
