"""Starting a run from weights (``init_from``): the parameters of a run directory, a checkpoint,
a model file, or the course's MATLAB file of Θ matrices.

:func:`read_params` reads any of them into one form — a tuple of ``Layer(W, b)`` with a leading
seed axis — and :func:`initial_params` matches them to the network a config trains, so that
:func:`jaxbp.experiment.run` can put them where :func:`jaxbp.params.init_params` would have
put random ones. The optimizer state is *not* carried over: a run started from weights is a new
run (its own learning rate, schedule and optimizer), which is what restarting after a divergence
with other settings needs; ``resume`` is the way to continue a run unchanged.

Sources, by what ``path`` is:

- a run directory: its ``model.npz`` (the final parameters of a finished run), else its
  ``best.npz``, else its ``checkpoint.npz`` (a run that stopped);
- ``model.npz``: the parameters of every seed;
- ``checkpoint.npz`` / ``best.npz``: the parameters inside the saved training state (its first
  leaves; the optimizer's part is ignored, so any optimizer's checkpoint will do);
- for a cnn (``model = "cnn"``, :func:`initial_tree`): a cnn run's directory, ``model.npz``,
  ``checkpoint.npz`` or ``best.npz``, whose parameters must have this run's shapes; a ``.mat``
  (an MLP's Θ matrices) is refused;
- ``.mat``: ``Theta1``, ``Theta2``, … — each Θ^(l) of shape (n_out, n_in + 1), bias column first,
  as the course's ``ex4weights.mat``. With 10 outputs the course's unit k means label k, and
  label 10 the digit 0 (Octave's 1-based indexing); jaxbp's class c is the digit c (as
  :func:`jaxbp.data.load_mat` reads the course's ``y``), so the output rows are rotated to that
  order: row 10 becomes the first.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxbp.experiment.config import ConfigError

_THETA = re.compile(r"^Theta(\d+)$")


class Weights(NamedTuple):
    """Parameters read by :func:`read_params`.

    Attributes:
      params: tuple of ``Layer(W (S, n_out, n_in), b (S, n_out))`` — S seeds (1 for a ``.mat``).
      sizes: the layer widths (n_1, …, n_L).
      seeds: the training seeds of the S copies, or None (a ``.mat``).
      source: the file actually read (for a directory, the file chosen in it).
    """

    params: tuple
    sizes: tuple[int, ...]
    seeds: tuple[int, ...] | None
    source: Path


def _error(reason: str) -> ConfigError:
    return ConfigError("init_from", reason)


def _file_in(run_dir: Path) -> Path:
    from jaxbp.experiment.plan import BEST, CHECKPOINT, MODEL

    for name in (MODEL, BEST, CHECKPOINT):
        if (run_dir / name).is_file():
            return run_dir / name
    raise _error(f"{run_dir} holds no {MODEL}, {BEST} or {CHECKPOINT}; not a run directory")


def _layers_from_leaves(leaves, path: Path):
    """The parameters at the head of a state's leaves: W (S, o, i), b (S, o) pairs that chain."""
    from jaxbp.params import Layer

    layers = []
    for i in range(0, len(leaves) - 1, 2):
        W, b = leaves[i], leaves[i + 1]
        if W.ndim != 3 or b.ndim != 2 or W.shape[:2] != b.shape or W.dtype.kind != "f":
            break
        if layers and W.shape[2] != layers[-1].W.shape[1]:
            break
        layers.append(Layer(W, b))
    if not layers:
        raise _error(f"{path}: its arrays do not start with a network's parameters")
    return tuple(layers)


def _read_mat(path: Path) -> Weights:
    import scipy.io

    from jaxbp.params import Layer

    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:  # MatReadError, ValueError … on junk
        raise _error(
            f"{path}: not a MATLAB .mat file, or a damaged one ({type(e).__name__})"
        ) from None
    found = {int(m[1]): k for k in mat if (m := _THETA.match(k))}
    if not found:
        names = sorted(k for k in mat if not k.startswith("__"))
        raise _error(f"{path}: no Theta1, Theta2, …; found {', '.join(names) or 'nothing'}")
    if sorted(found) != list(range(1, len(found) + 1)):
        raise _error(f"{path}: Θ matrices {sorted(found)} are not numbered 1 … {len(found)}")
    layers = []
    for n in range(1, len(found) + 1):
        theta = np.asarray(mat[found[n]])
        if theta.ndim != 2 or theta.shape[1] < 2 or theta.dtype.kind not in "iuf":
            raise _error(
                f"{path}: Theta{n} must be a numeric (n_out, n_in + 1) matrix, got "
                f"{theta.dtype} of shape {theta.shape}"
            )
        if layers and theta.shape[1] - 1 != layers[-1].W.shape[0]:
            raise _error(
                f"{path}: Theta{n} has shape {theta.shape}, so it expects "
                f"{theta.shape[1] - 1} inputs, but Theta{n - 1} outputs {layers[-1].W.shape[0]}"
            )
        theta = theta.astype(np.float64)
        layers.append(Layer(theta[:, 1:], theta[:, 0]))
    if layers[-1].W.shape[0] == 10:  # the course's output unit 10 is the digit 0
        last = layers[-1]
        layers[-1] = Layer(np.roll(last.W, 1, axis=0), np.roll(last.b, 1))
    sizes = (layers[0].W.shape[1], *(layer.W.shape[0] for layer in layers))
    return Weights(tuple(Layer(L.W[None], L.b[None]) for L in layers), sizes, None, path)


def read_params(path) -> Weights:
    """The parameters stored at ``path`` (see the module docstring for what it may be).

    Raises:
      ConfigError: (field ``init_from``) a missing path, an unreadable or damaged file, or a
        file that holds no network parameters, naming the file.
    """
    from jaxbp import checkpoint
    from jaxbp.experiment.plan import MODEL_FORMAT

    path = Path(path).expanduser()
    if path.is_dir():
        path = _file_in(path)
    elif not path.exists():
        raise _error(f"{path}: no such file or run directory")
    if path.suffix.lower() == ".mat":
        return _read_mat(path)
    try:
        leaves, meta = checkpoint.load_leaves(path)
    except checkpoint.CheckpointError as e:
        raise _error(str(e)) from None
    if meta.get("format") == MODEL_FORMAT:  # model.npz: {mean, params, scale} in key order
        leaves = leaves[1:-1]
    layers = _layers_from_leaves(leaves, path)
    sizes = (layers[0].W.shape[2], *(layer.W.shape[1] for layer in layers))
    seeds = meta.get("seeds")
    if not isinstance(seeds, list) or len(seeds) != layers[0].W.shape[0]:
        seeds = None
    return Weights(layers, sizes, None if seeds is None else tuple(seeds), path)


def initial_params(path, sizes, seeds, dtype) -> tuple[tuple, str]:
    """The starting parameters of a run training ``sizes`` with ``seeds``, from ``path``.

    Each seed starts from the copy trained with the same seed when the source has one per
    seed (in the run's order), else from the source's only copy.

    Args:
      path: see :func:`read_params`.
      sizes: the run's layer widths, input first.
      seeds: the run's training seeds.
      dtype: the run's parameter dtype.

    Returns:
      ``(params, fingerprint)``: ``Layer`` leaves with a leading axis of ``len(seeds)`` in
      ``dtype`` (NumPy), and the SHA-256 of their bytes (part of the run's config hash).

    Raises:
      ConfigError: (field ``init_from``) see :func:`read_params`; a network of other widths;
        a source with several seeds that are not the run's.
    """
    from jaxbp.params import Layer

    w = read_params(path)
    if tuple(w.sizes) != tuple(sizes):
        raise _error(
            f"{w.source} holds a {'-'.join(map(str, w.sizes))} network; this run trains "
            f"{'-'.join(map(str, sizes))} (features, {{hidden}}, classes)"
        )
    n = w.params[0].W.shape[0]
    if n == 1:
        index = [0] * len(seeds)
    elif w.seeds is not None and all(s in w.seeds for s in seeds):
        index = [w.seeds.index(s) for s in seeds]
    else:
        have = list(w.seeds) if w.seeds is not None else f"{n} copies"
        raise _error(
            f"{w.source} holds the parameters of seeds {have}; this run trains seeds "
            f"{list(seeds)} ({{seeds}}: use seeds it holds, or start from a one-seed run)"
        )
    params = tuple(
        Layer(np.asarray(L.W[index], dtype), np.asarray(L.b[index], dtype)) for L in w.params
    )
    h = hashlib.sha256()
    for leaf in (a for layer in params for a in layer):
        h.update(np.ascontiguousarray(leaf).tobytes())
    return params, h.hexdigest()


def initial_tree(c, ds, shape) -> tuple:
    """The starting parameters of a cnn run (resolved config ``c`` on ``ds``, images of
    ``shape``) from ``c.init_from``: any pytree of parameters shaped as this run's, with a
    leading seed axis as in :func:`initial_params`.

    Returns:
      ``(params, fingerprint)`` as :func:`initial_params`.

    Raises:
      ConfigError: (field ``init_from``) a missing or unreadable file, a ``.mat``, an MLP's
        file, parameters of other shapes, seeds that are not the run's.
    """
    import jax

    from jaxbp import checkpoint
    from jaxbp.experiment.network import build, params_template
    from jaxbp.experiment.plan import MODEL_FORMAT

    path = Path(c.init_from).expanduser()
    if path.is_dir():
        path = _file_in(path)
    elif not path.exists():
        raise _error(f"{path}: no such file or run directory")
    if path.suffix.lower() == ".mat":
        raise _error(
            f"{path}: a .mat file holds an MLP's Θ matrices; {{model}} cnn starts from a cnn "
            "run directory or its model/checkpoint .npz"
        )
    try:
        leaves, meta = checkpoint.load_leaves(path)
    except checkpoint.CheckpointError as e:
        raise _error(str(e)) from None
    if meta.get("format") == MODEL_FORMAT:
        if meta.get("model", "mlp") != "cnn":
            raise _error(f"{path} holds an mlp; this run trains {{model}} cnn")
        leaves = leaves[1:-1]  # {mean, params, scale} in key order
    dtype = np.dtype(c.dtype)
    model = build(c, ds.num_features, ds.num_classes, shape, dtype)
    want, treedef = jax.tree.flatten(params_template(model, 1))
    got = leaves[: len(want)]
    n = got[0].shape[0] if got and got[0].ndim else 0
    for i, w in enumerate(want):
        a = got[i] if i < len(got) else None
        if a is None or a.ndim != w.ndim or a.shape[1:] != w.shape[1:] or a.shape[0] != n:
            have = "nothing" if a is None else f"{a.dtype}{list(a.shape)}"
            raise _error(
                f"{path} does not hold this run's cnn ({model.name}): parameter {i} is {have}, "
                f"the run expects [seeds, {', '.join(map(str, w.shape[1:]))}] "
                "({channels}, {kernel_size}, {hidden} and the images must match)"
            )
        if a.dtype.kind != "f":
            raise _error(f"{path}: parameter {i} has dtype {a.dtype}, not a float")
    seeds = meta.get("seeds")
    seeds = tuple(seeds) if isinstance(seeds, list) and len(seeds) == n else None
    if n == 1:
        index = [0] * len(c.seeds)
    elif seeds is not None and all(s in seeds for s in c.seeds):
        index = [seeds.index(s) for s in c.seeds]
    else:
        have = list(seeds) if seeds is not None else f"{n} copies"
        raise _error(
            f"{path} holds the parameters of seeds {have}; this run trains seeds "
            f"{list(c.seeds)} ({{seeds}}: use seeds it holds, or start from a one-seed run)"
        )
    arrays = [np.asarray(a[index], dtype) for a in got]
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return jax.tree.unflatten(treedef, arrays), h.hexdigest()
