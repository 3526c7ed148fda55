"""One process of the two-process test in tests/test_distributed_multihost.py.

Usage: python tests/distributed_multihost_worker.py OUT_DIR [PROCESS_ID COORDINATOR_ADDRESS]

With PROCESS_ID and COORDINATOR_ADDRESS the multi-process setting comes from the arguments
(flags); without them, from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID
(environment) — the parent starts one process each way. Each process forces 2 CPU devices, joins
the run, trains on a data mesh over all 4 devices of both processes, and writes its own copy of
the final parameters to OUT_DIR/process_<id>.npz and its view of the run to process_<id>.json.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"
# Forced CPU devices; the two LLVM settings cut compile time (the bulk of this process's time)
# by about a third and change no arithmetic.
os.environ["XLA_FLAGS"] = " ".join(
    [
        os.environ.get("XLA_FLAGS", ""),
        "--xla_force_host_platform_device_count=2",
        "--xla_backend_optimization_level=0",
        "--xla_llvm_disable_expensive_passes=true",
    ]
).strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)  # this process's own flags (it is not the test process)

import distributed_problem as prob  # noqa: E402
import jaxbp.distributed as jd  # noqa: E402


def main(argv: list[str]) -> int:
    out_dir = argv[0]
    if len(argv) == 3:
        info = jd.initialize(argv[2], 2, int(argv[1]), timeout_s=60)
    else:
        info = jd.initialize(timeout_s=60)
    params, x, y = prob.problem(jnp.float64)
    mesh = jd.data_mesh()  # every device of both processes
    final, losses = jd.data_parallel_train(
        mesh,
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
    host = jd.host_copy(final)
    np.savez(
        os.path.join(out_dir, f"process_{info.process_id}.npz"),
        **{str(i): leaf for i, leaf in enumerate(prob.flat(host))},
    )
    with open(os.path.join(out_dir, f"process_{info.process_id}.json"), "w") as f:
        json.dump(
            {
                "info": info._asdict(),
                "mesh_devices": int(mesh.devices.size),
                "losses": losses,
                "main": jd.is_main_process(),
            },
            f,
        )
    jd.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
