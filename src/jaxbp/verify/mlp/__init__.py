"""The MLP-specific part of the verifier: jaxbp's own network under every check.

- :mod:`~jaxbp.verify.mlp.reference` — an independent reference network (plain ``jax.numpy``);
- :mod:`~jaxbp.verify.mlp.deltas` — each hand δ^(l) against autodiff's ∂J/∂z^(l) (zero probes);
- :mod:`~jaxbp.verify.mlp.transforms` — eager / jit / vmap / jit∘vmap, mean of per-example =
  batch, the recompilation guard;
- :mod:`~jaxbp.verify.mlp.identities` — the VJP identities for the δ recursion and ``jaxbp.loss``;
- :mod:`~jaxbp.verify.mlp.verify` — :func:`verify_mlp`, all of the above on one generated
  network (``jaxbp verify``).

The generic checker (any ``grad_fn``, any function) is the parent package, :mod:`jaxbp.verify`.
"""

from jaxbp.verify.mlp import reference
from jaxbp.verify.mlp.deltas import check_deltas, hand_deltas, probe_gradients
from jaxbp.verify.mlp.identities import backward_vjp, check_backward, check_loss_vjp
from jaxbp.verify.mlp.transforms import CompileCounter, check_transforms
from jaxbp.verify.mlp.verify import (
    GRAD_SOURCES,
    SECTIONS,
    MLPVerification,
    gradient_source,
    make_problem,
    verify_mlp,
)

__all__ = [
    "GRAD_SOURCES",
    "SECTIONS",
    "CompileCounter",
    "MLPVerification",
    "backward_vjp",
    "check_backward",
    "check_deltas",
    "check_loss_vjp",
    "check_transforms",
    "gradient_source",
    "hand_deltas",
    "make_problem",
    "probe_gradients",
    "reference",
    "verify_mlp",
]
