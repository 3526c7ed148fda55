"""The verifier on a corpus of real derivative rules with planted bugs (tests/verify_corpus.py).

The contract under test (docs/verify.md, section 6): ``jaxbp.verify.check_grads`` is never less
strict than ``jax.test_util.check_grads`` — on every planted bug that JAX's check, called with the
same arguments, rejects, ours raises too — and it passes every correct rule; where a case has a
plain reference, ``check_custom_vjp`` passes the correct rule and rejects the bug. Each case runs
in its own precision (``case.context()``: float32 with x64 off where ``case.x64`` is False, as a
JAX user's default). Whether ours names the leaves the bug made wrong is recorded
(``record_property``: ``jax_caught``, ``ours_caught``, ``leaves_named``), not asserted;
benchmarks/verify_corpus.py tabulates all of it.
"""

import jax
import jax.numpy as jnp
import pytest
from jax.test_util import check_grads as jax_check_grads

from jaxbp.verify import check_custom_vjp, check_grads
from verify_corpus import CASES, CATEGORIES, derivative_gap, round_off

WITH_REFERENCE = [c for c in CASES if c.reference is not None]


def _by_name(cases):
    return pytest.mark.parametrize("case", cases, ids=[c.name for c in cases])


def test_the_corpus_covers_every_category():
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)
    assert {c.category for c in CASES} == set(CATEGORIES)
    assert all(c.bug and c.source and c.doc for c in CASES)
    assert {c.x64 for c in CASES} == {True, False}
    assert {c.modes for c in CASES} >= {("fwd",), ("rev",), ("fwd", "rev")}
    assert max(c.order for c in CASES) == 2


@_by_name(CASES)
def test_correct_rule_passes(case):
    with case.context():
        f, args = case.make(False)
        check_grads(f, args, **case.kwargs)


@_by_name(CASES)
def test_never_less_strict_than_jax(case, record_property):
    with case.context():
        f, args = case.make(True)
        try:
            jax_check_grads(f, args, **case.kwargs)
        except AssertionError:
            jax_caught = True
        else:
            jax_caught = False
        try:
            check_grads(f, args, **case.kwargs)
        except AssertionError as e:
            message = str(e).splitlines()[0]
        else:
            message = None
    record_property("jax_caught", jax_caught)
    record_property("ours_caught", message is not None)
    record_property("leaves_named", message is not None and all(p in message for p in case.leaves))
    if jax_caught:
        assert message is not None, (
            f"jax.test_util.check_grads rejects the planted bug ({case.bug}); "
            f"jaxbp.verify.check_grads passes it"
        )


def _complex(args) -> bool:
    return any(jnp.iscomplexobj(leaf) for leaf in jax.tree.leaves(args))


@_by_name(WITH_REFERENCE)
def test_check_custom_vjp_passes_correct_rule(case):
    with case.context():
        f, args = case.make(False)
        if _complex(args):  # the rule checks compare real derivatives: a clear error, not a verdict
            with pytest.raises(TypeError, match="check_grads"):
                check_custom_vjp(f, case.reference, *args)
            return
        report = check_custom_vjp(f, case.reference, *args)
    assert report.ok, str(report)


@_by_name(WITH_REFERENCE)
def test_check_custom_vjp_rejects_bug(case):
    with case.context():
        f, args = case.make(True)
        if _complex(args):
            with pytest.raises(TypeError, match="check_grads"):
                check_custom_vjp(f, case.reference, *args)
            return
        report = check_custom_vjp(f, case.reference, *args)
    assert not report.ok, f"the planted bug ({case.bug}) passes:\n{report}"


@_by_name(CASES)
def test_bug_is_not_a_noop(case):
    gap = derivative_gap(case)
    assert gap > round_off(case), f"{case.bug}: moves what check_grads compares by only {gap:.1e}"
