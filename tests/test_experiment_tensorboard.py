"""jaxbp.experiment.tensorboard: ``--tensorboard`` writes each epoch's metrics as TensorBoard
scalars beside metrics.jsonl; a resumed run purges what followed its checkpoint; without
tensorboardX the run is refused before anything is written."""

from __future__ import annotations

import dataclasses
import json
import struct
import sys

import pytest

from jaxbp.cli import main
from jaxbp.experiment import ConfigError, TrainConfig, run

pytest.importorskip("tensorboardX")

TINY = TrainConfig(
    dataset="iris", hidden=(4,), batch_size=16, epochs=3, plots=False, tensorboard=True,
    schedule="constant",
)  # fmt: skip


def scalars(run_dir, purges=None) -> dict[str, dict[int, float]]:
    """Every scalar of the run's event files as TensorBoard reads them: {tag: {step: value}},
    file after file, a SessionLog.START at step p dropping what earlier files logged at ≥ p
    (appended to ``purges``)."""
    from tensorboardX.proto import event_pb2

    out: dict[str, dict[int, float]] = {}
    for path in sorted((run_dir / "tensorboard").iterdir(), key=lambda p: p.stat().st_mtime_ns):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i : i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12 : i + 12 + n])
            i += 12 + n + 4
            if event.HasField("session_log") and event.session_log.status == 1:  # START
                for steps in out.values():
                    for step in [s for s in steps if s >= event.step]:
                        del steps[step]
                if purges is not None:
                    purges.append(event.step)
            for value in event.summary.value:
                out.setdefault(value.tag, {})[event.step] = value.simple_value
    return out


def metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_every_epoch_metric_is_a_scalar(tmp_path):
    out = tmp_path / "r"
    summary = run(dataclasses.replace(TINY, seeds=(3, 4)), out)
    assert "tensorboard" in summary.outputs
    tb, lines = scalars(out), metrics(out)
    for key, tag in (("train_loss", "train/loss"), ("val_accuracy", "validation/accuracy"),
                     ("grad_norm", "train/grad_norm")):  # fmt: skip
        assert tb[tag] == pytest.approx({m["epoch"]: m[key] for m in lines}, rel=1e-6)
    assert tb["seed_4/train/loss"][2] == pytest.approx(lines[1]["per_seed"]["train_loss"][1])


@pytest.mark.slow
def test_resume_purges_what_followed_the_checkpoint(tmp_path, monkeypatch):
    from helpers import raise_after_epoch

    out = tmp_path / "r"
    raise_after_epoch(monkeypatch, 3, KeyboardInterrupt)
    c = dataclasses.replace(TINY, epochs=4, checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):
        run(c, out)  # epochs 1-3 logged, the checkpoint is at epoch 2
    monkeypatch.undo()
    run(c, out, resume=True)
    purges = []
    tb = scalars(out, purges)["train/loss"]
    assert purges == [1, 3]  # the fresh run's file, then the resumed one: epoch 3 is redone
    assert sorted(tb) == [1, 2, 3, 4]
    assert tb == pytest.approx({m["epoch"]: m["train_loss"] for m in metrics(out)}, rel=1e-6)


def test_without_tensorboardx_the_run_is_refused_before_writing(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ConfigError, match=r"^tensorboard: needs tensorboardX: pip install"):
        run(TINY, tmp_path / "r")
    assert not (tmp_path / "r").exists()
    argv = ["train", "--dataset", "iris", "--tensorboard", "--out", str(tmp_path / "c")]
    assert main(argv) == 2
    assert "error: --tensorboard: needs tensorboardX" in capsys.readouterr().err


@pytest.mark.slow
def test_overwrite_replaces_the_event_files_but_not_foreign_ones(tmp_path):
    out = tmp_path / "r"
    run(TINY, out)
    run(dataclasses.replace(TINY, epochs=1), out, overwrite=True)
    assert len(list((out / "tensorboard").iterdir())) == 1
    (out / "tensorboard" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds files a run does not write \(tensorboard\)"):
        run(TINY, out, overwrite=True)
    assert (out / "tensorboard" / "notes.txt").read_text() == "mine"
