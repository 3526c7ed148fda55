"""Files written whole or not at all.

:func:`write_atomic` writes to a temporary name in the target's folder, flushes and ``fsync``-s
it, ``os.replace``-s it over the target and ``fsync``-s the folder: a crash at any moment leaves
the old file or the new one, never a torn one, and no temporary file behind when Python unwinds.
Checkpoints, run records (config, metrics, summary) and ``--json`` reports all go through it.

:func:`check_writable` and :func:`check_creatable_dir` ask *before* any work is done whether an
output file or folder can be written there, so that a command can refuse a bad ``--json`` or
``--out`` at once instead of failing after the work.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path, data: bytes | str) -> None:
    """Replaces ``path`` with ``data`` (text is written as UTF-8) atomically.

    Args:
      path: the file; its folder must exist.
      data: the whole new content.
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_writable(path) -> Path:
    """The output file ``path`` (``~`` expanded), once it is known that it can be written there.

    Nothing is left behind: the check creates and removes a temporary file in the target's folder
    (the only reliable test — permission bits say nothing on a read-only filesystem or to root).

    Raises:
      ValueError: ``PATH: …`` — the folder does not exist, a part of the path is a file, the path
        is a folder, or the folder cannot be written (read-only filesystem, permissions).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, expected a file name")
    _check_folder(path, path.parent)
    return path


def check_creatable_dir(path) -> Path:
    """The output folder ``path`` (``~`` expanded), once it is known that it exists and can be
    written, or can be created (its nearest existing ancestor is a writable folder). Creates
    nothing.

    Raises:
      ValueError: ``PATH: …`` — it or an ancestor is a file, or the place cannot be written.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path}: exists and is not a folder")
    ancestor = path
    while not ancestor.exists():
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    _check_folder(path, ancestor)
    return path


def _check_folder(path: Path, folder: Path) -> None:
    for above in (folder, *folder.parents):
        if above.exists():
            if not above.is_dir():
                raise ValueError(f"{path}: {above} is a file, not a folder")
            break
    if not folder.exists():
        raise ValueError(f"{path}: folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".jaxbp-write-check.", dir=folder)
    except OSError as e:
        raise ValueError(f"{path}: cannot write in {folder} ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(tmp)
