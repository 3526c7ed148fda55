"""`jaxbp verify --case FILE.py:FUNCTION`: the checks on a user's own gradient — tables, JSON,
exit 0 / 1 / 2, one-line errors naming the argument and what was received."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from jaxbp import verify
from jaxbp.cli import main

CASES = Path(__file__).resolve().parent / "cases"
LOGISTIC = str(CASES / "logistic.py")


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_correct_case_passes_with_tables_and_json(tmp_path, capsys):
    path = tmp_path / "case.json"
    modules, syspath = set(sys.modules), list(sys.path)
    assert main(["verify", "--case", f"{LOGISTIC}:case", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        f"jaxbp verify --case {LOGISTIC}:case: jaxbp.verify.check, modes rev,fwd,fd"
    )
    assert "logistic.py:case: PASS" in out and "wall time" in out
    for oracle in ("rev", "fwd", "fd"):
        for leaf in ("['b']", "['w']"):
            assert any(line.split()[:3] == [oracle, "eager", leaf] for line in out.splitlines())
    record = json.loads(path.read_text())
    assert record["ok"] is True and record["failed"] == []
    assert record["case"]["kind"] == "check" and record["case"]["function"] == "case"
    assert record["seconds"]["wall"] > 0 and record["meta"]["seed"] == 0
    # imported by path: nothing left on sys.path or in sys.modules
    assert sys.path == syspath and not [m for m in set(sys.modules) - modules if "case" in m]


def test_tuple_form_and_modes_and_seed_flags(tmp_path, capsys):
    path = tmp_path / "case.json"
    code = main(["verify", "--case", f"{LOGISTIC}:as_tuple", "--modes", "rev", "--seed", "5",
                 "--json", str(path)])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "modes rev, seed 5" in out
    record = json.loads(path.read_text())
    oracles = {r["oracle"] for r in record["rows"]}
    assert "rev" in oracles and not oracles & {"fwd", "fd"}
    assert record["meta"]["seed"] == 5 and record["case"]["options"]["key"] == 5


def test_case_options_apply_and_flags_override_them(tmp_path, capsys):
    path = tmp_path / "case.json"
    assert main(["verify", "--case", f"{LOGISTIC}:rev_only", "--json", str(path)]) == 0
    record = json.loads(path.read_text())
    assert record["meta"]["modes"] == ["rev"] and record["meta"]["seed"] == 3
    assert main(["verify", "--case", f"{LOGISTIC}:rev_only", "--modes", "fwd",
                 "--json", str(path)]) == 0  # fmt: skip
    record = json.loads(path.read_text())
    assert record["meta"]["modes"] == ["fwd"] and record["meta"]["seed"] == 3
    capsys.readouterr()


def test_planted_bug_exits_1_naming_the_leaf(tmp_path, capsys):
    path = tmp_path / "case.json"
    code = main(["verify", "--case", f"{CASES / 'logistic_bug.py'}:case", "--modes", "rev,fd",
                 "--json", str(path)])  # fmt: skip
    assert code == 1
    out = capsys.readouterr().out
    assert "logistic_bug.py:case: FAIL (['b'])" in out and "s: FAIL\nwrote " in out
    fails = [line.split()[:3] for line in out.splitlines() if line.rstrip().endswith("FAIL")]
    assert ["rev", "eager", "['b']"] in fails and ["fd", "eager", "['b']"] in fails
    record = json.loads(path.read_text())
    assert record["ok"] is False and record["failed"] == ["['b']"]


def _fake_check_custom_vjp(calls):
    """A stand-in with the colleague's signature, built on verify.check (tests the wiring)."""

    def check_custom_vjp(f, reference, *primals, modes=("rev",), key=None, title="custom_vjp",
                         raise_on_fail=False):  # fmt: skip
        calls.append({"f": f, "primals": primals, "modes": modes, "key": key, "title": title})
        return verify.check(
            lambda p: jax.grad(lambda q: jnp.sum(f(*q)))(p),
            lambda p: jnp.sum(reference(*p)),
            primals, modes=modes, key=key, title=title,
        )  # fmt: skip

    return check_custom_vjp


def test_custom_vjp_case_goes_to_check_custom_vjp(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(verify, "check_custom_vjp", _fake_check_custom_vjp(calls), raising=False)
    path = tmp_path / "case.json"
    code = main(["verify", "--case", f"{CASES / 'custom_vjp.py'}:case", "--seed", "2",
                 "--json", str(path)])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "jaxbp.verify.check_custom_vjp" in out and "custom_vjp.py:case: PASS" in out
    (call,) = calls
    assert isinstance(call["f"], jax.custom_vjp) and call["key"] == 2
    assert call["primals"][0].shape == (7,) and call["title"] == "custom_vjp.py:case"
    record = json.loads(path.read_text())
    assert record["ok"] is True and record["case"]["kind"] == "custom_vjp"

    # a flag the checker does not take is a usage error naming it
    def check_custom_vjp(f, reference, *primals):
        raise AssertionError("not reached")

    monkeypatch.setattr(verify, "check_custom_vjp", check_custom_vjp)
    assert main(["verify", "--case", f"{CASES / 'custom_vjp.py'}:case", "--modes", "rev"]) == 2
    assert "--modes: jaxbp.verify.check_custom_vjp takes no 'modes'" in _one_error_line(capsys)


def test_custom_vjp_case_with_the_real_check_custom_vjp(capsys):
    if not hasattr(verify, "check_custom_vjp"):
        pytest.skip("jaxbp.verify.check_custom_vjp does not exist yet")
    assert main(["verify", "--case", f"{CASES / 'custom_vjp.py'}:case"]) == 0
    assert "PASS" in capsys.readouterr().out


BAD_SOURCES = {
    "raises on import": ("import math\nmath.sqrt(-1)\n", "importing", "ValueError: math domain"),
    "syntax error": ("def case(:\n", "importing", "SyntaxError"),
    "function missing": (
        "def alpha():\n    pass\n\ndef beta():\n    pass\n\nX = 1\n",
        "has no function 'case'",
        "the callables it defines: alpha, beta",
    ),
    "not a function": ("case = 3\n", "case is a int 3", "not a function"),
    "function raises": (
        "def case():\n    return 1 / 0\n",
        "calling t.py:case() raised",
        "ZeroDivisionError",
    ),
    "needs arguments": ("def case(n):\n    pass\n", "calling t.py:case() raised TypeError", "n"),
    "returns None": (
        "def case():\n    return None\n",
        "case() returned a NoneType None",
        "expected (grad_fn",
    ),
    "returns 3 items": (
        "def case():\n    return 1, 2, 3\n",
        "returned a tuple of 3 item(s)",
        "expected",
    ),
    "missing keys": (
        "def case():\n    return {'grad_fn': len, 'params': 1}\n",
        "a mapping with keys grad_fn, params (missing loss_fn, args)",
        "expected",
    ),
    "unknown key": (
        "def case():\n    return {'grad_fn': len, 'loss_fn': len, 'params': 1, 'args': (), 'x': 0}\n",
        "(unknown x)",
        "expected",
    ),
    "not callable": (
        "def case():\n    return 1, len, {'w': 1.0}, ()\n",
        "grad_fn = a int 1, which is not callable",
        "expected",
    ),
    "args not a tuple": (
        "import numpy as np\ndef case():\n    return len, len, {'w': 1.0}, np.ones((3, 3))\n",
        "args = a ndarray",
        "args must be a tuple",
    ),
    "unknown option": (
        "def case():\n    return {'grad_fn': len, 'loss_fn': len, 'params': 1, 'args': (),\n"
        "            'options': {'tolerance': 1}}\n",
        "returned options 'tolerance' that jaxbp.verify.check does not take; it takes",
        "modes",
    ),
}


@pytest.mark.parametrize("name", list(BAD_SOURCES))
def test_bad_case_files_exit_2_with_one_line(name, tmp_path, capsys):
    source, *messages = BAD_SOURCES[name]
    (tmp_path / "t.py").write_text(source)
    assert main(["verify", "--case", f"{tmp_path / 't.py'}:case"]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("error: --case: ")
    for message in messages:
        assert message in line, line


GRAD_FN_RAISES = """
import jax.numpy as jnp

def loss(p, x):
    return jnp.sum(p["w"] * x)

def grad(p, x):
    raise KeyError("v")

def bad_loss(p, x):
    return float(jnp.sum(p["w"] * x))  # float() of a tracer under jax.grad

def case():
    return grad, loss, {"w": jnp.ones(3)}, (jnp.arange(3.0),)

def case_loss():
    return lambda p, x: {"w": x}, bad_loss, {"w": jnp.ones(3)}, (jnp.arange(3.0),)

def case_int_params():
    return lambda p: p, lambda p: 0.0, {"w": jnp.arange(3)}, ()
"""


def test_raising_grad_fn_loss_fn_and_bad_params_exit_2(tmp_path, capsys):
    (tmp_path / "t.py").write_text(GRAD_FN_RAISES)
    assert main(["verify", "--case", f"{tmp_path / 't.py'}:case"]) == 2
    assert "t.py:case(): grad_fn raised KeyError: 'v'" in _one_error_line(capsys)
    assert main(["verify", "--case", f"{tmp_path / 't.py'}:case_loss", "--modes", "rev"]) == 2
    assert "t.py:case_loss(): loss_fn raised" in _one_error_line(capsys)
    assert main(["verify", "--case", f"{tmp_path / 't.py'}:case_int_params"]) == 2
    line = _one_error_line(capsys)
    assert "t.py:case_int_params(): jaxbp.verify.check raised" in line
    assert "params" in line and "['w']" in line


def test_bad_case_arguments_exit_2(tmp_path, capsys):
    (tmp_path / "c.txt").write_text("")
    (tmp_path / "ok.py").write_text("def case():\n    pass\n")
    cases = {
        f"{tmp_path / 'missing.py'}:case": "does not exist",
        f"{tmp_path / 'c.txt'}:case": "is not a .py file",
        str(tmp_path / "ok.py"): "no :FUNCTION",
        f"{tmp_path / 'ok.py'}:": "no :FUNCTION",
        f"{tmp_path}/:case": "is not a .py file",
    }
    for spec, message in cases.items():
        assert main(["verify", "--case", spec]) == 2
        line = _one_error_line(capsys)
        assert line.startswith("error: --case: ") and message in line, (spec, line)
        assert repr(spec) in line or spec in line
    for flags in (["--sizes", "5,4,3"], ["--activation", "relu"], ["--dtype", "float64"]):
        assert main(["verify", "--case", f"{LOGISTIC}:case", *flags]) == 2
        line = _one_error_line(capsys)
        assert "--case: cannot be combined with " + flags[0] in line and repr(flags[1]) in line
    assert main(["verify", "--case", f"{LOGISTIC}:case", "--modes", "rev,adjoint"]) == 2
    assert "--modes: unknown 'adjoint'" in _one_error_line(capsys)
    assert main(["verify", "--case", f"{LOGISTIC}:case", "--seed", "x"]) == 2
    assert "--seed: expected an integer" in _one_error_line(capsys)
    assert main(["verify", "--case", f"{LOGISTIC}:case", "--json", "/nonexistent-dir/x"]) == 2
    assert "--json: /nonexistent-dir/x: folder /nonexistent-dir does not exist" in _one_error_line(
        capsys
    )


def test_help_describes_the_case_contract(capsys):
    with pytest.raises(SystemExit) as e:
        main(["verify", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--case FILE.py:FUNCTION" in text
    assert "returns (grad_fn, loss_fn, params, args)" in text and "'custom_vjp': f" in text


def test_python_dash_m_runs_a_case(tmp_path):
    path = tmp_path / "bug.json"
    result = subprocess.run(
        [sys.executable, "-m", "jaxbp", "verify", "--case", f"{CASES / 'logistic_bug.py'}:case",
         "--modes", "rev", "--json", str(path)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "logistic_bug.py:case: FAIL (['b'])" in result.stdout
    assert "s: FAIL\nwrote " in result.stdout and "Traceback" not in result.stderr
    assert json.loads(path.read_text())["failed"] == ["['b']"]
