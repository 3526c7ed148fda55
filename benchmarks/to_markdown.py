"""Renders a ``jaxbp bench --json`` result as the Markdown tables of docs/benchmarks.md.

python benchmarks/to_markdown.py benchmarks/results/cpu.json
"""

from __future__ import annotations

import json
import sys


def fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def step_ms(ms: float) -> str:
    return f"{ms:.4g}" if ms < 1e4 else f"{ms / 1e3:.1f} s"


def describe(m: dict) -> str:
    """The CPU line: model name, family/model/stepping, ISA extensions (jaxbp.bench.suite)."""
    try:
        from jaxbp.bench.suite import describe_cpu
    except ImportError:  # rendering without jaxbp installed: the name only
        return m["cpu"]
    return describe_cpu(m)


def render(r: dict) -> str:
    m, s, peak = r["machine"], r["settings"], r["gemm_peak"]
    load = m.get("loadavg") or [None]
    load_end = m.get("loadavg_end") or [None]
    out = [
        f"- **CPU**: {describe(m)}.",
        f"- **Peers**: each in its own process (jaxbp in the benchmark's, PyTorch and "
        f"scikit-learn in worker processes), {m.get('threads', m['cores'])} threads each, "
        f"samples interleaved in shuffled rounds, ratios the medians of per-round ratios.",
        f"- **Machine**: {m['cores']} cores, JAX backend `{m['backend']}` "
        f"({m['device']}); jax {m['jax']}, PyTorch {m['torch'] or 'not installed'}, "
        f"scikit-learn {m['sklearn'] or 'not installed'}, Python {m['python']}.",
        f"- **Run**: {r['date']}, `{r['command']}`, {r['wall_s']:.0f} s; load average "
        f"{fmt(load[0], '.2f')} at the start, {fmt(load_end[0], '.2f')} at the end.",
        f"- **Settings**: {s['dtype']}, {s['activation']} hidden layers, {s['output']}, "
        f"{s['optimizer']}, {s['budget_s']:g} s of samples per method and configuration.",
        f"- **GEMM peak** (XLA, `a @ b`): **{peak['gflops']:.0f} GFLOP/s** "
        f"({'×'.join(map(str, peak['shape']))}); "
        + ", ".join(
            f"{'×'.join(map(str, p['shape']))}: {p['gflops']:.0f}" for p in peak["per_shape"]
        )
        + (
            "; PyTorch's own `a @ b` in the same rounds: "
            + ", ".join(
                f"{'×'.join(map(str, p['shape']))}: {p['gflops']:.0f}"
                for p in peak["torch_per_shape"]
            )
            if peak.get("torch_per_shape")
            else ""
        )
        + ".",
        "",
        "| config | method | step ms | IQR | GFLOP/s | % of peak | time vs hand | compile s | MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in r["configs"]:
        shape = c.get("model") or "-".join(map(str, c["sizes"]))
        name = f"**{c['name']}** {shape}, m = {c['batch']}"
        first = True
        for key, row in c["methods"].items():
            label = row["label"]
            cfg = name if first else ""
            first = False
            if row["status"] != "ok":
                out.append(f"| {cfg} | {label} | {row['status']}: {row['reason']} | | | | | | |")
                continue
            ratio = 1.0 if key == "hand" else c["ratios"].get(f"hand/{key}")
            out.append(
                f"| {cfg} | {label} | {step_ms(row['step_ms'])} | {100 * row['spread']:.0f} % "
                f"| {row['gflops']:.1f} | {fmt(row['pct_peak'], '.1f')} "
                f"| {fmt(None if not ratio else 1 / ratio, '.2f')}× "
                f"| {fmt(row['compile_s'], '.2f')} | {fmt(row['memory_mib'], '.1f')} |"
            )
    epochs = [c for c in r["configs"] if c.get("in_epoch")]
    if epochs:
        out += [
            "",
            "**Inside `jaxbp train`'s epoch** (`jaxbp.train.make_epoch`: a `lax.scan` over "
            "shuffled minibatches, one program per epoch):",
            "",
            "| config | minibatches per epoch | hand-derived ms/step | jax.grad ms/step "
            "| hand / jax.grad |",
            "|---|---:|---:|---:|---:|",
        ]
        for c in epochs:
            e = c["in_epoch"]
            out.append(
                f"| **{c['name']}** | {e['minibatches']} | {step_ms(e['manual_ms'])} "
                f"| {step_ms(e['autodiff_ms'])} | {e['ratio']:.3f} |"
            )
    tta = r.get("time_to_accuracy")
    if tta:
        out += [
            "",
            f"**Time to {100 * tta['target']:.0f} % test accuracy on digits** ({tta['setup']}; "
            f"median of {tta['repeats']} alternated runs):",
            "",
            "| run | wall s | runs | test accuracy | epochs | compile s |",
            "|---|---:|---|---:|---:|---:|",
        ]
        for name, run in tta["runs"].items():
            runs = ", ".join(f"{t:.2f}" for t in run["wall_s_all"])
            out.append(
                f"| {name} | {run['wall_s']:.2f} | {runs} | {run['test_accuracy']:.4f} "
                f"| {run['epochs']} | {fmt(run.get('compile_s'), '.2f')} |"
            )
    out += [
        "",
        "| target | issue | config | measured | threshold | met |",
        "|---|---:|---|---:|---:|---|",
    ]
    for t in r["targets"]:
        op = "≥" if "peak" in t["target"] else ("<" if "PyTorch" in t["target"] else "≤")
        out.append(
            f"| {t['target']} | {t.get('issue', 5)} | {t['config']} | {t['value']:.3f} "
            f"| {op} {t['threshold']} "
            f"| {'yes' if t['met'] else '**no**'} |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    for path in sys.argv[1:]:
        with open(path) as f:
            print(render(json.load(f)))
