"""Subprocess worker of tests/test_distributed_devices.py: runs every multi-device scenario on 8
forced CPU devices, in one process (one JAX start, shared compilations), and writes the results
for the parent test process — which has a single device — to compare with its own references.

Usage: python tests/distributed_worker.py OUT_DIR
Writes OUT_DIR/arrays.npz and OUT_DIR/results.json.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
import traceback

os.environ["JAX_PLATFORMS"] = "cpu"
# Forced CPU devices; the two LLVM settings cut compile time (the bulk of this process's time)
# by about a third and change no arithmetic.
os.environ["XLA_FLAGS"] = " ".join(
    [
        os.environ.get("XLA_FLAGS", ""),
        "--xla_force_host_platform_device_count=8",
        "--xla_backend_optimization_level=0",
        "--xla_llvm_disable_expensive_passes=true",
    ]
).strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

jax.config.update("jax_enable_x64", True)  # this process's own flags (it is not the test process)

import distributed_problem as prob  # noqa: E402
import jaxbp  # noqa: E402
import jaxbp.distributed as jd  # noqa: E402

arrays: dict[str, np.ndarray] = {}
results: dict = {}


def save(prefix: str, tree) -> None:
    for i, leaf in enumerate(prob.flat(tree)):
        arrays[f"{prefix}/{i}"] = leaf


def error_of(fn) -> dict:
    try:
        fn()
    except Exception as e:  # the parent asserts on the type and message
        return {"type": type(e).__name__, "message": str(e)}
    return {"type": None, "message": ""}


def data_parallel_runs() -> None:
    for dtype, counts in (
        (jnp.float64, prob.DEVICE_COUNTS),
        (jnp.float32, prob.FLOAT32_DEVICE_COUNTS),
    ):
        params, x, y = prob.problem(dtype)
        for n in counts:
            final, losses = jd.data_parallel_train(
                jd.data_mesh(n),
                params,
                x,
                y,
                optimizer=prob.optimizer(),
                steps=prob.STEPS,
                batch_size=prob.BATCH,
                activation=prob.ACTIVATION,
                output=prob.OUTPUT,
                l2=prob.L2,
            )
            save(f"dp/{jnp.dtype(dtype).name}/{n}", final)
            results[f"dp_losses/{jnp.dtype(dtype).name}/{n}"] = losses
            results[f"dp_sharding/{jnp.dtype(dtype).name}/{n}"] = str(final[0].W.sharding.spec)


def gradient_runs() -> None:
    params, x, y = prob.problem(jnp.float64)
    kw = dict(activation=prob.ACTIVATION, output=prob.OUTPUT, l2=prob.L2)
    for n in prob.DEVICE_COUNTS:
        J, g = jd.data_parallel_value_and_grad(jd.data_mesh(n), params, x, y, **kw)
        results[f"dp_J/{n}"] = float(J)
        save(f"dp_grad/{n}", g)
    # The same gradient by jit with input shardings: GSPMD inserts the all-reduce itself.
    mesh = jd.data_mesh(8)
    xs, ys, _ = jd.shard_batch(mesh, x, y)
    J, g = jaxbp.value_and_grad(jd.replicate(mesh, params), xs, ys, **kw)
    results["gspmd_J"] = float(J)
    save("gspmd_grad", g)
    # Per-example gradients, batch sharded; they stay sharded by rows.
    pe = jd.sharded_per_example_grads(
        mesh, params, x, y, activation=prob.ACTIVATION, output=prob.OUTPUT
    )
    results["per_example_sharding"] = str(pe[0].W.sharding.spec)
    save("per_example", pe)
    # Batch-divisibility policy: 21 rows on 8 devices.
    x21, y21 = x[:21], y[:21]
    results["indivisible"] = error_of(
        lambda: jd.data_parallel_value_and_grad(mesh, params, x21, y21, **kw)
    )
    results["indivisible_per_example"] = error_of(
        lambda: jd.sharded_per_example_grads(mesh, params, x21, y21, activation=prob.ACTIVATION)
    )
    J, g = jd.data_parallel_value_and_grad(mesh, params, x21, y21, pad=True, **kw)
    results["padded_J"] = float(J)
    save("padded_grad", g)


def model_parallel_runs() -> None:
    params, x, y = prob.problem(jnp.float64, sizes=prob.MP_SIZES, output=prob.MP_OUTPUT)
    kw = dict(activation=prob.ACTIVATION, output=prob.MP_OUTPUT, l2=prob.L2)
    for data, model in prob.MP_MESHES:
        mesh = jd.model_mesh(model, data)
        J, g = jd.model_parallel_value_and_grad(mesh, params, x, y, **kw)
        results[f"mp_J/{data}x{model}"] = float(J)
        results[f"mp_plan/{data}x{model}"] = list(jd.layer_plan(params, model))
        results[f"mp_spec/{data}x{model}"] = [str(layer.W.sharding.spec) for layer in g]
        save(f"mp_grad/{data}x{model}", g)
    # A training run with W split over "model" and the batch over "data" (Adam: elementwise
    # optimizer state, placed like the parameters).
    params, x, y = prob.problem(jnp.float64)
    final, _ = jd.data_parallel_train(
        jd.model_mesh(4, 2),  # model=4, data=2
        params,
        x,
        y,
        optimizer=optax.adam(0.01),
        steps=prob.STEPS,
        batch_size=prob.BATCH,
        activation=prob.ACTIVATION,
        output=prob.OUTPUT,
        l2=prob.L2,
    )
    save("mp_train/2x4", final)


def precision_runs() -> None:
    for act in ("tanh", "sigmoid", "relu"):
        params, x, y = prob.problem(jnp.float32)
        J, g = jd.data_parallel_value_and_grad(
            jd.data_mesh(4), params, x, y, activation=act, output=prob.OUTPUT, precision="bf16"
        )
        results[f"bf16_J/{act}"] = float(J)
        results[f"bf16_dtype/{act}"] = str(g[0].W.dtype)
        save(f"bf16_grad/{act}", g)
    params, x, y = prob.problem(jnp.float32)
    final, losses = jd.data_parallel_train(
        jd.data_mesh(4),
        params,
        x,
        y,
        optimizer=prob.optimizer(),
        steps=prob.STEPS,
        batch_size=prob.BATCH,
        activation=prob.ACTIVATION,
        output=prob.OUTPUT,
        l2=prob.L2,
        precision="bf16",
    )
    results["bf16_train_losses"] = losses
    save("bf16_train", final)


def platform_runs() -> None:
    results["platform_cpu"] = len(jd.select_platform("cpu"))
    results["platform_tpu"] = error_of(lambda: jd.select_platform("tpu"))
    results["platform_after_error"] = jax.config.jax_platforms
    results["cpu_devices_16"] = error_of(lambda: jd.request_cpu_devices(16))
    results["cpu_devices_4"] = error_of(lambda: jd.request_cpu_devices(4))
    results["too_many_devices"] = error_of(lambda: jd.data_mesh(9))


def verify_runs() -> None:
    from jaxbp.distributed.verify import sharded_check

    params, x, y = prob.problem(jnp.float64)
    report = sharded_check(
        jd.data_mesh(8), params, x, y, activation=prob.ACTIVATION, output=prob.OUTPUT, l2=prob.L2
    )
    results["verify_ok"] = bool(report.ok)
    results["verify_rows"] = len(report.rows)
    params, x, y = prob.problem(jnp.float32)
    report = sharded_check(
        jd.data_mesh(4),
        params,
        x,
        y,
        activation=prob.ACTIVATION,
        output=prob.OUTPUT,
        precision="bf16",
    )
    results["verify_bf16_ok"] = bool(report.ok)
    results["verify_bf16_failed"] = list(report.failed)


def source_runs() -> None:
    """The trainer's pattern: jit(vmap over seeds(scan over minibatches(source))), the data
    replicated, 12-row minibatches on 8 devices (12 % 8 ≠ 0: padded inside the step)."""
    _, x, y = prob.problem(jnp.float64)
    seeds = jax.vmap(lambda k: jaxbp.init_params(k, prob.SIZES, dtype=jnp.float64))(
        jax.random.split(jax.random.key(7), 2)
    )
    mesh = jd.data_mesh(8)
    xr, yr = jd.replicate(mesh, (jnp.asarray(x), jnp.asarray(y)))
    for name, base in (("manual", None), ("autodiff", jaxbp.autodiff_value_and_grad)):
        vg = jd.data_parallel_source(mesh, base=base)
        final = jax.jit(jax.vmap(functools.partial(prob.scan_train, vg), in_axes=(0, None, None)))(
            seeds, xr, yr
        )
        save(f"source/{name}", final)


def bench_runs() -> None:
    rows = jd.bench_scaling((1, 8), sizes=(8, 16, 4), batch=16, steps=2, repeats=1)
    results["bench"] = rows
    results["bench_markdown"] = jd.scaling_markdown(rows)


def main(out_dir: str) -> int:
    results["devices"] = len(jax.devices())
    for scenario in (
        platform_runs,
        data_parallel_runs,
        gradient_runs,
        model_parallel_runs,
        precision_runs,
        verify_runs,
        source_runs,
        bench_runs,
    ):
        t0 = time.perf_counter()
        try:
            scenario()
            results[f"ok/{scenario.__name__}"] = True
        except Exception:
            results[f"ok/{scenario.__name__}"] = traceback.format_exc()
        results[f"seconds/{scenario.__name__}"] = time.perf_counter() - t0
    np.savez(os.path.join(out_dir, "arrays.npz"), **arrays)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
