"""``jaxbp.testing``: the strategies draw what they promise, quickly; assert_gradients_match passes
correct gradients, and a wrong one fails with the table of failing leaves in pytest's output."""

import doctest
import functools
import inspect
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, find, given, settings

import jaxbp
import jaxbp.testing as jt
from jaxbp import verify
from jaxbp.verify.mlp import reference

pytest_plugins = ["pytester"]

# jaxbp.verify.check also reruns grad_fn under jit and vmap where it can; these properties are
# about the values, so they skip that (compiles) when the option exists.
EAGER = {"transforms": ()} if "transforms" in inspect.signature(verify.check).parameters else {}

FAST = settings(max_examples=30, deadline=None, derandomize=True, database=None)
SMALL = settings(max_examples=10, deadline=None, derandomize=True, database=None)
COMPILING = settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _find(strategy, condition):
    return find(
        strategy, condition, settings=settings(database=None, max_examples=2000, deadline=None)
    )


# ------------------------------------------------------------------------------ architectures


@FAST
@given(jt.mlp_architectures(max_depth=3, max_width=7, max_batch=5))
def test_architectures_respect_their_bounds(arch):
    assert isinstance(arch, jt.MLPArchitecture)
    assert 2 <= len(arch.sizes) <= 5 and all(1 <= n <= 7 for n in arch.sizes)
    depth = len(arch.sizes) - 2
    if isinstance(arch.activation, tuple):
        assert depth >= 2 and len(arch.activation) == depth
    names = arch.activation if isinstance(arch.activation, tuple) else (arch.activation,)
    assert set(names) <= set(jaxbp.ACTIVATIONS) and arch.output in jaxbp.OUTPUTS
    assert arch.l2 in (0.0, 0.25, 2.0) and 1 <= arch.batch <= 5
    assert arch.kwargs == {"activation": arch.activation, "output": arch.output, "l2": arch.l2}


def test_architectures_reach_every_kind_and_honour_restrictions():
    per_layer = _find(jt.mlp_architectures(), lambda a: isinstance(a.activation, tuple))
    assert len(per_layer.activation) == len(per_layer.sizes) - 2 == 2
    assert _find(jt.mlp_architectures(), lambda a: len(a.sizes) == 2).sizes == (1, 1)
    for output in jaxbp.OUTPUTS:
        _find(jt.mlp_architectures(), lambda a, o=output: a.output == o)
    only = jt.mlp_architectures(activations="relu", outputs=["sigmoid_bce"], l2=1.5, min_depth=1)
    arch = _find(only, lambda a: len(a.sizes) == 4)
    assert arch.activation == "relu" and arch.output == "sigmoid_bce" and arch.l2 == 1.5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"activations": ["relu", "swish"]}, "activations: unknown ['swish']"),
        ({"outputs": "hinge"}, "outputs: unknown ['hinge']"),
        ({"max_depth": -1}, "max_depth: expected an integer ≥ 0"),
        ({"max_width": 0}, "max_width: expected an integer ≥ 1"),
        ({"min_depth": 3, "max_depth": 2}, "min_depth: 3 is above max_depth 2"),
        ({"l2": (-1.0,)}, "l2: expected finite values ≥ 0"),
    ],
)
def test_architectures_reject_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        jt.mlp_architectures(**kwargs)


# ----------------------------------------------------------------------------------- problems


def test_mlp_problem_is_reproducible_from_its_seed():
    arch = jt.MLPArchitecture((3, 4, 2), ("tanh",), "sigmoid_bce", 0.25, 5)
    a, b, c = (jt.mlp_problem(arch, seed=s) for s in (7, 7, 8))
    leaves = [jax.tree.leaves(p[:3]) for p in (a, b, c)]
    assert all(np.array_equal(u, v) for u, v in zip(leaves[0], leaves[1], strict=True))
    assert not np.array_equal(leaves[0][0], leaves[2][0])
    params, x, y, kw = a
    assert [p.W.shape for p in params] == [(4, 3), (2, 4)] and x.shape == (5, 3)
    assert y.shape == (5, 2) and set(np.unique(np.asarray(y))) <= {0.0, 1.0}
    assert kw == {"activation": ("tanh",), "output": "sigmoid_bce", "l2": 0.25}
    eps = math.sqrt(6) / math.sqrt(3 + 4)
    assert float(jnp.max(jnp.abs(params[0].W))) <= eps
    params32, x32, _, _ = jt.mlp_problem(arch._replace(output="softmax_ce"), dtype="float32")
    assert params32[0].W.dtype == x32.dtype == jnp.float32


def test_problems_skip_float64_without_x64(monkeypatch):
    monkeypatch.setattr(jt, "_x64", lambda: False)

    @SMALL
    @given(jt.mlp_problems(max_depth=0, max_width=3))
    def all_float32(problem):
        params, x, y, kw = problem
        assert params[0].W.dtype == x.dtype == jnp.float32

    all_float32()
    with pytest.raises(ValueError, match="jax_enable_x64"):
        jt.mlp_problems(dtypes=("float64",))
    with pytest.raises(ValueError, match="dtypes: expected some of float32, float64"):
        jt.mlp_problems(dtypes=("float16",))


@functools.cache
def _reference_cost(activation, output, l2):
    return functools.partial(reference.cost, activation=activation, output=output, l2=l2)


@COMPILING
@given(jt.mlp_problems(max_depth=2, max_width=6, max_batch=4))
def test_drawn_problems_pass_the_delta_recursion(problem):
    params, x, y, kw = problem
    assert x.shape[0] == y.shape[0] and x.dtype == params[0].W.dtype
    report = jt.assert_gradients_match(
        functools.partial(jaxbp.value_and_grad, **kw),
        _reference_cost(*kw.values()),
        params,
        x,
        y,
        modes=("rev",),
        **EAGER,
    )
    assert report.ok and {r.path for r in report.rows} >= {"[0].W", "[0].b"}


# ----------------------------------------------------------------------------------- pytrees


def _leaves(tree):
    return jax.tree.leaves(tree)


@FAST
@given(jt.parameter_pytrees(max_leaves=5, max_size=12, scales=(1e-2, 1e2)))
def test_pytrees_respect_their_bounds(tree):
    leaves = _leaves(tree)
    assert 1 <= len(leaves) <= 5
    assert isinstance(tree, (dict, tuple, list))
    for leaf in leaves:
        assert isinstance(leaf, jax.Array) and leaf.dtype in (jnp.float32, jnp.float64)
        assert leaf.size <= 12 and leaf.ndim <= 3
        values = np.asarray(leaf, np.float64)
        assert np.all(np.isfinite(values)) and np.all(np.abs(values) <= 1e2)


def test_pytrees_reach_scalars_zero_size_mixed_scales_dtypes_and_nesting():
    trees = jt.parameter_pytrees()
    assert _find(trees, lambda t: any(v.shape == () for v in _leaves(t)))
    assert _find(trees, lambda t: any(v.size == 0 for v in _leaves(t)))
    assert _find(trees, lambda t: len({v.dtype for v in _leaves(t)}) == 2)

    def spread(t):
        peaks = [float(jnp.max(jnp.abs(v))) for v in _leaves(t) if v.size]
        return len(peaks) >= 2 and min(peaks) > 0 and max(peaks) / min(peaks) > 1e3

    assert _find(trees, spread)

    def depth(t):
        if isinstance(t, (dict, tuple, list)):
            children = t.values() if isinstance(t, dict) else t
            return 1 + max((depth(c) for c in children), default=0)
        return 0

    nested = _find(jt.parameter_pytrees(structures="nested"), lambda t: depth(t) >= 3)
    assert depth(nested) == 3
    for kind, cls in (("dict", dict), ("tuple", tuple), ("list", list)):
        _assert_flat(kind, cls)


def _assert_flat(kind, cls):
    @SMALL
    @given(jt.parameter_pytrees(structures=(kind,)))
    def flat(tree):
        assert type(tree) is cls
        children = tree.values() if cls is dict else tree
        assert all(isinstance(c, jax.Array) for c in children)
        if cls is dict:
            assert list(tree) == [f"p{i}" for i in range(len(tree))]

    flat()


def test_pytrees_reject_bad_arguments(monkeypatch):
    with pytest.raises(ValueError, match="structures: unknown"):
        jt.parameter_pytrees(structures=("set",))
    with pytest.raises(ValueError, match="min_leaves: expected an integer ≥ 1"):
        jt.parameter_pytrees(min_leaves=0)
    with pytest.raises(ValueError, match="scales: expected 0 < low ≤ high"):
        jt.parameter_pytrees(scales=(0.0, 1.0))
    monkeypatch.setattr(jt, "_x64", lambda: False)

    @SMALL
    @given(jt.parameter_pytrees())
    def all_float32(tree):
        assert all(v.dtype == jnp.float32 for v in _leaves(tree))

    all_float32()


def _sin_loss(tree):
    return sum((i + 1) * jnp.sum(jnp.sin(v)) for i, v in enumerate(_leaves(tree)))


def _sin_grad(tree, bug=False):
    leaves, treedef = jax.tree.flatten(tree)
    grads = [(i + 1) * jnp.cos(v) for i, v in enumerate(leaves)]
    if bug:
        grads[-1] = grads[-1] + 1.0
    return jax.tree.unflatten(treedef, grads)


@COMPILING
@given(jt.parameter_pytrees(max_leaves=4, max_size=8, scales=(1e-2, 1e1)))
def test_check_on_arbitrary_pytrees_passes_and_catches_a_bug(tree):
    report = jt.assert_gradients_match(_sin_grad, _sin_loss, tree, modes=("rev", "fwd"), **EAGER)
    assert report.ok
    last = jax.tree_util.keystr(jax.tree_util.tree_flatten_with_path(tree)[0][-1][0])
    bug = functools.partial(_sin_grad, bug=True)
    bad = verify.check(bug, _sin_loss, tree, modes=("rev",), **EAGER)
    assert bad.failed == ([last] if _leaves(tree)[-1].size else [])


# ---------------------------------------------------------------------------------- assertion


def _logistic():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((6, 3)))
    y = jnp.asarray([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    params = {"w": jnp.asarray([0.3, -0.2, 0.1]), "b": jnp.asarray(0.05)}

    def loss(p, x, y):
        z = x @ p["w"] + p["b"]
        return jnp.mean(jnp.logaddexp(0.0, z) - y * z)

    def grad(p, x, y, bug=False):
        dz = (jax.nn.sigmoid(x @ p["w"] + p["b"]) - y) / x.shape[0]
        return {"w": x.T @ dz, "b": jnp.sum(dz) * (x.shape[0] if bug else 1)}

    return grad, loss, params, x, y


def test_assert_gradients_match_returns_the_report_or_raises_with_the_table():
    grad, loss, params, x, y = _logistic()
    report = jt.assert_gradients_match(grad, loss, params, x, y, modes=("rev", "fd"), **EAGER)
    assert report.ok and isinstance(report, verify.Report)
    with pytest.raises(jt.GradientMismatch) as info:
        jt.assert_gradients_match(functools.partial(grad, bug=True), loss, params, x, y, **EAGER)
    assert isinstance(info.value, AssertionError)
    assert info.value.report.failed == ["['b']"]
    assert {f.oracle for f in info.value.report.failures} == {"rev", "fwd", "fd"}
    message = str(info.value)
    assert "failed at 1 leaf(s): ['b']" in message
    assert "bound = …" in message and "oracle value" in message  # the table's header
    with pytest.raises(TypeError, match="raise_on_fail is always True"):
        jt.assert_gradients_match(grad, loss, params, x, y, raise_on_fail=False)


def test_a_failing_check_prints_the_table_in_pytest_output(pytester):
    pytester.makepyfile(
        test_user="""
        import jax, jax.numpy as jnp
        from jaxbp.testing import assert_gradients_match

        def loss(p, x):
            return jnp.sum(jnp.tanh(p["w"] * x)) + jnp.sum(p["b"] ** 2)

        def grad(p, x):
            return {"w": x * (1 - jnp.tanh(p["w"] * x) ** 2), "b": 3 * p["b"]}  # bug: 2 p["b"]

        def test_my_gradient():
            p = {"w": jnp.array([0.5, -1.0]), "b": jnp.array([1.0, 2.0, 3.0])}
            assert_gradients_match(grad, loss, p, jnp.array([2.0, 3.0]), modes=("rev",))
        """
    )
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "GradientMismatch: gradient check failed at 1 leaf(s): ['b']" in out
    table = [line.split()[1:] for line in out.splitlines() if line.startswith("E  ")]
    assert ["oracle", "transform", "path", "shape", "dtype", "method", "max", "rel"] in [
        row[:8] for row in table
    ]
    assert ["rev", "eager", "['b']", "3", "float64"] in [row[:5] for row in table]
    assert table[-1][-1] == "FAIL"
    assert "['w']" not in out.split("GradientMismatch", 1)[1]  # only the failing rows
    assert "def check(" not in out  # jaxbp's frames are hidden


# ------------------------------------------------------------------------------- packaging


def test_docstring_examples_run():
    result = doctest.testmod(jt, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 20 and result.failed == 0


def test_strategies_without_hypothesis_say_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "hypothesis", None)
    monkeypatch.setitem(sys.modules, "hypothesis.strategies", None)
    for strategy in (jt.mlp_architectures, jt.mlp_problems, jt.parameter_pytrees):
        with pytest.raises(ImportError, match=r'pip install "jaxbp\[testing\]"'):
            strategy()
    grad, loss, params, x, y = _logistic()
    assert jt.assert_gradients_match(grad, loss, params, x, y, modes=("rev",), **EAGER).ok


def test_import_jaxbp_imports_no_hypothesis():
    code = (
        "import sys, jaxbp\n"
        "assert 'hypothesis' not in sys.modules and 'jaxbp.testing' not in sys.modules\n"
        "jaxbp.testing.assert_gradients_match\n"
        "print('hypothesis' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
