"""jaxbp.cli.cache: JAX's persistent compilation cache for the command line — on by default in
the user's cache directory, filled by the first run, only read by the second, off with
``--no-compile-cache`` or ``JAXBP_COMPILE_CACHE=0``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxbp.cli import cache

ARGV = ["train", "--dataset", "iris", "--hidden", "4", "--epochs", "1", "--no-plots"]


def jaxbp(*argv, env):
    full = {k: v for k, v in os.environ.items() if k != "JAXBP_COMPILE_CACHE"}  # conftest's
    full.update({"JAX_PLATFORMS": "cpu", **env})
    return subprocess.run(
        [sys.executable, "-m", "jaxbp", *map(str, argv)],
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
    )


def entries(path: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("JAXBP_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "jaxbp" / "jax"
    monkeypatch.setenv("JAXBP_CACHE_DIR", str(tmp_path / "mine"))
    assert cache.cache_dir() == tmp_path / "mine"


@pytest.mark.slow
def test_second_run_reads_every_program_from_the_cache(tmp_path):
    env = {"JAXBP_CACHE_DIR": str(tmp_path / "cache")}
    first = jaxbp(*ARGV, "--out", tmp_path / "a", env=env)
    assert first.returncode == 0, first.stderr
    written = entries(tmp_path / "cache")
    assert len(written) >= 4  # init, the epoch step, evaluation and prediction at least
    second = jaxbp(*ARGV, "--out", tmp_path / "b", env=env)
    assert second.returncode == 0, second.stderr
    assert entries(tmp_path / "cache") == written  # all hits: nothing compiled, nothing added
    assert (tmp_path / "a" / "summary.json").read_text().split('"wall_time_s"')[0] == (
        tmp_path / "b" / "summary.json"
    ).read_text().split('"wall_time_s"')[0].replace(str(tmp_path / "b"), str(tmp_path / "a"))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["flag", "environment"])
def test_cache_can_be_turned_off(tmp_path, how):
    env = {"JAXBP_CACHE_DIR": str(tmp_path / "cache")}
    argv = [*ARGV, "--out", tmp_path / "a"]
    if how == "flag":
        argv.append("--no-compile-cache")
    else:
        env["JAXBP_COMPILE_CACHE"] = "off"
    result = jaxbp(*argv, env=env)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "cache").exists()


def test_an_unwritable_cache_is_said_and_the_command_still_runs(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("JAXBP_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.delenv("JAXBP_COMPILE_CACHE")

    class Args:
        compile_cache = True

    assert cache.enable(Args()) is None
    assert (
        capsys.readouterr().err
        == f"note: compilation cache off: cannot write {blocker / 'cache'}\n"
    )
