"""verify_mlp: every check on one network — what `jaxbp verify` and shadow verification call."""

import json

import jax.numpy as jnp
import pytest

import jaxbp
from jaxbp import verify
from verify_support import numpy_problem

SECTIONS = ["gradient", "sources", "deltas", "transforms", "backward_vjp", "loss_vjp"]
assert tuple(SECTIONS) == verify.SECTIONS


def test_every_section_passes_and_the_record_is_json():
    result = verify.verify_mlp([5, 4, 3], activation="relu", batch=6, l2=0.2, fd_budget=40)
    assert result.ok, str(result)
    assert list(result.sections) == SECTIONS and result.failed == {}
    record = json.loads(result.to_json())
    assert record["ok"] is True
    assert record["config"]["sizes"] == [5, 4, 3] and record["config"]["dtype"] == "float64"
    assert set(record["sections"]) == set(SECTIONS)
    assert {"jax_version", "device"} <= set(record["environment"])
    summary = {(s["section"], s["oracle"]) for s in result.summary()}
    assert {("gradient", "rev"), ("gradient", "fd"), ("deltas", "probe")} <= summary
    assert ("sources", "graph") in summary and ("transforms", "recompilation") in summary
    text = str(result)
    assert (
        "[gradient]" in text
        and "deciding row per oracle" in text
        and "PASS" in text.splitlines()[-1]
    )
    # above the budget of 40 the [0].W leaf (20 numbers) still fits; nothing is projected here
    assert all(result.sections["gradient"].meta["fd"]["complete"].values())


@pytest.mark.slow
def test_shadow_verification_at_given_params_and_labels_float32():
    params, x, y = numpy_problem([4, 5, 3], dtype=jnp.float32, m=5, seed=9)
    result = verify.verify_mlp(params=params, data=(x, y), activation="tanh", grad="graph",
                               modes=("rev", "fwd"))  # fmt: skip
    assert result.ok, str(result)
    assert result.config["dtype"] == "float32" and result.config["sizes"] == [4, 5, 3]
    assert result.sections["gradient"].title.startswith("graph gradient")
    assert {r.oracle for r in result.sections["sources"].rows} >= {"manual", "scan", "custom_vjp"}


def test_a_broken_source_fails_its_section(monkeypatch):
    def broken(params, x, y, **kw):
        J, g = jaxbp.value_and_grad(params, x, y, **kw)
        return J, (g[0], jaxbp.Layer(g[1].W, -g[1].b))

    monkeypatch.setattr(verify.mlp.verify, "gradient_source", lambda name: broken)
    result = verify.verify_mlp([3, 4, 2], activation="tanh", batch=4, modes=("rev",),
                               sections=("gradient", "transforms"))  # fmt: skip
    assert not result.ok
    assert list(result.sections) == ["gradient", "transforms"]
    assert result.failed == {"gradient": ["[1].b"], "transforms": ["[1].b"]}
    assert json.loads(result.to_json())["ok"] is False


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(sizes=[3, 2], dtype="float16"), "dtype: expected float32 or float64"),
        (dict(sizes=[3, 2], batch=0), "batch"),
        (dict(sizes=[3, 2], grad="magic"), "valid sources are manual, graph, scan, custom_vjp"),
        (dict(sizes=[3, 2], activation="swish"), "activation"),
        (dict(sizes=None), "sizes"),
        (dict(sizes=[3, 2], sections=("gradient", "speed")), "valid sections are gradient"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        verify.verify_mlp(**kwargs)


def test_gradient_sources_have_the_value_and_grad_contract():
    params, x, y = numpy_problem([3, 4, 2], m=4)
    ref = jaxbp.autodiff_value_and_grad(params, x, y, activation="elu", l2=0.1)
    for name in verify.GRAD_SOURCES:
        J, g = verify.gradient_source(name)(params, x, y, activation="elu", l2=0.1)
        assert float(abs(J - ref[0])) < 1e-12
        assert jnp.allclose(g[0].W, ref[1][0].W, rtol=1e-12, atol=1e-15)
