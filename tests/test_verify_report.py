"""Report rows (eq. V1): the allclose criterion with a leaf-scaled floor, NaN/Inf, ordering, JSON."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp.verify import Report, compare, default_rtol, tolerance_table
from jaxbp.verify.report import (
    ANALYTIC_RTOL_F64,
    ANALYTIC_ULPS,
    ANALYTIC_ULPS_HALF,
    FD_RTOL_FACTOR,
)


def test_identical_arrays_pass_with_zero_errors():
    a = np.arange(6.0).reshape(2, 3)
    row = compare(a, a, oracle="rev", path="[0].W", rtol=1e-12)
    assert row.ok and row.max_abs == 0 and row.norm_rel == 0 and row.margin == 0
    assert row.shape == (2, 3) and row.n == 6


def test_floor_scales_with_the_leaf_not_the_tree():
    # A leaf of magnitude 1e-9 with a 1e-3 relative error fails, even though its absolute error
    # (1e-12) is tiny next to other leaves — the axis jax's check_grads gets wrong.
    ref = np.full(4, 1e-9)
    row = compare(ref * (1 + 1e-3), ref, oracle="rev", path="[1].b", rtol=1e-6)
    assert not row.ok
    assert row.atol == pytest.approx(1e-15)
    assert row.max_rel == pytest.approx(1e-3)


def test_worst_index_and_values_point_at_the_bad_element():
    ref = np.linspace(1.0, 2.0, 12).reshape(3, 4)
    hand = ref.copy()
    hand[2, 1] *= 1.05
    row = compare(hand, ref, oracle="fd", path="[0].W", rtol=1e-6)
    assert not row.ok
    assert row.worst_index == (2, 1)
    assert row.value == hand[2, 1] and row.reference == ref[2, 1]
    assert row.margin > 1


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_the_hand_where_the_reference_is_finite_fails_and_is_named(bad):
    hand, ref = np.ones(5), np.ones(5)
    hand[3] = bad
    row = compare(hand, ref, oracle="rev", path="[0].b", rtol=1.0, atol=1e9)
    assert not row.ok and row.status == "FAIL"
    assert row.worst_index == (3,)
    kind = "NaN" if np.isnan(bad) else "Inf"
    assert f"{kind} in the hand result at (3,)" in row.problem


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_an_oracle_that_is_not_finite_where_f_is_leaves_those_elements_out(bad):
    hand, ref = np.ones(5), np.ones(5)
    ref[3] = bad  # autodiff's NaN through jnp.where, a step off f's domain: nothing to judge with
    row = compare(hand, ref, oracle="rev", path="[0].b", rtol=1e-9)
    assert row.ok and row.n == 4
    assert "the rev oracle is not finite at (3,)" in row.note
    hand[1] = 2.0  # the other elements are still judged
    assert not compare(hand, ref, oracle="rev", path="[0].b", rtol=1e-9).ok


def test_nan_on_both_sides_is_not_equal_and_not_judged():
    nan = np.full(3, np.nan)
    row = compare(nan, nan, oracle="rev", path="[0].b", rtol=1e-3)
    assert row.status == "undefined" and row.n == 0 and math.isnan(row.error)
    # where f is defined and the reference finite, NaN in the hand fails
    row = compare(nan, np.ones(3), oracle="rev", path="[0].b", rtol=1e-3)
    assert not row.ok and "NaN in the hand result at (0,) (3 of 3 elements)" in row.problem


def test_equal_infinities_agree_and_nan_never_equals_nan():
    row = compare(np.array([-np.inf, 1.0]), np.array([-np.inf, 1.0]), oracle="p", path="y",
                  rtol=1e-9)  # fmt: skip
    assert row.ok and row.error == 0
    row = compare(np.array([np.inf]), np.array([-np.inf]), oracle="p", path="y", rtol=1e-9)
    assert row.status == "undefined"  # the reference -inf is not finite: not judged


def test_undefined_elements_are_left_out_and_named():
    hand = np.array([1.0, np.nan, 3.0])
    ref = np.array([1.0, np.nan, 3.0 + 1e-3])
    defined = np.array([True, False, True])
    row = compare(hand, ref, oracle="fd", path="x", rtol=1e-6, defined=defined)
    assert not row.ok and row.worst_index == (2,) and row.n == 2
    assert "undefined at this point (f is not finite) at (1,)" in row.note
    row = compare(hand, ref, oracle="fd", path="x", rtol=1e-6, defined=np.zeros(3, bool))
    assert row.ok and row.status == "undefined"


def test_every_judged_row_shows_the_bound_that_decided_it():
    ref = np.array([1.0, 10.0])
    hand = ref + np.array([1e-6, 1e-6])
    row = compare(hand, ref, oracle="fd", path="p", rtol=1e-7, atol=1e-8,
                  allowance=np.array([5e-7, 0.0]))  # fmt: skip
    # element 0: bound 1e-8 + 1e-7 + 5e-7 = 6.1e-7 < 1e-6; element 1: 1e-8 + 1e-6 ≥ 1e-6
    assert not row.ok and row.worst_index == (0,)
    assert row.error == pytest.approx(1e-6) and row.bound == pytest.approx(6.1e-7)
    assert dict(row.parts) == pytest.approx({"rtol·|ref|": 1e-7, "atol": 1e-8, "fd": 5e-7})
    capped = compare(hand, ref, oracle="fd", path="p", rtol=1e-7, atol=1e-8,
                     allowance=np.array([5e-7, 0.0]), cap=np.array([2e-7, 1.0]))  # fmt: skip
    assert capped.bound == pytest.approx(2e-7) and dict(capped.parts)["cap"] == capped.bound


def test_a_row_refuses_a_verdict_its_numbers_contradict():
    from jaxbp.verify.report import Row

    with pytest.raises(ValueError, match="'pass' with error"):
        Row("rev", "w", (), "float64", "m", 1, 1.0, 1.0, 1.0, (), 2.0, 1.0, 0.1, 0.1, True,
            error=1.0, bound=0.2)  # fmt: skip
    with pytest.raises(ValueError, match="'FAIL' with error"):
        Row("rev", "w", (), "float64", "m", 1, 0.0, 0.0, 0.0, (), 1.0, 1.0, 0.1, 0.1, False,
            error=0.0, bound=0.2)  # fmt: skip


def test_shape_mismatch_fails_with_a_problem():
    row = compare(np.ones(3), np.ones(4), oracle="rev", path="w", rtol=1e-3)
    assert not row.ok and "shape (3,)" in row.problem


def test_noise_allowance_widens_the_tolerance_per_element():
    ref = np.array([1.0, 1.0])
    hand = np.array([1.0 + 1e-3, 1.0])
    assert not compare(hand, ref, oracle="fd", path="p", rtol=1e-6).ok
    assert compare(hand, ref, oracle="fd", path="p", rtol=1e-6, noise=np.array([2e-3, 0])).ok


def _report():
    rows = (
        compare(np.ones(2), np.ones(2), oracle="rev", path="[0].W", rtol=1e-9, order=0),
        compare(np.ones(2) * 2, np.ones(2), oracle="rev", path="[1].W", rtol=1e-9, order=2),
        compare(np.full(2, np.nan), np.ones(2), oracle="fd", path="[0].b", rtol=1e-9, order=1),
        compare(np.ones(2) * 3, np.ones(2), oracle="fd", path="[1].W", rtol=1e-9, order=2),
    )
    return Report("demo", rows, {"seed": 0, "value": math.inf})


def test_failed_lists_every_failing_leaf_once_in_tree_order():
    report = _report()
    assert not report.ok
    assert report.failed == ["[0].b", "[1].W"]


def test_str_is_a_table_with_one_row_per_leaf_per_oracle():
    text = str(_report())
    assert text.splitlines()[0] == "demo: FAIL ([0].b, [1].W)"
    for header in ("path", "shape", "dtype", "max rel", "worst idx", "error", "bound", "bound = …"):
        assert header in text
    assert text.count("FAIL") == 1 + 3 and text.count(" pass") == 1
    assert "problem: fd [0].b: NaN in the hand result at (0,)" in text


def test_to_json_is_strict_json_with_ok_and_failed():
    report = _report()
    record = json.loads(report.to_json())
    assert record["ok"] is False and record["failed"] == ["[0].b", "[1].W"]
    assert record["meta"]["value"] == "inf"
    assert len(record["rows"]) == 4 and record["rows"][2]["max_abs"] == "inf"
    assert report.to_dict() == record


def test_raise_if_failed_names_every_failing_leaf():
    with pytest.raises(AssertionError) as info:
        _report().raise_if_failed()
    message = str(info.value)
    assert message.splitlines()[0] == "demo failed at 2 leaf(s): [0].b, [1].W"
    # each failing leaf once, with its worst row: the problem, or the error against its bound
    assert "  [0].b: fd (eager): NaN in the hand result at (0,)" in message
    assert "  [1].W: fd (eager): error 2.000e+00 > bound 2.000e-09 at (0,)" in message
    assert "also rev" in message
    assert message.count("NaN in the hand result") == 1  # not repeated under the table


def test_empty_report_is_not_ok():
    assert not Report("nothing", ()).ok


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64])
def test_default_tolerances_derive_from_eps(dtype):
    e = float(jnp.finfo(dtype).eps)
    ulps = ANALYTIC_ULPS if dtype == jnp.float32 else ANALYTIC_ULPS_HALF
    analytic = ANALYTIC_RTOL_F64 if dtype == jnp.float64 else ulps * e
    assert default_rtol(dtype, "analytic") == pytest.approx(analytic)
    assert default_rtol(dtype, "fd") == pytest.approx(FD_RTOL_FACTOR * e ** (2 / 3))
    row = next(r for r in tolerance_table() if r["dtype"] == str(jnp.dtype(dtype)))
    # the step of the dtype the loss is evaluated in (one precision up): eps^(1/3) in float64,
    # eps^(1/5) in float32
    e_ref = float(jnp.finfo(row["reference_dtype"]).eps)
    expected = e_ref ** (1 / 3) if row["reference_dtype"] == "float64" else e_ref ** (1 / 5)
    assert row["fd_step_factor"] == pytest.approx(expected)


def test_default_rtol_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        default_rtol(jnp.float32, "exact")


def test_failures_are_records_with_every_field():
    from jaxbp.verify.report import Failure

    row = compare(np.array([1.0, 2.5]), np.array([1.0, 2.0]), oracle="rev", path="['w']", rtol=1e-6)
    (failure,) = Report("t", (row,)).failures
    assert isinstance(failure, Failure)
    assert failure._asdict().keys() >= {"check", "oracle", "transform", "path", "index", "error",
                                        "tolerance"}  # fmt: skip
    assert (failure.check, failure.oracle, failure.transformation, failure.path) == (
        "t",
        "rev",
        "eager",
        "['w']",
    )
    assert failure.index == (1,) and failure.error == 0.5 and failure.tolerance < 1e-5
