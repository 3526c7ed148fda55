"""Scale-out on JAX's own SPMD engine, with the hand-derived gradient unchanged.

- :mod:`~jaxbp.distributed.mesh`: device meshes, batch/parameter placement, the
  batch-divisibility policy (``ValueError``, or explicit zero-weight padding with ``pad=True``);
- :mod:`~jaxbp.distributed.data_parallel`: Δ per shard by :func:`jaxbp.backward`, one ``psum``,
  then D = Δ/m + (λ/m)W — training steps, sharded per-example gradients;
- :mod:`~jaxbp.distributed.model_parallel`: wide W split by rows over a ``"model"`` axis,
  the δ recursion with its all-gather / reduce-scatter;
- :mod:`~jaxbp.distributed.multihost`: ``jax.distributed`` from flags or environment;
- :mod:`~jaxbp.distributed.platform`, :mod:`~jaxbp.precision`: cpu|gpu|tpu, bf16;
- :mod:`~jaxbp.distributed.source`: the data-parallel gradient as a drop-in source for the trainer;
- :mod:`~jaxbp.distributed.verify`: the manual-vs-autodiff check with the batch sharded;
- :mod:`~jaxbp.distributed.bench`: throughput against device count.

docs/distributed.md has the design, the multi-host recipe and the measured numbers.
"""

from jaxbp.distributed.bench import bench_scaling, scaling_markdown
from jaxbp.distributed.data_parallel import (
    data_parallel_grad_fn,
    data_parallel_train,
    data_parallel_value_and_grad,
    init_opt_state,
    make_train_step,
    place_params,
    shard_sums,
    sharded_per_example_grads,
)
from jaxbp.distributed.mesh import (
    DATA_AXIS,
    MODEL_AXIS,
    check_divisible,
    data_mesh,
    model_mesh,
    place,
    replicate,
    shard_batch,
)
from jaxbp.distributed.model_parallel import (
    layer_plan,
    model_parallel_grad_fn,
    model_parallel_value_and_grad,
    shard_params,
)
from jaxbp.distributed.multihost import (
    ProcessInfo,
    host_copy,
    initialize,
    is_main_process,
    process_info,
    resolve_multihost,
    shutdown,
)
from jaxbp.distributed.platform import PLATFORMS, request_cpu_devices, select_platform
from jaxbp.distributed.source import data_parallel_source
from jaxbp.precision import BF16_EPS, PRECISIONS, bf16_grad_rtol

__all__ = [
    "BF16_EPS",
    "DATA_AXIS",
    "MODEL_AXIS",
    "PLATFORMS",
    "PRECISIONS",
    "ProcessInfo",
    "bench_scaling",
    "bf16_grad_rtol",
    "check_divisible",
    "data_mesh",
    "data_parallel_grad_fn",
    "data_parallel_source",
    "data_parallel_train",
    "data_parallel_value_and_grad",
    "host_copy",
    "init_opt_state",
    "initialize",
    "is_main_process",
    "layer_plan",
    "make_train_step",
    "model_mesh",
    "model_parallel_grad_fn",
    "model_parallel_value_and_grad",
    "place",
    "place_params",
    "process_info",
    "replicate",
    "request_cpu_devices",
    "resolve_multihost",
    "scaling_markdown",
    "select_platform",
    "shard_batch",
    "shard_params",
    "shard_sums",
    "sharded_per_example_grads",
    "shutdown",
]
