"""Runs JAX's own autodiff tests, vendored here unmodified, with ``check_grads`` replaced by
:func:`jaxbp.verify.check_grads`.

- For every test in this folder the autouse fixture below replaces ``check_grads`` in the test's
  module (which imported JAX's: ``from jax.test_util import check_grads``) and every name through
  which JAX exposes it (``jax.test_util``, ``jax._src.public_test_util``, ``jax._src.test_util``),
  and restores them afterwards: nothing outside this folder sees ours.
- ``JAX_NUM_GENERATED_CASES`` (JAX's sampler of parameterised cases, default 10) is set to 1
  unless given, which keeps the folder under a minute on one core (``JAX_NUM_GENERATED_CASES=10``
  is JAX's default: 752 tests, about 5 minutes). The folder is marked ``slow``: CI runs it in its
  slow pass (.ci/run), the README's quick command leaves it out.
- float64 stays on (tests/conftest.py), as in JAX's ``JAX_ENABLE_X64=1`` runs: the dtype lists of
  JAX's tests then include float64 and complex128. ``jtu.JaxTestCase`` itself sets JAX's strict
  dtype promotion, rank-promotion errors and ``jax_enable_checks`` for each test.
- :data:`SKIPS`: the cases where our verdict differs from JAX's on purpose, each with the reason.
"""

import os

os.environ.setdefault("JAX_NUM_GENERATED_CASES", "1")

import jax  # noqa: E402
import jax._src.public_test_util  # noqa: E402
import jax._src.test_util as jtu  # noqa: E402
import jax.test_util  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax import lax  # noqa: E402

from jaxbp.verify import compat  # noqa: E402

if jtu.NUM_GENERATED_CASES.value != int(os.environ["JAX_NUM_GENERATED_CASES"]):
    # jax._src.test_util was imported (and read the variable) before this file.
    jax.config.update("jax_num_generated_cases", int(os.environ["JAX_NUM_GENERATED_CASES"]))

CASES = int(os.environ["JAX_NUM_GENERATED_CASES"])
"""JAX's sample size: one case per parameterised group by default (104 tests, about 45 s of one
core); ``JAX_NUM_GENERATED_CASES=10`` is JAX's own default (752 tests, about 5 minutes)."""

NAN_DOMAIN = (
    "testOpGrad samples lax.asin / lax.acos on uniform(-1.3, 1.3): where |x| > 1 the function "
    "itself is NaN, and so are its JVP, VJP and finite differences. JAX's check_grads passes "
    "(np.testing.assert_allclose treats NaN == NaN); jaxbp.verify.check_grads fails every NaN "
    "by design (a NaN is never a correct value), naming the elements, so the case is skipped."
)

SKIPS = {(lax.asin, "testOpGrad"): NAN_DOMAIN, (lax.acos, "testOpGrad"): NAN_DOMAIN}
"""``(f, test-method prefix) → reason``: the case is skipped when ``f(*args)`` has a NaN."""


def _ours(test_name: str):
    def check_grads(f, args, order, *rest, **kwargs):
        for (fn, prefix), reason in SKIPS.items():
            if f is fn and test_name.startswith(prefix):
                if any(np.isnan(np.asarray(leaf)).any() for leaf in jax.tree.leaves(f(*args))):
                    pytest.skip(reason)
        return compat.check_grads(f, args, order, *rest, **kwargs)

    return check_grads


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        # JAX's own suite runs in CI's slow pass (.ci/run), not in the README's quick command
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _our_check_grads(request, monkeypatch):
    ours = _ours(request.node.name)
    if hasattr(request.module, "check_grads"):
        monkeypatch.setattr(request.module, "check_grads", ours)
    for module in (jax.test_util, jax._src.public_test_util, jtu):
        monkeypatch.setattr(module, "check_grads", ours)
    yield
