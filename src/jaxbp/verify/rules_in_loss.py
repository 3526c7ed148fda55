"""The custom derivative rules a loss function runs: ``custom_vjp`` / ``custom_jvp`` calls in its
jaxpr, found through every sub-jaxpr (``jit``, ``cond``, ``scan``, ``while``, ``checkpoint``, the
custom functions' own bodies, …).

Why it matters: JAX's reverse mode of a ``custom_vjp`` function runs its bwd rule, and both modes of
a ``custom_jvp`` function run its jvp rule. When ``loss_fn`` of :func:`jaxbp.verify.check` carries
such a rule — ``jaxbp.loss``, whose bwd rule is the hand-derived δ recursion — the ``rev`` oracle
is that rule, not autodiff of the forward computation, and ``rev`` can pass with error 0 whatever
the rule computes. Only finite differences (``fd``) never look at a rule.

Rules defined inside the ``jax`` package (``jax.nn.relu``, ``jax.nn.softplus``, ``logaddexp``, …
are ``custom_jvp``; nearly every loss calls one) are JAX's own derivatives and are not reported:
:func:`custom_rules` keeps the rules whose function is defined outside it. The file that decides:
for a ``custom_vjp`` the bwd function's own (``eqn.params["bwd"]``), for a ``custom_jvp`` the
primal function's (the jaxpr's debug info; the jaxpr keeps no reference to the jvp function). A
rule whose origin cannot be read is reported (better a needless note than a silent
self-comparison).

Primitive names, checked on jax 0.10.2: ``custom_vjp_call`` and ``custom_jvp_call`` (the older
``custom_vjp_call_jaxpr`` / ``custom_jvp_call_jaxpr`` are recognised too).

Example:
  >>> jaxpr = jax.make_jaxpr(jaxbp.loss)(params, x, y)
  >>> custom_rules(jaxpr)
  (CustomRule(kind='custom_vjp', name='_loss', where='jaxbp/vjp.py:65', ...),)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import jax
from jax.extend import core as jex_core

VJP_PRIMITIVES = frozenset({"custom_vjp_call", "custom_vjp_call_jaxpr"})
JVP_PRIMITIVES = frozenset({"custom_jvp_call", "custom_jvp_call_jaxpr"})

_JAX_DIR = os.path.dirname(os.path.realpath(jax.__file__)) + os.sep


class CustomRuleWarning(UserWarning):
    """``loss_fn`` carries a custom derivative rule and no finite differences were requested, so
    nothing independent of the rule checked the gradient."""


class CustomRule(NamedTuple):
    """One custom derivative rule called by a traced function.

    Attributes:
      kind: ``"custom_vjp"`` or ``"custom_jvp"``.
      name: the function carrying the rule (``_loss``), else the primitive's name.
      where: ``file:line`` of that function, the file relative to its ``sys.path`` entry
        (``jaxbp/vjp.py:65``), else ``None``.
      primitive: the jaxpr primitive (``custom_vjp_call``, …).
      in_jax: whether the rule is defined inside the ``jax`` package (``None``: unknown).
    """

    kind: str
    name: str
    where: str | None
    primitive: str
    in_jax: bool | None

    def describe(self) -> str:
        """``custom_vjp rule of _loss (jaxbp/vjp.py:65)``."""
        return f"{self.kind} rule of {self.name}" + (f" ({self.where})" if self.where else "")


def _subjaxprs(params) -> Iterator:
    for value in params.values():
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(v, jex_core.ClosedJaxpr):
                yield v.jaxpr
            elif isinstance(v, jex_core.Jaxpr):
                yield v


def _split_src_info(info: str | None) -> tuple[str | None, str | None, int | None]:
    """``"f at /path/file.py:12"`` → ``("f", "/path/file.py", 12)``; missing parts ``None``."""
    if not info or info == "<unknown>":
        return None, None, None
    name, sep, place = info.rpartition(" at ")
    if not sep:
        return info, None, None
    file, _, line = place.rpartition(":")
    return name, (file or place), (int(line) if line.isdigit() else None)


def _short(file: str) -> str:
    real = os.path.realpath(file)
    roots = sorted((os.path.realpath(p) + os.sep for p in sys.path if p), key=len, reverse=True)
    for root in roots:
        if real.startswith(root):
            return real[len(root) :]
    return os.path.basename(file)


def _rule(eqn) -> CustomRule:
    prim = eqn.primitive.name
    kind = "custom_vjp" if prim in VJP_PRIMITIVES else "custom_jvp"
    body = eqn.params.get("call_jaxpr", eqn.params.get("fun_jaxpr"))
    body = getattr(body, "jaxpr", body)
    debug = getattr(body, "debug_info", None)
    name, file, line = _split_src_info(getattr(debug, "func_src_info", None))
    # a custom_vjp's bwd rule is at hand (the WrappedFun's core function): its file decides
    rule_fn = getattr(eqn.params.get("bwd"), "f", None)
    code = getattr(rule_fn, "__code__", None)
    origin = code.co_filename if code is not None else file
    if name is None and rule_fn is not None:
        name = getattr(rule_fn, "__qualname__", None)
    if file is None and code is not None:
        file, line = code.co_filename, code.co_firstlineno
    in_jax = None if origin is None else os.path.realpath(origin).startswith(_JAX_DIR)
    where = None if file is None else _short(file) + (f":{line}" if line is not None else "")
    return CustomRule(kind, name or prim, where, prim, in_jax)


def custom_rules(jaxpr, *, include_jax: bool = False) -> tuple[CustomRule, ...]:
    """Every custom_vjp / custom_jvp call in ``jaxpr`` (a ``Jaxpr`` or ``ClosedJaxpr``), through
    every sub-jaxpr, each rule once, in the order first met.

    Args:
      jaxpr: e.g. ``jax.make_jaxpr(loss_fn)(params, *args)``.
      include_jax: also the rules defined inside the ``jax`` package (``jax.nn.relu``, …).
    """
    found: dict[CustomRule, None] = {}
    seen: set[int] = set()

    def walk(j):
        if id(j) in seen:  # one jitted function called n times is one sub-jaxpr, walked once
            return
        seen.add(id(j))
        for eqn in j.eqns:
            if eqn.primitive.name in VJP_PRIMITIVES | JVP_PRIMITIVES:
                rule = _rule(eqn)
                if include_jax or rule.in_jax is not True:
                    found.setdefault(rule)
            for sub in _subjaxprs(eqn.params):
                walk(sub)

    walk(getattr(jaxpr, "jaxpr", jaxpr))
    return tuple(found)


def trace_custom_rules(fn, *args, include_jax: bool = False) -> tuple[CustomRule, ...]:
    """:func:`custom_rules` of ``fn`` traced at ``args`` (``jax.make_jaxpr``, once)."""
    return custom_rules(jax.make_jaxpr(fn)(*args), include_jax=include_jax)


def _names(rules: Sequence[CustomRule], most: int = 3) -> str:
    shown = [r.describe() for r in rules[:most]]
    if len(rules) > most:
        shown.append(f"{len(rules) - most} more")
    return ", ".join(shown)


def affected(rules: Sequence[CustomRule], oracle: str) -> tuple[CustomRule, ...]:
    """The rules ``oracle`` runs: every rule for ``rev``, the custom_jvp ones for ``fwd`` (forward
    mode of a custom_vjp does not exist), none for ``fd``."""
    if oracle == "rev":
        return tuple(rules)
    if oracle == "fwd":
        return tuple(r for r in rules if r.kind == "custom_jvp")
    return ()


def row_note(rules: Sequence[CustomRule], oracle: str) -> str | None:
    """The note for a ``rev`` / ``fwd`` row whose oracle ran ``rules`` (``None``: it ran none)."""
    ran = affected(rules, oracle)
    if not ran:
        return None
    mode = "reverse" if oracle == "rev" else "forward"
    return (
        f"{mode} mode ran the {_names(ran)} inside loss_fn, so {oracle} compares against that "
        "rule, not against autodiff of the forward computation; fd is the independent check"
    )


def report_warning(rules: Sequence[CustomRule], modes: Sequence[str]) -> str:
    """The report's warning: which rule the autodiff oracles ran, and what checked independently."""
    oracles = [m for m in ("rev", "fwd") if m in modes and affected(rules, m)]
    text = (
        f"loss_fn calls the {_names(rules)}: {' and '.join(oracles) or 'autodiff'} ran that rule, "
        "so grad_fn was compared with the rule there, not with autodiff of the forward "
        "computation; "
    )
    if "fd" in modes:
        text += "the fd rows are the independent check"
    else:
        text += "fd was not run, so nothing independent checked the gradient (add 'fd' to modes)"
    return text + " — or pass a loss_fn without the rule (for jaxbp.loss: jaxbp.cost)"
