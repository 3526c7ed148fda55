"""The whole benchmark: every configuration × method, the GEMM peak, the targets — as one dict.

:func:`run_bench` returns plain JSON-able data (documented in docs/benchmarks.md, "JSON
output"); the CLI (``jaxbp bench``) renders it as a table. Nothing here prints: progress goes to
an optional ``log`` callback.
"""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

import jaxbp
from jaxbp.bench.configs import GEMM_TARGET_CONFIGS, Config, config_flops
from jaxbp.bench.epoch import bench_epoch
from jaxbp.bench.methods import (
    BF16_METHOD,
    JAX_METHODS,
    METHOD_SOURCES,
    Prepared,
    make_problem,
    prepare_jax,
)
from jaxbp.bench.peak import QUICK_SHAPES, SHAPES, GemmPeak, gemm_peak, gemm_runner
from jaxbp.bench.peers import PEERS, installed, peer_version, prepare_sklearn, prepare_torch
from jaxbp.bench.timing import interleaved, paired_ratio

TORCH_BF16 = "torch_bf16"
"""PyTorch's step with its forward pass under ``torch.autocast(dtype=bfloat16)``."""

METHODS = (*METHOD_SOURCES, *PEERS, BF16_METHOD, TORCH_BF16)
"""Every method, in table order: the float32 steps, then the bf16 ones (``hand_bf16`` and
``torch_bf16``)."""

LABELS = {
    "hand": "hand-derived batched",
    "scan": "hand-derived per-sample scan",
    "vmap": "per-example vmap",
    "custom_vjp": "jax.grad via custom_vjp",
    "autodiff": "plain jax.grad",
    "torch": "PyTorch autograd",
    "sklearn": "sklearn MLPClassifier partial_fit",
    "hand_bf16": "hand-derived, bf16 products",
    TORCH_BF16: "PyTorch autograd, bf16 autocast",
}

GEMM = "gemm peak shape"
"""The name of the GEMM runner timed in every configuration's rounds."""

TARGET_HAND_VS_AUTODIFF = 0.95
TARGET_HAND_VS_TORCH = 1.0
TARGET_PEAK_FRACTION = 0.85
TARGET_TTA_VS_SKLEARN = 1.0
TARGET_BF16_VS_FLOAT32 = 0.5
"""The bf16 step at most half the float32 step on the compute-bound configurations."""
BF16_TARGET_CONFIGS = ("mnist", "wide")
TARGET_CNN_HAND_VS_AUTODIFF = 1.05
"""The hand-derived CNN step no slower than ``jax.grad``'s, within 5 %."""


ISA_FLAGS = (
    "avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_tile",
    "amx_bf16", "amx_int8", "amx_fp16", "asimd", "sve", "sve2", "bf16", "i8mm",
)  # fmt: skip
"""The instruction-set extensions that decide GEMM and bf16 speed, reported when present
(x86: /proc/cpuinfo ``flags``; Arm: ``Features``)."""


def cpu_info(path: str = "/proc/cpuinfo") -> dict:
    """The CPU's model name, vendor, family, model and stepping numbers and its
    :data:`ISA_FLAGS`, from the first processor of ``path`` (None where not available):
    rankings between libraries differ between CPU models, so every table states them."""
    info = {"name": platform.processor() or platform.machine(), "vendor": None, "family": None,
            "model": None, "stepping": None, "isa": []}  # fmt: skip
    keys = {"model name": "name", "vendor_id": "vendor", "cpu family": "family",
            "model": "model", "stepping": "stepping"}  # fmt: skip
    try:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    break  # the first processor only
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key in keys:
                    info[keys[key]] = value
                elif key in ("flags", "Features"):
                    present = set(value.split())
                    info["isa"] = [flag for flag in ISA_FLAGS if flag in present]
    except OSError:
        pass
    return info


def describe_cpu(m: dict) -> str:
    """One line: model name, family/model/stepping, ISA extensions (for tables)."""
    c = m.get("cpu_info") or {}
    numbers = ", ".join(
        f"{k} {c[k]}" for k in ("family", "model", "stepping") if c.get(k) is not None
    )
    isa = ", ".join(c.get("isa") or []) or "none of " + "/".join(ISA_FLAGS[:4])
    return f"{m['cpu']}" + (f" ({numbers})" if numbers else "") + f"; ISA: {isa}"


def machine() -> dict:
    """CPU (model, family/model numbers, ISA extensions), cores and the benchmark's thread
    count, JAX backend and device, load average, package versions."""
    from jaxbp.bench.peers import bench_threads

    cpu = cpu_info()
    return {
        "cpu": cpu["name"],
        "cpu_info": cpu,
        "cores": os.cpu_count(),
        "threads": bench_threads(),
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "device_count": jax.device_count(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxbp": jaxbp.__version__,
        "torch": peer_version("torch"),
        "sklearn": peer_version("sklearn"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "peers": "each in its own process (jaxbp in the benchmark's, PyTorch and scikit-learn "
        "in workers), same thread count",
    }


def prepare(method: str, problem, *, activation, lr, precision):
    """Dispatches to the JAX or peer preparation of ``method``."""
    if method in JAX_METHODS:
        return prepare_jax(method, problem, activation=activation, lr=lr, precision=precision)
    if method == "torch":
        return prepare_torch(problem, activation=activation, lr=lr)
    if method == TORCH_BF16:
        if str(problem.x.dtype) != "float32":
            return Prepared(
                "unsupported",
                reason=f"bf16 autocast keeps float32 master parameters; got dtype {problem.x.dtype}",
            )
        return prepare_torch(problem, activation=activation, lr=lr, autocast="bfloat16")
    if method == "sklearn":
        return prepare_sklearn(problem, activation=activation, lr=lr)
    raise ValueError(f"methods: unknown method {method!r}; valid: {', '.join(METHODS)}")


def bench_config(
    config: Config,
    *,
    methods: Sequence[str] = METHODS,
    dtype=jnp.float32,
    activation="sigmoid",
    lr: float = 0.1,
    precision: str | None = None,
    budget_s: float = 3.0,
    sample_s: float = 0.02,
    peak: GemmPeak | None = None,
    seed: int = 0,
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    """Times one configuration's training step for every method, interleaved.

    With ``peak``, its best shape's GEMM also runs in these rounds, and the peak used for
    ``pct_peak`` is the higher of ``peak.gflops`` and that GEMM's median rate here — the best
    rate measured, as "peak" means — so that a configuration timed while the machine was busier
    than during the peak measurement does not flatter itself.

    Returns:
      A dict: ``name``, ``kind`` (``mlp``, ``cnn``), ``model`` (the network in one line),
      ``sizes`` (the MLP's widths, or the CNN's dense part's), ``batch``, ``flops_per_step``,
      ``methods`` (method → row with
      ``status``, ``step_ms``, ``spread``, ``samples``, ``inner``, ``gflops``, ``pct_peak``,
      ``compile_s``, ``memory_mib``, ``reason``), ``ratios`` ("hand/<method>" → paired
      median ratio of step times), ``gemm_gflops`` (the peak shape's GEMM rate in these rounds)
      and ``peak_gflops`` (the peak behind ``pct_peak``).
    """
    problem = make_problem(config, dtype=dtype, seed=seed)
    prepared = {}
    for method in methods:
        log(f"  {config.name}: compiling {method}")
        prepared[method] = prepare(
            method, problem, activation=activation, lr=lr, precision=precision
        )
    runs = {m: p.run for m, p in prepared.items() if p.status == "ok"}
    log(f"  {config.name}: timing {', '.join(runs)}")
    if peak is not None:
        runs[GEMM], gemm_flops = gemm_runner(peak.shape, dtype=dtype, precision=precision)
    timings = interleaved(runs, budget_s=budget_s, sample_s=sample_s)
    gemm = timings.pop(GEMM, None)
    gemm_gflops = None if gemm is None else gemm_flops / gemm.median / 1e9
    best = None if peak is None else max(peak.gflops, gemm_gflops)
    flops = config_flops(config)
    rows = {}
    for method, p in prepared.items():
        where = ", ".join(filter(None, (p.device, p.detail)))
        label = LABELS[method] + (f" ({where})" if where else "")
        row = {"label": label, "status": p.status, "reason": p.reason, "device": p.device}
        row["compile_s"] = p.compile_s
        row["memory_mib"] = None if p.memory_bytes is None else p.memory_bytes / 2**20
        if method in timings:
            t = timings[method]
            row.update(
                step_ms=t.median * 1e3,
                spread=t.spread,
                samples=len(t.samples),
                inner=t.inner,
                gflops=flops / t.median / 1e9,
                pct_peak=None if best is None else 100 * flops / t.median / 1e9 / best,
            )
        rows[method] = row
    ratios = {}
    if "hand" in timings:
        for method, t in timings.items():
            if method != "hand":
                ratios[f"hand/{method}"] = paired_ratio(timings["hand"], t)
    return {
        "name": config.name,
        "kind": config.kind,
        "model": config.describe(),
        "sizes": list(config.sizes),
        "batch": config.batch,
        "flops_per_step": flops,
        "methods": rows,
        "ratios": ratios,
        "gemm_gflops": gemm_gflops,
        "peak_gflops": best,
    }


def targets(configs: Sequence[dict], tta: dict | None) -> list[dict]:
    """The performance targets, each with its measured value and whether it is met.

    Each also records, as ``issue``, the tracker issue that set it (a field of the JSON schema,
    docs/benchmarks.md): 5 for the MLPs' step, peak and time-to-accuracy targets, 12 for the
    CNN's, 13 for bf16's."""
    out = []

    def add(target, config, value, threshold, met, issue=5):
        out.append(
            dict(
                target=target,
                config=config,
                value=value,
                threshold=threshold,
                met=bool(met),
                issue=issue,
            )
        )

    for c in configs:
        r = c["ratios"]
        if c.get("kind") == "cnn":
            if "hand/autodiff" in r:
                v, t = r["hand/autodiff"], TARGET_CNN_HAND_VS_AUTODIFF
                add("hand / jax.grad step time", c["name"], v, t, v <= t, issue=12)
            continue
        if "hand/autodiff" in r:
            v = r["hand/autodiff"]
            add("hand / jax.grad step time", c["name"], v, TARGET_HAND_VS_AUTODIFF, v <= 0.95)
        if "hand/torch" in r:
            v = r["hand/torch"]
            add("hand / PyTorch step time", c["name"], v, TARGET_HAND_VS_TORCH, v < 1.0)
        if c["name"] in BF16_TARGET_CONFIGS and "hand/hand_bf16" in r:
            v = 1 / r["hand/hand_bf16"]
            add("bf16 / float32 step time", c["name"], v, TARGET_BF16_VS_FLOAT32,
                v <= TARGET_BF16_VS_FLOAT32, issue=13)  # fmt: skip
        hand = c["methods"].get("hand", {})
        if c["name"] in GEMM_TARGET_CONFIGS and hand.get("pct_peak") is not None:
            v = hand["pct_peak"] / 100
            add("hand GFLOP/s / GEMM peak", c["name"], v, TARGET_PEAK_FRACTION, v >= 0.85)
    if tta and tta.get("ratio") is not None:
        v = tta["ratio"]
        add("time to 97 % / sklearn fit", "digits", v, TARGET_TTA_VS_SKLEARN, v <= 1.0)
    return out


def run_bench(
    configs: Sequence[Config],
    *,
    methods: Sequence[str] = METHODS,
    dtype=jnp.float32,
    activation="sigmoid",
    lr: float = 0.1,
    precision: str | None = None,
    budget_s: float = 3.0,
    sample_s: float = 0.02,
    peak_shapes: Sequence[tuple[int, int, int]] | None = None,
    quick: bool = False,
    accuracy: Callable[[], dict] | None = None,
    epoch: bool = True,
    seed: int = 0,
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    """The full benchmark (module docstring); ``accuracy`` is the time-to-accuracy run, if any.

    With ``epoch`` (and both ``hand`` and ``autodiff`` among the methods), each MLP
    configuration also gets ``in_epoch``: the step inside the runner's epoch
    (:func:`jaxbp.bench.epoch.bench_epoch`, an MLP epoch).

    Returns:
      A JSON-able dict with keys ``date``, ``machine``, ``settings``, ``gemm_peak``,
      ``configs``, ``time_to_accuracy``, ``targets`` (docs/benchmarks.md, "JSON output").
    """
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"methods: unknown method {method!r}; valid: {', '.join(METHODS)}")
    info = machine()
    started = datetime.datetime.now(datetime.UTC)
    short = quick or budget_s < 1.0
    shapes = peak_shapes if peak_shapes is not None else (QUICK_SHAPES if short else SHAPES)
    log("measuring the GEMM peak")
    with_torch = "torch" in methods and installed("torch") and jax.default_backend() == "cpu"
    peak = gemm_peak(
        shapes, dtype=dtype, budget_s=min(1.5, budget_s), precision=precision, torch=with_torch
    )
    results = []
    for config in configs:
        log(f"configuration {config.name} {config.describe()} batch {config.batch}")
        results.append(
            bench_config(
                config,
                methods=methods,
                dtype=dtype,
                activation=activation,
                lr=lr,
                precision=precision,
                budget_s=budget_s,
                sample_s=sample_s,
                peak=peak,
                seed=seed,
                log=log,
            )
        )
        if epoch and config.kind == "mlp" and "hand" in methods and "autodiff" in methods:
            log(f"  {config.name}: timing the runner's epoch (manual, autodiff)")
            results[-1]["in_epoch"] = bench_epoch(
                config,
                dtype=dtype,
                activation=activation,
                lr=lr,
                precision=precision,
                budget_s=budget_s,
                sample_s=sample_s,
                seed=seed,
            )
    tta = None
    if accuracy is not None:
        log("time to accuracy on digits")
        tta = accuracy()
    info["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {
        "date": started.isoformat(timespec="seconds"),
        "wall_s": (datetime.datetime.now(datetime.UTC) - started).total_seconds(),
        "machine": info,
        "settings": {
            "dtype": jnp.dtype(dtype).name,
            "activation": activation if isinstance(activation, str) else list(activation),
            "output": "softmax_ce",
            "optimizer": f"sgd(lr={lr})",
            "matmul_precision": precision,
            "budget_s": budget_s,
            "sample_s": sample_s,
            "quick": quick,
            "seed": seed,
        },
        "gemm_peak": {
            "gflops": peak.gflops,
            "shape": list(peak.shape),
            "per_shape": [{"shape": list(s), "gflops": g} for s, g in peak.per_shape],
            "torch_per_shape": [{"shape": list(s), "gflops": g} for s, g in peak.torch_per_shape],
        },
        "configs": results,
        "time_to_accuracy": tta,
        "targets": targets(results, tta),
    }
