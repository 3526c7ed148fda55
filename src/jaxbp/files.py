"""Files written whole or not at all.

:func:`write_atomic` writes to a temporary name in the target's folder, flushes and ``fsync``-s
it, ``os.replace``-s it over the target and ``fsync``-s the folder: a crash at any moment leaves
the old file or the new one, never a torn one, and no temporary file behind when Python unwinds.
Checkpoints, run records (config, metrics, summary) and ``--json`` reports all go through it.

:func:`append_line` adds one line to a log so that a failure during the write leaves at most a
torn last line, which a reader can tell and drop.

:func:`check_writable` and :func:`check_creatable_dir` ask *before* any work is done whether an
output file or folder can be written there, so that a command can refuse a bad ``--json`` or
``--out`` at once instead of failing after the work.

:func:`acquire_lock` makes a folder one process's own: a lock file naming its owner (pid, host,
start time) under an ``flock`` that ends with the process; :func:`inspect_lock` tells a held lock
from one a killed process left behind ("stale"), which may be taken over.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import socket
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


def append_line(path, line: str) -> None:
    """Appends ``line`` (one line, ending with a newline) to ``path`` in one ``write`` to a file
    opened for appending, then ``fsync``-s it.

    The line lands whole, or — when the process dies or the disk fills during the write — as a
    torn last line without its newline, which a reader can tell and drop; never interleaved with
    another writer's line. The ``fsync`` puts it on disk before anything written after it (a
    checkpoint that counts the line).

    Raises:
      ValueError: ``line`` is not exactly one line ending with a newline.
      OSError: the file cannot be written (the error of ``open`` or ``write``).
    """
    if not line.endswith("\n") or "\n" in line[:-1]:
        raise ValueError(f"line: expected one line ending with a newline, got {line[:80]!r}")
    data = memoryview(line.encode("utf-8"))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        while data:  # a regular file takes it in one write; a short one is followed by its error
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)


# --- a lock file: one process owns a folder --------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LockOwner:
    """The process that holds (or held) a lock file, as the file records it.

    Attributes:
      pid: its process id.
      host: the host it runs on (``socket.gethostname()``).
      started: when it took the lock (local time, ISO 8601).
      ticks: its start time in clock ticks after boot (``/proc/PID/stat``; None where there is
        no ``/proc``): tells the owner from a later process that was given the same pid.
    """

    pid: int
    host: str
    started: str
    ticks: int | None = None

    def describe(self) -> str:
        """``process 1234 on host (started 2026-12-08T10:15:00+00:00)``."""
        return f"process {self.pid} on {self.host} (started {self.started})"

    @classmethod
    def current(cls) -> LockOwner:
        """This process, now."""
        stat = _process_stat(os.getpid())
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        return cls(os.getpid(), socket.gethostname(), started, stat and stat[1])

    def to_bytes(self) -> bytes:
        return (json.dumps(dataclasses.asdict(self)) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LockOwner:
        """The owner a lock file names; ValueError when it names none (empty, damaged)."""
        try:
            fields = json.loads(data.decode("utf-8"))
            owner = cls(**fields)
        except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"not a lock record ({e})") from None
        valid = (
            isinstance(owner.pid, int)
            and not isinstance(owner.pid, bool)
            and owner.pid > 0
            and isinstance(owner.host, str)
            and isinstance(owner.started, str)
            and (owner.ticks is None or isinstance(owner.ticks, int))
        )
        if not valid:
            raise ValueError(f"not a lock record: {fields!r}")
        return owner


LOCK_STATES = ("free", "held", "stale", "elsewhere", "unreadable")
"""What :func:`inspect_lock` finds: no lock file; one whose owner runs; one whose owner on this
host is gone (a killed process); one written on another host and not held, whose owner this
host cannot see; one that names no owner (being created this instant, or damaged)."""


class LockError(Exception):
    """A lock file that this process may not take.

    Attributes:
      path: the lock file; state: one of :data:`LOCK_STATES` but ``free``; owner: the
        :class:`LockOwner` it names, or None (``unreadable``, or ``held`` while being written).
    """

    def __init__(self, path: Path, state: str, owner: LockOwner | None):
        self.path, self.state, self.owner = path, state, owner
        who = owner.describe() if owner is not None else "no owner"
        super().__init__(f"{path}: {state} lock ({who})")


class Lock:
    """A lock file this process holds (:func:`acquire_lock`): its content names the owner, and
    an exclusive ``flock`` on it lasts while the file stays open — the kernel lets go of it
    when the process ends, however it ends, so a lock left by a killed process is told apart
    from a held one. Release it with :meth:`release` (or use it as a context manager).

    Attributes:
      path: the lock file; owner: this process's :class:`LockOwner`; replaced: the owner of the
        stale lock this one took over, or None.
    """

    def __init__(self, path: Path, fd: int, owner: LockOwner, replaced: LockOwner | None):
        self.path, self.owner, self.replaced = path, owner, replaced
        self._fd: int | None = fd

    def release(self) -> None:
        """Removes the lock file and lets go of it. The ``flock`` goes even when the removal
        fails (a read-only folder): the file left behind then reads as stale.

        Raises:
          OSError: the file could not be removed.
        """
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if _same_file(fd, self.path):
                os.unlink(self.path)
        finally:
            os.close(fd)

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, kind, error, tb) -> None:
        if error is None:
            self.release()
            return
        try:  # the error in flight is the one to report; say what became of the lock
            self.release()
        except OSError as e:
            error.add_note(f"the lock {self.path} stays behind ({e.strerror or e}); it is stale")


def acquire_lock(path, *, take_stale: bool = False) -> Lock:
    """Takes the lock file ``path`` for this process: creates it exclusively (``O_EXCL``)
    holding this process's :class:`LockOwner` under an exclusive ``flock``, or — with
    ``take_stale`` — rewrites in place one whose owner on this host is gone. A lock that is held,
    from another host, or unreadable is never taken. The ``flock`` is held through a read-only
    descriptor: no file stays open for writing (which would keep the file system from being
    remounted read-only).

    Args:
      path: the lock file; its folder must exist.
      take_stale: take over a lock left by a process of this host that no longer runs.

    Returns:
      The :class:`Lock`, held until :meth:`Lock.release`.

    Raises:
      LockError: the lock is ``held``, ``elsewhere``, ``unreadable``, or ``stale`` without
        ``take_stale``.
      OSError: the lock file cannot be created or written (nothing is left behind).
    """
    import fcntl

    path = Path(path)
    while True:
        created = True
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            created = False
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # released in between: try again
            continue
        try:
            if created:  # wait out a reader that looks at the empty file this instant
                fcntl.flock(fd, fcntl.LOCK_EX)
            elif not _try_flock(fd):
                raise LockError(path, "held", _owner_or_none(fd))
            if not _same_file(fd, path):  # released (and maybe created again) in between
                os.close(fd)
                continue
            replaced = None
            if not created:
                state, replaced = _judge(fd)
                if state != "stale" or not take_stale:
                    raise LockError(path, state, replaced)
            owner = LockOwner.current()
            writer = os.open(path, os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(writer, owner.to_bytes())
                os.fsync(writer)
            finally:
                os.close(writer)
            return Lock(path, fd, owner, replaced)
        except BaseException:
            try:
                if created and _same_file(fd, path):  # nothing left behind
                    os.unlink(path)
            finally:
                os.close(fd)
            raise


def inspect_lock(path) -> tuple[str, LockOwner | None]:
    """``(state, owner)`` of the lock file ``path``, without taking it: state is one of
    :data:`LOCK_STATES`, owner the :class:`LockOwner` the file names (None when free or
    unreadable). Writes nothing."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return "free", None
    try:
        if not _try_flock(fd):
            return "held", _owner_or_none(fd)
        return _judge(fd)
    finally:
        os.close(fd)  # lets go of the flock taken to look


def _try_flock(fd: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    there = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _owner_or_none(fd: int) -> LockOwner | None:
    try:
        return LockOwner.from_bytes(os.pread(fd, 4096, 0))
    except ValueError:
        return None


def _judge(fd: int) -> tuple[str, LockOwner | None]:
    """The state of a lock file whose ``flock`` nobody else holds (this process holds it)."""
    owner = _owner_or_none(fd)
    if owner is None:
        return "unreadable", None
    if owner.host != socket.gethostname():
        return "elsewhere", owner
    return ("held" if _running(owner) else "stale"), owner


def _running(owner: LockOwner) -> bool:
    """Whether the lock's owner still runs on this host: its pid exists, is not a zombie and,
    where ``/proc`` tells, started when the owner did (not a later process given its pid)."""
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    stat = _process_stat(owner.pid)
    if stat is None:  # no /proc: the pid is all there is to go by
        return True
    state, ticks = stat
    if state in ("Z", "X"):  # exited, not yet reaped by its parent
        return False
    return owner.ticks is None or owner.ticks == ticks


def _process_stat(pid: int) -> tuple[str, int] | None:
    """``(state, start time in clock ticks after boot)`` from ``/proc/PID/stat``, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    return fields[0], int(fields[19])
