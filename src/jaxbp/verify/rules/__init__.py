"""Users' derivative rules of non-scalar functions: :func:`check_vjp`, :func:`check_jvp` and
:func:`check_custom_vjp` (eqs. V10–V12 and their generalisations to any pytree in, pytree out).

Calling conventions (they mirror ``jax.vjp`` / ``jax.jvp``)::

    def f(x, W):                       # any pytrees in, any pytree out
        return x @ W

    def matmul_vjp(primals, c):        # a VJP rule: (primals tuple, output cotangent) ->
        x, W = primals                 #   a tuple with one cotangent pytree per primal
        return c @ W.T, x.T @ c

    def matmul_jvp(primals, tangents): # a JVP rule: like jax.jvp(f, primals, tangents)
        (x, W), (tx, tW) = primals, tangents
        return x @ W, tx @ W + x @ tW  #   -> (primal_out, tangent_out)

    check_vjp(f, matmul_vjp, x, W).raise_if_failed()
    check_jvp(f, matmul_jvp, x, W).raise_if_failed()
    check_custom_vjp(my_custom_vjp_fn, plain_reference_fn, x, W).raise_if_failed()

Every row names one primal leaf, ``primals[i]`` followed by its ``jax.tree_util.keystr`` path
(``primals[0]['W']``), or one output leaf (``out[1]``). Integer, boolean (and complex) leaves are
not differentiated: JAX gives them float0 tangents and cotangents (a rule may return ``None``,
float0 or zeros for them), and each gets one ``skipped`` row (status ``not applicable``). A float
leaf's cotangent returned as ``None`` is a zero cotangent, as in ``jax.custom_vjp``.

The oracles (row ``oracle`` names; also the keys of ``rtol`` / ``atol`` dicts):

- ``vjp`` — the rule's VJP, elementwise, against ``jax.vjp(f)`` (check_vjp) or the reference's
  ``jax.vjp`` (check_custom_vjp) for ``n_pairs`` random cotangents.
- ``⟨Jt,c⟩ = ⟨t,Jᵀc⟩`` — the dot-product identity (V10), J t by ``jax.jvp`` (of f, or of the
  reference), for random t supported on one primal leaf at a time (so a failure names the leaf)
  and random c; round-off is bounded by rtol · (‖J t‖‖c‖ + ‖t‖‖Jᵀc‖) (Cauchy–Schwarz).
- ``⟨Jt,c⟩ = ⟨t,Jᵀc⟩ fd`` — the same identity with J t by central finite differences (of f, or
  of the reference): it stands even where JAX's own derivative of f is the thing in doubt.
- ``zero cotangent`` / ``zero tangent`` (V11): a zero (co)tangent maps to exact zeros.
- ``linearity`` (V12): rule(α u₁ + β u₂) = α rule(u₁) + β rule(u₂).
- ``jvp`` — a tangent output, elementwise, against ``jax.jvp`` (of f, or of the reference); rows
  name the input leaf the tangent was supported on, the note names the output leaf (the worst
  one, and every failing one).
- ``fd`` — a tangent output against central finite differences along the same tangents.
- ``primal`` — the rule's primal output against f (check_jvp) or f against the reference
  (check_custom_vjp); ``vjp primal`` — the primal output of ``jax.vjp(f)`` (a custom_vjp's fwd).
- ``grad of vjp`` — second order: ∇ₓ⟨VJP(x)(c)_i, u_i⟩ of f against the reference's, u on one
  leaf i at a time (the row names leaf i, the note the primal the derivative is taken by);
  ``not applicable`` (never a failure) where the rule's bwd cannot be differentiated.
- ``shape/dtype`` — a rule output whose shape or dtype differs from what JAX gives (the primal's
  dtype for a cotangent, the output's for a tangent): a failing row whose ``problem`` says so.

Error model (:mod:`jaxbp.verify.tolerance`): the references run one precision up
(``reference_precision`` on ``upcast`` primals), the hand rule on the original primals; ``rtol``
follows the dtypes JAX would give (the primal leaf's, and the outputs' a row passes through —
never the dtype the rule returned); ``atol`` scales with each leaf. Finite-difference rows compare
with Richardson's estimate from :func:`jaxbp.verify.fd.at_offsets` — the one routine of every
check — at the steps h and h/2 (``h = fd.base_step`` of the leaf's rms in its reference dtype; an
all-zero leaf takes the rms of all the float leaves, else 1), adding to the bound the measured
truncation and round-off (the ``fd`` part). The dot-product identities add the round-off of the
two inner products, rtol · (‖J t‖‖c‖ + ‖t‖‖Jᵀc‖) (Cauchy–Schwarz). Every row shows the bound
that decided it (:func:`jaxbp.verify.compare`). Complex primals are refused by name: these checks
compare real derivatives; :func:`jaxbp.verify.check_grads` handles complex functions.

Random vectors are drawn on the host with NumPy from ``key`` (reproducible; no random kernel is
compiled per shape). The directions are evaluated inside ``jax.jit`` programs keyed on the
functions — two per check, one for the rule and one for all the references — so checking the
same problem again compiles nothing: the references vectorise them with ``jax.vmap``, a user's
rule runs under ``jax.lax.map`` so that it sees no batch axis (hence transform ``jit`` on the rows
of check_vjp / check_jvp). Only check_custom_vjp's ``eager`` rows call f's derivatives from
Python, once per random vector.

The package, one concept a module: :mod:`~jaxbp.verify.rules.vjp`, :mod:`~jaxbp.verify.rules.jvp`
and :mod:`~jaxbp.verify.rules.custom` hold the three checks (:mod:`~jaxbp.verify.rules.custom_rows`
check_custom_vjp's rows against the reference); :mod:`~jaxbp.verify.rules.problem` the point, its
leaf labels and the validated options; :mod:`~jaxbp.verify.rules.draws` the host random vectors,
steps and default rtols; :mod:`~jaxbp.verify.rules.programs` the compiled programs;
:mod:`~jaxbp.verify.rules.identities` the V10–V12 rows; :mod:`~jaxbp.verify.rules.rows` the row
names and the rows that compare no numbers.
"""

from jaxbp.verify.rules.custom import BATCH_PERTURBATION, check_custom_vjp
from jaxbp.verify.rules.jvp import check_jvp
from jaxbp.verify.rules.programs import FD_OFFSETS
from jaxbp.verify.rules.rows import (
    CUSTOM_ORACLES,
    DOT,
    DOT_FD,
    FD,
    GRAD_OF_VJP,
    JVP,
    JVP_ORACLES,
    LINEARITY,
    PRIMAL,
    SIGNATURE,
    SKIPPED,
    TRANSFORMS,
    VJP,
    VJP_ORACLES,
    VJP_PRIMAL,
    ZERO_COTANGENT,
    ZERO_TANGENT,
)
from jaxbp.verify.rules.vjp import check_vjp

__all__ = [
    "BATCH_PERTURBATION",
    "CUSTOM_ORACLES",
    "DOT",
    "DOT_FD",
    "FD",
    "FD_OFFSETS",
    "GRAD_OF_VJP",
    "JVP",
    "JVP_ORACLES",
    "LINEARITY",
    "PRIMAL",
    "SIGNATURE",
    "SKIPPED",
    "TRANSFORMS",
    "VJP",
    "VJP_ORACLES",
    "VJP_PRIMAL",
    "ZERO_COTANGENT",
    "ZERO_TANGENT",
    "check_custom_vjp",
    "check_jvp",
    "check_vjp",
]
