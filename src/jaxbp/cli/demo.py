"""``jaxbp demo`` — hand-derived vs autodiff gradients on generated data, layer by layer, then a
few steps of gradient descent on the hand-derived gradient."""

from __future__ import annotations

import time

from jaxbp.cli import cache

ACTIVATION_NAMES = ("sigmoid", "tanh", "relu", "leaky_relu", "softplus", "elu", "identity")
"""The hidden activations, for ``--help`` without importing JAX (tests keep it equal to
:data:`jaxbp.activations.ACTIVATIONS`)."""

OUTPUT_NAMES = ("softmax_ce", "sigmoid_bce", "identity_mse")
"""The output layers and costs, for ``--help`` (tests keep it equal to
:data:`jaxbp.losses.OUTPUTS`)."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="compare hand-derived and autodiff gradients per layer on generated data",
        description=__doc__,
    )
    p.add_argument("--sizes", default="8,16,16,4", help="layer widths, input first")
    p.add_argument(
        "--activation",
        default="sigmoid",
        help=f"hidden activation, or one per hidden layer comma-separated: "
        f"{', '.join(ACTIVATION_NAMES)}",
    )
    p.add_argument(
        "--output",
        default="softmax_ce",
        help=f"output layer and cost: {', '.join(OUTPUT_NAMES)}",
    )
    p.add_argument("--batch", type=int, default=256, help="number of generated examples")
    p.add_argument("--steps", type=int, default=200, help="gradient-descent steps")
    p.add_argument("--lr", type=float, default=1.0, help="learning rate α")
    p.add_argument("--l2", type=float, default=0.0, help="L2 coefficient λ")
    p.add_argument(
        "--dtype", choices=("float32", "float64"), default="float64", help="floating-point type"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the network and the data")
    cache.add_flag(p)
    p.set_defaults(run=run)


def parse_sizes(text: str) -> list[int]:
    """ "64,32,10" → [64, 32, 10]; a UsageError naming the flag otherwise."""
    from jaxbp.cli import UsageError

    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        raise UsageError(f"--sizes: expected comma-separated integers, got {text!r}") from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise UsageError(f"--sizes: need at least two positive widths, got {text!r}")
    return sizes


def parse_activation(text: str, sizes: list[int], flag: str = "--activation"):
    """ "relu" → "relu"; "relu,tanh" → ("relu", "tanh"), one per hidden layer of ``sizes``; a
    UsageError naming the flag and the valid names otherwise."""
    from jaxbp.activations import ACTIVATIONS
    from jaxbp.cli import UsageError

    names = tuple(a.strip() for a in text.split(","))
    for name in names:
        if name not in ACTIVATIONS:
            raise UsageError(
                f"{flag}: unknown name {name!r}; valid names are {', '.join(ACTIVATIONS)}"
            )
    n_hidden = len(sizes) - 2
    if len(names) > 1 and len(names) != n_hidden:
        raise UsageError(
            f"{flag}: got {len(names)} names for {n_hidden} hidden layer(s) of --sizes "
            f"{','.join(map(str, sizes))}; give one name, or one per hidden layer"
        )
    return names[0] if len(names) == 1 else names


SEED_MAX = 2**32 - 1
"""``--seed`` is a ``jax.random.key`` seed, a uint32."""


def check_numbers(args) -> None:
    """``--batch``, ``--steps``, ``--lr``, ``--l2`` and ``--seed`` in range, each error naming its
    own flag and the value received.

    Raises:
      UsageError: ``--batch`` < 1, ``--steps`` < 0, ``--lr`` not a finite number > 0, ``--l2``
        not a finite number ≥ 0, ``--seed`` outside [0, 2³² − 1].
    """
    import math

    from jaxbp.cli import UsageError

    if args.batch < 1:
        raise UsageError(f"--batch: the number of examples must be ≥ 1, got {args.batch}")
    if args.steps < 0:
        raise UsageError(f"--steps: the number of steps must be ≥ 0, got {args.steps}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise UsageError(f"--lr: the learning rate must be a finite number > 0, got {args.lr}")
    if not (math.isfinite(args.l2) and args.l2 >= 0):
        raise UsageError(f"--l2: the L2 coefficient must be a finite number ≥ 0, got {args.l2}")
    if not 0 <= args.seed <= SEED_MAX:
        raise UsageError(
            f"--seed: must be in [0, {SEED_MAX}] (a uint32 seed of jax.random.key), got {args.seed}"
        )


COPIES = 4
"""The demo holds about this many copies of its parameters (two networks, two gradients) and
of its activations."""


def check_memory(sizes: list[int], batch: int, dtype: str) -> None:
    """The demo's networks and data within the machine's memory.

    Raises:
      UsageError: naming ``--sizes`` (the parameters alone do not fit) or ``--batch`` (the
        examples' activations do not), with the memory needed and the machine's.
    """
    from jaxbp.cli import UsageError
    from jaxbp.data.builtin import gib, machine_memory

    item = 8 if dtype == "float64" else 4
    params = sum((a + 1) * b for a, b in zip(sizes, sizes[1:], strict=False)) * item * COPIES
    data = batch * sum(sizes) * item * COPIES
    memory = machine_memory()
    if params > memory:
        raise UsageError(
            f"--sizes: a network of widths {','.join(map(str, sizes))} needs {gib(params)} "
            f"({COPIES} {dtype} copies of its parameters), more than this machine's "
            f"{gib(memory)} of memory"
        )
    if params + data > memory:
        most = max(1, (memory - params) // (sum(sizes) * item * COPIES))
        raise UsageError(
            f"--batch: {batch} examples need {gib(data)} of activations for widths "
            f"{','.join(map(str, sizes))}, more than this machine's {gib(memory)} of memory; at "
            f"most {most} here"
        )


def run(args) -> int:
    from jaxbp.cli import UsageError
    from jaxbp.losses import OUTPUTS

    sizes = parse_sizes(args.sizes)
    check_memory(sizes, args.batch, args.dtype)
    activation = parse_activation(args.activation, sizes)
    if args.output not in OUTPUTS:
        raise UsageError(
            f"--output: unknown name {args.output!r}; valid names are {', '.join(OUTPUTS)}"
        )
    check_numbers(args)

    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import jaxbp

    dtype = jnp.dtype(args.dtype)
    k_params, k_x, k_y = jax.random.split(jax.random.key(args.seed), 3)
    try:
        params = jaxbp.init_params(k_params, sizes, dtype=dtype)
        x = jax.random.normal(k_x, (args.batch, sizes[0]), dtype)
        # A learnable target: the class (or output) of a random teacher network.
        teacher = jaxbp.init_params(k_y, sizes, scheme="he", dtype=dtype)
        logits = jaxbp.forward(teacher, x, activation=activation, output="identity_mse").z[-1]
        if args.output == "softmax_ce":
            y = jnp.argmax(logits, axis=1)
        elif args.output == "sigmoid_bce":
            y = (logits > 0).astype(dtype)
        else:
            y = logits
        kw = dict(activation=activation, output=args.output, l2=args.l2)
        J, hand = jaxbp.value_and_grad(params, x, y, **kw)
    except ValueError as e:
        raise UsageError(str(e)) from None
    J_ad, auto = jaxbp.autodiff_value_and_grad(params, x, y, **kw)

    print(
        f"network {sizes}, activation {args.activation}, output {args.output}, "
        f"m = {args.batch}, {args.dtype}, backend {jax.default_backend()}"
    )
    print(f"J(Θ): hand-derived {float(J):.12g}, autodiff {float(J_ad):.12g}\n")
    header = (
        f"{'leaf':<8} {'shape':<12} {'‖hand‖':>11} {'max |hand − auto|':>18} {'rel. error':>11}"
    )
    print(header)
    print("-" * len(header))
    for l, (h, a) in enumerate(zip(hand, auto, strict=True)):
        for name in ("W", "b"):
            hv, av = getattr(h, name), getattr(a, name)
            diff = float(jnp.max(jnp.abs(hv - av)))
            rel = float(
                jnp.linalg.norm(hv - av) / jnp.maximum(jnp.linalg.norm(av), jnp.finfo(dtype).tiny)
            )
            shape = "x".join(map(str, hv.shape))
            print(
                f"[{l}].{name:<4} {shape:<12} {float(jnp.linalg.norm(hv)):>11.4e} {diff:>18.3e} {rel:>11.3e}"
            )

    step = jax.jit(
        lambda p: jax.tree.map(
            lambda w, g: w - args.lr * g, p, jaxbp.value_and_grad(p, x, y, **kw)[1]
        )
    )
    if args.steps:
        print(f"\ngradient descent, α = {args.lr}:")
        t0 = time.perf_counter()
        report = sorted({0, args.steps // 4, args.steps // 2, 3 * args.steps // 4, args.steps})
        for i in range(args.steps + 1):
            if i in report:
                J_i = float(jaxbp.loss(params, x, y, **kw))
                print(f"  step {i:>5}  J = {J_i:.6f}")
            if i < args.steps:
                params = step(params)
        print(f"  ({time.perf_counter() - t0:.2f} s)")
    return 0
