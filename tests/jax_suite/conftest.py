"""Runs JAX's own tests of ``check_grads`` users, vendored here unmodified, with ``check_grads``
replaced by :func:`jaxbp.verify.check_grads`.

- **Checker**: for every test in this folder the autouse fixture below replaces ``check_grads`` in
  the test's module (where it imported JAX's: ``from jax.test_util import check_grads``) and every
  name through which JAX exposes it (``jax.test_util``, ``jax._src.public_test_util``,
  ``jax._src.test_util`` — the ``jtu.check_grads`` of most files), and restores them afterwards:
  nothing outside this folder sees ours. ``JAXBP_JAX_SUITE_CHECKER=jax`` runs JAX's own
  ``check_grads`` instead (benchmarks/jax_suite_compare.py compares the two verdicts). In both
  modes the fixture counts the calls and records them as the test's ``check_grads_calls``
  property (``--junitxml`` writes it).
- **Selection**: :data:`WHOLE` runs whole. The other files are JAX's tests of linalg, numpy, scipy,
  fft, ``custom_linear_solve`` and ``odeint``, most of which never differentiate: only the tests
  whose source calls ``check_grads`` are collected (:func:`check_grads_callers`, read from the
  file's syntax tree), the others are deselected. A test is selected by the function it runs
  (``inspect.unwrap`` through absl's parameterisation), not by its id, so the selection holds for
  every ``JAX_NUM_GENERATED_CASES``, and there is no list to regenerate when a file is
  re-vendored.
- ``JAX_NUM_GENERATED_CASES`` (JAX's sampler of parameterised cases, default 10) is set to 1
  unless given. The sample is deterministic (``RandomState(42)``) for a given count, but ids do
  not carry across counts: a test whose cases chain one sample per op (``testOpGrad``) numbers
  them in sequence, so ``testOpGrad15`` is ``lax.asin`` at 1 case and another op at 10. The
  folder is marked ``slow``: CI runs it in its slow pass (.ci/run), the README's quick command
  leaves it out.
- float64 stays on (tests/conftest.py), as in JAX's ``JAX_ENABLE_X64=1`` runs: the dtype lists of
  JAX's tests then include float64 and complex128. ``jtu.JaxTestCase`` itself sets JAX's strict
  dtype promotion, rank-promotion errors and ``jax_enable_checks`` for each test.
- Nothing is skipped for ours: every test that passes with JAX's checker passes with ours
  (benchmarks/jax_suite_compare.py). ``testOpGrad`` samples ``lax.asin`` / ``lax.acos`` outside
  [−1, 1], where the function itself is NaN: ours reports those elements as undefined at the
  point and does not fail, as JAX's passes them (docs/verify.md, section 6).
"""

import ast
import functools
import inspect
import os
from pathlib import Path

os.environ.setdefault("JAX_NUM_GENERATED_CASES", "1")

import jax  # noqa: E402
import jax._src.public_test_util  # noqa: E402
import jax._src.test_util as jtu  # noqa: E402
import jax.test_util  # noqa: E402
import pytest  # noqa: E402

from jaxbp.verify import compat  # noqa: E402

if jtu.NUM_GENERATED_CASES.value != int(os.environ["JAX_NUM_GENERATED_CASES"]):
    # jax._src.test_util was imported (and read the variable) before this file.
    jax.config.update("jax_num_generated_cases", int(os.environ["JAX_NUM_GENERATED_CASES"]))

CASES = int(os.environ["JAX_NUM_GENERATED_CASES"])
"""JAX's sample size: one case per parameterised test by default; 10 is JAX's own default."""

CHECKER = os.environ.get("JAXBP_JAX_SUITE_CHECKER", "jaxbp")
"""``jaxbp`` (default): ours swapped in; ``jax``: JAX's ``check_grads``, untouched."""
if CHECKER not in ("jaxbp", "jax"):
    raise pytest.UsageError(f"JAXBP_JAX_SUITE_CHECKER={CHECKER!r}: expected 'jaxbp' or 'jax'")

JAX_CHECK_GRADS = jax._src.public_test_util.check_grads

HERE = Path(os.path.abspath(__file__)).parent
"""This folder, spelt as pytest spells the paths of the items it collects here."""

WHOLE = frozenset({"lax_autodiff_test.py"})
"""Files run whole: JAX's autodiff tests, nearly all of which call ``check_grads``."""


@functools.cache
def check_grads_callers(path: Path) -> frozenset[str]:
    """The qualified names (``Class.method``, ``function``) of the functions defined in ``path``
    whose body calls ``check_grads``: names it (``check_grads``, ``jtu.check_grads``,
    ``partial(check_grads, …)``, in nested functions and lambdas too), or names a function of the
    file that does (a module-level helper such as ``check_grads_bilinear``, a method through
    ``self.`` or ``cls.``), to any depth.

    A test is a caller when its source is: a parameterised test's cases are the same function,
    whatever ``JAX_NUM_GENERATED_CASES`` samples. Over-approximates where the call is in a branch
    that a case does not take (the test then runs without calling ``check_grads``).
    """
    defs: dict[str, list[ast.AST]] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef):
            defs[node.name] = node.body
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    defs[f"{node.name}.{item.name}"] = item.body
        elif isinstance(node, ast.Assign):  # helper = partial(check_grads, …)
            defs.update({t.id: [node.value] for t in node.targets if isinstance(t, ast.Name)})

    def names(body: list[ast.AST]) -> set[str]:
        """Module-level names read, and ``.method`` for each ``self.method`` / ``cls.method``."""
        out = set()
        for node in (n for stmt in body for n in ast.walk(stmt)):
            if isinstance(node, ast.Name):
                out.add(node.id)
            elif isinstance(node, ast.Attribute):
                if node.attr == "check_grads":
                    out.add("check_grads")
                elif isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    out.add(f".{node.attr}")
        return out

    used = {qualname: names(body) for qualname, body in defs.items()}
    callers = {"check_grads"}
    while True:
        refs = callers | {"." + c.rsplit(".", 1)[1] for c in callers if "." in c}
        new = {qualname for qualname, names_ in used.items() if names_ & refs} - callers
        if not new:
            return frozenset(callers - {"check_grads"})
        callers |= new


def _selected(item: pytest.Item) -> bool:
    if item.path.name in WHOLE:
        return True
    source = inspect.unwrap(item.obj)  # through absl's parameterisation and jtu's decorators
    return source.__qualname__ in check_grads_callers(item.path)


def pytest_collection_modifyitems(config, items):
    mine = [item for item in items if item.path.is_relative_to(HERE)]
    for item in mine:
        # JAX's own suite runs in CI's slow pass (.ci/run), not in the README's quick command
        item.add_marker(pytest.mark.slow)
    deselected = [item for item in mine if not _selected(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        dropped = set(deselected)
        items[:] = [item for item in items if item not in dropped]


@pytest.fixture(autouse=True)
def _swap_check_grads(request, monkeypatch):
    if CHECKER == "jax":
        checker = JAX_CHECK_GRADS
    else:
        checker = compat.check_grads
    calls = 0

    def check_grads(*args, **kwargs):
        nonlocal calls
        calls += 1
        return checker(*args, **kwargs)

    if hasattr(request.module, "check_grads"):
        monkeypatch.setattr(request.module, "check_grads", check_grads)
    for module in (jax.test_util, jax._src.public_test_util, jtu):
        monkeypatch.setattr(module, "check_grads", check_grads)
    yield
    request.node.user_properties.append(("check_grads_calls", calls))
