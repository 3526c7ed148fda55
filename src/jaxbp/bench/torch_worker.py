"""The PyTorch peer in a process of its own, run as a script (it imports no jaxbp module, no JAX).

Timed in the benchmark's own process, PyTorch's OpenMP/MKL threads and XLA's would share the
cores and the process: each library's pool is still spinning, or wakes, while the other one's
step runs, and each is penalised when it runs right after the other (issue 13 measured PyTorch
10-40 % slower in JAX's process than in one of its own). Here PyTorch is alone: the parent
(:func:`jaxbp.bench.peers.prepare_torch`) sends the network, the batch and the initial
parameters as NumPy arrays, and asks for timed samples; each sample is timed *in this process*
with ``time.perf_counter`` (after ``torch.cuda.synchronize`` on a GPU), so the pipe's round trip
is not part of it.

The thread count is the parent's (``JAXBP_BENCH_THREADS``, also in ``OMP_NUM_THREADS`` and
``MKL_NUM_THREADS`` before torch is imported), so every peer runs on as many threads as XLA.

Protocol: pickled ``(command, *args)`` tuples on stdin, one pickled reply each on stdout; an
exception is sent back as the reply.

- ``("info",)`` → dict: ``version``, ``threads`` (``torch.get_num_threads()``), ``mkl``,
  ``mkldnn`` (whether PyTorch was built with them), ``cuda`` (available), ``pid``;
- ``("mlp", name, Ws, bs, x, y, activations, lr, device, autocast)`` → ``"ready"``: an
  ``nn.Sequential`` of ``nn.Linear`` (W: (n_out, n_in), jaxbp's layout and torch's) and the
  activations, ``CrossEntropyLoss`` on the integer labels y, ``SGD(lr)``; ``autocast`` None or
  ``"bfloat16"`` (the forward pass under ``torch.autocast``, float32 master parameters);
- ``("lenet", name, convs, denses, x, y, activation, lr, device, channels_last, autocast)`` →
  ``"ready"``: per ``convs`` entry ``(W (C_out, C_in, k, k), b)`` a ``Conv2d(padding="same")``,
  the activation and ``MaxPool2d(2, 2, ceil_mode=True)`` (= SAME pooling for this window),
  then the features flattened in (h, w, c) order (jaxbp's NHWC), then the ``denses`` as above;
  x in NCHW, stored ``channels_last`` when asked;
- ``("gemm", name, M, K, N, dtype)`` → ``"ready"``: C = A @ B on random (M, K), (K, N);
- ``("products", name, sizes, m, dtype)`` → ``"ready"``: the matrix products of one training
  step of the MLP ``sizes`` at batch m and nothing else — a Wᵀ and δᵀ a per layer, δ W above the
  first — on random data (benchmarks/profile_step.py: the time of PyTorch's products alone);
- ``("run", name, n)`` → seconds per step of n steps (or products) of ``name``;
- ``("params", name)`` → ``[(W, b), ...]`` of every Conv2d / Linear in order, torch's layout.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
import warnings

ACTIVATIONS = {
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "relu": "ReLU",
    "softplus": "Softplus",
    "elu": "ELU",
    "identity": "Identity",
}


def _activation(torch, name: str):
    if name == "leaky_relu":
        return torch.nn.LeakyReLU(0.01)
    return getattr(torch.nn, ACTIVATIONS[name])()


def _dtype(torch, x):
    return {"float32": torch.float32, "float64": torch.float64}[str(x.dtype)]


def _trainer(torch, model, xt, yt, lr, device, autocast):
    """``run(n) -> seconds per step``: n SGD steps (zero_grad, forward, backward, step)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    on_gpu = device == "cuda"
    cast = getattr(torch, autocast) if autocast else None

    def step():
        optimizer.zero_grad(set_to_none=True)
        if cast is None:
            loss = loss_fn(model(xt), yt)
        else:
            with torch.autocast(device_type=device, dtype=cast):
                loss = loss_fn(model(xt), yt)
        loss.backward()
        optimizer.step()

    def run(n: int) -> float:
        if on_gpu:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        if on_gpu:
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / n

    return run


def _linear_stack(torch, layers, activations, dtype, device) -> list:
    """``nn.Linear`` per (W, b) (jaxbp's layout (n_out, n_in) is torch's) set to those values,
    each followed by its activation but the last."""
    modules = []
    for l, (W, b) in enumerate(layers):
        n_out, n_in = W.shape
        linear = torch.nn.Linear(n_in, n_out, dtype=dtype, device=device)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W))
            linear.bias.copy_(torch.from_numpy(b))
        modules.append(linear)
        if l < len(layers) - 1:
            modules.append(_activation(torch, activations[l]))
    return modules


def _mlp(torch, Ws, bs, x, y, activations, lr, device, autocast):
    layers = list(zip(Ws, bs, strict=True))
    model = torch.nn.Sequential(
        *_linear_stack(torch, layers, activations, _dtype(torch, x), device)
    )
    xt = torch.from_numpy(x).to(device)
    yt = torch.from_numpy(y.astype("int64")).to(device)
    return model, _trainer(torch, model, xt, yt, lr, device, autocast)


def _lenet(torch, convs, denses, x, y, activation, lr, device, channels_last, autocast):
    dtype = _dtype(torch, x)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    class FlattenHWC(torch.nn.Module):
        """(m, C, H, W) → (m, H·W·C) in jaxbp's (h, w, c) order: a view when channels_last."""

        def forward(self, a):
            return a.permute(0, 2, 3, 1).reshape(a.shape[0], -1)

    modules = []
    for W, b in convs:
        c_out, c_in, k, _ = W.shape
        conv = torch.nn.Conv2d(c_in, c_out, k, padding="same", dtype=dtype, device=device)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(W))
            conv.bias.copy_(torch.from_numpy(b))
        modules += [conv, _activation(torch, activation), torch.nn.MaxPool2d(2, 2, ceil_mode=True)]
    modules.append(FlattenHWC())
    modules += _linear_stack(torch, list(denses), [activation] * len(denses), dtype, device)
    model = torch.nn.Sequential(*modules).to(device=device, memory_format=fmt)
    xt = torch.from_numpy(x).to(device).contiguous(memory_format=fmt)
    yt = torch.from_numpy(y.astype("int64")).to(device)
    return model, _trainer(torch, model, xt, yt, lr, device, autocast)


def _gemm(torch, M, K, N, dtype):
    generator = torch.Generator().manual_seed(M * 7 + K * 3 + N)
    a = torch.randn(M, K, generator=generator, dtype=getattr(torch, dtype))
    b = torch.randn(K, N, generator=generator, dtype=getattr(torch, dtype))

    def run(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            a @ b
        return (time.perf_counter() - t0) / n

    return None, run


def _products(torch, sizes, m, dtype):
    generator = torch.Generator().manual_seed(1)
    dtype = getattr(torch, dtype)
    arrays = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        arrays.append(
            tuple(
                torch.randn(*shape, generator=generator, dtype=dtype)
                for shape in ((m, n_in), (n_out, n_in), (m, n_out))
            )
        )

    def run(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            for l, (a, W, d) in enumerate(arrays):
                a @ W.T
                d.T @ a
                if l > 0:
                    d @ W
        return (time.perf_counter() - t0) / n

    return None, run


def main() -> None:
    threads = os.environ.get("JAXBP_BENCH_THREADS")
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    warnings.simplefilter("ignore")
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    models, runs = {}, {}
    while True:
        try:
            command, *args = pickle.load(stdin)
        except EOFError:
            return
        try:
            if command == "info":
                reply = {
                    "version": str(torch.__version__),  # a TorchVersion would import torch here
                    "threads": torch.get_num_threads(),
                    "mkl": bool(torch.backends.mkl.is_available()),
                    "mkldnn": bool(torch.backends.mkldnn.is_available()),
                    "cuda": bool(torch.cuda.is_available()),
                    "pid": os.getpid(),
                }
            elif command in ("mlp", "lenet", "gemm", "products"):
                name, *rest = args
                build = {"mlp": _mlp, "lenet": _lenet, "gemm": _gemm, "products": _products}[
                    command
                ]
                models[name], runs[name] = build(torch, *rest)
                reply = "ready"  # untimed until asked: the harness warms every runner up
            elif command == "run":
                name, n = args
                reply = runs[name](n)
            elif command == "params":
                layers = (torch.nn.Conv2d, torch.nn.Linear)
                reply = [
                    (m.weight.detach().cpu().numpy().copy(), m.bias.detach().cpu().numpy().copy())
                    for m in models[args[0]]
                    if isinstance(m, layers)
                ]
            else:
                reply = ValueError(f"unknown command {command!r}")
        except Exception as e:  # sent back and raised in the parent, naming what failed
            reply = RuntimeError(f"torch worker: {command}: {type(e).__name__}: {e}")
        pickle.dump(reply, stdout)
        stdout.flush()


if __name__ == "__main__":
    main()
