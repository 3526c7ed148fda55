"""JAX's persistent compilation cache for the command line.

A second ``jaxbp train`` (``predict``, ``evaluate``, ``verify``) of the same configuration
loads its compiled XLA programs from disk instead of compiling them again. The cache lives in
the user's cache directory — ``$JAXBP_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/jaxbp/jax``,
else ``~/.cache/jaxbp/jax`` — and is JAX's own (``jax_compilation_cache_dir``): entries are
keyed by the program, the JAX/XLA version and the device, so a stale entry is never used.
``--no-compile-cache`` (or ``JAXBP_COMPILE_CACHE=0``) turns it off for one command.

Every program is cached, however short its compilation (JAX's default keeps only those over
a second, which on a CPU leaves out most of a small network's): the cache is what removes the
fixed start-up cost that dominates short runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

OFF = ("0", "off", "false", "no")
"""Values of ``JAXBP_COMPILE_CACHE`` that turn the cache off."""


def cache_dir() -> Path:
    """Where the cache goes: ``$JAXBP_CACHE_DIR``, else the XDG cache directory's ``jaxbp/jax``."""
    if os.environ.get("JAXBP_CACHE_DIR"):
        return Path(os.environ["JAXBP_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxbp" / "jax"


def add_flag(parser) -> None:
    """Adds ``--no-compile-cache`` to a subcommand's parser."""
    parser.add_argument(
        "--no-compile-cache",
        dest="compile_cache",
        action="store_false",
        help=f"do not use the persistent compilation cache ({cache_dir()}; "
        "JAXBP_CACHE_DIR moves it, JAXBP_COMPILE_CACHE=0 turns it off)",
    )


def enable(args) -> Path | None:
    """Turns JAX's persistent compilation cache on for this process, unless ``args`` says
    ``--no-compile-cache``, ``JAXBP_COMPILE_CACHE`` turns it off, or its directory cannot be
    created or written (then the command says so on stderr and runs without it: the cache only
    saves time). Call it before anything is compiled. Returns the directory in use, or None."""
    if not getattr(args, "compile_cache", True):
        return None
    if os.environ.get("JAXBP_COMPILE_CACHE", "").strip().lower() in OFF:
        return None
    path = cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
        writable = os.access(path, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        print(f"note: compilation cache off: cannot write {path}", file=sys.stderr)
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path
