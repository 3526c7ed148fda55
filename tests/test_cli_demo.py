"""``jaxbp demo`` and the CLI dispatcher."""

import subprocess
import sys

from jaxbp.cli import main


def test_demo_prints_per_layer_table(capsys):
    assert main(["demo", "--sizes", "6,5,3", "--steps", "4", "--batch", "32"]) == 0
    out = capsys.readouterr().out
    assert "[0].W" in out and "[1].b" in out and "max |hand − auto|" in out
    assert "step     4" in out


def test_demo_bad_sizes_exit_2(capsys):
    assert main(["demo", "--sizes", "6,x"]) == 2
    err = capsys.readouterr().err
    assert "--sizes" in err and "'6,x'" in err and "Traceback" not in err


def test_demo_unknown_activation_exit_2(capsys):
    assert main(["demo", "--activation", "swish", "--steps", "0"]) == 2
    assert "valid names are sigmoid" in capsys.readouterr().err


def test_unknown_subcommand_exit_2(capsys):
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_python_dash_m():
    r = subprocess.run(
        [sys.executable, "-m", "jaxbp", "--version"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0 and r.stdout.startswith("jaxbp ")
