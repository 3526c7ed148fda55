"""``jaxbp train`` — train a classifier on a real dataset with hand-derived gradients.

Loads a built-in dataset (default: digits) or your files, trains an MLP with the δ recursion
(``--grad manual``, the default; ``autodiff`` or ``graph`` to compare), shows a progress bar,
and writes a run directory: config.toml (fully resolved), metrics.jsonl, summary.json, PNG plots
and checkpoint.npz. Every option can also be set in a TOML file (``--config``); flags win.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from jaxbp.cli import UsageError
from jaxbp.cli import train_config as tc
from jaxbp.cli import train_report as report
from jaxbp.files import write_atomic

CHECKPOINT = "checkpoint.npz"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CONFIG = "config.toml"
PLOTS = ("loss.png", "accuracy.png", "confusion_matrix.png")
OUTPUTS = (CONFIG, METRICS, SUMMARY, *PLOTS, CHECKPOINT)
"""Every file a run writes; ``--overwrite`` removes exactly these."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a classifier on a real dataset with hand-derived gradients",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="FILE.toml", help="read options from a TOML file")
    for o in tc.OPTIONS:
        if o.kind == "bool":
            p.add_argument(
                f"--no-{o.name}",
                dest=o.name,
                action="store_false",
                default=argparse.SUPPRESS,
                help=f"do not {o.help.lower()}",
            )
        else:
            p.add_argument(tc.flag(o.name), dest=o.name, default=argparse.SUPPRESS, help=o.help)
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    multi = p.add_argument_group(
        "multi-host (docs/distributed.md; each falls back to its JAX_* environment variable)"
    )
    multi.add_argument("--coordinator-address", metavar="HOST:PORT", help="process 0's address")
    multi.add_argument("--num-processes", type=int, metavar="N", help="number of processes")
    multi.add_argument("--process-id", type=int, metavar="I", help="this process's index")
    p.set_defaults(run=run)


class Plan:
    """Everything decided before anything is written."""

    def __init__(self, config, dataset, run_dir, resume_meta, hashed, digest, fresh_dir):
        self.config = config
        self.dataset = dataset
        self.run_dir = run_dir
        self.resume_meta = resume_meta
        self.hashed = hashed
        self.hash = digest
        self.fresh_dir = fresh_dir


def plan(args) -> Plan:
    """Reads and validates everything — config layers, data, run directory, checkpoint — and
    writes nothing. Raises UsageError on any bad input."""
    from jaxbp import checkpoint
    from jaxbp.data import DataError, fingerprint, load_dataset
    from jaxbp.train import gradient_source

    flags = {
        k: tc.parse_value(tc.OPTION[k], v, tc.flag(k))
        for k, v in vars(args).items()
        if k in tc.OPTION
    }
    file_layer = tc.read_toml(args.config) if args.config else {}
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite: choose one")
    out = flags.get("out", file_layer.get("out"))
    config = tc.defaults()
    if args.resume:
        if out is None:
            raise UsageError("--resume: name the run directory to continue with --out DIR")
        ckpt = Path(out) / CHECKPOINT
        if not ckpt.is_file():
            raise UsageError(f"--resume: no checkpoint {ckpt} to continue from")
        config = tc.layer(config, tc.read_toml(Path(out) / CONFIG, what="--resume"))
    config = tc.layer(tc.layer(config, file_layer), flags)
    config = tc.resolve(config)

    try:
        dataset = load_dataset(
            config["dataset"],
            data=config["data"],
            test_data=config["test_data"],
            labels=config["labels"],
            test_labels=config["test_labels"],
            label_column=config["label_column"],
            test_rows=config["test_rows"],
            classes=config["classes"],
            samples=config["samples"],
            val_fraction=config["val_fraction"],
            test_fraction=config["test_fraction"],
            seed=config["data_seed"],
            scaling=config["scaling"],
        )
    except DataError as e:
        raise UsageError(str(e)) from None
    n_train = dataset.x_train.shape[0]
    if config["batch_size"] != "all" and config["batch_size"] > n_train:
        raise UsageError(
            f"--batch-size: {config['batch_size']} is more than the {n_train} training examples; "
            "use a smaller size or 'all'"
        )
    try:
        gradient_source(config["grad"])
    except ValueError as e:
        raise UsageError(str(e)) from None

    hashed = tc.hashed_config(config, fingerprint(dataset))
    digest = tc.config_hash(hashed)
    resume_meta = None
    fresh = True
    if config["out"] is None:
        name = config["dataset"] or Path(config["data"]).stem
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{name}-{stamp}"
        n = 2
        while run_dir.exists():
            run_dir = Path("runs") / f"{name}-{stamp}-{n}"
            n += 1
        config["out"] = str(run_dir)
    run_dir = Path(config["out"])
    if args.resume:
        try:
            resume_meta = checkpoint.read_meta(run_dir / CHECKPOINT)
        except checkpoint.CheckpointError as e:
            raise UsageError(f"--resume: {e}") from None
        if resume_meta.get("config_hash") != digest:
            diff = tc.describe_difference(resume_meta.get("hashed_config", {}), hashed)
            raise UsageError(
                f"--resume: config hash mismatch with the checkpoint in {run_dir} ({diff}); "
                "resume with the run's own settings or start a new run"
            )
        fresh = False
    elif run_dir.exists():
        if not run_dir.is_dir():
            raise UsageError(f"--out: {run_dir} exists and is not a directory")
        entries = list(run_dir.iterdir())
        if entries and not args.overwrite:
            raise UsageError(
                f"--out: run directory {run_dir} already exists; pass --overwrite to replace it "
                "or --resume to continue it"
            )
        foreign = [e.name for e in entries if e.name not in OUTPUTS]
        if args.overwrite and foreign:
            raise UsageError(
                f"--overwrite: {run_dir} holds files a run does not write ({', '.join(foreign[:3])}"
                f"{', …' if len(foreign) > 3 else ''}); refusing to replace it"
            )
    return Plan(config, dataset, run_dir, resume_meta, hashed, digest, fresh)


def place(tree, mesh):
    """The single place where arrays go to devices: the data splits and the training state,
    replicated on every device of ``mesh``; each minibatch is then split over the mesh by the
    data-parallel gradient source (:mod:`jaxbp.distributed`). The training functions
    (:mod:`jaxbp.train`) never place anything themselves.
    """
    from jaxbp.distributed import replicate

    return replicate(mesh, tree)


def _mesh(c):
    """The data mesh of ``--devices`` devices of ``--platform``; UsageError if unavailable."""
    import jax

    from jaxbp.distributed import data_mesh, select_platform

    try:
        devices = select_platform(c["platform"]) if c["platform"] else jax.devices()
    except RuntimeError as e:
        raise UsageError(f"--platform: {e}") from None
    n = c["devices"] or len(devices)
    if n > len(devices):
        raise UsageError(
            f"--devices: {n} requested but {len(devices)} {devices[0].platform} device(s) are "
            "available (on a CPU: XLA_FLAGS=--xla_force_host_platform_device_count=N)"
        )
    if jax.process_count() > 1 and n != len(devices):
        raise UsageError(f"--devices: a multi-host run uses all {len(devices)} devices, got {n}")
    return data_mesh(devices[:n])


def _device_count(array) -> int:
    try:
        return len(array.sharding.device_set)
    except AttributeError:
        return 1


def run(args) -> int:
    from jaxbp.distributed import initialize

    try:  # before anything starts JAX
        info = initialize(args.coordinator_address, args.num_processes, args.process_id)
    except ValueError as e:  # "num_processes: …" → "--num-processes: …"
        name, _, rest = str(e).partition(":")
        raise UsageError(f"--{name.replace('_', '-')}:{rest}") from None
    if info.process_id > 0 and not args.resume:
        args.overwrite = True  # process 0 owns --out; the others write to a scratch directory
    p = plan(args)
    return execute(p)


def execute(p: Plan) -> int:  # noqa: C901 - the run, step by step
    import jax

    c = p.config
    if c["dtype"] == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    from tqdm import tqdm

    import jaxbp
    from jaxbp import checkpoint, shadow
    from jaxbp import train as T
    from jaxbp.data import one_hot
    from jaxbp.optim import make_optimizer, needs_value_fn

    t_start = time.perf_counter()
    ds, run_dir = p.dataset, p.run_dir
    dtype = jnp.dtype(c["dtype"])
    k = ds.num_classes
    sizes = [ds.num_features, *c["hidden"], k]
    activation = c["activation"] if isinstance(c["activation"], str) else tuple(c["activation"])
    output = c["output"]
    seeds = c["seeds"]
    n_train = ds.x_train.shape[0]
    batch = None if c["batch_size"] == "all" else c["batch_size"]
    steps_per_epoch = 1 if batch is None else n_train // batch
    mesh = _mesh(c)
    main = jax.process_index() == 0
    x, y, x_val, y_val = place(
        (
            np.asarray(ds.x_train, dtype),
            one_hot(ds.y_train, k, dtype),
            np.asarray(ds.x_val, dtype),
            one_hot(ds.y_val, k, dtype),
        ),
        mesh,
    )
    x_test, y_test = place((np.asarray(ds.x_test, dtype), one_hot(ds.y_test, k, dtype)), mesh)
    optimizer = make_optimizer(
        c["optimizer"],
        lr=c["lr"],
        schedule=c["schedule"],
        total_steps=c["epochs"] * steps_per_epoch,
        momentum=c["momentum"],
        weight_decay=c["weight_decay"],
    )
    source = T.gradient_source(c["grad"])
    parallel = mesh.devices.size > 1 or c["precision"] != "float32"
    if parallel:  # each minibatch split over the mesh: per-device Δ, one psum (distributed.md)
        from jaxbp.distributed import data_parallel_source

        source = data_parallel_source(mesh, precision=c["precision"], base=source)
    epoch_fn = T.make_epoch(
        optimizer,
        source,
        batch_size=batch,
        activation=activation,
        output=output,
        l2=c["l2"],
        uses_value_fn=needs_value_fn(c["optimizer"]),
    )
    step = T.compile_step(
        T.make_step(
            epoch_fn, activation=activation, output=output, l2=c["l2"], patience=c["patience"]
        )
    )

    def init(seed):
        state = T.init_state(jax.random.key(seed), sizes, optimizer, scheme=c["init"], dtype=dtype)
        return state, T.init_early_stop(state.params)

    state, stop = place(jax.jit(jax.vmap(init))(jnp.asarray(seeds, jnp.uint32)), mesh)
    history: list[dict] = []
    start, elapsed_before, shadow_worst = 0, 0.0, None
    if p.fresh_dir and main:
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in OUTPUTS:
            (run_dir / name).unlink(missing_ok=True)
    elif not p.fresh_dir:
        (state, stop), meta = checkpoint.load(run_dir / CHECKPOINT, (state, stop))
        state, stop = place((state, stop), mesh)
        start = int(meta["epoch"])
        elapsed_before = float(meta.get("wall_time_s", 0.0))
        shadow_worst = meta.get("shadow_max_rel_error")
        if (run_dir / METRICS).is_file():
            for text in (run_dir / METRICS).read_text().splitlines():
                if text.strip() and json.loads(text)["epoch"] <= start:
                    history.append(json.loads(text))
    if not main:  # multi-host: only process 0 writes the run directory
        run_dir = Path(tempfile.mkdtemp(prefix=f"jaxbp-process{jax.process_index()}-"))
    header = (
        f"jaxbp {jaxbp.__version__} train — fully resolved configuration of this run\n"
        f"config hash {p.hash}"
    )
    write_atomic(run_dir / CONFIG, tc.to_toml(c, header))
    write_atomic(run_dir / METRICS, "".join(json.dumps(h) + "\n" for h in history))

    def save(epoch, wall):
        meta = {
            "epoch": epoch,
            "config_hash": p.hash,
            "hashed_config": p.hashed,
            "seeds": seeds,
            "wall_time_s": wall,
            "shadow_max_rel_error": shadow_worst,
        }
        checkpoint.save(run_dir / CHECKPOINT, (state, stop), meta=meta)

    if p.fresh_dir:
        save(0, 0.0)
    shadow_fn = None
    if c["shadow_every"]:
        hand = (
            source if c["grad"] == "graph" or (parallel and c["precision"] == "float32") else None
        )
        shadow_fn = jax.jit(
            jax.vmap(
                lambda params: shadow.shadow_errors(
                    params, x, y, activation=activation, output=output, l2=c["l2"], hand=hand
                )
            )
        )
    tty = sys.stdout.isatty()
    # A terminal that reports a 0×0 size (some pseudo-terminals) would make tqdm hide the bar.
    size = shutil.get_terminal_size((100, 24))
    bar = tqdm(
        total=c["epochs"],
        initial=start,
        desc=ds.name if c["dataset"] else Path(ds.name).name,
        unit="epoch",
        file=sys.stdout,
        disable=not tty,
        ncols=min(size.columns, 120),
        nrows=size.lines,
    )
    every = max(1, c["epochs"] // 10)
    last_saved = start
    error = None
    t_epoch = time.perf_counter()
    try:
        with bar:
            epochs = T.fit(step, state, stop, (x, y, x_val, y_val), epochs=c["epochs"], start=start)
            for e, new_state, new_stop, metrics in epochs:
                state, stop = new_state, new_stop  # the checkpoint writer reads these
                checked = None
                if shadow_fn is not None and e % c["shadow_every"] == 0:
                    errors = jax.device_get(shadow_fn(state.params))
                    worst = shadow.check_shadow(errors, dtype, epoch=e)
                    per_leaf = {name: float(np.max(v)) for name, v in errors.items()}
                    checked = (worst, per_leaf)
                    shadow_worst = max(worst, shadow_worst or 0.0)
                now = time.perf_counter()
                line = report.metrics_line(e, metrics, now - t_epoch, checked)
                t_epoch = now
                history.append(line)
                with open(run_dir / METRICS, "a", encoding="utf-8") as f:
                    f.write(json.dumps(line) + "\n")
                if e % c["checkpoint_every"] == 0 or e == c["epochs"]:
                    save(e, elapsed_before + now - t_start)
                    last_saved = e
                status = f"loss {line['train_loss']:.4f}  acc {line['train_accuracy']:.4f}" + (
                    f"  val {line['val_accuracy']:.4f}" if line["val_accuracy"] is not None else ""
                )
                bar.set_postfix_str(status, refresh=False)
                bar.update(1)
                if not tty and (e % every == 0 or e == c["epochs"]):
                    print(f"epoch {e}/{c['epochs']}  {status}", flush=True)
    except (T.TrainingDiverged, shadow.ShadowError) as exc:
        error = exc
    if error is not None:
        print(
            f"error: {error}; the last good checkpoint is {run_dir / CHECKPOINT} "
            f"(epoch {last_saved})",
            file=sys.stderr,
        )
        return 1
    epochs_done = history[-1]["epoch"] if history else start
    if epochs_done != last_saved:  # stopped early between checkpoints
        save(epochs_done, elapsed_before + time.perf_counter() - t_start)

    final = stop.best_params if c["patience"] > 0 else state.params
    predict = jax.jit(
        jax.vmap(lambda prm: T.predict_labels(prm, x_test, activation=activation, output=output))
    )
    test_loss = jax.jit(
        jax.vmap(
            lambda prm: T.evaluate(prm, x_test, y_test, activation=activation, output=output)[0]
        )
    )(final)
    predictions = np.asarray(predict(final))
    matrices = [T.confusion_matrix(ds.y_test, pr, k) for pr in predictions]
    accuracies = np.array([np.trace(m) / m.sum() for m in matrices])
    summary = report.summarize(
        c,
        ds,
        history,
        accuracies=accuracies,
        matrices=matrices,
        test_loss=test_loss,
        best_epochs=jax.device_get(stop.best_epoch),
        shadow_worst=shadow_worst,
        wall=elapsed_before + time.perf_counter() - t_start,
        devices=_device_count(x),
        sizes=sizes,
        config_hash=p.hash,
    )
    written = [CONFIG, METRICS, SUMMARY, CHECKPOINT]
    if c["plots"] and history:
        written[3:3] = report.write_plots(run_dir, history, matrices, ds, c, PLOTS)
    summary["outputs"] = written
    write_atomic(run_dir / SUMMARY, json.dumps(summary, indent=2) + "\n")
    if main:
        report.print_summary(summary, run_dir, written)
    return 0
