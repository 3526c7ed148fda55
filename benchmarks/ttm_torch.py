"""The PyTorch side of benchmarks/time_to_model.py: train on scikit-learn's digits as
``jaxbp train --config experiments/digits.toml --seeds 0`` does (or digits-cnn.toml with
``--model cnn``), from a fresh process, and print one JSON line.

Same recipe as the jaxbp config: jaxbp's own split (the rows of ``--split FILE``, an .npz of
``train`` and ``test`` indices into ``load_digits()`` that benchmarks/time_to_model.py writes from
``jaxbp.data.split.stratified_split``; without it, scikit-learn's ``train_test_split`` with the
same shares: a stratified 20 % test split, 10 % of the rest held out), the training split's
scaling (``--scaling``: "capped", scale = max(σ, max |x − mean| / 3), as digits.toml; "max",
every pixel divided by the training split's brightest, as digits-cnn.toml), He-normal weights and zero biases, Adam with learning
rate 0.003 and cosine decay to 0 over all steps, minibatches of 64 reshuffled every epoch, 40
epochs, L2 λ = 3 on the weights only as (λ / 2m) Σ W² with m the training rows. mlp: 64-256-10
relu. cnn: two blocks of 5x5 SAME conv (32, 64 channels) → relu → 2x2 max pool (ceil), dense
120 → 84 relu with dropout 0.5, 10 logits (jaxbp.layers.models.lenet). Imports no JAX.

    python benchmarks/ttm_torch.py [--model cnn] [--threads N] [--split FILE] [--scaling max]
"""

from __future__ import annotations

import argparse
import json
import math
import time

T0 = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402


def split(x, y, path):
    """(x_train, y_train, x_test, y_test): the rows of ``path``, or scikit-learn's split."""
    if path:
        rows = np.load(path)
        return x[rows["train"]], y[rows["train"]], x[rows["test"]], y[rows["test"]]
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=0
    )
    x_train, _, y_train, _ = train_test_split(
        x_rest, y_rest, test_size=0.1, stratify=y_rest, random_state=0
    )
    return x_train, y_train, x_test, y_test


def data(path=None, scaling="capped"):
    x_train, y_train, x_test, y_test = split(*load_digits(return_X_y=True), path)
    if scaling == "max":  # jaxbp.data.split.standardiser's "max"
        mean, scale = np.zeros(x_train.shape[1]), np.abs(x_train).max()
    else:
        mean = x_train.mean(axis=0)
        scale = np.maximum(x_train.std(axis=0), np.abs(x_train - mean).max(axis=0) / 3.0)
        scale = np.where(scale > 0, scale, 1.0)

    def prep(v):
        return torch.from_numpy(((v - mean) / scale).astype(np.float32))

    return prep(x_train), torch.from_numpy(y_train), prep(x_test), torch.from_numpy(y_test)


def network(model: str) -> torch.nn.Module:
    if model == "mlp":
        layers = [torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)]
    else:

        class Image(torch.nn.Module):
            def forward(self, x):
                return x.reshape(-1, 1, 8, 8)

        class FlattenHWC(torch.nn.Module):
            def forward(self, a):
                return a.permute(0, 2, 3, 1).reshape(a.shape[0], -1)

        layers = [Image()]
        c_in = 1
        for c_out in (32, 64):
            layers += [
                torch.nn.Conv2d(c_in, c_out, 5, padding="same"),
                torch.nn.ReLU(),
                torch.nn.MaxPool2d(2, 2, ceil_mode=True),
            ]
            c_in = c_out
        layers += [FlattenHWC(), torch.nn.Linear(2 * 2 * 64, 120), torch.nn.ReLU()]
        layers += [torch.nn.Dropout(0.5), torch.nn.Linear(120, 84), torch.nn.ReLU()]
        layers += [torch.nn.Dropout(0.5), torch.nn.Linear(84, 10)]
    net = torch.nn.Sequential(*layers)
    for m in net.modules():
        if isinstance(m, torch.nn.Linear | torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            torch.nn.init.zeros_(m.bias)
    return net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--split", help=".npz of train and test row indices (jaxbp's split)")
    parser.add_argument("--scaling", choices=("capped", "max"), default="capped")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, y, x_test, y_test = data(args.split, args.scaling)
    m, batch, l2 = x.shape[0], 64, 3.0
    net = network(args.model)
    weights = [p for name, p in net.named_parameters() if name.endswith("weight")]
    steps = args.epochs * math.ceil(m / batch)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.003)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    loss_fn = torch.nn.CrossEntropyLoss()
    t_train = time.perf_counter()
    for _ in range(args.epochs):
        net.train()
        for index in torch.randperm(m).split(batch):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(x[index]), y[index])
            loss = loss + (l2 / (2 * m)) * sum(torch.sum(w * w) for w in weights)
            loss.backward()
            optimizer.step()
            schedule.step()
    net.eval()
    with torch.no_grad():
        accuracy = float((net(x_test).argmax(1) == y_test).float().mean())
    print(
        json.dumps(
            {
                "test_accuracy": accuracy,
                "train_s": time.perf_counter() - t_train,
                "in_process_s": time.perf_counter() - T0,
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
