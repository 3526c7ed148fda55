"""Rough edges a new user hit on the command line: outputs that cannot be written refused before
any work, a closed pipe (``| head``), help text, plots. Each bad input is exit 2 and one line."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import tempfile

import pytest

from jaxbp.cli import main
from jaxbp.files import check_creatable_dir, check_writable

VERIFY = ["verify", "--sizes", "3,3,2", "--batch", "4", "--sections", "deltas", "--fd-budget", "5"]


def _never_run(*args, **kwargs):  # pragma: no cover - only reached when the bug is back
    raise AssertionError("a check ran before --json was validated")


@pytest.fixture
def no_checks(monkeypatch):
    import jaxbp.verify

    monkeypatch.setattr(jaxbp.verify, "verify_mlp", _never_run)


def _one_error_line(capsys, *needles):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and captured.out == ""
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("where", ["under_a_file", "missing_folder", "a_folder"])
def test_verify_json_unwritable_is_refused_before_any_check(tmp_path, capsys, no_checks, where):
    (tmp_path / "file").write_text("x")
    target = {
        "under_a_file": tmp_path / "file" / "v.json",
        "missing_folder": tmp_path / "no" / "such" / "v.json",
        "a_folder": tmp_path,
    }[where]
    before = sorted(os.listdir(tmp_path))
    assert main([*VERIFY, "--json", str(target)]) == 2
    _one_error_line(capsys, "--json: ", str(target))
    assert sorted(os.listdir(tmp_path)) == before  # nothing written


def test_verify_json_in_a_read_only_place_is_refused_before_any_check(
    tmp_path, capsys, no_checks, monkeypatch
):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert main([*VERIFY, "--json", str(tmp_path / "v.json")]) == 2
    _one_error_line(capsys, "--json: ", "v.json", "Read-only file system")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_verify_json_in_a_folder_without_write_permission(tmp_path, capsys, no_checks):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert main([*VERIFY, "--json", str(folder / "v.json")]) == 2
        _one_error_line(capsys, "--json: ", "Permission denied")
    finally:
        folder.chmod(0o755)


def test_verify_case_json_unwritable_is_refused_before_the_case_is_imported(tmp_path, capsys):
    case = tmp_path / "case.py"
    case.write_text("raise SystemExit('imported')\n")
    (tmp_path / "file").write_text("x")
    argv = ["verify", "--case", f"{case}:f", "--json", str(tmp_path / "file" / "v.json")]
    assert main(argv) == 2
    _one_error_line(capsys, "--json: ", "is a file, not a folder")


def test_check_writable_and_creatable_dir_leave_nothing_behind(tmp_path):
    assert check_writable(tmp_path / "a.json") == tmp_path / "a.json"
    assert check_creatable_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert os.listdir(tmp_path) == []
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        check_creatable_dir(tmp_path / "f")
    with pytest.raises(ValueError, match=r"f is a file, not a folder"):
        check_creatable_dir(tmp_path / "f" / "run")


# --- a closed pipe: `jaxbp … | head` -----------------------------------------------------------


class _ClosedPipe(io.TextIOBase):
    def write(self, text):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def fileno(self):
        raise io.UnsupportedOperation("no file descriptor")


def test_broken_pipe_exits_quietly_in_process(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(VERIFY) == 141
    assert capsys.readouterr().err == ""


def test_broken_pipe_through_a_real_pipe_exits_quietly(tmp_path):
    """The reader is gone before anything is written (``| head -0``): no traceback, and the
    status a shell reports for a tool stopped by SIGPIPE."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxbp", *VERIFY],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    proc.stdout.close()  # like `| head -0`: nobody reads
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141, err
    assert "BrokenPipe" not in err and "Traceback" not in err
