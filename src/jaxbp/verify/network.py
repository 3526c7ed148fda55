"""``check_network``: each layer's hand-derived backward in any network of :mod:`jaxbp.layers`,
fed the exact upstream δ, so that a wrong derivation is named by its layer.

The hand gradient of a network is the δ recursion of :func:`jaxbp.layers.Sequential` (eq. L5)::

    δ_L = (ŷ − y)/m;   for l = L … 1:   (∂E/∂params_l, δ_{l−1}) = layer_l.backward(params_l, cache_l, δ_l)

Compared only as a whole (the chained gradient against ``jax.grad``), one wrong layer makes every
gradient below it wrong too. :func:`check_network` breaks the chain: autodiff names the exact
δ_l = ∂J/∂y_l at the output of every layer at once — ``jax.grad`` of the cost with respect to a zero
"probe" added to each layer's output, through the head and every layer above, with the same
dropout keys as the forward pass (eq. V6 of the MLP's δ check, for any layer) — and each layer's
own ``backward`` is handed that δ_l and its own cache from the same forward pass. Its two results
are compared, leaf by leaf, with

- ``vjp``: ``jax.vjp`` of that one layer's forward at its cached input, pulled back along the same
  δ_l, one precision up (:func:`jaxbp.verify.tolerance.reference_dtype`);
- ``fd``: central finite differences of ⟨δ_l, layer.forward(params, x)⟩ along a random unit
  direction of each leaf (:func:`jaxbp.verify.fd.at_offsets`: Richardson's estimate with its
  measured allowance; a direction that crosses a kink is a ``non-smooth`` row, which never fails).

A wrong layer fails on its own rows only: every other layer receives the exact δ, never the one a
wrong layer above would have sent, so it passes. ``params[…]`` rows and the ``dx`` row are separate,
so a wrong parameter gradient and a wrong δ handed down are told apart. The report also has

- a ``probe`` row for the head: δ^(L) = (ŷ − y)/m (eq. C4) against autodiff's ∂J/∂z^(L);
- ``rev`` rows for the whole network: the chained hand gradient (:func:`jaxbp.layers.value_and_grad`,
  with the L2 penalty on the ``W…`` leaves) against ``jax.grad`` of :func:`jaxbp.layers.cost`. They
  fail wherever a wrong layer's error reaches; when every layer passes and one of them fails, the
  fault is in a composition's own backward or the head.

Layers are named by their place: ``[3] Dense(5)``, and inside a :func:`~jaxbp.layers.Residual` or an
inner :func:`~jaxbp.layers.Sequential` by the tuple path that indexes ``params`` (``[6, 1] tanh in
Sequential › Residual``: the innermost composition first). Running statistics (BatchNorm's
``params["state"]``) are not trained, so
their entries are ``skipped`` rows (jaxbp.layers.base). Tolerances are the verifier's one policy
(:mod:`jaxbp.verify.tolerance`), every row comes from :func:`jaxbp.verify.report.compare`.

Example:
  >>> net = layers.Sequential(layers.Dense(6), layers.Relu(), layers.Dense(3))
  >>> params, _ = net.init(jax.random.key(0), (4,))
  >>> report = verify.check_network(net, params, x, y_onehot)
  >>> report.ok, report.failed_layers
  (True, [])
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.layers.base import Layer
from jaxbp.layers.combinators import Residual, Sequential
from jaxbp.layers.network import cost as network_cost
from jaxbp.layers.network import value_and_grad as network_value_and_grad
from jaxbp.losses import get_output
from jaxbp.verify import fd, tolerance
from jaxbp.verify.oracles import host_rng
from jaxbp.verify.report import Failure, Report, Row, compare, environment, status_row

LayerId = int | tuple  # the index in the Sequential, or the tuple path of a nested layer

HEAD = "head: δ^(L) = (ŷ − y)/m"
NETWORK = "network"


# --- the network as a tree of compositions -------------------------------------------------------
class _Node(NamedTuple):
    """A layer of the network: a leaf (checked) or a composition of ``children``."""

    layer: Layer
    path: tuple  # indices into params (a Residual adds none: its params are its layer's)
    kinds: tuple  # the compositions it sits in, below the top one ("Residual", "Sequential")
    children: tuple  # of _Node; () for a leaf
    compose: Callable | None  # rebuilds the composition from (rebuilt) children
    kind: str = "layer"  # "layer" (a leaf), "Sequential" or "Residual"


def _composition(layer: Layer):
    """``(kind, sublayers, compose)`` for a :func:`Sequential` or :func:`Residual`, else None.

    Read from the layer's own ``sublayers`` and ``compose`` fields — and only when both
    ``forward`` and ``backward`` are still that combinator's (a composition whose forward or
    backward was replaced, ``layer._replace(backward=…)``, is checked as one layer).
    """
    if layer.compose not in (Sequential, Residual) or not layer.sublayers:
        return None
    kind = layer.compose.__name__
    own = f"{kind}.<locals>."
    for fn, what in ((layer.forward, "forward"), (layer.backward, "backward")):
        if getattr(fn, "__module__", None) != "jaxbp.layers.combinators":
            return None
        if getattr(fn, "__qualname__", "") != own + what:
            return None
    return kind, tuple(layer.sublayers), layer.compose


def _tree(layer: Layer, path: tuple = (), kinds: tuple = (), top: bool = True) -> _Node:
    found = _composition(layer)
    if found is None:
        return _Node(layer, path, kinds, (), None)
    kind, subs, compose = found
    inner_kinds = kinds if top else (*kinds, kind)
    if kind == "Sequential":
        children = tuple(_tree(s, (*path, i), inner_kinds, False) for i, s in enumerate(subs))
    else:
        children = (_tree(subs[0], path, inner_kinds, False),)
    return _Node(layer, path, kinds, children, compose, kind)


def _leaves(node: _Node) -> list[_Node]:
    if not node.children:
        return [node]
    return [leaf for c in node.children for leaf in _leaves(c)]


def _layer_id(path: tuple) -> LayerId:
    return path[0] if len(path) == 1 else path


def _label(leaf: _Node) -> str:
    where = "[" + ", ".join(map(str, leaf.path)) + "]"
    inside = f" in {' › '.join(reversed(leaf.kinds))}" if leaf.kinds else ""
    return f"{where} {leaf.layer.name}{inside}"


def _tapped(layer: Layer) -> Layer:
    """``layer`` with params ``(params, probe)``: adds ``probe`` (or nothing, for None) to its
    output, and caches ``(x, key, cache)`` — its input, its key and its own cache."""

    def forward(pp, x, *, key=None, train=False):
        params, probe = pp
        y, cache = layer.forward(params, x, key=key, train=train)
        return (y if probe is None else y + probe), (x, key, cache)

    return layer._replace(forward=forward)


def _rebuild(node: _Node) -> Layer:
    if not node.children:
        return _tapped(node.layer)
    return node.compose(*(_rebuild(c) for c in node.children))


def _attach(node: _Node, params, probes: list, counter: list):
    """``params`` with each leaf's entry replaced by ``(entry, probe)``, in leaf order."""
    if not node.children:
        k = counter[0]
        counter[0] += 1
        return params, probes[k]
    if node.kind == "Residual":  # y = x + F(x): the params are F's
        return _attach(node.children[0], params, probes, counter)
    return tuple(_attach(c, p, probes, counter) for c, p in zip(node.children, params, strict=True))


def _records(node: _Node, cache) -> list:
    """Each leaf's ``(x, key, cache)`` from the rebuilt network's cache, in leaf order."""
    if not node.children:
        return [cache]
    if node.kind == "Residual":
        return _records(node.children[0], cache)
    return [r for c, sub in zip(node.children, cache, strict=True) for r in _records(c, sub)]


def _sub_params(leaf: _Node, params, root: _Node):
    """The leaf's entry of ``params`` (its path indexes tuples; a Residual passes through)."""
    for i in leaf.path[len(root.path) :]:
        params = params[i]
    return params


# --- the report ----------------------------------------------------------------------------------
class LayerFailure(NamedTuple):
    """A failing row of :func:`check_network`: the fields of :class:`~jaxbp.verify.report.Failure`
    and ``layer`` — the index in the Sequential, a tuple path for a layer nested in a Residual or
    an inner Sequential, or None for a row of the whole network (the head's δ, the chained
    gradient)."""

    check: str
    oracle: str
    transform: str
    path: str
    index: tuple | None
    error: float
    tolerance: float
    problem: str | None
    layer: LayerId | None

    @property
    def transformation(self) -> str:
        return self.transform


@dataclasses.dataclass(frozen=True)
class NetworkReport(Report):
    """A :class:`~jaxbp.verify.Report` whose rows belong to layers.

    Attributes:
      layer_of: ``{row path: layer}`` for every per-layer row (the layer as in
        :class:`LayerFailure`); paths not in it are rows of the whole network.
    """

    layer_of: dict = dataclasses.field(default_factory=dict)

    @property
    def failures(self) -> list[LayerFailure]:  # type: ignore[override]
        """Every failing row as a :class:`LayerFailure` (with its ``layer``), in row order."""
        return [
            LayerFailure(*f, layer=self.layer_of.get(f.path))
            for f in Report.failures.fget(self)  # type: ignore[attr-defined]
        ]

    @property
    def failed_layers(self) -> list[LayerId]:
        """The layers with a failing row of their own, in the network's order."""
        order = list(dict.fromkeys(self.layer_of.values()))
        bad = {self.layer_of[r.path] for r in self.rows if not r.ok and r.path in self.layer_of}
        return [layer for layer in order if layer in bad]

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["layers"] = {path: list(v) if isinstance(v, tuple) else v
                       for path, v in self.layer_of.items()}  # fmt: skip
        d["failed_layers"] = [list(v) if isinstance(v, tuple) else v for v in self.failed_layers]
        return d


assert Failure._fields == LayerFailure._fields[:-1]  # LayerFailure extends Failure by `layer`


# --- arguments -----------------------------------------------------------------------------------
def _check_args(net, x, y, output, l2, key, train, seed):
    if isinstance(net, (list, tuple)) and not isinstance(net, Layer):  # Layer is a tuple too
        if not net:
            raise ValueError("net: needs at least one layer, got an empty list")
        for i, layer in enumerate(net):
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"net[{i}]: must be a jaxbp.layers.Layer, got {type(layer).__name__} {layer!r}"
                )
        net = Sequential(*net)
    elif not isinstance(net, Layer):
        raise TypeError(
            "net: must be a jaxbp.layers.Layer (a Sequential) or a list of layers, got "
            f"{type(net).__name__} {net!r}"
        )
    out = get_output(output)
    for name, value in (("x", x), ("y", y)):
        if not (hasattr(value, "shape") and hasattr(value, "dtype")):
            raise TypeError(f"{name}: must be an array, got {type(value).__name__}")
    if np.ndim(x) < 1:
        raise ValueError(f"x: must be a batch (m, …), got shape {tuple(np.shape(x))}")
    labels = np.ndim(y) == 1 and jnp.issubdtype(jnp.result_type(y), jnp.integer)
    if labels and out.name != "softmax_ce":
        raise ValueError(
            f"y: integer labels (m,) are for softmax_ce; {out.name} takes (m, K) targets, got "
            f"shape {tuple(np.shape(y))} of dtype {jnp.result_type(y)}"
        )
    if np.shape(y)[:1] != np.shape(x)[:1] or (not labels and np.ndim(y) != 2):
        raise ValueError(
            f"y: must be (m, K) targets (one-hot for softmax_ce) or, for softmax_ce, (m,) "
            f"integer labels, for the {np.shape(x)[0]} rows of x; got shape {tuple(np.shape(y))}"
        )
    if not labels and not jnp.issubdtype(jnp.result_type(y), jnp.floating):
        raise TypeError(f"y: must be floating (m, K) targets, got dtype {jnp.result_type(y)}")
    if l2 is not None and not _is_penalty(l2):
        raise ValueError(f"l2: must be a finite number ≥ 0 or None, got {l2!r}")
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        key = jax.random.key(int(key))
    elif key is not None and not (
        isinstance(key, jax.Array)
        and (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or key.shape == (2,))
    ):
        raise TypeError(f"key: must be None, an int seed or a jax.random key, got {key!r}")
    if not isinstance(train, bool):
        raise TypeError(f"train: must be True or False, got {train!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: must be an int, got {seed!r}")
    return net, out, key


def _is_penalty(l2) -> bool:
    """Whether ``l2`` is a finite λ ≥ 0: a Python, NumPy or 0-d JAX number, not a bool."""
    if isinstance(l2, bool) or np.ndim(l2) != 0:
        return False
    try:
        value = float(l2)
    except (TypeError, ValueError):
        return False
    return math.isfinite(value) and value >= 0


def _one_hot(y, k: int, dtype):
    """Integer labels (m,) as one-hot targets of the network's ``k`` outputs.

    Raises:
      ValueError: a label outside 0 … k − 1, naming its row and value.
    """
    labels = np.asarray(y)
    bad = np.flatnonzero((labels < 0) | (labels >= k))
    if bad.size:
        raise ValueError(
            f"y: label {labels[bad[0]]} at row {bad[0]} is outside 0..{k - 1} (the network's {k} "
            f"outputs; {bad.size} such label(s))"
        )
    return jax.nn.one_hot(labels, k, dtype=dtype)


def _is_state(path) -> bool:
    return any(isinstance(k, jax.tree_util.DictKey) and k.key == "state" for k in path)


def _is_float(leaf) -> bool:
    return hasattr(leaf, "dtype") and jnp.issubdtype(jnp.result_type(leaf), jnp.floating)


def _err(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:240] if text else ''}"


# --- the check -----------------------------------------------------------------------------------
def check_network(
    net,
    params,
    x,
    y,
    *,
    output: str = "softmax_ce",
    l2=None,
    key=None,
    train: bool = True,
    seed: int = 0,
    rtol: float | None = None,
    atol: float | None = None,
    finite_differences: bool = True,
    raise_on_fail: bool = False,
) -> NetworkReport:
    """Checks each layer's hand ``backward`` at the exact upstream δ (module docstring).

    Args:
      net: a :func:`jaxbp.layers.Sequential` (layers nested in its Residual blocks and inner
        Sequentials are checked one by one), any other :class:`~jaxbp.layers.Layer` (checked as one
        layer), or a list / tuple of layers, taken as their Sequential (``params`` then one entry
        per layer, as ``Sequential(*net).init`` gives).
      params: the network's parameters (``net.init``).
      x: a batch of inputs, (m, *in_shape).
      y: (m, K) targets (one-hot for softmax_ce), K the width of the network's output; or, for
        softmax_ce, (m,) integer labels in 0 … K − 1, as the lecture API and the head take them.
      output: the output layer: softmax_ce, sigmoid_bce or identity_mse (:data:`jaxbp.losses.OUTPUTS`).
      l2: λ ≥ 0 of the penalty on the ``W…`` leaves, or None; enters the whole-network rows only
        (a layer's backward returns the data term).
      key: the forward pass's key (dropout), as for :func:`jaxbp.layers.value_and_grad`; an int is
        taken as ``jax.random.key(int)``. The same key in every forward pass of the check.
      train: training mode (batch statistics, dropout on), as for ``value_and_grad``.
      seed: the random directions of the ``fd`` rows.
      rtol, atol: tolerances of every compared row; default: the dtype's analytic rtol
        (:func:`jaxbp.verify.default_rtol`) and ``atol = rtol · max |reference|`` per leaf.
      finite_differences: add the ``fd`` rows (one extra compiled program).
      raise_on_fail: raise ``AssertionError`` naming every failing row instead of returning.

    Returns:
      A :class:`NetworkReport`: per layer (pre-order), rows ``[i] Name: params['W']`` … and
      ``[i] Name: dx`` for the oracles ``vjp`` and ``fd``; the ``probe`` row of the head; ``rev``
      rows ``network: params[i]['W']`` and ``network: J`` of the chained gradient.
      ``failures`` records carry ``layer``; ``failed_layers`` lists the failing layers;
      ``meta["first_divergent"]`` names the failing layer closest to the output.

    Raises:
      TypeError / ValueError: a bad argument, named with the value received; the layers' own
        checks of ``params`` and ``x`` (run once, by ``jax.eval_shape``, before anything else).
    """
    started = time.perf_counter()
    net, out, key = _check_args(net, x, y, output, l2, key, train, seed)
    z_shape = jax.eval_shape(lambda p, x_: net.forward(p, x_, key=key, train=train)[0], params, x)
    if np.ndim(y) == 1 and len(z_shape.shape) == 2:  # integer labels (softmax_ce): one-hot
        y = _one_hot(y, z_shape.shape[1], z_shape.dtype)
    if tuple(z_shape.shape) != tuple(np.shape(y)):
        raise ValueError(
            f"y: has shape {tuple(np.shape(y))}, the network's output (logits) has shape "
            f"{tuple(z_shape.shape)}"
        )
    root = _tree(net)
    leaves = _leaves(root)
    labels = [_label(leaf) for leaf in leaves]
    layer_ids = [_layer_id(leaf.path) for leaf in leaves]
    leaf_params = [_sub_params(leaf, params, root) for leaf in leaves]
    tapped = _rebuild(root)
    m = int(np.shape(x)[0])

    # 1. In the network's own precision: every layer's exact δ (autodiff through the head and
    #    the layers above), its input, key and cache — and its hand backward on them.
    y_specs = _leaf_outputs(root, tapped, params, x, key, train, len(leaves))
    errors: dict[int, str] = {}

    def native(params, x, y):
        probes0 = [jnp.zeros(s.shape, s.dtype) for s in y_specs]

        def J(probes):
            z, cache = tapped.forward(_attach(root, params, probes, [0]), x, key=key, train=train)
            return jnp.mean(out.cost(z, y)), (z, cache)

        (_, (z, cache)), deltas = jax.value_and_grad(J, has_aux=True)(probes0)
        records = _records(root, cache)
        hands = []
        for k, (leaf, (_, _, c)) in enumerate(zip(leaves, records, strict=True)):
            try:
                hands.append(leaf.layer.backward(_sub_params(leaf, params, root), c, deltas[k]))
            except Exception as e:  # noqa: BLE001  (the layer's own failure, reported in its row)
                errors[k] = _err(e)
                hands.append(None)
        z_hand = out.delta(out.link(z), y) / m  # δ^(L) as value_and_grad seeds it (eq. C4)
        try:  # the chained hand gradient, as training computes it
            (j, _), g = network_value_and_grad(net, params, x, y, output=output, l2=l2, key=key,
                                               train=train)  # fmt: skip
        except Exception as e:  # noqa: BLE001
            errors[-1] = _err(e)
            j, g = None, None
        return z, z_hand, deltas, [(r[0], r[1]) for r in records], hands, (j, g)

    z, z_hand, deltas, inputs, hands, (j_hand, g_hand) = _run(native, params, x, y)

    # 2. The references: one precision up (unless that would change the dropout masks).
    float_dtypes = [jnp.result_type(v) for v in jax.tree.leaves((params, x)) if _is_float(v)]
    warnings: list[str] = []
    up = True
    if key is not None and train and not jax.config.jax_enable_x64:
        if tolerance.needs_x64(float_dtypes):
            up = False
            warnings.append(
                "the references ran in the network's own dtype: enabling 64-bit types for them "
                "would change the dropout masks drawn from key (jax.random's draws depend on "
                "jax_enable_x64); enable x64 for a reference one precision up"
            )
    rng = host_rng(seed)
    ctx = tolerance.reference_precision(float_dtypes) if up else _nullcontext()
    with ctx:
        cast = tolerance.upcast if up else (lambda t: t)
        plans = [
            _fd_plan(rng, p, x_in, up) if finite_differences else None
            for p, (x_in, _) in zip(leaf_params, inputs, strict=True)
        ]

        def reference(ps, xs, ds, keys, z_up, stacks, p_up, x_up, y_up):
            results = []
            for leaf, p, x_in, d, k, stack in zip(leaves, ps, xs, ds, keys, stacks, strict=True):
                results.append(_layer_reference(leaf.layer, p, x_in, d, k, train, stack))
            dz = jax.grad(lambda z_: jnp.mean(out.cost(z_, y_up)))(z_up)
            whole = jax.value_and_grad(
                lambda q: network_cost(net, q, x_up, y_up, output=output, l2=l2, key=key,
                                       train=train))(p_up)  # fmt: skip
            return results, dz, whole

        refs, dz_ref, (j_ref, g_ref) = _run(
            reference,
            cast(leaf_params), cast([i[0] for i in inputs]), cast(deltas), [i[1] for i in inputs],
            cast(z), [None if p is None else p.stacks for p in plans], cast(params), cast(x),
            cast(y),
        )  # fmt: skip
        eval_eps = [
            tolerance.eps(jnp.result_type(r["values"])) if r.get("values") is not None else None
            for r in refs
        ]

    # 3. The rows.
    rows: list[Row] = []
    layer_of: dict[str, LayerId] = {}
    for k in range(len(leaves)):
        leaf_rows = _layer_rows(
            labels[k], leaf_params[k], inputs[k][0], deltas[k], hands[k], errors.get(k), refs[k],
            plans[k],
            eval_eps[k], rtol, atol, order=len(rows),
        )  # fmt: skip
        for r in leaf_rows:
            layer_of[r.path] = layer_ids[k]
        rows += leaf_rows
    rows.append(_row(z_hand, dz_ref, "probe", HEAD, rtol, atol, len(rows),
                     "autodiff's ∂J/∂z^(L) of the cost (jax.grad)"))  # fmt: skip
    if g_hand is None:
        rows.append(status_row("rev", f"{NETWORK}: gradient", None, status="FAIL",
                               order=len(rows), transform="jit",
                               problem=f"layers.value_and_grad raised {errors[-1]}"))  # fmt: skip
    else:
        rows += _network_rows(params, g_hand, g_ref, j_hand, j_ref, rtol, atol, len(rows))

    failing = [k for k in range(len(leaves)) if layer_ids[k] in _failing_ids(rows, layer_of)]
    meta = {
        "output": output,
        "l2": l2,
        "train": train,
        "m": m,
        "key": None if key is None else np.asarray(jax.random.key_data(key)).tolist(),
        "seed": int(seed),
        "layers": [{"layer": layer_ids[k], "name": labels[k]} for k in range(len(leaves))],
        "first_divergent": labels[failing[-1]] if failing else None,
        "reference": "one precision up (jaxbp.verify.tolerance.reference_dtype)"
        if up
        else "the network's own dtype",
        "convention": "δ_l = ∂J/∂(output of layer l), 1/m included; J without the L2 penalty",
        "seconds": time.perf_counter() - started,
        **environment(),
    }
    report = NetworkReport(
        f"check_network: each layer's backward at the exact δ ({len(leaves)} layers)",
        tuple(rows), meta, warnings=tuple(warnings), layer_of=layer_of,
    )  # fmt: skip
    if raise_on_fail:
        report.raise_if_failed()
    return report


COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}
"""The check's two programs run once each, on a few examples: compiled without the backend's
optimisation passes (half the compile time on CPU; the same HLO, so the same arithmetic)."""


def _run(fn, *args):
    """``jax.jit(fn)(*args)``, compiled with :data:`COMPILER_OPTIONS` where the backend takes them."""
    lowered = jax.jit(fn).lower(*args)
    try:
        compiled = lowered.compile(compiler_options=COMPILER_OPTIONS)
    except Exception:  # noqa: BLE001  (an option this backend does not know: its defaults)
        compiled = lowered.compile()
    return compiled(*args)


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _leaf_outputs(root, tapped, params, x, key, train, n) -> list:
    """The shape and dtype of every leaf's output (no probes)."""

    def run(p, x_):
        _, cache = tapped.forward(_attach(root, p, [None] * n, [0]), x_, key=key, train=train)
        return cache

    # the output of leaf k is what its forward returns: evaluate the leaves' forwards on their
    # recorded inputs (shapes only)
    records = _records(root, jax.eval_shape(run, params, x))
    leaves = _leaves(root)
    specs = []
    for leaf, (x_in, k, _) in zip(leaves, records, strict=True):
        p = _sub_params(leaf, params, root)
        specs.append(
            jax.eval_shape(
                lambda p_, x_, k_, layer=leaf.layer: layer.forward(p_, x_, key=k_, train=train)[0],
                p, x_in, k,
            )
        )  # fmt: skip
    return specs


def _failing_ids(rows, layer_of) -> set:
    return {layer_of[r.path] for r in rows if not r.ok and r.path in layer_of}


# --- one layer: the reference vjp and the finite differences -------------------------------------
class _Plan(NamedTuple):
    """The fd directions of one layer: one random unit direction per float leaf of (params, x)."""

    names: list  # per direction: ("params", path) or ("x", None)
    tangents: list  # per direction: (params tangent tree, x tangent), float64 host arrays
    steps: np.ndarray  # per direction: the base step h
    stacks: Any  # (params, x) stacked over the points, in the reference dtypes


def _fd_plan(rng, params, x_in, up: bool) -> _Plan:
    """The points θ + o·h·t (o in :data:`jaxbp.verify.fd.OFFSETS`), then θ itself, per direction."""
    p_leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    candidates = [(("params", path), i) for i, (path, leaf) in enumerate(p_leaves)
                  if _is_float(leaf) and not _is_state(path) and np.size(leaf)]  # fmt: skip
    x_float = _is_float(x_in)
    if x_float:
        candidates.append((("x", None), None))
    if not candidates:
        return _Plan([], [], np.zeros(0), None)
    flat = [np.asarray(leaf, np.float64) for _, leaf in p_leaves]
    x64 = np.asarray(x_in, np.float64) if x_float else None
    rms = [float(np.sqrt(np.mean(flat[i] ** 2))) if i is not None else
           float(np.sqrt(np.mean(x64**2))) for _, i in candidates]  # fmt: skip
    dtypes = [jnp.result_type(x_in if i is None else p_leaves[i][1]) for _, i in candidates]
    eval_dtypes = [tolerance.reference_dtype(d) if up else d for d in dtypes]
    scales = fd.scales(np.asarray(rms))
    steps = [float(fd.base_step(s, d)) for s, d in zip(scales, eval_dtypes, strict=True)]
    names, tangents, points_p, points_x = [], [], [], []
    for (name, i), h in zip(candidates, steps, strict=True):
        shape = np.shape(flat[i]) if i is not None else np.shape(x64)
        v = rng.standard_normal(shape)
        v = v / np.linalg.norm(v)
        tp = [np.zeros_like(a) for a in flat]
        tx = np.zeros_like(x64) if x_float else None
        if i is None:
            tx = v
        else:
            tp[i] = v
        names.append(name)
        tangents.append((tp, tx))
        for o in (*fd.OFFSETS, 0.0):
            points_p.append([a + o * h * t for a, t in zip(flat, tp, strict=True)])
            points_x.append(x64 + o * h * tx if x_float else None)

    # built in float64 and rounded once, to the dtype the reference evaluates in (a float32 point
    # rounded first would move by eps32 · |θ|, a percent of a float64 step)
    def target(leaf):
        d = jnp.result_type(leaf)
        return tolerance.reference_dtype(d) if up else d

    stacked_p = [np.stack([pt[j] for pt in points_p]).astype(target(p_leaves[j][1]))
                 if _is_float(p_leaves[j][1]) else
                 np.broadcast_to(np.asarray(p_leaves[j][1]), (len(points_p),
                                                              *np.shape(p_leaves[j][1])))
                 for j in range(len(flat))]  # fmt: skip
    stacked_x = np.stack(points_x).astype(target(x_in)) if x_float else None
    stacks = (jax.tree_util.tree_unflatten(treedef, stacked_p), stacked_x)
    return _Plan(names, tangents, np.asarray(steps, np.float64), stacks)


def _layer_reference(layer, p, x_in, delta, key, train, stack):
    """jax.vjp of the layer's forward along δ, and the forward's output at the fd points (traced)."""

    def f(p_, x_):
        return layer.forward(p_, x_, key=key, train=train)[0]

    if _is_float(x_in):
        _, pull = jax.vjp(f, p, x_in)
        gp, gx = pull(delta)
    else:
        _, pull = jax.vjp(lambda p_: f(p_, x_in), p)
        (gp,), gx = pull(delta), None
    result = {"params": gp, "dx": gx, "values": None}
    if stack is not None:
        sp, sx = stack

        result["values"] = (jax.vmap(f)(sp, sx) if sx is not None
                            else jax.vmap(lambda p_: f(p_, x_in))(sp))  # fmt: skip
    return result


def _layer_floor(refs) -> float:
    """The largest |entry| of a layer's parameter gradients (references): the scale of the
    absolute floor of each of its parameter rows."""
    return max((float(np.max(np.abs(np.asarray(r, np.float64)), initial=0.0)) for r in refs),
               default=0.0)  # fmt: skip


FLOOR_NOTE = (
    "atol = rtol · the largest |gradient entry| of the layer's parameters (a leaf whose exact "
    "gradient vanishes, e.g. a bias before BatchNorm, is judged on its layer's scale)"
)


def _row(hand, ref, oracle, path, rtol, atol, order, ref_name, floor=None, dtype=None,
         **kw) -> Row:  # fmt: skip
    """:func:`compare` with the dtype's rtol; for a parameter leaf (``floor`` given) and no
    ``atol``, the absolute floor on the layer's scale (:data:`FLOOR_NOTE`)."""
    dtype = jnp.result_type(hand) if dtype is None else dtype
    rt = tolerance.default_rtol(dtype) if rtol is None else rtol
    if atol is None and floor is not None:
        leaf = float(np.max(np.abs(np.asarray(ref, np.float64)), initial=0.0))
        if floor > leaf:
            atol = rt * floor
            kw["note"] = FLOOR_NOTE
    row = compare(np.asarray(hand), np.asarray(ref), oracle=oracle, path=path, rtol=rt, atol=atol,
                  order=order, ref_name=ref_name, dtype=dtype, **kw)  # fmt: skip
    return dataclasses.replace(row, transform="jit")


def _layer_rows(label, params, x_in, delta, hand, error, ref, plan, eval_eps, rtol, atol, *,
                order):  # fmt: skip
    """The rows of one layer: ``vjp`` per float leaf of params and dx, ``fd`` per direction,
    ``skipped`` for running statistics; a failing row naming the problem where the hand backward
    raised or returned the wrong structure."""
    rows: list[Row] = []
    p_leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    if hand is None:
        return [status_row("backward", f"{label}: backward", None, status="FAIL", order=order,
                           transform="jit", problem=f"backward raised {error}")]  # fmt: skip
    try:
        grads, dx = hand
    except (TypeError, ValueError):
        return [status_row("backward", f"{label}: backward", None, status="FAIL", order=order,
                           transform="jit",
                           problem=f"backward returned {type(hand).__name__}; expected "
                           "(grads, dx)")]  # fmt: skip
    try:
        g_leaves = jax.tree.structure(params).flatten_up_to(grads)
    except (TypeError, ValueError):
        g_leaves = None
        rows.append(status_row(
            "backward", f"{label}: params", None, status="FAIL", order=order, transform="jit",
            problem=f"backward returned grads of structure {jax.tree.structure(grads)}; the "
            f"params have {jax.tree.structure(params)}"))  # fmt: skip
    r_leaves = jax.tree.leaves(ref["params"])
    floor = _layer_floor([r for (path, _), r in zip(p_leaves, r_leaves, strict=True)
                          if not _is_state(path)])  # fmt: skip
    hand_by_name: dict = {}
    ref_by_name: dict = {}
    for j, (path, leaf) in enumerate(p_leaves):
        name = f"{label}: params{jax.tree_util.keystr(path)}"
        if not _is_float(leaf):
            continue
        if _is_state(path):
            rows.append(status_row("vjp", name, "running statistics (params['state']): not "
                                   "trained, not compared", status="skipped", order=order,
                                   shape=np.shape(leaf), dtype=str(leaf.dtype)))  # fmt: skip
            continue
        if g_leaves is None:
            continue
        h = g_leaves[j]
        if h is None or not hasattr(h, "shape"):
            rows.append(status_row("vjp", name, None, status="FAIL", order=order, transform="jit",
                                   problem=f"backward returned {h!r} for this leaf"))  # fmt: skip
            continue
        rows.append(_row(h, r_leaves[j], "vjp", name, rtol, atol, order, "jax.vjp of the layer",
                         method="jax.vjp of the layer's forward, at the exact δ",
                         floor=floor))  # fmt: skip
        hand_by_name[("params", path)] = h
        ref_by_name[("params", path)] = r_leaves[j]
    dx_name = f"{label}: dx"
    if _is_float(x_in):
        if dx is None or not hasattr(dx, "shape"):
            rows.append(status_row("vjp", dx_name, None, status="FAIL", order=order,
                                   transform="jit", problem=f"backward returned dx = {dx!r}"))  # fmt: skip
        else:
            rows.append(_row(dx, ref["dx"], "vjp", dx_name, rtol, atol, order,
                             "jax.vjp of the layer",
                             method="jax.vjp of the layer's forward, at the exact δ"))  # fmt: skip
            hand_by_name[("x", None)] = dx
            ref_by_name[("x", None)] = ref["dx"]
    if plan is not None and plan.names:
        rows += _fd_rows(label, plan, ref["values"], delta, eval_eps, hand_by_name, ref_by_name,
                         rtol, atol, order)  # fmt: skip
    return rows


def _fd_rows(label, plan, values, delta, eval_eps, hand_by_name, ref_by_name, rtol, atol,
             order):  # fmt: skip
    """One ``fd`` row per direction t: ⟨t, hand⟩ against ⟨δ, J t⟩, with J t the layer's output
    differenced elementwise (:func:`jaxbp.verify.fd.at_offsets`) and the allowance Σ|δ|·(each
    element's measured truncation and round-off), as ``check_vjp``'s fd identity takes it: the
    round-off of each output element, not of the sum ⟨δ, y⟩, which cancels."""
    n = len(plan.names)
    values = np.asarray(values, np.float64)
    values = values.reshape(n, len(fd.OFFSETS) + 1, *values.shape[1:])
    at = [values[:, j] for j in range(len(fd.OFFSETS))]
    est = fd.at_offsets(at, plan.steps, eval_eps=eval_eps)
    out_axes = (1,) * (values.ndim - 2)
    ladder = fd.ladder(plan.steps).T.reshape(fd.LEVELS, n, *out_axes)
    kinks = fd.kinks(values[:, -1], np.stack([at[0], at[2]]), np.stack([at[1], at[3]]), ladder,
                     eval_eps=eval_eps)  # fmt: skip
    d64 = np.asarray(delta, np.float64)
    weight = np.abs(d64)

    def along(a):  # ⟨δ, a_d⟩ for each direction d
        return np.sum((a * d64).reshape(n, -1), axis=1)

    R, allowance = along(est.value), np.sum((est.allowance * weight).reshape(n, -1), axis=1)
    # an element flagged by the kink test matters only where its one-sided gap, weighted by |δ|,
    # exceeds what the allowance covers: round-off of an output that cancels (a convolution
    # before BatchNorm) trips the test on a linear layer without moving the estimate
    gap = np.abs(np.asarray(kinks.f_plus) - np.asarray(kinks.f_minus))
    flagged = ~kinks.smooth & (weight > 0)
    kinked = np.sum((np.where(flagged, gap, 0.0) * weight).reshape(n, -1), axis=1) > allowance
    source = (fd.describe(_eps_name(eval_eps), step="h = 2·step_factor·rms of the leaf")
              + "; per output element, weighted by |δ|")  # fmt: skip
    rows = []
    for d, name in enumerate(plan.names):
        if name not in hand_by_name:
            continue
        kind, path = name
        where = f"params{jax.tree_util.keystr(path)}" if kind == "params" else "dx"
        row_path = f"{label}: {where}"
        tp, tx = plan.tangents[d]
        t = tx if kind == "x" else tp[_leaf_index(plan, d)]
        hand = np.asarray(hand_by_name[name], np.float64)
        hand_v = float(np.sum(hand * t))
        if kinked[d]:
            f_minus, f_plus = along(kinks.f_minus)[d], along(kinks.f_plus)[d]
            rows.append(status_row(
                "fd", row_path,
                f"non-smooth at this point along the direction (a kink within the step): "
                f"one-sided ⟨δ, F₋⟩ = {f_minus:.6e}, ⟨δ, F₊⟩ = {f_plus:.6e}, hand {hand_v:.6e}; "
                "the vjp row judges it", status="non-smooth", order=order, transform="jit",
                shape=np.shape(hand), dtype=str(hand_by_name[name].dtype)))  # fmt: skip
            continue
        dtype = jnp.result_type(hand_by_name[name])
        rt = tolerance.default_rtol(dtype) if rtol is None else rtol
        scale = float(np.linalg.norm(np.asarray(ref_by_name[name], np.float64)))
        kw = {}
        if atol is None:
            kw = dict(allowance=np.asarray(allowance[d]), allowance_name="fd",
                      bound_source=source)  # fmt: skip
        row = compare(np.asarray(hand_v), np.asarray(R[d]), oracle="fd", path=row_path,
                      rtol=rt, atol=rt * scale if atol is None else atol,
                      method="⟨t, hand⟩ vs ⟨δ, J t⟩ by central differences, 1 random unit t",
                      shape=np.shape(hand), order=order, dtype=dtype,
                      ref_name="the central difference", **kw)  # fmt: skip
        rows.append(dataclasses.replace(row, transform="jit"))
    return rows


def _leaf_index(plan: _Plan, d: int) -> int:
    tp, _ = plan.tangents[d]
    return next(i for i, a in enumerate(tp) if np.any(a))


def _eps_name(eval_eps):
    for name in ("float64", "float32", "float16", "bfloat16"):
        if np.isclose(eval_eps, float(jnp.finfo(name).eps)):
            return name
    return f"eps {eval_eps:.2e}"


def _group(path) -> tuple:
    """The layer a leaf of the network's params belongs to: its leading tuple indices."""
    out = []
    for k in path:
        if not isinstance(k, jax.tree_util.SequenceKey):
            break
        out.append(k.idx)
    return tuple(out)


# --- the whole network ---------------------------------------------------------------------------
def _network_rows(params, g_hand, g_ref, j_hand, j_ref, rtol, atol, order) -> list[Row]:
    rows = [_row(j_hand, j_ref, "rev", f"{NETWORK}: J", rtol, atol, order, "the cost",
                 method="scalar")]  # fmt: skip
    h_leaves = jax.tree_util.tree_flatten_with_path(g_hand)[0]
    r_leaves = jax.tree.leaves(g_ref)
    floors: dict = {}
    for (path, _), r in zip(h_leaves, r_leaves, strict=True):
        if not _is_state(path):
            g = _group(path)
            floors[g] = max(floors.get(g, 0.0), _layer_floor([r]))
    for (path, h), r, p in zip(h_leaves, r_leaves, jax.tree.leaves(params), strict=True):
        name = f"{NETWORK}: params{jax.tree_util.keystr(path)}"
        if not _is_float(p):
            continue
        if _is_state(path):
            rows.append(status_row("rev", name, "running statistics: not trained, not compared",
                                   status="skipped", order=order, shape=np.shape(p),
                                   dtype=str(p.dtype)))  # fmt: skip
            continue
        group = _group(path)
        rows.append(_row(h, r, "rev", name, rtol, atol, order, "jax.grad of the cost",
                         floor=floors.get(group), dtype=jnp.result_type(p),
                         method="the chained hand gradient (layers.value_and_grad) vs jax.grad"))  # fmt: skip
    return rows
