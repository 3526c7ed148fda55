"""Atomic checkpoints of a pytree of arrays with a JSON header.

A checkpoint is one ``.npz`` file: every leaf of the tree as raw bytes (so any dtype — float32,
float64, bfloat16, int32, bool, PRNG key data — round-trips bit for bit), and ``__meta__``, a JSON
document with each leaf's dtype and shape plus whatever the caller adds (epoch, config and its
hash). Writing is atomic (:func:`jaxbp.files.write_atomic`): a crash at any moment leaves either
the old checkpoint or the new one, never a torn file.

Loading needs a *template* tree of the same structure (e.g. a freshly initialised state): the
leaves are checked against it (count, shape, dtype) and put back into its structure. Typed PRNG
keys are stored as their key data and re-wrapped with the template's key implementation.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import jax
import numpy as np

from jaxbp.files import write_atomic

FORMAT = "jaxbp-checkpoint-1"
"""Format tag in every header; a file without it is not a jaxbp checkpoint."""


class CheckpointError(ValueError):
    """A missing, unreadable or mismatched checkpoint; the message names the file."""


def _check_path(path) -> Path:
    """``path`` as a ``Path``; CheckpointError naming the argument when it is not a path."""
    if not isinstance(path, (str, os.PathLike)):
        raise CheckpointError(
            f"path: expected a checkpoint file's path (str or os.PathLike), got "
            f"{type(path).__name__} {path!r:.100}"
        )
    return Path(path)


def _is_key(leaf) -> bool:
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def save(path, tree, *, meta: dict | None = None) -> None:
    """Writes ``tree`` to ``path`` atomically (temporary file, fsync, ``os.replace``).

    Args:
      path: the checkpoint file; its directory must exist.
      tree: a pytree of arrays (JAX or NumPy; typed PRNG keys allowed).
      meta: JSON-serialisable information stored in the header.

    Raises:
      CheckpointError: ``path`` not a path; ``meta`` not a dict that JSON can hold; a leaf that
        is not an array of numbers, booleans or PRNG keys (strings, Python objects — whose bytes
        would be pointers), naming the leaf. Nothing is written then.
      OSError: the file cannot be written (see :func:`jaxbp.files.write_atomic`).
    """
    path = _check_path(path)
    if meta is not None and not isinstance(meta, dict):
        raise CheckpointError(f"meta: expected a dict or None, got {type(meta).__name__}")
    try:
        json.dumps(meta or {})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"meta: not JSON-serialisable ({e})") from None
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    leaves = [leaf for _, leaf in flat]
    is_key = [_is_key(leaf) for leaf in leaves]
    for (keypath, leaf), key in zip(flat, is_key, strict=True):
        if key:
            continue
        dtype = getattr(leaf, "dtype", None)
        dtype = np.dtype(dtype) if dtype is not None else np.asarray(leaf).dtype
        if not (dtype.kind in "biufc" or jax.numpy.issubdtype(dtype, jax.numpy.number)):
            raise CheckpointError(
                f"tree: leaf {jax.tree_util.keystr(keypath) or '(root)'} is "
                f"{type(leaf).__name__} of dtype {dtype}; a checkpoint holds arrays of numbers, "
                "booleans or PRNG keys"
            )
    # One transfer for the whole tree (keys as their key data), not one per leaf.
    host = jax.device_get(
        [jax.random.key_data(x) if k else x for x, k in zip(leaves, is_key, strict=True)]
    )
    arrays = {}
    specs = []
    for i, (leaf, key) in enumerate(zip(host, is_key, strict=True)):
        leaf = np.asarray(leaf)
        arrays[f"leaf_{i:05d}"] = np.frombuffer(leaf.tobytes(order="C"), dtype=np.uint8)
        specs.append({"dtype": leaf.dtype.name, "shape": list(leaf.shape), "key": key})
    header = {"format": FORMAT, "leaves": specs, "meta": meta or {}}
    buffer = io.BytesIO()
    np.savez(buffer, __meta__=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)
    write_atomic(path, buffer.getvalue())


def read_meta(path) -> dict:
    """The caller's ``meta`` of a checkpoint, without loading its arrays.

    Raises:
      CheckpointError: ``path`` not a path; missing or not a jaxbp checkpoint.
    """
    return _read(path)[0]["meta"]


def _read(path):
    path = _check_path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file — a damaged or incomplete checkpoint")
    try:  # our own handle: np.load leaks its file when the archive is damaged
        with open(path, "rb") as f:
            archive = np.load(f, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile) or "__meta__" not in archive.files:
                raise CheckpointError(f"{path}: not a {FORMAT} file")
            header = json.loads(archive["__meta__"].tobytes().decode())
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                raise CheckpointError(f"{path}: not a {FORMAT} file")
            raw = [archive[f"leaf_{i:05d}"] for i in range(len(header["leaves"]))]
    except CheckpointError:
        raise
    except Exception as e:  # zipfile.BadZipFile (truncated), EOFError, CRC/zlib errors, KeyError …
        raise CheckpointError(
            f"{path}: damaged or incomplete checkpoint, cannot be read ({type(e).__name__}: {e})"
        ) from None
    return header, raw


def load(path, template):
    """Reads a checkpoint into the structure of ``template``.

    Args:
      path: a file written by :func:`save`.
      template: a pytree with the same structure, shapes and dtypes (its values are unused).

    Returns:
      ``(tree, meta)``: NumPy leaves (PRNG keys as JAX typed keys) and the caller's ``meta``.

    Raises:
      CheckpointError: ``path`` not a path, missing file, not a checkpoint, or leaves that do
        not match the template (naming the first mismatching leaf).
    """
    header, raw = _read(path)
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    specs = header["leaves"]
    if len(specs) != len(flat):
        raise CheckpointError(
            f"{path}: {len(specs)} arrays, but the run's state has {len(flat)}; "
            "the checkpoint belongs to a different model or optimizer"
        )
    leaves = []
    for (keypath, want), spec, data in zip(flat, specs, raw, strict=True):
        name = jax.tree_util.keystr(keypath)
        expected = _to_host_spec(want)
        got = (spec["dtype"], tuple(spec["shape"]))
        if got != expected:
            raise CheckpointError(
                f"{path}: leaf {name} is {got[0]}{list(got[1])}, the run expects "
                f"{expected[0]}{list(expected[1])}"
            )
        dtype = jax.numpy.dtype(spec["dtype"])
        if data.size != dtype.itemsize * int(np.prod(spec["shape"], dtype=np.int64)):
            raise CheckpointError(
                f"{path}: damaged or incomplete checkpoint — leaf {name} has {data.size} bytes, "
                f"its header says {got[0]}{list(got[1])}"
            )
        array = np.frombuffer(data.tobytes(), dtype=dtype)
        array = array.reshape(spec["shape"]).copy()
        if spec["key"]:
            array = jax.random.wrap_key_data(array, impl=jax.random.key_impl(want))
        leaves.append(array)
    return jax.tree_util.tree_unflatten(treedef, leaves), header["meta"]


def load_leaves(path) -> tuple[list[np.ndarray], dict]:
    """Every array of a checkpoint in tree order, without a template — for reading part of
    someone else's state (the parameters of a run trained with another optimizer).

    Returns:
      ``(leaves, meta)``: NumPy arrays with their stored dtype and shape (PRNG keys as their
      key data) and the caller's ``meta``.

    Raises:
      CheckpointError: ``path`` not a path; missing, not a checkpoint, or damaged (an array of
        the wrong size).
    """
    header, raw = _read(path)
    leaves = []
    for i, (spec, data) in enumerate(zip(header["leaves"], raw, strict=True)):
        dtype = jax.numpy.dtype(spec["dtype"])
        if data.size != dtype.itemsize * int(np.prod(spec["shape"], dtype=np.int64)):
            raise CheckpointError(
                f"{path}: damaged or incomplete checkpoint — array {i} has {data.size} bytes, "
                f"its header says {spec['dtype']}{list(spec['shape'])}"
            )
        leaves.append(np.frombuffer(data.tobytes(), dtype=dtype).reshape(spec["shape"]).copy())
    return leaves, header["meta"]


def _to_host_spec(leaf) -> tuple[str, tuple[int, ...]]:
    if _is_key(leaf):
        data = jax.eval_shape(jax.random.key_data, leaf)
        return np.dtype(data.dtype).name, tuple(data.shape)
    dtype = getattr(leaf, "dtype", None)  # a Python number: the dtype save gave it
    return np.dtype(dtype if dtype is not None else np.asarray(leaf).dtype).name, np.shape(leaf)
