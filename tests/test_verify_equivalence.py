"""Equivalence suite: over hypothesis-generated networks, hand-derived = autodiff.

Architectures: depth 0–5 hidden layers, widths 1–64, a (possibly different) activation per hidden
layer, every output layer, λ, batch sizes from 1, float32 and float64. The δ recursion
(:func:`jaxbp.value_and_grad`) and the computational graph (:func:`jaxbp.graph.value_and_grad`)
must pass :func:`jaxbp.verify.check` against ``jax.grad`` of the independent reference cost, with
the default dtype-derived tolerances. On failure hypothesis shrinks toward the smallest failing
network (fewer layers, narrower, smaller batch) and prints the blob to reproduce it.

Bounded for CI: ``derandomize=True`` makes the examples the same on every run, and
``max_examples`` keeps the compile count (three small jits per example) in budget.
"""

import functools

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

import jaxbp
import jaxbp.graph
from jaxbp import verify
from jaxbp.verify.mlp import reference
from verify_support import numpy_problem

ACTIVATIONS = sorted(jaxbp.ACTIVATIONS)
OUTPUTS = sorted(jaxbp.OUTPUTS)


@st.composite
def problems(draw):
    depth = draw(st.integers(0, 5))
    widths = draw(st.lists(st.integers(1, 64), min_size=depth + 2, max_size=depth + 2))
    activation = tuple(draw(st.sampled_from(ACTIVATIONS)) for _ in range(depth))
    return {
        "sizes": widths,
        "activation": activation,
        "output": draw(st.sampled_from(OUTPUTS)),
        "l2": draw(st.sampled_from([0.0, 0.25, 2.0])),
        "m": draw(st.integers(1, 16)),
        "dtype": draw(st.sampled_from(["float64", "float32"])),
        "seed": draw(st.integers(0, 2**16)),
    }


@functools.cache
def _loss(activation, output, l2):
    return functools.partial(reference.cost, activation=activation, output=output, l2=l2)


@pytest.mark.slow
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(problems())
def test_hand_and_graph_equal_autodiff(problem):
    params, x, y = numpy_problem(
        problem["sizes"], output=problem["output"], dtype=problem["dtype"], m=problem["m"],
        seed=problem["seed"],
    )  # fmt: skip
    kw = dict(activation=problem["activation"], output=problem["output"], l2=problem["l2"])
    loss = _loss(*kw.values())
    for name, source in (("manual", jaxbp.value_and_grad), ("graph", jaxbp.graph.value_and_grad)):
        report = verify.check(functools.partial(source, **kw), loss, params, x, y, modes=("rev",),
                              transforms=(), title=f"{name} gradient vs jax.grad")  # fmt: skip
        assert report.ok, f"{problem}\n{report}"
