"""The benchmark's network configurations and the flop count of one training step.

A training step on a batch of m rows does, per weight layer with W of shape (n_out, n_in), three
matrix products of m·n_in·n_out multiply-adds each — forward z = a Wᵀ (eq. F2), backward
δ W (eq. B2) and the weight gradient δᵀ a (eq. B3) — so 6·m·Σ n_in·n_out floating-point
operations in all. Biases, activations, the softmax and the optimizer update are O(m·Σ n_out)
and left out: the count is the GEMM work that bounds the step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class Config(NamedTuple):
    """One benchmark configuration.

    Attributes:
      name: table name.
      sizes: layer widths, input first.
      batch: rows per training step.
      note: what the configuration stands for.
    """

    name: str
    sizes: tuple[int, ...]
    batch: int
    note: str


CONFIGS: dict[str, Config] = {
    c.name: c
    for c in (
        Config("tiny", (64, 32, 10), 64, "dispatch-bound: a small net, small batch"),
        Config("course", (400, 25, 10), 5000, "the course's digits network, full batch"),
        Config("mnist", (784, 512, 512, 10), 256, "a classic MNIST MLP, minibatch"),
        Config("wide", (1024, 2048, 2048, 10), 1024, "GEMM-bound: large square layers"),
        Config("deep", (256,) + (256,) * 8 + (10,), 512, "eight hidden layers of 256"),
    )
}
"""The configurations of issue 5, in table order."""

QUICK = ("tiny", "course", "mnist")
"""The ``--quick`` subset."""

GEMM_TARGET_CONFIGS = ("mnist", "wide", "deep")
"""Configurations held to the ≥ 85 % of GEMM peak target."""


def n_params(sizes: Sequence[int]) -> int:
    """Number of parameters Σ (n_in + 1)·n_out of a network with these layer widths."""
    return sum((n_in + 1) * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True))


def step_flops(sizes: Sequence[int], batch: int) -> int:
    """Floating-point operations of one training step: 6·batch·Σ n_in·n_out (module docstring).

    Example:
      >>> step_flops((64, 32, 10), 64)
      909312
    """
    if len(sizes) < 2 or batch < 1 or min(sizes) < 1:
        raise ValueError(
            f"sizes/batch: need ≥ 2 positive widths and batch ≥ 1, got {tuple(sizes)}, {batch}"
        )
    return 6 * batch * sum(n_in * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True))


def custom_config(sizes: Sequence[int], batch: int) -> Config:
    """A configuration outside the table, named after its shape (``8-4-3 b16``)."""
    step_flops(sizes, batch)  # validates
    name = "-".join(map(str, sizes)) + f" b{batch}"
    return Config(name, tuple(int(s) for s in sizes), int(batch), "custom")
