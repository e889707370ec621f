r"""Weight reparametrisations that keep a DEQ cell well conditioned.

* Weight normalisation (Salimans & Kingma, 2016), as MDEQ uses it:
  :math:`W = g \, V / \|V\|` with one norm per output channel, so the scale of each
  output is a learned scalar :math:`g` whatever the direction :math:`V`.
* Spectral normalisation (Miyato et al., 2018), stateless variant:
  :math:`W = V \cdot \min(1, c / \sigma_{\max}(V))` with :math:`\sigma_{\max}` of the
  kernel reshaped to ``(fan_in, features)``, computed exactly (one small SVD). For a
  dense layer this bounds its Lipschitz constant by :math:`c`; for a convolution the
  reshaped-kernel norm is the usual proxy. The weights are loop-invariant inside a
  fixed-point solve, so XLA evaluates the normalisation once per solve.

Both are functions of the parameters only, with no running statistics: a cell that uses
them can be evaluated any number of times inside a solver without side effects.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

Normalization = Literal["weight", "spectral", "none"]
#: kernel normalisations a DEQ cell accepts (``normalization=...``).
NORMALIZATIONS: tuple[str, ...] = ("weight", "spectral", "none")


def check_normalization(normalization: str) -> str:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization={normalization!r} is not one of {NORMALIZATIONS}.")
    return normalization


def weight_normalize(kernel: jax.Array, scale: jax.Array, eps: float = 1e-12) -> jax.Array:
    """:math:`g \\, V / \\|V\\|`, one norm per output feature (the last axis)."""
    axes = tuple(range(kernel.ndim - 1))
    norm = jnp.sqrt(jnp.sum(kernel**2, axis=axes, keepdims=True) + eps)
    return scale * kernel / norm


def spectral_normalize(kernel: jax.Array, bound: float) -> jax.Array:
    """:math:`V \\min(1, c/\\sigma_{\\max})`, :math:`\\sigma_{\\max}` of ``kernel`` as a ``(fan_in, features)`` matrix."""
    sigma = jnp.linalg.norm(kernel.reshape(-1, kernel.shape[-1]), ord=2)
    return kernel * jnp.minimum(1.0, bound / sigma)


class NormalizedKernel(nnx.Module):
    """A kernel parameter ``V`` (and gain ``g`` for weight norm) read back normalised.

    Args:
      shape: kernel shape, output features last (``(in, out)`` or ``(kh, kw, in, out)``).
      normalization: ``"weight"``, ``"spectral"`` or ``"none"``.
      spectral_bound: :math:`c` for spectral normalisation.
      init_scale: multiplies the He-normal initial kernel (and sets the initial gain).
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        *,
        normalization: str = "weight",
        spectral_bound: float = 0.9,
        init_scale: float = 1.0,
        rngs: nnx.Rngs,
    ):
        self.normalization = check_normalization(normalization)
        self.spectral_bound = float(spectral_bound)
        init = jax.nn.initializers.he_normal()
        self.kernel = nnx.Param(init_scale * init(rngs.params(), shape, jnp.float32))
        if normalization == "weight":
            self.gain = nnx.Param(jnp.full((shape[-1],), init_scale, jnp.float32))

    def __call__(self) -> jax.Array:
        kernel = self.kernel[...]
        if self.normalization == "weight":
            return weight_normalize(kernel, self.gain[...])
        if self.normalization == "spectral":
            return spectral_normalize(kernel, self.spectral_bound)
        return kernel
