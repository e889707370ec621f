r"""DEQ models: an MLP classifier and a small convolutional DEQ for images (MDEQ-tiny cell).

Both follow one calling convention, the one :mod:`implicit_jax.train` relies on::

    out = model(x, jacobian_key=None, unrolled_steps=None, backward_tap=None)
    out.logits, out.info (forward SolverInfo, per sample), out.jacobian_penalty

* :class:`DEQMLP`: :math:`x \mapsto` injection :math:`Ux + b` :math:`\mapsto`
  :math:`z^\star = \tanh(W z^\star + Ux + b)` :math:`\mapsto` layer norm, linear head.
  With ``normalization="spectral"`` and bound :math:`c < 1`, :math:`\|W\|_2 \le c` and the
  cell is a contraction (tanh is 1-Lipschitz), so the equilibrium exists and is unique.
* :class:`ConvDEQ`: a stem (two 3x3 convolutions, the second with stride 2) makes the
  injection :math:`x`; the cell is MDEQ's residual block (Bai, Koltun & Kolter 2020)

  .. math:: h = \mathrm{relu}(\mathrm{GN}(W_1 * z)),\quad
            f(z, x) = \mathrm{GN}(\mathrm{relu}(z + \mathrm{GN}(W_2 * h + x))),

  with weight-normalised (or spectrally normalised) kernels; the head pools 2x2 and
  applies a linear layer.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from implicit_jax.estimators import BackwardInfo
from implicit_jax.nn.conv import conv_same
from implicit_jax.nn.deq import DEQ
from implicit_jax.nn.normalization import NormalizedKernel
from implicit_jax.solvers import SolverInfo


class ModelOutput(NamedTuple):
    """What a DEQ model returns: logits, the forward solve's info, and the Jacobian penalty (0 unless asked)."""

    logits: jax.Array
    info: SolverInfo
    jacobian_penalty: jax.Array


class Conv(nnx.Module):
    """3x3 (or ``kernel_size``) convolution, NHWC, "SAME" padding, no bias, normalised kernel."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        normalization: str = "weight",
        init_scale: float = 1.0,
        rngs: nnx.Rngs,
    ):
        self.kernel = NormalizedKernel(
            (kernel_size, kernel_size, in_channels, out_channels), normalization=normalization, init_scale=init_scale, rngs=rngs
        )
        self.stride = stride

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.stride == 1:
            return conv_same(x, self.kernel())
        return jax.lax.conv_general_dilated(
            x, self.kernel(), (self.stride, self.stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )


class Dense(nnx.Module):
    """``x @ W + b`` with a normalised ``W``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        normalization: str = "none",
        spectral_bound: float = 0.9,
        init_scale: float = 1.0,
        rngs: nnx.Rngs,
    ):
        self.kernel = NormalizedKernel(
            (in_features, out_features),
            normalization=normalization,
            spectral_bound=spectral_bound,
            init_scale=init_scale,
            rngs=rngs,
        )
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.kernel() + self.bias[...]


class MLPCell(nnx.Module):
    """:math:`f(z, x) = \\tanh(W z + x)`, ``W`` spectrally normalised to ``spectral_bound`` by default."""

    def __init__(self, hidden: int, *, normalization: str = "spectral", spectral_bound: float = 0.9, rngs: nnx.Rngs):
        self.linear = NormalizedKernel(
            (hidden, hidden), normalization=normalization, spectral_bound=spectral_bound, init_scale=0.5, rngs=rngs
        )

    def __call__(self, z: jax.Array, x: jax.Array) -> jax.Array:
        return jnp.tanh(z @ self.linear().astype(z.dtype) + x)  # in the state's dtype (bfloat16 under mixed precision)


class ResidualCell(nnx.Module):
    """MDEQ's residual block with the injection added before the second norm (see the module docstring)."""

    def __init__(self, channels: int, *, groups: int = 8, normalization: str = "weight", rngs: nnx.Rngs):
        self.conv1 = Conv(channels, channels, normalization=normalization, init_scale=0.5, rngs=rngs)
        self.conv2 = Conv(channels, channels, normalization=normalization, init_scale=0.5, rngs=rngs)
        self.norm1 = nnx.GroupNorm(channels, num_groups=groups, rngs=rngs)
        self.norm2 = nnx.GroupNorm(channels, num_groups=groups, rngs=rngs)
        self.norm3 = nnx.GroupNorm(channels, num_groups=groups, rngs=rngs)

    def __call__(self, z: jax.Array, x: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.norm1(self.conv1(z)))
        h = self.norm2(self.conv2(h) + x)
        return self.norm3(jax.nn.relu(h + z))


def _solve(deq: DEQ, injection, jacobian_key, unrolled_steps, backward_tap):
    z, info = deq(injection, unrolled_steps=unrolled_steps, backward_tap=backward_tap)
    penalty = jnp.zeros((), z.dtype) if jacobian_key is None else deq.jacobian_penalty(z, injection, jacobian_key)
    return z, info, penalty


class DEQMLP(nnx.Module):
    """DEQ classifier for flat inputs (``(batch, features)``; larger inputs are flattened).

    ``dtype`` is the equilibrium state's dtype: with ``jnp.bfloat16`` the injection is cast to
    it and the cell and the solver run in it (the solver's reductions in float32, see
    :func:`implicit_jax.fixed_point`), while the parameters, the head and the gradients stay in
    float32 (mixed precision). Use a tolerance the dtype can reach (``tol >= 1e-2`` for bfloat16).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        hidden: int = 128,
        normalization: str = "spectral",
        spectral_bound: float = 0.9,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
        **deq_options,
    ):
        self.dtype = jnp.dtype(dtype)
        self.injection = Dense(in_features, hidden, rngs=rngs)
        self.deq = DEQ(MLPCell(hidden, normalization=normalization, spectral_bound=spectral_bound, rngs=rngs), **deq_options)
        self.norm = nnx.LayerNorm(hidden, rngs=rngs)
        self.head = Dense(hidden, num_classes, rngs=rngs)
        self.in_features = in_features

    def __call__(
        self,
        x: jax.Array,
        *,
        jacobian_key: jax.Array | None = None,
        unrolled_steps: int | None = None,
        backward_tap: BackwardInfo | None = None,
    ) -> ModelOutput:
        x = x.reshape(x.shape[0], -1)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"DEQMLP expects {self.in_features} features per sample, got input of shape {x.shape}.")
        z, info, penalty = _solve(self.deq, self.injection(x).astype(self.dtype), jacobian_key, unrolled_steps, backward_tap)
        z = z.astype(jnp.promote_types(z.dtype, jnp.float32))  # the head in float32 (or wider)
        return ModelOutput(self.head(self.norm(z)), info, penalty)


class ConvDEQ(nnx.Module):
    """Small convolutional DEQ for ``(batch, height, width, channels)`` images (MDEQ-tiny style).

    Args:
      in_channels, num_classes, image_size: input channels, classes, input height/width
        (even; the stem halves it).
      channels: width of the equilibrium state.
      groups: GroupNorm groups.
      normalization: ``"weight"`` (MDEQ's choice), ``"spectral"`` or ``"none"`` for the cell's kernels.
      **deq_options: solver, backward, tol, max_steps, stop_mode, throw (see :class:`DEQ`).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        image_size: int = 28,
        channels: int = 32,
        groups: int = 8,
        normalization: str = "weight",
        rngs: nnx.Rngs,
        **deq_options,
    ):
        if image_size % 4:
            raise ValueError(f"ConvDEQ needs an image size divisible by 4 (stem stride 2, head pool 2), got {image_size}.")
        self.stem1 = Conv(in_channels, channels, normalization="none", rngs=rngs)
        self.stem2 = Conv(channels, channels, stride=2, normalization="none", rngs=rngs)
        self.stem_norm1 = nnx.GroupNorm(channels, num_groups=groups, rngs=rngs)
        self.stem_norm2 = nnx.GroupNorm(channels, num_groups=groups, rngs=rngs)
        self.deq = DEQ(ResidualCell(channels, groups=groups, normalization=normalization, rngs=rngs), **deq_options)
        pooled = (image_size // 4) ** 2 * channels
        self.head = Dense(pooled, num_classes, rngs=rngs)
        self.input_shape = (image_size, image_size, in_channels)

    def __call__(
        self,
        x: jax.Array,
        *,
        jacobian_key: jax.Array | None = None,
        unrolled_steps: int | None = None,
        backward_tap: BackwardInfo | None = None,
    ) -> ModelOutput:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"ConvDEQ expects images of shape (batch, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}."
            )
        injection = self.stem_norm2(self.stem2(jax.nn.relu(self.stem_norm1(self.stem1(x)))))
        z, info, penalty = _solve(self.deq, injection, jacobian_key, unrolled_steps, backward_tap)
        pooled = nnx.avg_pool(jax.nn.relu(z), (2, 2), strides=(2, 2))
        return ModelOutput(self.head(pooled.reshape(z.shape[0], -1)), info, penalty)
