"""jaxbp.checkpoint: bit-exact round trips, atomic replacement, mismatch errors."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxbp import checkpoint
from jaxbp.train import init_early_stop, init_state


def tree():
    state = init_state(jax.random.key(7), [3, 4, 2], optax.adam(1e-3), dtype=jnp.float32)
    extra = {
        "f64": jnp.asarray([np.pi, -0.0, np.inf], jnp.float64),
        "bf16": jnp.asarray([1.5, -2.25], jnp.bfloat16),
        "flag": jnp.asarray([True, False]),
        "keys": jax.random.split(jax.random.key(1), 3),
    }
    return (state, init_early_stop(state.params), extra)


def bits(leaf):
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    return np.asarray(leaf).tobytes(), np.asarray(leaf).dtype, np.shape(leaf)


def test_round_trip_is_bit_exact(tmp_path):
    original = tree()
    path = tmp_path / "c.npz"
    checkpoint.save(path, original, meta={"epoch": 3, "config_hash": "abc"})
    loaded, meta = checkpoint.load(path, tree())
    assert meta == {"epoch": 3, "config_hash": "abc"}
    assert jax.tree.structure(loaded) == jax.tree.structure(original)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(original), strict=True):
        assert bits(a) == bits(b)
    assert jax.dtypes.issubdtype(loaded[0].key.dtype, jax.dtypes.prng_key)
    assert checkpoint.read_meta(path)["epoch"] == 3


def test_save_replaces_atomically_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"a": np.zeros(3)}, meta={"epoch": 1})
    checkpoint.save(path, {"a": np.ones(3)}, meta={"epoch": 2})
    assert os.listdir(tmp_path) == ["c.npz"]
    loaded, meta = checkpoint.load(path, {"a": np.zeros(3)})
    assert meta["epoch"] == 2 and loaded["a"].tolist() == [1, 1, 1]


def test_a_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"a": np.zeros(3)}, meta={"epoch": 1})
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, {"a": np.ones(3)}, meta={"epoch": 2})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.npz"]  # the temporary file is cleaned up


def test_mismatched_template_names_the_leaf(tmp_path):
    path = tmp_path / "c.npz"
    state = init_state(jax.random.key(0), [3, 4, 2], optax.sgd(0.1), dtype=jnp.float32)
    checkpoint.save(path, state)
    other = init_state(jax.random.key(0), [3, 5, 2], optax.sgd(0.1), dtype=jnp.float32)
    with pytest.raises(
        checkpoint.CheckpointError, match=r"leaf \.params\[0\]\.W is float32\[4, 3\]"
    ):
        checkpoint.load(path, other)
    adam = init_state(jax.random.key(0), [3, 4, 2], optax.adam(0.1), dtype=jnp.float32)
    with pytest.raises(checkpoint.CheckpointError, match="arrays, but the run's state has"):
        checkpoint.load(path, adam)
    f64 = init_state(jax.random.key(0), [3, 4, 2], optax.sgd(0.1), dtype=jnp.float64)
    with pytest.raises(checkpoint.CheckpointError, match="float32.*expects float64"):
        checkpoint.load(path, f64)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint there"):
        checkpoint.read_meta(tmp_path / "none.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(checkpoint.CheckpointError, match="other.npz: not a jaxbp-checkpoint-1"):
        checkpoint.read_meta(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(checkpoint.CheckpointError, match="junk.npz: damaged or incomplete"):
        checkpoint.load(tmp_path / "junk.npz", {"a": np.zeros(2)})


def _damaged(tmp_path, how):
    path = tmp_path / "checkpoint.npz"
    checkpoint.save(path, tree(), meta={"epoch": 3})
    data = path.read_bytes()
    if how == "empty":
        data = b""
    elif how == "half":
        data = data[: len(data) // 2]
    elif how == "tail":
        data = data[:-10]
    else:  # a flipped byte inside the first leaf: the zip's CRC check fails
        i = data.index(b"leaf_00000") + 200
        data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
    path.write_bytes(data)
    return path


@pytest.mark.filterwarnings("error::ResourceWarning")
@pytest.mark.parametrize("how", ["empty", "half", "tail", "flipped"])
def test_truncated_or_damaged_checkpoint_is_a_checkpoint_error_naming_the_file(tmp_path, how):
    path = _damaged(tmp_path, how)
    for read in (checkpoint.read_meta, lambda p: checkpoint.load(p, tree())):
        if how == "flipped" and read is checkpoint.read_meta:
            continue  # the header is intact; only the arrays are damaged
        with pytest.raises(checkpoint.CheckpointError) as e:
            read(path)
        assert isinstance(e.value, ValueError)
        message = str(e.value)
        assert message.startswith(f"{path}: ") and "damaged or incomplete" in message
        assert "\n" not in message
