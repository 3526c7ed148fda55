"""The verifier for any JAX code: hand-written gradients and rules against autodiff and finite
differences, leaf by leaf, under ``jit`` and ``vmap``, with verdicts right on every dtype.

Any code (docs/verify.md):

- :func:`check` — any ``grad_fn`` against ``jax.grad`` (rev), ``jax.jvp`` (fwd) and the finite-
  difference ladder (fd) of any ``loss_fn``, and under ``jit`` / ``vmap``; ``wrt=`` selects the
  leaves; a :class:`Report` with one row per leaf per oracle and ``Report.failures`` records.
- :func:`check_vjp`, :func:`check_jvp` — a user's VJP / JVP rule of any pytree function.
- :func:`check_custom_vjp` — a ``jax.custom_vjp`` / ``custom_jvp`` function against its plain
  reference (eager, jit, vmap, grad of the VJP).
- :func:`check_grads` — a drop-in for ``jax.test_util.check_grads`` that names the failing leaf.

The generic checker's modules: :mod:`~jaxbp.verify.tolerance` (the error model, the one place
that owns the tolerance policy), :mod:`~jaxbp.verify.oracles` (the compiled programs),
:mod:`~jaxbp.verify.fd` (the step ladder and kinks), :mod:`~jaxbp.verify.select` (``wrt=``,
tolerance mappings), :mod:`~jaxbp.verify.transforms`, :mod:`~jaxbp.verify.report`.

jaxbp's own network (:mod:`jaxbp.verify.mlp`): :func:`check_deltas` (every δ^(l) against
autodiff's ∂J/∂z^(l)), :func:`check_transforms` (eager, jit, vmap, jit∘vmap, mean of
per-example = batch, the recompilation guard), :func:`check_backward` / :func:`check_loss_vjp`
(the VJP identities), :func:`verify_mlp` (all of them: ``jaxbp verify``).
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
from jaxbp.verify.network import check_network
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
    "check_network",
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
