"""The peers: the same training step in PyTorch (CPU autograd) and scikit-learn.

Each peer gets the network, batch, dtype and initial parameters of the JAX methods
(:mod:`jaxbp.bench.methods`), the softmax cross-entropy cost and plain SGD with the same learning
rate. A peer that is not installed is reported as such, never silently replaced.

- ``torch``: ``nn.Sequential`` of ``nn.Linear`` and the activation, ``CrossEntropyLoss`` on
  integer labels, ``torch.optim.SGD``; a step is ``zero_grad``, forward, ``backward``, ``step``.
  On the CPU with the threads PyTorch picks by default; where JAX runs on a GPU and PyTorch has
  CUDA, on that GPU (synchronised after the last step, as the JAX steps are).
- ``sklearn``: ``MLPClassifier(solver="sgd", momentum=0, alpha=0, batch_size=m)``; a step is one
  ``partial_fit`` on the batch (one SGD update on all m rows, input checks included). It runs in
  a worker process of its own (:mod:`jaxbp.bench.sklearn_worker`), where OpenBLAS's threads can
  be told not to spin after each call.

On the convolutional configuration (``Problem.model``, a LeNet): ``torch`` is the same LeNet —
``Conv2d(padding="same")``, the activation, ``MaxPool2d(2, 2, ceil_mode=True)`` (= SAME pooling
for a 2×2 window of stride 2), flatten, ``Linear`` layers — on the same images in NCHW, stored
``channels_last`` (:data:`TORCH_CHANNELS_LAST`: physically NHWC like JAX's arrays, the layout
oneDNN's CPU convolutions prefer); the features are flattened in JAX's (h, w, c) order, a view
of a channels-last tensor, so that the dense weights are jaxbp's as they are. The kernels go
from HWIO to torch's (C_out, C_in, k_h, k_w). scikit-learn has no convolutional network: n/a
(``unsupported``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import pickle
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np

from jaxbp.bench.methods import Prepared, Problem
from jaxbp.params import Layer

PEERS = ("torch", "sklearn")

TORCH_CHANNELS_LAST = True
"""Whether the torch LeNet keeps its images and activations ``channels_last`` (module
docstring); docs/benchmarks.md, "cnn", has both layouts' step times."""

_DISTRIBUTIONS = {"sklearn": "scikit-learn"}

_TORCH_ACTIVATIONS = {
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "relu": "ReLU",
    "softplus": "Softplus",
    "elu": "ELU",
    "identity": "Identity",
}
_SKLEARN_ACTIVATIONS = {
    "sigmoid": "logistic",
    "tanh": "tanh",
    "relu": "relu",
    "identity": "identity",
}


def installed(peer: str) -> bool:
    """True when the peer's package can be imported."""
    return importlib.util.find_spec(peer) is not None


def peer_version(peer: str) -> str | None:
    """The peer package's version (from its metadata, without importing it), or None when it is
    not installed."""
    if not installed(peer):
        return None
    try:
        return importlib.metadata.version(_DISTRIBUTIONS.get(peer, peer))
    except importlib.metadata.PackageNotFoundError:
        return importlib.import_module(peer).__version__


def _one_activation(activation, n_hidden: int) -> str | None:
    """The single activation name of every hidden layer, or None when they differ."""
    if n_hidden == 0:
        return "identity"
    names = {activation} if isinstance(activation, str) else set(activation)
    return names.pop() if len(names) == 1 else None


def prepare_torch(problem: Problem, *, activation="sigmoid", lr: float = 0.1) -> Prepared:
    """PyTorch CPU autograd step on the same network and batch (module docstring)."""
    if not installed("torch"):
        return Prepared("not installed", reason="PyTorch is not installed (optional extra `bench`)")
    import jax
    import torch

    params, x, y, spec = problem
    if spec is not None:
        return _prepare_torch_lenet(problem, activation=activation, lr=lr)
    on_gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    names = (activation,) * (len(params) - 1) if isinstance(activation, str) else activation
    if any(n not in _TORCH_ACTIVATIONS and n != "leaky_relu" for n in names):
        return Prepared("unsupported", reason=f"no torch module mapped for activation {names}")
    dtype = {"float32": torch.float32, "float64": torch.float64}.get(str(x.dtype))
    if dtype is None:
        return Prepared("unsupported", reason=f"dtype {x.dtype} not benchmarked for torch")
    layers = []
    for l, layer in enumerate(params):
        n_out, n_in = layer.W.shape
        linear = torch.nn.Linear(n_in, n_out, dtype=dtype, device=device)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.array(layer.W)).to(device))
            linear.bias.copy_(torch.from_numpy(np.array(layer.b)).to(device))
        layers.append(linear)
        if l < len(params) - 1:
            name = names[l]
            layers.append(
                torch.nn.LeakyReLU(0.01)
                if name == "leaky_relu"
                else getattr(torch.nn, _TORCH_ACTIVATIONS[name])()
            )
    model = torch.nn.Sequential(*layers)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt = torch.from_numpy(np.array(x)).to(device)
    yt = torch.from_numpy(np.array(y).astype(np.int64)).to(device)

    def run(n: int) -> None:
        for _ in range(n):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xt), yt)
            loss.backward()
            optimizer.step()
        if on_gpu:
            torch.cuda.synchronize()

    def current():
        linears = [m for m in model if isinstance(m, torch.nn.Linear)]
        return tuple(
            Layer(m.weight.detach().cpu().numpy().copy(), m.bias.detach().cpu().numpy().copy())
            for m in linears
        )

    return Prepared("ok", run, params=current, device=device.type)


def _torch_activation(name: str):
    import torch

    if name == "leaky_relu":
        return torch.nn.LeakyReLU(0.01)
    return getattr(torch.nn, _TORCH_ACTIVATIONS[name])()


def _prepare_torch_lenet(
    problem: Problem, *, activation="relu", lr: float = 0.1, channels_last: bool | None = None
) -> Prepared:
    """The torch LeNet of ``problem.model`` from ``problem.params`` (module docstring)."""
    import jax
    import torch

    params, x, y, spec = problem
    channels_last = TORCH_CHANNELS_LAST if channels_last is None else channels_last
    if not isinstance(activation, str) or (
        activation not in _TORCH_ACTIVATIONS and activation != "leaky_relu"
    ):
        return Prepared("unsupported", reason=f"no torch module mapped for activation {activation}")
    dtype = {"float32": torch.float32, "float64": torch.float64}.get(str(x.dtype))
    if dtype is None:
        return Prepared("unsupported", reason=f"dtype {x.dtype} not benchmarked for torch")
    on_gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def tensor(a):
        return torch.from_numpy(np.array(a)).to(device=device, dtype=dtype)

    class FlattenHWC(torch.nn.Module):
        """(m, C, H, W) → (m, H·W·C) in jaxbp's (h, w, c) order: a view when channels_last."""

        def forward(self, a):
            return a.permute(0, 2, 3, 1).reshape(a.shape[0], -1)

    weighted = [p for p in params if p != ()]  # conv and dense layers, in order
    n_conv = len(spec.channels)
    modules, c_in = [], spec.image[2]
    for p, c_out in zip(weighted[:n_conv], spec.channels, strict=True):
        k = spec.kernel
        conv = torch.nn.Conv2d(c_in, c_out, k, padding="same", dtype=dtype, device=device)
        with torch.no_grad():  # HWIO → (C_out, C_in, k_h, k_w)
            conv.weight.copy_(tensor(np.transpose(np.asarray(p["W"]), (3, 2, 0, 1))))
            conv.bias.copy_(tensor(p["b"]))
        modules += [conv, _torch_activation(activation), torch.nn.MaxPool2d(2, 2, ceil_mode=True)]
        c_in = c_out
    modules.append(FlattenHWC())
    dense = weighted[n_conv:]
    for i, p in enumerate(dense):
        n_out, n_in = np.shape(p["W"])
        linear = torch.nn.Linear(n_in, n_out, dtype=dtype, device=device)
        with torch.no_grad():
            linear.weight.copy_(tensor(p["W"]))
            linear.bias.copy_(tensor(p["b"]))
        modules.append(linear)
        if i < len(dense) - 1:
            modules.append(_torch_activation(activation))
    model = torch.nn.Sequential(*modules).to(memory_format=fmt)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt = tensor(np.transpose(np.asarray(x), (0, 3, 1, 2))).contiguous(memory_format=fmt)
    yt = torch.from_numpy(np.array(y).astype(np.int64)).to(device)

    def run(n: int) -> None:
        for _ in range(n):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xt), yt)
            loss.backward()
            optimizer.step()
        if on_gpu:
            torch.cuda.synchronize()

    def current():
        out, it = [], iter(m for m in model if isinstance(m, torch.nn.Conv2d | torch.nn.Linear))
        for p in params:
            if p == ():
                out.append(())
                continue
            m = next(it)
            W = m.weight.detach().cpu().numpy()
            if isinstance(m, torch.nn.Conv2d):
                W = np.transpose(W, (2, 3, 1, 0))  # back to HWIO
            out.append({"W": np.ascontiguousarray(W), "b": m.bias.detach().cpu().numpy().copy()})
        return tuple(out)

    layout = "channels_last" if channels_last else "NCHW"
    return Prepared("ok", run, params=current, device=device.type, detail=layout)


OPENBLAS_THREAD_TIMEOUT = "4"
"""OpenBLAS's spin after a call, as log2 of cycles, in the scikit-learn worker (its minimum)."""


def sklearn_worker():
    """Starts :mod:`jaxbp.bench.sklearn_worker` as a script in its own process, with OpenBLAS's
    spin-waiting cut short (its module docstring says why).

    Returns:
      ``call(*message) -> reply``; the process ends when ``call`` is garbage-collected or at exit.
    """
    env = dict(os.environ)
    env.setdefault("OPENBLAS_THREAD_TIMEOUT", OPENBLAS_THREAD_TIMEOUT)
    script = Path(__file__).with_name("sklearn_worker.py")
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )

    def call(*message):
        pickle.dump(message, proc.stdin)
        proc.stdin.flush()
        try:
            reply = pickle.load(proc.stdout)
        except EOFError:
            raise RuntimeError(
                f"the scikit-learn worker ({script}) exited with code {proc.wait()}"
            ) from None
        if isinstance(reply, Exception):
            raise reply
        return reply

    weakref.finalize(call, _stop, proc)
    return call


def _stop(proc) -> None:
    proc.stdin.close()  # the worker ends on EOF
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()


def prepare_sklearn(problem: Problem, *, activation="sigmoid", lr: float = 0.1) -> Prepared:
    """scikit-learn MLPClassifier ``partial_fit`` step on the same network and batch, in a
    worker process (:func:`sklearn_worker`); the timed ``run(n)`` includes one round trip."""
    params, x, y, spec = problem
    if spec is not None:
        return Prepared(
            "unsupported", reason="n/a: scikit-learn has no convolutional network (MLPs only)"
        )
    if not installed("sklearn"):
        return Prepared("not installed", reason="scikit-learn is not installed")
    name = _one_activation(activation, len(params) - 1)
    if name not in _SKLEARN_ACTIVATIONS:
        return Prepared(
            "unsupported",
            reason=f"MLPClassifier has no activation {activation!r} (one of "
            f"{', '.join(_SKLEARN_ACTIVATIONS)} for all hidden layers)",
        )
    if str(x.dtype) not in ("float32", "float64"):
        return Prepared("unsupported", reason=f"dtype {x.dtype} not benchmarked for sklearn")
    call = sklearn_worker()
    call(
        "init",
        [np.array(p.W) for p in params],
        [np.array(p.b) for p in params],
        np.array(x),
        np.array(y),
        np.arange(params[-1].W.shape[0]),
        _SKLEARN_ACTIVATIONS[name],
        lr,
    )

    def run(n: int) -> None:
        call("run", n)

    def current():
        Ws, bs = call("params")
        return tuple(Layer(W, b) for W, b in zip(Ws, bs, strict=True))

    return Prepared("ok", run, params=current, device="cpu")
