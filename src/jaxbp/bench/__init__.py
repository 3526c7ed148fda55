"""Benchmarks of the training step: hand-derived vs ``jax.grad`` vs PyTorch vs scikit-learn.

``jaxbp bench`` (:mod:`jaxbp.cli.bench`) runs :func:`run_bench`; docs/benchmarks.md holds the
numbers and the command that regenerates them. Modules:

- :mod:`~jaxbp.bench.configs` — the networks (MLPs and the LeNet ``cnn``) and the flop counts
  (6·m·Σ n_in·n_out; 6·m·H_o·W_o·k²·C_in·C_out per convolution);
- :mod:`~jaxbp.bench.timing` — interleaved rounds, medians, paired ratios;
- :mod:`~jaxbp.bench.peak` — the measured GEMM peak;
- :mod:`~jaxbp.bench.methods` — the jitted JAX training steps;
- :mod:`~jaxbp.bench.peers` — PyTorch and scikit-learn on the same network;
- :mod:`~jaxbp.bench.epoch` — the step inside the runner's epoch (``jaxbp train``'s loop);
- :mod:`~jaxbp.bench.accuracy` — time to 97 % test accuracy on digits;
- :mod:`~jaxbp.bench.suite` — all of it as one JSON-able dict, with the targets.
"""

from jaxbp.bench.configs import (
    CONFIGS,
    QUICK,
    Config,
    LeNet,
    cnn_step_flops,
    config_flops,
    custom_config,
    n_params,
    step_flops,
)
from jaxbp.bench.peak import GemmPeak, gemm_peak
from jaxbp.bench.suite import LABELS, METHODS, bench_config, run_bench, targets
from jaxbp.bench.timing import Timing, interleaved, paired_ratio

__all__ = [
    "CONFIGS",
    "LABELS",
    "METHODS",
    "QUICK",
    "Config",
    "GemmPeak",
    "LeNet",
    "Timing",
    "bench_config",
    "cnn_step_flops",
    "config_flops",
    "custom_config",
    "gemm_peak",
    "interleaved",
    "n_params",
    "paired_ratio",
    "run_bench",
    "step_flops",
    "targets",
]
