"""The scikit-learn side of benchmarks/time_to_model.py: ``MLPClassifier`` on digits with the
recipe of experiments/digits.toml, from a fresh process; prints one JSON line.

The split (``--split FILE``) and scaling of benchmarks/ttm_torch.py; 64-256-10 relu, Adam with learning rate 0.003
(constant: MLPClassifier has no cosine decay), minibatches of 64, 40 epochs, alpha = λ·B/m with
λ = 3 (its L2 term is per minibatch), no early stop. Imports no JAX.

    python benchmarks/ttm_sklearn.py [--split FILE]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

T0 = time.perf_counter()

import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", help=".npz of train and test row indices (jaxbp's split)")
    args = parser.parse_args()
    x, y = load_digits(return_X_y=True)
    if args.split:
        rows = np.load(args.split)
        x_train, y_train = x[rows["train"]], y[rows["train"]]
        x_test, y_test = x[rows["test"]], y[rows["test"]]
    else:
        x_rest, x_test, y_rest, y_test = train_test_split(
            x, y, test_size=0.2, stratify=y, random_state=0
        )
        x_train, _, y_train, _ = train_test_split(
            x_rest, y_rest, test_size=0.1, stratify=y_rest, random_state=0
        )
    mean = x_train.mean(axis=0)
    scale = np.maximum(x_train.std(axis=0), np.abs(x_train - mean).max(axis=0) / 3.0)
    scale = np.where(scale > 0, scale, 1.0)
    m, batch, l2, epochs = x_train.shape[0], 64, 3.0, 40
    clf = MLPClassifier(
        hidden_layer_sizes=(256,),
        activation="relu",
        solver="adam",
        alpha=l2 * batch / m,
        batch_size=batch,
        learning_rate_init=0.003,
        max_iter=epochs,
        n_iter_no_change=epochs + 1,
        tol=0.0,
        random_state=0,
    )
    t_train = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit((x_train - mean) / scale, y_train)
    train_s = time.perf_counter() - t_train
    accuracy = float(clf.score((x_test - mean) / scale, y_test))
    print(
        json.dumps(
            {
                "test_accuracy": accuracy,
                "train_s": train_s,
                "in_process_s": time.perf_counter() - T0,
            }
        )
    )


if __name__ == "__main__":
    main()
