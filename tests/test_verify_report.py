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
@pytest.mark.parametrize("side", ["hand", "ref"])
def test_nan_or_inf_on_either_side_fails_and_is_named(bad, side):
    a = np.ones(5)
    b = a.copy()
    b[3] = bad
    hand, ref = (b, a) if side == "hand" else (a, b)
    row = compare(hand, ref, oracle="rev", path="[0].b", rtol=1.0, atol=1e9)
    assert not row.ok
    assert row.worst_index == (3,)
    kind = "NaN" if np.isnan(bad) else "Inf"
    who = "the hand result" if side == "hand" else "the rev oracle"
    assert f"{kind} in {who} at (3,)" in row.problem


def test_nan_on_both_sides_fails():
    nan = np.full(3, np.nan)
    row = compare(nan, nan, oracle="rev", path="[0].b", rtol=1e-3)
    assert (
        not row.ok and "NaN in the hand result" in row.problem and "NaN in the rev" in row.problem
    )


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
    for header in ("path", "shape", "dtype", "max abs", "max rel", "norm rel", "worst idx", "rtol"):
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
    assert "2 leaf(s)" in message and "[0].b (fd: NaN" in message and "[1].W (rev:" in message
    assert "fd: max abs" in message


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
