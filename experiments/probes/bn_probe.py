"""Would BatchNorm in the LeNet help digits-cnn? A probe outside the runner (which does not yet
carry BatchNorm's running statistics), by the cross-validation of experiments/cv_probe.py: the
experiment's training + validation rows only, 6 stratified folds (data seeds 1-6, 20 % held
out), the digits-cnn recipe (32,64 channels k5 SAME, dense 120,84 with dropout 0.5, Adam 0.003
with cosine decay, 40 epochs of 64, λ = 3 as λ/2m Σ W², pixels / 16), with and without a
``BatchNorm`` after each convolution (before the relu; running statistics written by
``update_state`` after each step, evaluation by them). Result in bn_probe.txt.

    PYTHONPATH=src .venv/bin/python experiments/probes/bn_probe.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cv_probe import training_rows  # noqa: E402

from jaxbp import layers  # noqa: E402
from jaxbp.data.split import stratified_split  # noqa: E402
from jaxbp.layers import network  # noqa: E402


def lenet(batchnorm: bool):
    stack = []
    for c in (32, 64):
        stack.append(layers.Conv2D(c, 5, padding="SAME"))
        if batchnorm:
            stack.append(layers.BatchNorm())
        stack += [layers.Elementwise("relu"), layers.MaxPool2D(2, 2, padding="SAME")]
    stack.append(layers.Flatten())
    for h in (120, 84):
        stack += [layers.Dense(h), layers.Elementwise("relu"), layers.Dropout(0.5)]
    stack.append(layers.Dense(10))
    return layers.Sequential(*stack)


def fold(X, Y, batchnorm, seed, epochs=40, batch=64, l2=3.0, lr=0.003):
    """Held-out accuracy of one fold."""
    keep, test = stratified_split(Y, 0.2, np.random.default_rng(seed))
    x_train, y_train, x_test, y_test = X[keep], Y[keep], X[test], Y[test]
    m = len(x_train)
    per_epoch = -(-m // batch)
    model, key = lenet(batchnorm), jax.random.key(seed)
    params, _ = model.init(jax.random.fold_in(key, 0), (8, 8, 1))
    optimizer = optax.adam(optax.cosine_decay_schedule(lr, epochs * per_epoch))
    state = optimizer.init(params)

    @jax.jit
    def step(params, state, x, y, k):
        (_, cache), grads = network.value_and_grad(
            model, params, x, jax.nn.one_hot(y, 10), output="softmax_ce",
            l2=l2 * x.shape[0] / m, key=k,
        )  # fmt: skip
        updates, state = optimizer.update(grads, state, params)
        return model.update_state(optax.apply_updates(params, updates), cache), state

    rng, i = np.random.default_rng(seed + 100), 0
    for _ in range(epochs):
        order = rng.permutation(m)
        for s in range(per_epoch):
            rows = order[s * batch : (s + 1) * batch]
            k = jax.random.fold_in(key, i)
            params, state = step(params, state, x_train[rows], y_train[rows], k)
            i += 1
    z, _ = model.forward(params, jnp.asarray(x_test), train=False)
    return float(np.mean(np.argmax(np.asarray(z), 1) == y_test))


def main() -> None:
    path = Path("/tmp") / "jaxbp-bn-probe-rows.npz"
    training_rows("digits-cnn", path)
    rows = np.load(path)
    X, Y = rows["x"].astype(np.float32)[..., None] / 16.0, rows["y"]
    for batchnorm in (False, True):
        t0 = time.perf_counter()
        accs = [fold(X, Y, batchnorm, seed) for seed in range(1, 7)]
        print(
            f"batchnorm={batchnorm}: {100 * np.mean(accs):.2f} ± "
            f"{100 * np.std(accs) / np.sqrt(len(accs)):.2f} (folds "
            f"{', '.join(f'{100 * a:.1f}' for a in accs)}; {time.perf_counter() - t0:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
