"""`jaxbp verify`: tables, JSON with top-level ok, exit 0 / 1 / 2."""

import json
import subprocess
import sys

import pytest

from jaxbp.cli import main

SMALL = ["verify", "--sizes", "5,4,3", "--activation", "relu", "--batch", "6", "--l2", "0.2"]


@pytest.mark.slow
def test_passes_prints_tables_and_writes_json(tmp_path, capsys):
    path = tmp_path / "verify.json"
    assert main([*SMALL, "--fd-budget", "40", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("jaxbp verify: sizes [5, 4, 3], activation relu")
    for section in ("[gradient]", "[sources]", "[deltas]", "[transforms]", "[backward_vjp]"):
        assert section in out
    assert "deciding row per oracle" in out and "wall time" in out
    record = json.loads(path.read_text())
    assert record["ok"] is True and record["failed"] == {}
    assert record["config"]["activation"] == "relu" and record["config"]["l2"] == 0.2
    assert record["seconds"]["wall"] > 0


def test_sections_runs_only_those(tmp_path, capsys):
    path = tmp_path / "v.json"
    assert main([*SMALL, "--sections", "deltas,gradient", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "sections deltas,gradient" in out
    assert "[deltas]" in out and "[gradient]" in out
    for other in ("[sources]", "[transforms]", "[backward_vjp]", "[loss_vjp]"):
        assert other not in out
    assert set(json.loads(path.read_text())["sections"]) == {"deltas", "gradient"}


def test_any_failure_exits_1(monkeypatch, tmp_path, capsys):
    def broken(params, x, y, **kw):
        J, g = jaxbp.value_and_grad(params, x, y, **kw)
        return J, (jaxbp.Layer(1.05 * g[0].W, g[0].b), g[1])

    import jaxbp.verify
    import jaxbp.verify.mlp.verify

    monkeypatch.setattr(jaxbp.verify.mlp.verify, "gradient_source", lambda name: broken)
    path = tmp_path / "v.json"  # only the gradient section: the exit code is what is tested
    code = main(["verify", "--sizes", "3,4,2", "--activation", "tanh", "--batch", "4",
                 "--modes", "rev", "--sections", "gradient", "--json", str(path)])  # fmt: skip
    assert code == 1
    assert "FAIL" in capsys.readouterr().out
    record = json.loads(path.read_text())
    assert record["ok"] is False and record["failed"]["gradient"] == ["[0].W"]


BAD = {
    "--sizes": (["--sizes", "4,x"], "--sizes: expected comma-separated integers"),
    "--activation": (["--activation", "swish"], "valid choices are sigmoid, tanh, relu"),
    "--activation count": (["--sizes", "3,4,2", "--activation", "relu,tanh"], "one per hidden"),
    "--output": (["--output", "hinge"], "valid choices are softmax_ce, sigmoid_bce, identity_mse"),
    "--dtype": (["--dtype", "float16"], "valid choices are float32, float64"),
    "--modes": (["--modes", "rev,adjoint"], "valid choices are rev, fwd, fd"),
    "--grad": (["--grad", "magic"], "valid choices are manual, graph, scan, custom_vjp"),
    "--l2": (["--l2", "-1"], "--l2: expected a finite number ≥ 0"),
    "--batch": (["--batch", "0"], "--batch: expected an integer ≥ 1"),
    "--seed": (["--seed", "x"], "--seed: expected an integer"),
    "--fd-budget": (["--fd-budget", "lots"], "--fd-budget"),
    "--json": (
        ["--json", "/nonexistent-dir/x.json"],
        "--json: /nonexistent-dir/x.json: folder /nonexistent-dir does not exist",
    ),
    "--sections": (["--sections", "gradient,hessian"], "valid choices are gradient, sources"),
    "--sections twice": (["--sections", "deltas,deltas"], "--sections: a section is named twice"),
    "unknown flag": (["--sizez", "3,2"], "unrecognized arguments"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_arguments_exit_2_with_one_line(case, capsys):
    argv, message = BAD[case]
    assert main(["verify", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_python_dash_m_help():
    result = subprocess.run(
        [sys.executable, "-m", "jaxbp", "verify", "--help"], capture_output=True, text=True,
        check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0
    assert "--modes" in result.stdout and "--json" in result.stdout


@pytest.mark.slow
def test_verify_devices_sharded_subprocess(tmp_path):
    """``jaxbp verify --devices 4`` on 4 forced CPU devices: the sharded section passes and is
    recorded in the JSON."""
    import json
    import os
    import subprocess
    import sys

    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu"
    )
    out = tmp_path / "v.json"
    r = subprocess.run(
        [sys.executable, "-m", "jaxbp", "verify", "--sizes", "6,5,3", "--batch", "8",
         "--devices", "4", "--json", str(out)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "sharded over 4 device(s)" in r.stdout
    record = json.loads(out.read_text())
    assert record["ok"] is True and record["sharded"]["ok"] is True
    assert record["sharded"]["devices"] == 4


def test_verify_devices_bad_input(capsys):
    from jaxbp.cli import main

    assert main(["verify", "--devices", "0"]) == 2
    assert "--devices" in capsys.readouterr().err
    assert main(["verify", "--devices", "64"]) == 2
    assert "64 requested" in capsys.readouterr().err
