"""jaxbp.verify.check warns when loss_fn carries a custom rule: rev (and for a custom_jvp fwd) ran
the rule, so only fd checks the hand gradient independently (jaxbp.verify.rules_in_loss)."""

import functools
import warnings

import jax
import jax.numpy as jnp
import pytest
from jax import lax

import jaxbp
from jaxbp import verify
from jaxbp.verify import rules_in_loss
from jaxbp.verify.check import _custom_rule_notes
from jaxbp.verify.report import Row
from jaxbp.verify.rules_in_loss import CustomRuleWarning

REV_NOTE = "reverse mode ran the custom_vjp rule of _loss (jaxbp/vjp.py:"
INDEPENDENT = "fd is the independent check"


def _mlp():
    params = jaxbp.init_params(jax.random.key(0), [4, 5, 3], dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(1), (6, 4), jnp.float64)
    return params, x, jnp.arange(6) % 3


def _hand(p, x, y):
    return jaxbp.value_and_grad(p, x, y)[1]


@jax.custom_vjp
def cube(w):
    return w**3


cube.defvjp(lambda w: (w**3, w), lambda w, g: (3 * w**2 * g,))


@jax.custom_jvp
def smooth_abs(w):
    return jnp.sqrt(w * w + 1.0)


@smooth_abs.defjvp
def _smooth_abs_jvp(primals, tangents):
    (w,), (t,) = primals, tangents
    return smooth_abs(w), w / smooth_abs(w) * t


def _names(fn, *args, **kw):
    return [(r.kind, r.name) for r in rules_in_loss.trace_custom_rules(fn, *args, **kw)]


def test_jaxbp_loss_notes_every_rev_row_and_warns_in_the_report():
    params, x, y = _mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CustomRuleWarning)  # fd runs: no Python warning
        report = verify.check(_hand, jaxbp.loss, params, x, y, transforms=())
    assert report.ok, str(report)
    rev = [r for r in report.rows if r.oracle == "rev"]
    assert len(rev) == 4
    for r in rev:
        assert REV_NOTE in r.note and INDEPENDENT in r.note
        assert "not against autodiff of the forward computation" in r.note
        assert r.status == "pass"
    for r in report.rows:
        if r.oracle != "rev":
            assert not r.note or "reverse mode ran" not in r.note, r
    fwd = [r for r in report.rows if r.oracle == "fwd"]
    assert {r.status for r in fwd} == {"not applicable"}
    (warning,) = report.warnings
    assert warning.startswith("loss_fn calls the custom_vjp rule of _loss (jaxbp/vjp.py:")
    assert "rev ran that rule" in warning and "the fd rows are the independent check" in warning
    assert "jaxbp.cost" in warning
    assert str(report).splitlines()[1] == f"warning: {warning}"
    assert report.to_dict()["warnings"] == [warning]


def test_rev_without_fd_also_emits_a_python_warning_and_keeps_the_verdict():
    params, x, y = _mlp()
    with pytest.warns(CustomRuleWarning, match="nothing independent checked the gradient") as rec:
        report = verify.check(_hand, jaxbp.loss, params, x, y, modes=("rev",), transforms=())
    assert issubclass(CustomRuleWarning, UserWarning)
    assert rec[0].filename == __file__  # stacklevel: the caller's line
    assert report.ok and [r.status for r in report.rows if r.oracle == "rev"] == ["pass"] * 4
    assert "fd was not run" in report.warnings[0] and "add 'fd' to modes" in report.warnings[0]
    assert all(REV_NOTE in r.note for r in report.rows if r.oracle == "rev")


def test_a_wrong_gradient_still_fails_the_same_way():
    params, x, y = _mlp()

    def wrong(p, x, y):
        g = _hand(p, x, y)
        return (g[0], g[1]._replace(b=2 * g[1].b))

    report = verify.check(wrong, jaxbp.loss, params, x, y, transforms=())
    assert report.failed == ["[1].b"] and report.warnings


def test_fwd_only_on_a_custom_vjp_has_nothing_that_ran_the_rule():
    report = verify.check(
        lambda p: {"w": 3 * p["w"] ** 2}, lambda p: jnp.sum(cube(p["w"])),
        {"w": jnp.arange(1.0, 4.0)}, modes=("fwd",), transforms=(),
    )  # fmt: skip
    assert report.warnings == () and "warning:" not in str(report)


def test_a_plain_loss_gets_no_warning_and_no_note():
    params, x, y = _mlp()
    for activation in ("sigmoid", "relu"):  # relu: jax.nn.relu, a custom_jvp inside jax
        loss = functools.partial(jaxbp.cost, activation=activation)
        hand = functools.partial(jaxbp.value_and_grad, activation=activation)
        report = verify.check(hand, loss, params, x, y, modes=("rev",), transforms=())
        assert report.ok, str(report)
        assert report.warnings == () and report.to_dict()["warnings"] == []
        assert all(r.note is None for r in report.rows if r.oracle == "rev")
        assert "warning:" not in str(report)


def test_rules_defined_in_jax_are_trusted_but_can_be_listed():
    z = jnp.linspace(-2.0, 2.0, 5)

    def loss(z):
        return jnp.sum(jax.nn.relu(z) + jax.nn.softplus(z) + jax.nn.silu(z))

    assert _names(loss, z) == []
    listed = rules_in_loss.trace_custom_rules(loss, z, include_jax=True)
    assert ("custom_jvp", "relu") in [(r.kind, r.name) for r in listed]
    assert all(r.in_jax is True and r.primitive == "custom_jvp_call" for r in listed)


def test_jaxbp_loss_is_found_by_name_and_place():
    params, x, y = _mlp()
    (rule,) = rules_in_loss.trace_custom_rules(jaxbp.loss, params, x, y)
    assert rule.kind == "custom_vjp" and rule.primitive == "custom_vjp_call"
    assert rule.name == "_loss" and rule.where.startswith("jaxbp/vjp.py:")
    assert rule.in_jax is False
    assert rules_in_loss.trace_custom_rules(jaxbp.cost, params, x, y) == ()


def test_a_custom_vjp_inside_jit_inside_scan_or_cond_is_found():
    w = jnp.arange(1.0, 4.0)

    def in_scan(w):
        def body(c, wi):
            return c + jax.jit(cube)(wi), None

        return lax.scan(body, 0.0, w)[0]

    def in_cond(w):
        s = jnp.sum(w)
        return lax.cond(s > 0, lambda v: jnp.sum(jax.jit(cube)(v)), jnp.sum, w)

    def in_while_and_checkpoint(w):
        def body(c):
            return c[0] + 1, c[1] + jax.checkpoint(lambda v: jnp.sum(cube(v)))(w)

        return lax.while_loop(lambda c: c[0] < 2, body, (0, 0.0))[1]

    for loss in (in_scan, in_cond, in_while_and_checkpoint):
        assert _names(loss, w) == [("custom_vjp", "cube")], loss.__name__
    report = verify.check(lambda p: {"w": 3 * p["w"] ** 2}, lambda p: in_scan(p["w"]),
                          {"w": w}, transforms=())  # fmt: skip
    assert report.ok, str(report)
    (rev,) = [r for r in report.rows if r.oracle == "rev"]
    assert rev.note.startswith("reverse mode ran the custom_vjp rule of cube (")
    assert "test_verify_rules_in_loss.py:" in rev.note and INDEPENDENT in rev.note


def test_every_rule_once_in_program_order():
    w = jnp.arange(1.0, 4.0)

    def loss(w):
        return jnp.sum(cube(w)) + jnp.sum(smooth_abs(w)) + jnp.sum(jax.jit(cube)(w))

    assert _names(loss, w) == [("custom_vjp", "cube"), ("custom_jvp", "smooth_abs")]


def test_a_custom_jvp_outside_jax_notes_rev_and_fwd():
    def loss(p):
        return jnp.sum(smooth_abs(p["w"]))

    def hand(p):
        return {"w": p["w"] / jnp.sqrt(p["w"] ** 2 + 1.0)}

    report = verify.check(hand, loss, {"w": jnp.linspace(-1.0, 2.0, 4)}, transforms=())
    assert report.ok, str(report)
    rows = {r.oracle: r for r in report.rows}
    assert rows["rev"].note.startswith("reverse mode ran the custom_jvp rule of smooth_abs (")
    assert rows["fwd"].note.startswith("forward mode ran the custom_jvp rule of smooth_abs (")
    assert "so fwd compares against that rule" in rows["fwd"].note
    assert rows["fd"].note is None or "ran the custom" not in rows["fd"].note
    assert "rev and fwd ran that rule" in report.warnings[0]
    with pytest.warns(CustomRuleWarning, match="smooth_abs"):
        verify.check(hand, loss, {"w": jnp.linspace(-1.0, 2.0, 4)}, modes=("fwd",), transforms=())


def test_a_row_note_is_appended_to_not_replaced():
    (rule,) = rules_in_loss.trace_custom_rules(lambda w: jnp.sum(cube(w)), jnp.ones(2))
    row = Row("rev", "w", (2,), "float64", "elementwise", 2, 0.0, 0.0, 0.0, (0,), 1.0, 1.0,
              1e-12, 0.0, True, note="earlier note", error=0.0, bound=1e-12)  # fmt: skip
    (out,), (warning,) = _custom_rule_notes([row], (rule,), ("rev", "fd"))
    assert out.note.startswith("earlier note; reverse mode ran the custom_vjp rule of cube")
    assert out.ok and out.status == "pass" and "cube" in warning
    assert _custom_rule_notes([row], (), ("rev",)) == ([row], ())
