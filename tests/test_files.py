"""jaxbp.files: whole-or-nothing writes (checkpoints, run records, --json reports)."""

import os
import stat

import pytest

from jaxbp.files import write_atomic


def test_writes_text_and_bytes_and_replaces(tmp_path):
    path = tmp_path / "report.json"
    write_atomic(path, "first ✓\n")
    assert path.read_text(encoding="utf-8") == "first ✓\n"
    write_atomic(path, b"\x00\x01second")
    assert path.read_bytes() == b"\x00\x01second"
    assert os.listdir(tmp_path) == ["report.json"]


def test_permissions_follow_the_umask_not_mkstemp(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "f", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "f").st_mode) == 0o644


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    write_atomic(path, "old")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, "new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["summary.json"]


def test_a_missing_folder_is_an_error_and_writes_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "no-such-folder" / "f.json", "x")
    assert os.listdir(tmp_path) == []
