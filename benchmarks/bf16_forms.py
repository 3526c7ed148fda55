"""How XLA:CPU runs a bfloat16 product, by the form JAX hands it (docs/benchmarks.md, "bf16 on
AMX"): for each way of writing the training step's three products — z = a Wᵀ, δ W, Δ = δᵀ a —
the rate in float32 and in bfloat16 with float32 accumulation (``preferred_element_type``), and
whether the compiled program kept the bf16 product in bf16 (XLA upcasts to float32 the products
its library kernels do not take).

    PYTHONPATH=src python benchmarks/bf16_forms.py [--shapes 1024x2048x2048,256x784x512]

A shape M×K×N is the product's rows, contraction and columns: for wide's middle layer at batch
1024, 1024×2048×2048 for a Wᵀ (m × n_in × n_out).
"""

from __future__ import annotations

import argparse
import re

import jax
import jax.numpy as jnp
from jax import lax

from jaxbp.bench.timing import interleaved
from jaxbp.precision import dot, dot_nt, dot_tn

BF16 = jnp.bfloat16


def mm(a, b):
    return jnp.matmul(a, b, preferred_element_type=jnp.float32 if a.dtype == BF16 else None)


FORMS = {
    # name: (function, operand shapes from (M, K, N))
    "a @ W.T (jnp.matmul of a transpose)": (lambda a, w: mm(a, w.T), lambda M, K, N: ((M, K), (N, K))),
    "dot_nt(a, W): one dot_general": (dot_nt, lambda M, K, N: ((M, K), (N, K))),
    "δ @ W": (dot, lambda M, K, N: ((M, K), (K, N))),
    "δ.T @ a (jnp.matmul of a transpose)": (lambda d, a: mm(d.T, a), lambda M, K, N: ((K, M), (K, N))),
    "dot_general contracting axis 0 of both": (
        lambda d, a: lax.dot_general(
            d, a, (((0,), (0,)), ((), ())),
            preferred_element_type=jnp.float32 if d.dtype == BF16 else None,
        ),
        lambda M, K, N: ((K, M), (K, N)),
    ),
    "barrier(δ.T) @ a": (lambda d, a: mm(lax.optimization_barrier(d.T), a), lambda M, K, N: ((K, M), (K, N))),
    "dot_tn(δ, a): δᵀ written row-major": (dot_tn, lambda M, K, N: ((K, M), (K, N))),
}  # fmt: skip


def kept_bf16(fn, args) -> bool:
    """Whether every dot of the compiled program takes two bf16 operands."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    types = dict(re.findall(r"%(\S+) = (\w+)\[", text))
    dots = re.findall(r" dot\(%([^,\s]+), %([^)\s]+)\)", text)
    return bool(dots) and all(types[a] == types[b] == "bf16" for a, b in dots)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="1024x2048x2048,256x784x512,512x256x256")
    parser.add_argument("--budget", type=float, default=1.0)
    args = parser.parse_args()
    print("| product form | M×K×N | float32 GFLOP/s | bf16 GFLOP/s | bf16 kept in bf16 |")
    print("|---|---|---:|---:|---|")
    for text in args.shapes.split(","):
        M, K, N = map(int, text.split("x"))
        runs, kept = {}, {}
        for name, (fn, shapes) in FORMS.items():
            for dtype in ("float32", "bfloat16"):
                args_ = [
                    jax.random.normal(jax.random.key(i), s).astype(dtype)
                    for i, s in enumerate(shapes(M, K, N))
                ]
                jitted = jax.jit(fn)
                jax.block_until_ready(jitted(*args_))

                def run(n, jitted=jitted, args_=args_):
                    out = None
                    for _ in range(n):
                        out = jitted(*args_)
                    jax.block_until_ready(out)

                runs[(name, dtype)] = run
                if dtype == "bfloat16":
                    kept[name] = kept_bf16(fn, args_)
        timings = interleaved({str(k): r for k, r in runs.items()}, budget_s=args.budget)
        flops = 2 * M * K * N
        for name in FORMS:
            rate = {
                dtype: flops / timings[str((name, dtype))].median / 1e9
                for dtype in ("float32", "bfloat16")
            }
            print(
                f"| {name} | {M}×{K}×{N} | {rate['float32']:.0f} | {rate['bfloat16']:.0f} "
                f"| {'yes' if kept[name] else '**no**: upcast to float32'} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
