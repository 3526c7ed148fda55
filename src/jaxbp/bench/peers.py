"""The peers: the same training step in PyTorch (autograd) and scikit-learn, each in a worker
process of its own.

Each peer gets the network, batch, dtype and initial parameters of the JAX methods
(:mod:`jaxbp.bench.methods`), the softmax cross-entropy cost and plain SGD with the same learning
rate. A peer that is not installed is reported as such, never silently replaced.

**Every peer runs in its own process** (:func:`start_worker`): PyTorch in
:mod:`jaxbp.bench.torch_worker`, scikit-learn in :mod:`jaxbp.bench.sklearn_worker`, both
scripts that import no JAX; the JAX methods run in the benchmark's process, which imports
neither. Each worker times its own samples (``time.perf_counter`` around n steps, after a CUDA
synchronise on a GPU) and sends back seconds per step, so the pipe is not part of any sample;
the parent interleaves the samples of all methods in shuffled rounds
(:func:`jaxbp.bench.timing.interleaved`). Every worker gets the same thread count as XLA
(:func:`bench_threads`: ``torch.set_num_threads``, ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``,
``OPENBLAS_NUM_THREADS``). Timed inside JAX's process instead, PyTorch's and XLA's thread pools
share the process and the cores, and each is penalised when it runs right after the other.

- ``torch``: ``nn.Sequential`` of ``nn.Linear`` and the activation, ``CrossEntropyLoss`` on
  integer labels, ``torch.optim.SGD``; a step is ``zero_grad``, forward, ``backward``, ``step``.
  Where JAX runs on a GPU and PyTorch has CUDA, on that GPU. ``autocast="bfloat16"`` runs the
  forward pass under ``torch.autocast`` (float32 master parameters): PyTorch's bf16 peer.
- ``sklearn``: ``MLPClassifier(solver="sgd", momentum=0, alpha=0, batch_size=m)``; a step is one
  ``partial_fit`` on the batch (one SGD update on all m rows, input checks included), with
  OpenBLAS's threads told not to spin after each call.

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

from jaxbp.bench import torch_worker as torch_worker_script
from jaxbp.bench.methods import Prepared, Problem
from jaxbp.params import Layer

PEERS = ("torch", "sklearn")

TORCH_CHANNELS_LAST = True
"""Whether the torch LeNet keeps its images and activations ``channels_last`` (module
docstring); docs/benchmarks.md, "cnn", has both layouts' step times."""

_DISTRIBUTIONS = {"sklearn": "scikit-learn"}

_TORCH_ACTIVATIONS = torch_worker_script.ACTIVATIONS
"""jaxbp activation → ``torch.nn`` module name (the worker's own table; leaky_relu apart)."""
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


def bench_threads() -> int:
    """The thread count every peer gets: the cores this process may run on (XLA:CPU's own
    choice), also handed to the workers' OpenMP, MKL and OpenBLAS."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def start_worker(script: str, env: dict | None = None):
    """Starts ``script`` (a file of this package, run as a script: it imports no jaxbp module)
    in its own process with :func:`bench_threads` threads for its BLAS and OpenMP.

    Returns:
      ``call(*message) -> reply`` (pickled over the pipes; a reply that is an exception is
      raised here); the process ends when ``call`` is garbage-collected or at exit.
    """
    threads = str(bench_threads())
    env = {**os.environ, **(env or {})}
    env["JAXBP_BENCH_THREADS"] = threads
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.setdefault(name, threads)
    path = Path(__file__).with_name(script)
    proc = subprocess.Popen(
        [sys.executable, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )

    def call(*message):
        pickle.dump(message, proc.stdin)
        proc.stdin.flush()
        try:
            reply = pickle.load(proc.stdout)
        except EOFError:
            raise RuntimeError(f"the worker {path.name} exited with code {proc.wait()}") from None
        if isinstance(reply, Exception):
            raise reply
        return reply

    weakref.finalize(call, _stop, proc)
    return call


_TORCH = {}
"""The PyTorch worker of this process, started on first use and shared by every torch runner
(one process: PyTorch's pools are created once, as in a training script)."""


def torch_worker():
    """The shared PyTorch worker (:mod:`jaxbp.bench.torch_worker`) and its ``info`` dict."""
    if "call" not in _TORCH:
        call = start_worker("torch_worker.py")
        _TORCH["call"], _TORCH["info"] = call, call("info")
    return _TORCH["call"], _TORCH["info"]


def _torch_device() -> str:
    import jax

    return "cuda" if jax.default_backend() == "gpu" else "cpu"


def _remote(call, name: str):
    """``run(n) -> seconds per step`` of the worker's runner ``name``, timed in the worker."""
    return lambda n: call("run", name, n)


_counter = iter(range(1 << 62))


def prepare_torch(
    problem: Problem, *, activation="sigmoid", lr: float = 0.1, autocast: str | None = None
) -> Prepared:
    """PyTorch autograd step on the same network and batch, in PyTorch's own worker process
    (module docstring); ``autocast="bfloat16"``: the forward pass under ``torch.autocast``."""
    if not installed("torch"):
        return Prepared("not installed", reason="PyTorch is not installed (optional extra `bench`)")
    params, x, y, spec = problem
    if spec is not None:
        return _prepare_torch_lenet(problem, activation=activation, lr=lr, autocast=autocast)
    names = (activation,) * (len(params) - 1) if isinstance(activation, str) else activation
    if any(n not in _TORCH_ACTIVATIONS and n != "leaky_relu" for n in names):
        return Prepared("unsupported", reason=f"no torch module mapped for activation {names}")
    if str(x.dtype) not in ("float32", "float64"):
        return Prepared("unsupported", reason=f"dtype {x.dtype} not benchmarked for torch")
    device = _torch_device()
    call, info = torch_worker()
    if device == "cuda" and not info["cuda"]:
        device = "cpu"
    name = f"mlp{next(_counter)}"
    call(
        "mlp", name,
        [np.array(p.W) for p in params], [np.array(p.b) for p in params],
        np.array(x), np.array(y), list(names), lr, device, autocast,
    )  # fmt: skip

    def current():
        return tuple(Layer(W, b) for W, b in call("params", name))

    return Prepared(
        "ok", _remote(call, name), params=current, device=device, detail=_torch_detail(autocast)
    )


def _torch_detail(autocast, layout=None) -> str:
    """The label's detail: the layout (LeNet) and the thread count; the process is always the
    peer's own (the table's header says so), and autocast is in the method's own label."""
    del autocast
    return ", ".join(filter(None, (layout, f"{bench_threads()} threads")))


def _prepare_torch_lenet(
    problem: Problem,
    *,
    activation="relu",
    lr: float = 0.1,
    channels_last: bool | None = None,
    autocast: str | None = None,
) -> Prepared:
    """The torch LeNet of ``problem.model`` from ``problem.params`` (module docstring)."""
    params, x, y, spec = problem
    channels_last = TORCH_CHANNELS_LAST if channels_last is None else channels_last
    if not isinstance(activation, str) or (
        activation not in _TORCH_ACTIVATIONS and activation != "leaky_relu"
    ):
        return Prepared("unsupported", reason=f"no torch module mapped for activation {activation}")
    if str(x.dtype) not in ("float32", "float64"):
        return Prepared("unsupported", reason=f"dtype {x.dtype} not benchmarked for torch")
    weighted = [p for p in params if p != ()]  # conv and dense layers, in order
    n_conv = len(spec.channels)
    convs = [  # HWIO → (C_out, C_in, k_h, k_w)
        (np.ascontiguousarray(np.transpose(np.asarray(p["W"]), (3, 2, 0, 1))), np.array(p["b"]))
        for p in weighted[:n_conv]
    ]
    denses = [(np.array(p["W"]), np.array(p["b"])) for p in weighted[n_conv:]]
    device = _torch_device()
    call, info = torch_worker()
    if device == "cuda" and not info["cuda"]:
        device = "cpu"
    name = f"lenet{next(_counter)}"
    x_nchw = np.ascontiguousarray(np.transpose(np.asarray(x), (0, 3, 1, 2)))
    call(
        "lenet", name, convs, denses, x_nchw, np.array(y), activation, lr, device,
        channels_last, autocast,
    )  # fmt: skip

    def current():
        out, it = [], iter(call("params", name))
        for p in params:
            if p == ():
                out.append(())
                continue
            W, b = next(it)
            if W.ndim == 4:
                W = np.transpose(W, (2, 3, 1, 0))  # back to HWIO
            out.append({"W": np.ascontiguousarray(W), "b": b})
        return tuple(out)

    layout = "channels_last" if channels_last else "NCHW"
    return Prepared(
        "ok", _remote(call, name), params=current, device=device,
        detail=_torch_detail(autocast, layout),
    )  # fmt: skip


def torch_gemm_runner(shape: tuple[int, int, int], *, dtype: str = "float32"):
    """``(run, flops)`` for PyTorch's ``a @ b`` of shape (M, K, N) on the CPU, in its worker;
    ``run(n)`` returns the seconds per product, timed there."""
    M, K, N = (int(d) for d in shape)
    call, _ = torch_worker()
    name = f"gemm{next(_counter)}"
    call("gemm", name, M, K, N, dtype)
    return _remote(call, name), 2 * M * K * N


OPENBLAS_THREAD_TIMEOUT = "4"
"""OpenBLAS's spin after a call, as log2 of cycles, in the scikit-learn worker (its minimum)."""


def sklearn_worker():
    """Starts :mod:`jaxbp.bench.sklearn_worker` in its own process, with OpenBLAS's
    spin-waiting cut short (its module docstring says why); see :func:`start_worker`."""
    return start_worker(
        "sklearn_worker.py", {"OPENBLAS_THREAD_TIMEOUT": os.environ.get(
            "OPENBLAS_THREAD_TIMEOUT", OPENBLAS_THREAD_TIMEOUT)}
    )  # fmt: skip


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

    def run(n: int) -> float:
        return call("run", n)  # seconds per step, timed in the worker

    def current():
        Ws, bs = call("params")
        return tuple(Layer(W, b) for W, b in zip(Ws, bs, strict=True))

    return Prepared("ok", run, params=current, device="cpu", detail=f"{bench_threads()} threads")
