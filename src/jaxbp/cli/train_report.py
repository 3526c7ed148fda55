"""What ``jaxbp train`` prints about a run: the final table. Rendering only — the numbers and
files come from :mod:`jaxbp.experiment`."""

from __future__ import annotations


def print_summary(s: dict, run_dir, written) -> None:
    """The final table, then the line saying where the outputs went."""
    n = len(s["seeds"])
    test = f"{100 * s['test_accuracy']:.2f} %"
    if n > 1:
        test += f" ± {100 * s['test_accuracy_std']:.2f} (std over {n} seeds)"

    def fmt(value, spec):
        return "—" if value is None else spec(value)

    cnn = s.get("model") == "cnn"
    network = s["network"] if cnn else " → ".join(map(str, s["sizes"])) + f", {s['activation']}"
    manual = "each layer's hand-derived backward" if cnn else "hand-derived δ recursion"
    rows = [
        ("dataset", f"{s['dataset']} ({s['n_train']} train / {s['n_val']} val / {s['n_test']} test)"),
        ("network", network),
        ("gradients", {"manual": f"manual ({manual})"}.get(s["grad"], s["grad"])),
        ("epochs", f"{s['epochs']}" + (" (stopped early)" if s["stopped_early"] else "")),
        ("final train loss", fmt(s["final_train_loss"], lambda v: f"{v:.6g}")),
        ("val accuracy", fmt(s["final_val_accuracy"], lambda v: f"{100 * v:.2f} %")),
        ("test accuracy", test),
    ]  # fmt: skip
    if n > 1:
        rows.append(("per seed", ", ".join(f"{100 * a:.2f}" for a in s["test_accuracies"])))
    if s["shadow_max_rel_error"] is not None:
        rows.append(("shadow check", f"max rel. error vs autodiff {s['shadow_max_rel_error']:.2e}"))
    rows.append(
        ("wall time", f"{s['wall_time_s']:.1f} s on {s['devices']} {s['platform']} device(s)")
    )
    width = max(len(r[0]) for r in rows)
    print()
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print(f"\noutputs went to {run_dir}/: {', '.join(written)}")
