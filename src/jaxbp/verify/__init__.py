"""The manual-vs-autodiff verifier: leaf by leaf, layer by layer, under every transformation.

- :func:`check` — any ``grad_fn`` against ``jax.grad`` (rev), ``jax.jvp`` (fwd) and central finite
  differences (fd) of any ``loss_fn``; a :class:`Report` with one row per leaf per oracle.
- :func:`check_deltas` — every hand δ^(l) of the MLP against autodiff's ∂J/∂z^(l) (zero probes).
- :func:`check_transforms` — eager, ``jit``, ``vmap``, ``jit∘vmap``, mean of per-example =
  batch, and the recompilation guard.
- :func:`check_vjp`, :func:`check_backward`, :func:`check_loss_vjp` — the dot-product identity,
  zero cotangent and linearity, without finite differences.
- :func:`verify_mlp` — all of the above on one generated network (``jaxbp verify``).

Default tolerances derive from the dtype (:func:`default_rtol`, :func:`tolerance_table`;
docs/derivation.md explains them).
"""

from jaxbp.verify.check import MODES, check
from jaxbp.verify.compat import check_grads, check_grads_report
from jaxbp.verify.hand import hand_gradient
from jaxbp.verify.kinks import KINK_MARGIN, within_step
from jaxbp.verify.mlp import (
    GRAD_SOURCES,
    SECTIONS,
    CompileCounter,
    MLPVerification,
    backward_vjp,
    check_backward,
    check_deltas,
    check_loss_vjp,
    check_transforms,
    gradient_source,
    hand_deltas,
    make_problem,
    probe_gradients,
    verify_mlp,
)
from jaxbp.verify.oracles import DEFAULT_FD_BUDGET, DEFAULT_PROJECTIONS
from jaxbp.verify.report import Report, Row, compare, default_rtol, tolerance_table
from jaxbp.verify.rules import check_custom_vjp, check_jvp, check_vjp

__all__ = [
    "DEFAULT_FD_BUDGET",
    "DEFAULT_PROJECTIONS",
    "GRAD_SOURCES",
    "KINK_MARGIN",
    "MODES",
    "SECTIONS",
    "CompileCounter",
    "MLPVerification",
    "Report",
    "Row",
    "backward_vjp",
    "check",
    "check_backward",
    "check_custom_vjp",
    "check_deltas",
    "check_grads",
    "check_grads_report",
    "check_jvp",
    "check_loss_vjp",
    "check_transforms",
    "check_vjp",
    "compare",
    "default_rtol",
    "gradient_source",
    "hand_deltas",
    "hand_gradient",
    "make_problem",
    "probe_gradients",
    "tolerance_table",
    "verify_mlp",
    "within_step",
]
