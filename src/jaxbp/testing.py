"""``jaxbp.testing`` — property-based gradient tests for your own test suite.

Hypothesis strategies that draw networks, problems and arbitrary parameter pytrees, and a
pytest-friendly assertion around :func:`jaxbp.verify.check`:

- :func:`mlp_architectures` — sizes, activation(s), output layer, λ and batch size;
- :func:`mlp_problems` — ``(params, x, y, kwargs)`` ready for :func:`jaxbp.value_and_grad`
  (:func:`mlp_problem` builds the same from an architecture and a seed, to reproduce a failure);
- :func:`parameter_pytrees` — dicts, tuples, lists and nestings of float arrays, scalar and
  zero-size leaves included, each leaf on its own scale;
- :func:`assert_gradients_match` — runs :func:`jaxbp.verify.check` with ``raise_on_fail=True``;
  a mismatch raises :class:`GradientMismatch` (an ``AssertionError``) whose message is the table
  of failing leaves, so pytest prints it under the failing test.

The strategies need hypothesis (``pip install "jaxbp[testing]"``); :func:`assert_gradients_match`
does not. Drawing is cheap: no ``jax.jit`` and no ``jax.random`` kernel per shape (values come
from a NumPy generator seeded by a ``jax.random`` key, see :func:`mlp_problem`), so the time of a
property test goes to the code under test.

Example (a test module of your own):
  >>> import functools, jax
  >>> jax.config.update("jax_enable_x64", True)
  >>> from hypothesis import given, settings
  >>> import jaxbp
  >>> from jaxbp.testing import assert_gradients_match, mlp_problems
  >>> @settings(max_examples=2, deadline=None, derandomize=True, database=None)
  ... @given(mlp_problems(max_depth=1, max_width=4, dtypes=("float64",)))
  ... def test_delta_recursion(problem):
  ...     params, x, y, kw = problem
  ...     assert_gradients_match(functools.partial(jaxbp.value_and_grad, **kw),
  ...                            functools.partial(jaxbp.cost, **kw), params, x, y, modes=("rev",))
  >>> test_delta_recursion()
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

__all__ = [
    "GradientMismatch",
    "MLPArchitecture",
    "assert_gradients_match",
    "mlp_architectures",
    "mlp_problem",
    "mlp_problems",
    "parameter_pytrees",
]

INSTALL_HINT = 'pip install "jaxbp[testing]"'
"""How to get the optional dependency of the strategies."""

DTYPES = ("float32", "float64")
STRUCTURES = ("dict", "tuple", "list", "nested")
_NESTED_DEPTH = 3


def _hypothesis():
    """``hypothesis.strategies``, or an ImportError saying how to install it."""
    try:
        import hypothesis.strategies as st
    except ImportError as e:
        raise ImportError(
            "jaxbp.testing: the hypothesis strategies need the 'hypothesis' package, which is not "
            f"installed; install it with: {INSTALL_HINT}"
        ) from e
    return st


# --------------------------------------------------------------------------------- assertion


class GradientMismatch(AssertionError):
    """Raised by :func:`assert_gradients_match`; the message holds the table of failing rows.

    Attributes:
      report: the full :class:`jaxbp.verify.Report` (``report.failures`` for the failing rows).
    """

    def __init__(self, message: str, report):
        super().__init__(message)
        self.report = report


def assert_gradients_match(grad_fn: Callable, loss_fn: Callable, params, *args, **check_options):
    """Asserts that ``grad_fn`` is the gradient of ``loss_fn``, leaf by leaf; returns the report.

    Runs ``jaxbp.verify.check(grad_fn, loss_fn, params, *args, raise_on_fail=True,
    **check_options)``. On a mismatch the :class:`GradientMismatch` (an ``AssertionError``) names
    every failing leaf and carries the table of failing rows — errors, worst index, hand and oracle
    values, tolerances — so pytest shows it under the test; the frames of jaxbp are hidden from
    the traceback.

    Args:
      grad_fn: ``grad_fn(params, *args)`` → grads (structure of ``params``) or ``(value, grads)``.
      loss_fn: ``loss_fn(params, *args)`` → the scalar ``grad_fn`` differentiates.
      params: any pytree of floating-point arrays.
      *args: passed to both functions.
      **check_options: any keyword of :func:`jaxbp.verify.check` (``modes``, ``rtol``, ``atol``,
        ``key``, ``fd_budget``, …) except ``raise_on_fail``.

    Returns:
      The passing :class:`jaxbp.verify.Report`.

    Raises:
      GradientMismatch: any row failed (NaN/Inf, wrong shape, error past its tolerance).
      TypeError: ``raise_on_fail`` given (use :func:`jaxbp.verify.check` for a report that may
        fail); ValueError / TypeError from :func:`jaxbp.verify.check` for bad options.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxbp.testing import assert_gradients_match
      >>> loss = lambda p, x: jnp.sum(jnp.tanh(p["w"] * x))
      >>> grad = lambda p, x: {"w": x * (1 - jnp.tanh(p["w"] * x) ** 2)}
      >>> p, x = {"w": jnp.array([0.5, -1.0])}, jnp.array([2.0, 3.0])
      >>> assert_gradients_match(grad, loss, p, x).ok
      True
      >>> bad = lambda p, x: {"w": 1.1 * grad(p, x)["w"]}
      >>> assert_gradients_match(bad, loss, p, x, modes=("rev",))
      Traceback (most recent call last):
      ...
      jaxbp.testing.GradientMismatch: gradient check failed at 1 leaf(s): ['w']
      ...
    """
    __tracebackhide__ = True
    if "raise_on_fail" in check_options:
        raise TypeError(
            "assert_gradients_match: raise_on_fail is always True here; call "
            "jaxbp.verify.check(...) for a report that may fail without raising"
        )
    from jaxbp.verify import check

    # The same as check(..., raise_on_fail=True), keeping the report for the exception.
    report = check(grad_fn, loss_fn, params, *args, raise_on_fail=False, **check_options)
    try:
        report.raise_if_failed()
    except AssertionError as e:
        raise GradientMismatch(str(e), report) from None
    return report


# ------------------------------------------------------------------------------ architectures


class MLPArchitecture(NamedTuple):
    """One drawn network (see :func:`mlp_architectures`).

    Attributes:
      sizes: layer widths, input first (``len(sizes) − 2`` hidden layers).
      activation: one hidden activation name, or a tuple with one name per hidden layer.
      output: the output layer and cost (``softmax_ce``, ``sigmoid_bce``, ``identity_mse``).
      l2: λ ≥ 0.
      batch: number of examples m.
    """

    sizes: tuple[int, ...]
    activation: str | tuple[str, ...]
    output: str
    l2: float
    batch: int

    @property
    def kwargs(self) -> dict:
        """``activation``, ``output`` and ``l2``: the keywords of :func:`jaxbp.value_and_grad`."""
        return {"activation": self.activation, "output": self.output, "l2": self.l2}


def _names(value, valid, what: str) -> tuple[str, ...]:
    if value is None:
        return tuple(sorted(valid))
    names = (value,) if isinstance(value, str) else tuple(value)
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise ValueError(
            f"{what}: unknown {bad or names!r}; valid names are {', '.join(sorted(valid))}"
        )
    return tuple(dict.fromkeys(names))


def _count(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer ≥ {minimum}, got {value!r}")
    return int(value)


def mlp_architectures(
    max_depth: int = 4,
    max_width: int = 64,
    activations: str | Sequence[str] | None = None,
    outputs: str | Sequence[str] | None = None,
    *,
    l2: Sequence[float] = (0.0, 0.25, 2.0),
    max_batch: int = 16,
    min_depth: int = 0,
):
    """Strategy of :class:`MLPArchitecture`: depth, widths, activation(s), output, λ, batch.

    Hypothesis shrinks a failure toward fewer hidden layers, narrower layers and a smaller batch.

    Args:
      max_depth: the most hidden layers (drawn from ``min_depth`` to ``max_depth``).
      max_width: the widest layer (every width, input and output included, is in 1…max_width).
      activations: hidden activation names to draw from (default: all of
        :data:`jaxbp.ACTIVATIONS`); with two or more hidden layers the network gets either one
        name for every layer or one name per layer (a tuple).
      outputs: output layers to draw from (default: all of :data:`jaxbp.OUTPUTS`).
      l2: the λ values to draw from.
      max_batch: the largest batch (from 1).
      min_depth: the fewest hidden layers.

    Raises:
      ValueError: an unknown activation or output name, or a bad count.

    Example:
      >>> from hypothesis import find
      >>> from jaxbp.testing import mlp_architectures
      >>> arch = find(mlp_architectures(activations="relu"), lambda a: len(a.sizes) == 4)
      >>> arch.sizes, arch.activation, arch.batch
      ((1, 1, 1, 1), 'relu', 1)
    """
    st = _hypothesis()
    import jaxbp

    max_depth = _count(max_depth, "max_depth", 0)
    min_depth = _count(min_depth, "min_depth", 0)
    if min_depth > max_depth:
        raise ValueError(f"min_depth: {min_depth} is above max_depth {max_depth}")
    max_width = _count(max_width, "max_width", 1)
    max_batch = _count(max_batch, "max_batch", 1)
    acts = _names(activations, jaxbp.ACTIVATIONS, "activations")
    outs = _names(outputs, jaxbp.OUTPUTS, "outputs")
    l2s = tuple(float(v) for v in ((l2,) if isinstance(l2, (int, float)) else l2))
    if not l2s or not all(math.isfinite(v) and v >= 0 for v in l2s):
        raise ValueError(f"l2: expected finite values ≥ 0, got {l2!r}")

    @st.composite
    def architectures(draw) -> MLPArchitecture:
        depth = draw(st.integers(min_depth, max_depth))
        sizes = tuple(
            draw(st.lists(st.integers(1, max_width), min_size=depth + 2, max_size=depth + 2))
        )
        if depth >= 2 and len(acts) > 1 and draw(st.booleans()):
            activation: str | tuple[str, ...] = tuple(
                draw(st.sampled_from(acts)) for _ in range(depth)
            )
        else:
            activation = draw(st.sampled_from(acts))
        return MLPArchitecture(
            sizes=sizes,
            activation=activation,
            output=draw(st.sampled_from(outs)),
            l2=draw(st.sampled_from(l2s)),
            batch=draw(st.integers(1, max_batch)),
        )

    return architectures()


# ----------------------------------------------------------------------------------- problems


def _x64() -> bool:
    import jax

    return bool(jax.config.jax_enable_x64)


def _usable_dtypes(dtypes, what: str = "dtypes") -> tuple[str, ...]:
    """The requested dtypes JAX can hold now: float64 only with ``jax_enable_x64``."""
    names = (dtypes,) if isinstance(dtypes, str) else tuple(dtypes)
    names = tuple(str(np.dtype(d)) for d in names) if names else ()
    bad = [n for n in names if n not in DTYPES]
    if bad or not names:
        raise ValueError(f"{what}: expected some of {', '.join(DTYPES)}, got {dtypes!r}")
    if _x64():
        return names
    usable = tuple(n for n in names if n != "float64")
    if not usable:
        raise ValueError(
            f"{what}: float64 arrays need jax.config.update('jax_enable_x64', True) (JAX would "
            "silently make them float32); enable it or allow float32"
        )
    return usable


def _host_rng(key) -> np.random.Generator:
    """A NumPy generator seeded by the bits of a ``jax.random`` key (reproducible, no kernel)."""
    import jax

    data = np.asarray(jax.random.key_data(key)).astype(np.uint64).ravel().tolist()
    return np.random.default_rng(data)


def mlp_problem(architecture: MLPArchitecture, *, dtype="float64", seed: int = 0):
    """``(params, x, y, kwargs)`` for one architecture, from ``jax.random.key(seed)``.

    The key is split into a parameter key and a data key; each seeds a NumPy generator with its
    bits (``jax.random.key_data``), which draws the values on the host — the same problem for
    the same seed on every machine, and no random-number kernel compiled per shape (``jax.random``
    would cost about a second per new architecture on a CPU). Parameters follow the course's
    ``"ng"`` scheme of :func:`jaxbp.init_params` (W, b uniform in [−ε, ε], ε = √6/√(n_in + n_out));
    x is standard normal; y holds integer labels for ``softmax_ce``, 0/1 targets for
    ``sigmoid_bce`` and standard normal targets for ``identity_mse``.

    Args:
      architecture: an :class:`MLPArchitecture` (or anything with its fields).
      dtype: ``"float32"`` or ``"float64"`` (float64 needs ``jax_enable_x64``).
      seed: the integer seed.

    Returns:
      ``params`` (tuple of :class:`jaxbp.Layer`), ``x`` (m, n_0), ``y``, and ``kwargs`` —
      ``activation``, ``output`` and ``l2`` for :func:`jaxbp.value_and_grad`.

    Example:
      >>> import jaxbp
      >>> from jaxbp.testing import MLPArchitecture, mlp_problem
      >>> arch = MLPArchitecture((3, 4, 2), "tanh", "softmax_ce", 0.5, 5)
      >>> params, x, y, kw = mlp_problem(arch, seed=7)
      >>> [p.W.shape for p in params], x.shape, y.shape, kw["activation"]
      ([(4, 3), (2, 4)], (5, 3), (5,), 'tanh')
      >>> J, grads = jaxbp.value_and_grad(params, x, y, **kw)
    """
    import jax
    import jax.numpy as jnp

    import jaxbp

    (dtype,) = _usable_dtypes((dtype,), "dtype")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an integer ≥ 0, got {seed!r}")
    sizes = tuple(int(n) for n in architecture.sizes)
    k_params, k_data = jax.random.split(jax.random.key(int(seed)))
    rng = _host_rng(k_params)
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        eps = math.sqrt(6.0) / math.sqrt(n_in + n_out)
        W = rng.uniform(-eps, eps, (n_out, n_in))
        b = rng.uniform(-eps, eps, (n_out,))
        params.append(jaxbp.Layer(jnp.asarray(W, dtype), jnp.asarray(b, dtype)))
    rng = _host_rng(k_data)
    m, k = int(architecture.batch), sizes[-1]
    x = jnp.asarray(rng.standard_normal((m, sizes[0])), dtype)
    if architecture.output == "softmax_ce":
        y = jnp.asarray(rng.integers(0, k, m), jnp.int32)
    elif architecture.output == "sigmoid_bce":
        y = jnp.asarray(rng.integers(0, 2, (m, k)), dtype)
    else:
        y = jnp.asarray(rng.standard_normal((m, k)), dtype)
    kwargs = {
        "activation": architecture.activation,
        "output": architecture.output,
        "l2": float(architecture.l2),
    }
    return tuple(params), x, y, kwargs


def mlp_problems(architectures=None, dtypes: Sequence[str] = DTYPES, **architecture_options):
    """Strategy of ``(params, x, y, kwargs)`` ready for :func:`jaxbp.value_and_grad`.

    Draws an architecture, a dtype and a seed, and builds the problem with :func:`mlp_problem`
    from ``jax.random.key(seed)`` (never NumPy's global state): a failing example is reproduced
    outside hypothesis by ``mlp_problem(architecture, dtype=..., seed=...)``.

    Args:
      architectures: a strategy of :class:`MLPArchitecture` (default:
        ``mlp_architectures(**architecture_options)``).
      dtypes: dtypes to draw from; float64 is drawn only while ``jax_enable_x64`` is on.
      **architecture_options: passed to :func:`mlp_architectures` (``max_depth``,
        ``max_width``, ``activations``, ``outputs``, ``l2``, ``max_batch``, ``min_depth``).

    Example:
      >>> from hypothesis import given, settings
      >>> from jaxbp.testing import mlp_problems
      >>> @settings(max_examples=5, deadline=None, database=None)
      ... @given(mlp_problems(outputs="identity_mse", max_depth=2, dtypes=("float32",)))
      ... def test_shapes(problem):
      ...     params, x, y, kw = problem
      ...     assert y.shape == (x.shape[0], params[-1].W.shape[0]) and x.dtype.name == "float32"
      >>> test_shapes()
    """
    st = _hypothesis()
    if architectures is None:
        architectures = mlp_architectures(**architecture_options)
    elif architecture_options:
        raise TypeError(
            "mlp_problems: give either architectures= or architecture options "
            f"({', '.join(architecture_options)}), not both"
        )
    _usable_dtypes(dtypes)  # bad names fail now, at strategy construction

    @st.composite
    def problems(draw):
        arch = draw(architectures)
        dtype = draw(st.sampled_from(_usable_dtypes(dtypes)))
        seed = draw(st.integers(0, 2**32 - 1))
        return mlp_problem(arch, dtype=dtype, seed=seed)

    return problems()


# ----------------------------------------------------------------------------------- pytrees


def parameter_pytrees(
    dtypes: Sequence[str] = DTYPES,
    max_leaves: int = 6,
    max_size: int = 24,
    structures: Sequence[str] = STRUCTURES,
    *,
    min_leaves: int = 1,
    max_ndim: int = 3,
    scales: tuple[float, float] = (1e-3, 1e3),
):
    """Strategy of arbitrary parameter pytrees of float arrays.

    Each tree has ``min_leaves``…``max_leaves`` leaves; each leaf has 0…``max_ndim`` dimensions
    (scalars included), at most ``max_size`` elements, and may be zero-size (a dimension of 0).
    Each leaf draws its own scale s — a power of ten between the decades of ``scales`` times a
    mantissa in [1, 10), clipped to ``scales`` — and its values uniformly in [−s, s] from a NumPy
    generator with a drawn seed: finite, bounded by ``scales[1]``, and different in magnitude
    from leaf to leaf, the case where one tolerance for the whole tree goes wrong. Containers: ``"dict"`` (string keys), ``"tuple"``,
    ``"list"``, or ``"nested"`` (dicts, tuples and lists inside each other, up to three levels).

    Args:
      dtypes: leaf dtypes to draw from, per leaf (a tree may mix them); float64 only while
        ``jax_enable_x64`` is on.
      max_leaves, min_leaves: bounds on the number of leaves (min at least 1: a tree with no
        leaves has no gradient to check).
      max_size: the most elements in one leaf.
      structures: the container kinds to draw from.
      max_ndim: the most dimensions of a leaf.
      scales: the smallest and largest leaf scale (both > 0).

    Raises:
      ValueError: a bad dtype, structure, count or scale range.

    Example:
      >>> import jax
      >>> from hypothesis import find
      >>> from jaxbp.testing import parameter_pytrees
      >>> tree = find(parameter_pytrees(structures=("dict",), dtypes=("float32",)),
      ...             lambda t: len(t) == 2 and any(v.shape == () for v in t.values()))
      >>> sorted(tree), [leaf.dtype.name for leaf in jax.tree.leaves(tree)]
      (['p0', 'p1'], ['float32', 'float32'])
    """
    st = _hypothesis()
    import jax.numpy as jnp

    _usable_dtypes(dtypes)
    min_leaves = _count(min_leaves, "min_leaves", 1)
    max_leaves = _count(max_leaves, "max_leaves", 1)
    if min_leaves > max_leaves:
        raise ValueError(f"min_leaves: {min_leaves} is above max_leaves {max_leaves}")
    max_size = _count(max_size, "max_size", 1)
    max_ndim = _count(max_ndim, "max_ndim", 0)
    kinds = (structures,) if isinstance(structures, str) else tuple(structures)
    bad = [k for k in kinds if k not in STRUCTURES]
    if bad or not kinds:
        raise ValueError(
            f"structures: unknown {bad or kinds!r}; valid structures are {', '.join(STRUCTURES)}"
        )
    lo, hi = (float(s) for s in scales)
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise ValueError(f"scales: expected 0 < low ≤ high < inf, got {scales!r}")
    first = math.floor(math.log10(lo))
    decades = (first, max(first, math.ceil(math.log10(hi)) - 1))

    @st.composite
    def shapes(draw) -> tuple[int, ...]:
        shape, total = [], 1
        for _ in range(draw(st.integers(0, max_ndim))):
            side = draw(st.integers(0, max(0, max_size // max(total, 1))))
            shape.append(side)
            total *= side
        return tuple(shape)

    @st.composite
    def leaves(draw):
        shape = draw(shapes())
        dtype = draw(st.sampled_from(_usable_dtypes(dtypes)))
        exponent = draw(st.integers(*decades))
        mantissa = draw(st.floats(1.0, 10.0, exclude_max=True))
        scale = min(hi, max(lo, mantissa * 10.0**exponent))
        seed = draw(st.integers(0, 2**32 - 1))
        values = np.random.default_rng(seed).uniform(-1.0, 1.0, shape) * scale
        return jnp.asarray(values, dtype)

    def container(kind: str, children: list):
        if kind == "dict":
            return {f"p{i}": c for i, c in enumerate(children)}
        return tuple(children) if kind == "tuple" else list(children)

    def nest(draw, items: list, depth: int):
        children, i = [], 0
        while i < len(items):
            if depth < _NESTED_DEPTH and draw(st.booleans()):
                k = draw(st.integers(1, len(items) - i))
                children.append(nest(draw, items[i : i + k], depth + 1))
                i += k
            else:
                children.append(items[i])
                i += 1
        return container(draw(st.sampled_from(("dict", "tuple", "list"))), children)

    @st.composite
    def trees(draw):
        items = draw(st.lists(leaves(), min_size=min_leaves, max_size=max_leaves))
        kind = draw(st.sampled_from(kinds))
        if kind == "nested":
            return nest(draw, items, 1)
        return container(kind, items)

    return trees()
