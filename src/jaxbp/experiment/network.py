"""The network a config trains, as a :class:`jaxbp.model.Model`: built from the config and the
data (:func:`build`), described in model.npz's header and rebuilt from it (:func:`describe`,
:func:`from_description`), and the image shape a cnn reads its rows as (:func:`image_shape`).

This is the one place that knows ``model = "mlp"`` from ``model = "cnn"``; the trainer, the
shadow check, the checkpoints and :func:`jaxbp.experiment.load_run` see a Model and a pytree of
parameters.
"""

from __future__ import annotations

from jaxbp.experiment.config import ConfigError


def image_shape(c, ds) -> tuple[int, int, int] | None:
    """(H, W, C) a cnn reshapes each row of ``ds`` into: the data's own image shape (digits,
    IDX files, image-shaped NPZ arrays), else a square number s² of features as s×s×1 when the
    image is at least one kernel wide (s ≥ ``kernel_size``: CSV files such as optdigits' 8×8,
    the course's 20×20 .mat; not iris's 4 features); None for an mlp.

    Raises:
      ConfigError: (field ``model``) a cnn on data that are not images, naming the count.
    """
    from jaxbp.model import square_image

    if c.model != "cnn":
        return None
    n = ds.num_features
    square = square_image(n)
    if square is not None and square[0] < c.kernel_size:
        square = None
    shape = ds.image_shape or square
    if shape is None:
        name = c.dataset or ds.name
        raise ConfigError(
            "model",
            f"cnn needs images, but {name} has {n} features per example — not an image file "
            f"(IDX, NPZ of (m, H, W[, C])) nor a square number of pixels at least "
            f"{c.kernel_size}×{c.kernel_size} ({{kernel_size}}); use {{model}} mlp",
        )
    if int(shape[0]) * int(shape[1]) * int(shape[2]) != n:
        raise ConfigError("model", f"cnn: image shape {tuple(shape)} does not hold {n} features")
    shape = tuple(int(d) for d in shape)
    if c.shift and c.shift >= min(shape[:2]):
        raise ConfigError(
            "shift",
            f"a translation of {c.shift} pixels would move the whole {shape[0]}×{shape[1]} image "
            f"out; it must be smaller than the image's height and width",
        )
    return shape


def build(c, num_features: int, num_classes: int, shape, dtype, *, source=None):
    """The :class:`~jaxbp.model.Model` of resolved config ``c`` on data of ``num_features``
    features (``shape``: :func:`image_shape`) and ``num_classes`` classes.

    Args:
      source: the MLP's gradient function (default: ``c.grad`` of :mod:`jaxbp.sources`; the
        runner passes its data-parallel wrapper); a cnn takes ``c.grad`` of
        :data:`jaxbp.sources.LAYER_SOURCES`.
    """
    from jaxbp import model as M

    if c.model == "cnn":
        return M.cnn(
            shape,
            num_classes,
            channels=c.channels,
            kernel_size=c.kernel_size,
            hidden=c.hidden,
            activation=c.activation,
            dropout=c.dropout,
            shift=c.shift,
            output=c.output,
            grad=c.grad,
            dtype=dtype,
        )
    if source is None:
        from jaxbp.train import gradient_source

        source = gradient_source(c.grad)
    sizes = (num_features, *c.hidden, num_classes)
    return M.mlp(
        sizes, activation=c.activation, output=c.output, source=source, scheme=c.init, dtype=dtype
    )


def sharded(model, mesh):
    """``model`` with its gradient's minibatch split by rows over ``mesh``'s data axis (GSPMD
    partitions the rest): the cnn's data parallelism (the MLP has
    :func:`jaxbp.distributed.data_parallel_source`)."""
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxbp.distributed.mesh import DATA_AXIS

    rows = NamedSharding(mesh, P(DATA_AXIS))
    inner = model.value_and_grad

    def value_and_grad(params, x, y, *, l2=None, key=None):
        x = jax.lax.with_sharding_constraint(x, rows)
        y = jax.lax.with_sharding_constraint(y, rows)
        return inner(params, x, y, l2=l2, key=key)

    return model._replace(value_and_grad=value_and_grad)


def describe(c, sizes, shape) -> dict:
    """What model.npz's header says about the network, enough for :func:`from_description`."""
    activation = c.activation if isinstance(c.activation, str) else list(c.activation)
    meta = {"model": c.model, "sizes": list(sizes), "activation": activation, "output": c.output}
    if c.model == "cnn":
        meta.update(
            image_shape=list(shape), channels=list(c.channels), kernel_size=c.kernel_size,
            hidden=list(c.hidden), dropout=c.dropout, shift=c.shift,
        )  # fmt: skip
    return meta


def from_description(meta: dict, dtype):
    """The :class:`~jaxbp.model.Model` a model.npz header describes (:func:`describe`; files
    without a ``model`` key are MLPs), with its default gradient source."""
    from jaxbp import model as M

    activation = meta["activation"]
    activation = activation if isinstance(activation, str) else tuple(activation)
    if meta.get("model", "mlp") == "cnn":
        return M.cnn(
            meta["image_shape"],
            int(meta["sizes"][-1]),
            channels=meta["channels"],
            kernel_size=meta["kernel_size"],
            hidden=meta["hidden"],
            activation=activation,
            dropout=meta.get("dropout", 0.0),
            shift=meta.get("shift", 0),
            output=meta["output"],
            dtype=dtype,
        )
    return M.mlp(meta["sizes"], activation=activation, output=meta["output"], dtype=dtype)


def params_template(model, seeds: int):
    """Zeros shaped like ``model``'s parameters with a leading axis of ``seeds`` (NumPy): the
    template :func:`jaxbp.checkpoint.load` reads a file into."""
    import jax
    import numpy as np

    shapes = jax.eval_shape(model.init, jax.random.key(0))
    return jax.tree.map(lambda s: np.zeros((seeds, *s.shape), s.dtype), shapes)
