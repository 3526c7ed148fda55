"""How long jaxbp.verify.check_grads takes beside jax.test_util.check_grads, the call it replaces.

    python benchmarks/check_grads_speed.py [--which jaxbp|jax] [--repeats 3]

One checker per process (run it twice, once per ``--which``): the 784-512-512-10 float32 MLP of
benchmarks/verify_speed.py, ``check_grads(lambda p: jaxbp.cost(p, x, y), (params,), order=1,
modes=("fwd", "rev"))``, cold (compile included) and then ``--repeats`` warm calls (median).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--which", choices=("jaxbp", "jax"), default="jaxbp")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp

    import jaxbp
    from jaxbp.bench.verify import TARGET_BATCH, TARGET_SIZES, _problem

    if a.which == "jaxbp":
        from jaxbp.verify import check_grads
    else:
        from jax.test_util import check_grads
    params, x, y = _problem(TARGET_SIZES, TARGET_BATCH, jnp.float32, 0)
    jax.block_until_ready(jnp.ones(3) + 1)

    def f(p):
        return jaxbp.cost(p, x, y, activation="sigmoid")

    times = []
    for _ in range(1 + a.repeats):
        t0 = time.perf_counter()
        check_grads(f, (params,), order=1, modes=("fwd", "rev"))
        times.append(time.perf_counter() - t0)
    print(json.dumps({"checker": a.which, "cold_s": times[0],
                      "warm_s": statistics.median(times[1:]), "warm_samples": times[1:]}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
