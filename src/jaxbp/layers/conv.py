"""2-D convolution (NHWC data, HWIO kernel) with its hand-derived backward, as XLA convolutions
or as a dense layer on the image's patches (im2col).

Notation of docs/derivation.md § L: a the layer's input, z its output, δ = ∂E/∂z the error from
above; (i, j) an output position, (p, q) an offset in the kernel, s the stride, P the padding
in front; ⋆ is cross-correlation, ∗ convolution, rot180 flips a kernel in both spatial axes.

- L7  forward (the lecture's z = Σ W a + b, the weights shared by every position)::

        z[n, i, j, o] = b[o] + Σ_{p, q, c} W[p, q, c, o] · a[n, s·i + p − P, s·j + q − P, c]

      i.e. z = (a ⋆ W) + b, a strided *correlation* (``jax.lax.conv_general_dilated``).

Backward (docs/derivation.md, eqs. L7–L9; step by step in docs/conv_backward.md). A weight
touches every output position, so its gradient sums over them (the dense layer's
Δ = Σ δ aᵀ, accumulated over positions as well as examples):

- L8  ∂E/∂W[p, q, c, o] = Σ_{n, i, j} δ[n, i, j, o] · a[n, s·i + p − P, s·j + q − P, c]
      = (a ⋆ δ_s)[p, q] — the lecture's ∂E/∂W = Σ δ ⋆ a: the padded input correlated with δ
      dilated by the stride (δ_s, ``rhs_dilation=strides``), the batch n playing the
      contracted channel; ∂E/∂b[o] = Σ_{n, i, j} δ[n, i, j, o];
- L9  ∂E/∂a[n, u, v, c] = Σ_{i, j, o} δ[n, i, j, o] · W[u + P − s·i, v + P − s·j, c, o]
      over the (i, j) whose kernel offset lies in 0 … k − 1 — a true convolution δ_s ∗ W
      (W's index runs backwards), computed as the correlation pad(δ_s) ⋆ rot180(W): the
      lecture's ∂E/∂a = δ ∗ rot180(W), its ∗ read as the libraries' "convolution" (a
      correlation) in *full* mode. δ_s is δ with s − 1 zeros between its entries
      (``lhs_dilation=strides``), padded with k − 1 zeros on each side; the kernel is flipped
      in both spatial axes and its in/out channels swapped; then the forward's padding (lo, hi)
      comes off again — less the r rows no window reached (below), which get zeros.

Padding ("VALID" or "SAME", as ``jax.lax`` / TensorFlow): along an axis of size H with kernel
k and stride s, SAME gives ⌈H/s⌉ outputs with total = max((⌈H/s⌉ − 1)·s + k − H, 0) zeros,
lo = P = ⌊total/2⌋ on the top/left and the extra one on the bottom/right; VALID gives
⌊(H − k)/s⌋ + 1 outputs and no padding. When the stride does not divide H + lo + hi − k, the
last r = (H + lo + hi − k) mod s rows of the padded input are read by no window: their ∂E/∂a is
zero, and the dW correlation stops short of them (a high pad of hi − r, negative when r > hi).

The same three equations as a dense layer on patches (``algorithm="im2col"``). Gather every
window of the padded input a_P into a row of the patch matrix,
X[(n, i, j), (p, q, c)] = a_P[n, s·i + p, s·j + q, c] (m·H_o·W_o rows of kh·kw·C_in), and
reshape W to the matrix Θ[(p, q, c), o]. Then

- L7  z = X Θ + b — the lecture's z = Θ a, one row per output position;
- L8  ∂E/∂Θ = Xᵀ δ — the dense layer's Δ = Σ δ aᵀ over rows, i.e. over examples *and*
      positions; ∂E/∂b = Σ δ;
- L9  ∂E/∂X = δ Θᵀ — the dense layer's Θᵀ δ, one row per window; then col2im: an input entry
      read by several windows gets the sum of their entries of ∂E/∂X (the transpose of the
      gather: each kernel offset's block shifted back to where it was read, s − 1 zeros
      between its rows and columns, and added up), and the padding comes off. Rows no window
      read get nothing, so the stride's unreached rows come out zero here too.

It computes exactly L7–L9 (the rounding differs), on more memory — kh·kw copies of the input.
:func:`im2col_is_faster` is the rule ``algorithm="auto"`` applies, measured on XLA:CPU
(docs/benchmarks.md, "cnn: im2col"): XLA:CPU's convolution is slow when the output is no larger
than the kernel (digits' second LeNet block: 4×4 outputs, a 5×5 kernel), where the GEMM on
patches makes the layer's forward + backward 12× faster; on larger images with several input
channels the convolution wins.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from jaxbp.layers import init as init_lib
from jaxbp.layers.base import (
    Layer,
    check_array,
    check_dy,
    check_params,
    check_shape,
    pair,
    positive_int,
    register,
    shape_text,
)

PADDINGS = ("VALID", "SAME")
ALGORITHMS = ("auto", "conv", "im2col")
DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def check_padding(padding, layer: str) -> str:
    """``padding`` as ``"VALID"`` or ``"SAME"`` (either case), else ``ValueError`` naming it."""
    if not isinstance(padding, str) or padding.upper() not in PADDINGS:
        raise ValueError(f"{layer}: padding must be 'VALID' or 'SAME', got {padding!r}")
    return padding.upper()


def axis_pads(size: int, k: int, s: int, padding: str) -> tuple[int, int]:
    """(lo, hi) zeros padded on one spatial axis: none for VALID; SAME as ``jax.lax``."""
    if padding == "VALID":
        return 0, 0
    out = -(-size // s)  # ⌈size / s⌉
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def window_geometry(spatial, window, strides, padding: str, layer: str, what: str, given: str):
    """Pads and output size per spatial axis: ``(((lo, hi), …), (H_out, …))``.

    Raises:
      ValueError: a VALID window larger than the input, naming ``what`` (the window's argument)
        and ``given`` (the input, e.g. ``x of shape (2, 4, 8, 1)``).
    """
    pads, out = [], []
    for size, k, s in zip(spatial, window, strides, strict=True):
        if padding == "VALID" and k > size:
            raise ValueError(
                f"{layer}: {what} {tuple(window)} is larger than the VALID input's spatial "
                f"shape {tuple(spatial)}, got {given}"
            )
        lo, hi = axis_pads(size, k, s, padding)
        pads.append((lo, hi))
        out.append((size + lo + hi - k) // s + 1)
    return tuple(pads), tuple(out)


def unreached(size: int, k: int, s: int, pad: tuple[int, int]) -> int:
    """r: rows at the end of the padded axis that no window reads (the stride's remainder)."""
    return (size + pad[0] + pad[1] - k) % s


def im2col_is_faster(out_spatial, kernel) -> bool:
    """``algorithm="auto"``'s rule: im2col when the output has no more positions than the kernel
    has taps (H_o·W_o ≤ kh·kw), XLA convolutions otherwise.

    Measured on XLA:CPU (2 cores), one forward + hand-derived backward of the layer, ms
    (``benchmarks/conv_algorithms.py``, docs/benchmarks.md, "cnn: im2col"): digits' second LeNet
    block (4×4 outputs, 5×5 kernel, 32 → 64 channels, m = 64) 26.6 as convolutions, 2.3 as
    im2col. With 14×14 outputs and 6 or 16 input channels (MNIST's second blocks) the
    convolutions are 1.4–2× faster. The first blocks (one input channel) are 1.4–2.1× faster as
    im2col alone, yet in a training step, where the first layer's input gradient is dead code,
    im2col there made ``jaxbp bench``'s ``cnn`` step 12 % slower (33.7 → 37.9 ms,
    ``benchmarks/conv_im2col_first.py``): the rule leaves them to the convolution.

    Example:
      >>> im2col_is_faster((4, 4), (5, 5)), im2col_is_faster((8, 8), (5, 5))
      (True, False)
    """
    return out_spatial[0] * out_spatial[1] <= kernel[0] * kernel[1]


def patches(a_padded, kernel, strides, out_spatial):
    """The im2col patch tensor X[n, i, j, p·kw + q, c] = a_P[n, s_h·i + p, s_w·j + q, c]: one
    strided slice of the padded input per kernel offset (p, q), stacked on axis 3."""
    (kh, kw), (sh, sw), (Ho, Wo) = kernel, strides, out_spatial
    return jnp.stack(
        [
            a_padded[:, p : p + sh * (Ho - 1) + 1 : sh, q : q + sw * (Wo - 1) + 1 : sw, :]
            for p in range(kh)
            for q in range(kw)
        ],
        axis=3,
    )


def col2im(d_patches, kernel, strides, padded_spatial):
    """The transpose of :func:`patches`: each offset's block of ∂E/∂X placed back where it was
    read (``lax.pad`` with p zeros in front and s − 1 between entries) and the blocks summed,
    giving ∂E/∂a_P on the padded input's (H_P, W_P)."""
    (kh, kw), (sh, sw), (Hp, Wp) = kernel, strides, padded_spatial
    Ho, Wo = d_patches.shape[1:3]
    zero = jnp.zeros((), d_patches.dtype)
    total = None
    for p in range(kh):
        for q in range(kw):
            block = lax.pad(
                d_patches[:, :, :, p * kw + q, :],
                zero,
                [
                    (0, 0, 0),
                    (p, Hp - p - (sh * (Ho - 1) + 1), sh - 1),
                    (q, Wp - q - (sw * (Wo - 1) + 1), sw - 1),
                    (0, 0, 0),
                ],
            )
            total = block if total is None else total + block
    return total


@register("Conv2D")
def Conv2D(
    features: int,
    kernel_size,
    strides=1,
    padding: str = "VALID",
    *,
    scheme: str = "he",
    algorithm: str = "auto",
    dtype=jnp.float32,
) -> Layer:
    """A 2-D convolution of ``features`` output channels, NHWC in and out (eqs. L7–L9).

    Parameters ``{"W": (kh, kw, C_in, features), "b": (features,)}``. With ``algorithm="conv"``
    the forward pass is ``jax.lax.conv_general_dilated`` plus b, the backward pass the two
    convolutions and the sum of the module docstring; with ``"im2col"`` the same equations as a
    dense layer on the patch matrix (module docstring). Either way no ``jax.grad``/``jax.vjp``
    and no loop over positions.

    Args:
      features: output channels.
      kernel_size: an int or a pair (kh, kw).
      strides: an int or a pair (sh, sw).
      padding: ``"VALID"`` or ``"SAME"`` (as ``jax.lax``: ⌈H/s⌉ outputs, the extra zero on the
        bottom/right).
      scheme: weight initialisation, ``he`` or ``glorot`` with fan-in kh·kw·C_in and fan-out
        kh·kw·features (biases start at zero).
      algorithm: ``"conv"`` (XLA convolutions), ``"im2col"`` (patches × GEMM) or ``"auto"``:
        per input shape, :func:`im2col_is_faster`'s rule. Forward and backward always take the
        same one (the backward decides from the cached input's shape).
      dtype: the parameters' dtype.

    Raises:
      ValueError: naming the argument — a non-positive size, a bad padding string, scheme or
        algorithm; from ``init``, an ``in_shape`` that is not (H, W, C) or smaller than a VALID
        kernel; from ``forward``, an ``x`` that is not (m, H, W, C_in) with the C_in of
        ``params['W']``, or ``params`` of the wrong shapes; from ``backward``, a ``dy`` of
        another shape than forward's output (:mod:`jaxbp.layers.base`, "Inputs are checked").

    Example:
      >>> layer = Conv2D(4, 3, strides=2, padding="SAME")
      >>> params, out_shape = layer.init(jax.random.key(0), (9, 9, 3))   # out_shape (5, 5, 4)
    """
    name = "Conv2D"
    positive_int(features, "features", name)
    kh, kw = pair(kernel_size, "kernel_size", name)
    sh, sw = pair(strides, "strides", name)
    padding = check_padding(padding, name)
    init_lib.check_scheme(scheme, name)
    if algorithm not in ALGORITHMS:
        raise ValueError(
            f"{name}: algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}"
        )

    stride_text = "" if (sh, sw) == (1, 1) else f", strides={(sh, sw)}"
    algorithm_text = "" if algorithm == "auto" else f", {algorithm}"
    name = f"{name}({features}, {(kh, kw)}{stride_text}, {padding}{algorithm_text})"

    def geometry(shape, given):
        spatial = shape[-3:-1]
        return window_geometry(spatial, (kh, kw), (sh, sw), padding, name, "kernel_size", given)

    def check(params):
        """C_in, after checking the parameters' shapes."""
        check_params(params, {"W": (kh, kw, "C_in", features), "b": (features,)}, name)
        return params["W"].shape[2]

    def use_im2col(out_spatial) -> bool:
        if algorithm == "auto":
            return im2col_is_faster(out_spatial, (kh, kw))
        return algorithm == "im2col"

    def pad(a, pads):
        return jnp.pad(a, ((0, 0), *pads, (0, 0)))

    def init(key, in_shape):
        H, W_, C = check_shape(in_shape, 3, name)
        _, (Ho, Wo) = geometry((H, W_, C), f"in_shape {(H, W_, C)}")
        fan_in, fan_out = kh * kw * C, kh * kw * features
        W = init_lib.weight(key, (kh, kw, C, features), fan_in, fan_out, scheme, dtype)
        return {"W": W, "b": jnp.zeros((features,), dtype)}, (Ho, Wo, features)

    def forward(params, x, *, key=None, train=False):
        del key, train
        c_in = check(params)
        note = f"C_in = {c_in}, from params['W'] of shape {shape_text(params['W'].shape)}"
        check_array(x, "x", ("m", "H", "W", c_in), name, note)
        pads, out_spatial = geometry(x.shape, f"x of shape {shape_text(x.shape)}")
        # lax convolutions need one dtype; promote as Dense's x @ Θᵀ does (float32 weights on
        # float64 data give float64), and hand each gradient back in its own leaf's dtype.
        dtype = jnp.result_type(x, params["W"])
        if use_im2col(out_spatial):
            # L7 as z = X Θ + b: the patch matrix times the kernel as a (kh·kw·C_in, C_out)
            # matrix (HWIO's row order p, q, c is the patches' axis order).
            X = patches(pad(x.astype(dtype), pads), (kh, kw), (sh, sw), out_spatial)
            rows = X.shape[0] * out_spatial[0] * out_spatial[1]
            z = (X.reshape(rows, -1) @ params["W"].astype(dtype).reshape(-1, features)).reshape(
                *X.shape[:3], features
            )
            return z + params["b"], x
        z = lax.conv_general_dilated(
            x.astype(dtype),
            params["W"].astype(dtype),
            (sh, sw),
            pads,
            dimension_numbers=DIMENSION_NUMBERS,
        )
        return z + params["b"], x

    def backward(params, cache, dy):
        check(params)
        pads, out_spatial = geometry(
            cache.shape, f"the cached x of shape {shape_text(cache.shape)}"
        )
        check_dy(dy, (cache.shape[0], *out_spatial, features), name)
        dtype = jnp.result_type(cache, params["W"], dy)
        a, delta, W = cache.astype(dtype), dy.astype(dtype), params["W"].astype(dtype)
        spatial = a.shape[1:3]
        if use_im2col(out_spatial):
            return backward_im2col(params, a, delta, W, pads, out_spatial, cache.dtype)
        r = [
            unreached(n, k, s, p)
            for n, k, s, p in zip(spatial, (kh, kw), (sh, sw), pads, strict=True)
        ]
        # L8: ∂E/∂W = Σ δ ⋆ a. Correlate a (batch axis as the contracted channel, C_in as the
        # "batch") with δ dilated by the stride (its batch axis as the kernel's input channel);
        # the output's "batch" is C_in, its features C_out, its spatial extent kh × kw.
        dW = lax.conv_general_dilated(
            a,
            delta,
            window_strides=(1, 1),
            padding=[(lo, hi - ri) for (lo, hi), ri in zip(pads, r, strict=True)],
            rhs_dilation=(sh, sw),
            dimension_numbers=("CHWN", "IHWO", "HWNC"),
        )
        # L8: ∂E/∂b = Σ δ over examples and positions.
        db = jnp.sum(delta, axis=(0, 1, 2))
        # L9: ∂E/∂a = pad(δ_s) ⋆ rot180(W): δ dilated by the stride, padded by k − 1 each side
        # (less the forward's padding, plus the r unreached rows), correlated with the flipped
        # kernel, in/out channels swapped (spec HWOI: its O axis, C_out, meets δ's channels).
        W_flipped = W[::-1, ::-1]
        dx = lax.conv_general_dilated(
            delta,
            W_flipped,
            window_strides=(1, 1),
            padding=[
                (k - 1 - lo, k - 1 - hi + ri)
                for k, (lo, hi), ri in zip((kh, kw), pads, r, strict=True)
            ],
            lhs_dilation=(sh, sw),
            dimension_numbers=("NHWC", "HWOI", "NHWC"),
        )
        grads = {"W": dW.astype(params["W"].dtype), "b": db.astype(params["b"].dtype)}
        return grads, dx.astype(cache.dtype)

    def backward_im2col(params, a, delta, W, pads, out_spatial, dx_dtype):
        a_padded = pad(a, pads)
        X = patches(a_padded, (kh, kw), (sh, sw), out_spatial)
        # L8: ∂E/∂Θ = Xᵀ δ, summed over examples and positions; ∂E/∂b = Σ δ.
        rows = X.shape[0] * out_spatial[0] * out_spatial[1]
        theta = W.reshape(-1, features)
        dW = (X.reshape(rows, -1).T @ delta.reshape(rows, features)).reshape(W.shape)
        db = jnp.sum(delta, axis=(0, 1, 2))
        # L9: ∂E/∂X = δ Θᵀ, then col2im back onto the padded input, and the padding off.
        dX = (delta.reshape(rows, features) @ theta.T).reshape(X.shape)
        da_padded = col2im(dX, (kh, kw), (sh, sw), a_padded.shape[1:3])
        (top, _), (left, _) = pads
        dx = da_padded[:, top : top + a.shape[1], left : left + a.shape[2], :]
        grads = {"W": dW.astype(params["W"].dtype), "b": db.astype(params["b"].dtype)}
        return grads, dx.astype(dx_dtype)

    return Layer(init, forward, backward, name=name)
