"""Flax ``nnx`` modules for deep equilibrium models."""

from implicit_jax.nn.deq import DEQ, unrolled
from implicit_jax.nn.models import DEQMLP, ConvDEQ, MLPCell, ModelOutput, ResidualCell
from implicit_jax.nn.normalization import NORMALIZATIONS, NormalizedKernel, spectral_normalize, weight_normalize
from implicit_jax.nn.regularizers import jacobian_frobenius_penalty

__all__ = [
    "DEQ",
    "DEQMLP",
    "NORMALIZATIONS",
    "ConvDEQ",
    "MLPCell",
    "ModelOutput",
    "NormalizedKernel",
    "ResidualCell",
    "jacobian_frobenius_penalty",
    "spectral_normalize",
    "unrolled",
    "weight_normalize",
]
