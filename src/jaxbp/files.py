"""Files written whole or not at all.

:func:`write_atomic` writes to a temporary name in the target's folder, flushes and ``fsync``-s
it, ``os.replace``-s it over the target and ``fsync``-s the folder: a crash at any moment leaves
the old file or the new one, never a torn one, and no temporary file behind when Python unwinds.
Checkpoints, run records (config, metrics, summary) and ``--json`` reports all go through it.
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
