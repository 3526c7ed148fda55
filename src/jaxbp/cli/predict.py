"""``jaxbp predict`` and ``jaxbp evaluate`` — use a trained run on new data.

predict RUN_DIR --data FILE [--out FILE.csv] [--proba]
  One predicted label per input row, in input order: to stdout, or to a CSV file (a ``label``
  column, and one ``p_<class>`` column per class with --proba).
evaluate RUN_DIR --data FILE [--out DIR]
  Accuracy, per-class precision and recall and the confusion matrix, printed; with --out, also
  evaluation.json and confusion_matrix.png written into DIR (nothing is written without it).

Both read every data format jaxbp train reads (CSV, NPZ, IDX with --labels, .mat), with the
run's label column; predict also takes a CSV of features only, or IDX images without labels.
The training split's feature scaling is applied inside: give the raw features. A multi-seed run
uses its best-validation seed unless --seed says otherwise. Library: jaxbp.experiment.load_run.

Neither writes inside a run directory or over an input (--data, --labels), and an existing
output is replaced only with --overwrite. Exit codes: 0 done; 2 bad input (one line, nothing
written); 74 an output that could not be written (disk full, permission or file system lost).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
from pathlib import Path

from jaxbp.cli import UsageError, WriteFailed, cache

EVALUATION = ("evaluation.json", "confusion_matrix.png")
"""What ``evaluate --out DIR`` writes into DIR."""


def _common(p) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by jaxbp train")
    p.add_argument("--data", required=True, metavar="FILE", help="the data file")
    p.add_argument("--labels", metavar="FILE", help="IDX labels file for --data")
    p.add_argument("--seed", metavar="N", help="training seed of a multi-seed run (default: best)")


def add_parser(sub) -> None:
    for name, help_text, runner in (
        ("predict", "predict a label for each row of a data file with a trained run", predict),
        (
            "evaluate",
            "accuracy, precision/recall and confusion matrix of a run on a file",
            evaluate,
        ),
    ):
        p = sub.add_parser(
            name,
            help=help_text,
            description=__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
        )
        _common(p)
        if name == "predict":
            p.add_argument(
                "--out", metavar="FILE.csv", help="write the labels here (default stdout)"
            )
            p.add_argument("--proba", action="store_true", help="add one probability per class")
            replaced = "an existing --out file"
        else:
            p.add_argument("--out", metavar="DIR", help="write evaluation.json and the PNG here")
            replaced = "evaluation.json and confusion_matrix.png already in --out"
        p.add_argument("--overwrite", action="store_true", help=f"replace {replaced}")
        cache.add_flag(p)
        p.set_defaults(run=runner)


def _load(args, *, need_labels: bool):
    """The run and the data, or UsageError naming the argument and what was received."""
    from jaxbp.data import DataError
    from jaxbp.experiment import load_run

    seed = None
    if args.seed is not None:
        try:
            seed = int(args.seed)
        except ValueError:
            raise UsageError(f"--seed: expected an integer, got {args.seed!r}") from None
    try:
        model = load_run(args.run_dir, seed=seed)
    except FileNotFoundError as e:
        raise UsageError(f"RUN_DIR: {e}") from None
    except ValueError as e:
        name, _, rest = str(e).partition(": ")
        raise UsageError(f"--seed: {rest}" if name == "seed" else f"RUN_DIR: {e}") from None
    try:
        x, y = model.read_data(args.data, labels=args.labels, need_labels=need_labels)
    except DataError as e:
        raise UsageError(f"--data: {e}") from None
    return model, x, y


def _same(a, b) -> bool:
    """Whether paths ``a`` and ``b`` name the same file (links included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return Path(a).resolve() == Path(b).resolve()


def _check_targets(args, folder: Path, targets: list[Path], command: str) -> None:
    """Refuses output ``targets`` in ``folder`` that lie inside a run directory (the run read, or
    any other), are an input of the command, or exist without --overwrite (UsageError)."""
    from jaxbp.experiment.plan import enclosing_run_dir

    run = Path(args.run_dir).resolve()
    inside = run if run in (folder.resolve(), *folder.resolve().parents) else None
    inside = inside or enclosing_run_dir(folder)
    if inside is not None:
        raise UsageError(
            f"--out: {args.out} is inside the run directory {inside}; jaxbp {command} never "
            "writes into a run directory, name a place outside it"
        )
    for target in targets:
        for flag, given in (("--data", args.data), ("--labels", args.labels)):
            if given is not None and _same(target, given):
                raise UsageError(
                    f"--out: {target} is the {flag} file; jaxbp {command} never writes over its "
                    "input"
                )
    existing = [t for t in targets if t.exists()]
    if existing and not args.overwrite:
        names = " and ".join(str(t) for t in existing)
        verb, it = ("exists", "it") if len(existing) == 1 else ("exist", "them")
        raise UsageError(f"--out: {names} already {verb}; pass --overwrite to replace {it}")


def _check_out_file(args) -> Path:
    from jaxbp.files import check_writable

    path = Path(args.out)
    if path.is_dir():
        raise UsageError(f"--out: {path} is a directory; name a CSV file")
    if not path.parent.is_dir():
        raise UsageError(f"--out: no folder {str(path.parent)!r} to write {path.name} into")
    _check_targets(args, path.parent, [path], "predict")
    try:
        return check_writable(path)
    except ValueError as e:
        raise UsageError(f"--out: {e}") from None


def _check_out_dir(args) -> Path:
    from jaxbp.files import check_creatable_dir

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} exists and is not a directory")
    _check_targets(args, out, [out / name for name in EVALUATION], "evaluate")
    try:
        return check_creatable_dir(out)
    except ValueError as e:
        raise UsageError(f"--out: {e}") from None


def predict(args) -> int:
    from jaxbp.files import write_atomic

    out = _check_out_file(args) if args.out else None
    model, x, _ = _load(args, need_labels=False)
    labels = model.predict(x)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if args.proba:
        proba = model.predict_proba(x)
        writer.writerow(["label", *(f"p_{n}" for n in model.class_names)])
        for label, row in zip(labels, proba, strict=True):
            writer.writerow([label, *(f"{p:.6g}" for p in row)])
    else:
        writer.writerow(["label"])
        writer.writerows([label] for label in labels)
    if out is None:
        print(buffer.getvalue(), end="")
        return 0
    try:
        write_atomic(out, buffer.getvalue())
    except OSError as e:
        raise WriteFailed(f"could not write {out} (the predictions): {e.strerror or e}") from None
    print(f"wrote {len(labels)} predictions to {out}")
    return 0


def evaluate(args) -> int:
    from jaxbp.files import write_atomic

    out = _check_out_dir(args) if args.out else None
    model, x, y = _load(args, need_labels=True)
    e = model.evaluate(x, y)
    width = max(len(n) for n in model.class_names)

    def pct(v):
        return "—" if v is None else f"{100 * v:6.2f} %"

    print(f"run {model.path} (seed {model.seed}) on {args.data}: {e.n} rows")
    print(f"accuracy {100 * e.accuracy:.2f} %")
    print(f"  {'class':<{width}}  precision     recall")
    for n in model.class_names:
        print(f"  {n:<{width}}  {pct(e.precision[n]):>9}  {pct(e.recall[n]):>9}")
    if out is None:
        return 0
    from jaxbp import plots

    report = {
        "run": str(model.path),
        "seed": model.seed,
        "data": str(args.data),
        "n": e.n,
        "accuracy": e.accuracy,
        "precision": e.precision,
        "recall": e.recall,
        "class_names": list(model.class_names),
        "confusion_matrix": e.confusion_matrix.tolist(),
    }
    title = f"confusion matrix on {Path(args.data).name} ({100 * e.accuracy:.2f} % correct)"
    path = out
    try:
        out.mkdir(parents=True, exist_ok=True)
        path = out / EVALUATION[0]
        write_atomic(path, json.dumps(report, indent=2) + "\n")
        path = out / EVALUATION[1]
        plots.plot_confusion(path, e.confusion_matrix, model.class_names, title=title)
    except OSError as err:
        raise WriteFailed(
            f"could not write {path} (the evaluation): {err.strerror or err}"
        ) from None
    print(f"wrote {' and '.join(EVALUATION)} to {out}/")
    return 0
