"""The scikit-learn peer in a process of its own, run as a script (it imports no jaxbp module).

scikit-learn's matrix products go through NumPy's OpenBLAS, whose threads keep spinning for about
2^28 cycles (~0.1 s) after every call: in the benchmark's own process they would slow whichever
sample runs next. OpenBLAS reads its spin time (``OPENBLAS_THREAD_TIMEOUT``) once, when NumPy is
imported — before any benchmark code can run — so the peer lives here, started with that
variable set and the benchmark's thread count (:func:`jaxbp.bench.peers.start_worker`), and
keeps its threads.

Protocol: pickled ``(command, *args)`` tuples on stdin, one pickled reply each on stdout.

- ``("init", W_list, b_list, x, y, classes, activation, lr)`` → ``"ready"``: an
  ``MLPClassifier(solver="sgd", momentum=0, alpha=0, batch_size=m)`` set to those parameters;
- ``("run", n)`` → seconds per step of n ``partial_fit`` steps on (x, y), timed here (the
  pipe's round trip is not part of it);
- ``("params",)`` → ``(W_list, b_list)`` in jaxbp's layout (W: (n_out, n_in));
- ``("fit", x, y, x_test, y_test, hidden, activation, seed)`` → ``(seconds, n_iter, accuracy)``:
  a default ``MLPClassifier(hidden_layer_sizes=hidden, activation=activation).fit``.
"""

from __future__ import annotations

import pickle
import sys
import time
import warnings


def main() -> None:
    from sklearn.neural_network import MLPClassifier

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    clf = x = y = None
    warnings.simplefilter("ignore")  # ConvergenceWarning: part of the peer's default behaviour
    while True:
        try:
            command, *args = pickle.load(stdin)
        except EOFError:
            return
        if command == "init":
            Ws, bs, x, y, classes, activation, lr = args
            clf = MLPClassifier(
                hidden_layer_sizes=tuple(W.shape[0] for W in Ws[:-1]),
                activation=activation,
                solver="sgd",
                learning_rate_init=lr,
                momentum=0.0,
                nesterovs_momentum=False,
                alpha=0.0,
                batch_size=x.shape[0],
                shuffle=False,
                random_state=0,
            )
            clf.partial_fit(x, y, classes=classes)
            clf.coefs_ = [W.T.copy() for W in Ws]  # sklearn keeps W as (n_in, n_out)
            clf.intercepts_ = [b.copy() for b in bs]
            reply = "ready"
        elif command == "run":
            t0 = time.perf_counter()
            for _ in range(args[0]):
                clf.partial_fit(x, y)
            reply = (time.perf_counter() - t0) / args[0]
        elif command == "params":
            reply = ([W.T.copy() for W in clf.coefs_], [b.copy() for b in clf.intercepts_])
        elif command == "fit":
            x_fit, y_fit, x_test, y_test, hidden, activation, seed = args
            model = MLPClassifier(
                hidden_layer_sizes=hidden, activation=activation, random_state=seed
            )
            t0 = time.perf_counter()
            model.fit(x_fit, y_fit)
            seconds = time.perf_counter() - t0
            reply = (seconds, int(model.n_iter_), float(model.score(x_test, y_test)))
        else:
            reply = ValueError(f"unknown command {command!r}")
        pickle.dump(reply, stdout)
        stdout.flush()


if __name__ == "__main__":
    main()
