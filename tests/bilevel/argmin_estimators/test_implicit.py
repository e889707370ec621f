"""ArgminImplicit: CG on the Hessian system, its convergence report and throw."""

import numpy as np
import pytest

import implicit_jax as ij
from tests.bilevel.argmin_estimators.common import backward_info, hypergrad


def test_cg_non_convergence_raises_with_throw():
    with pytest.raises(ij.NonConvergenceError, match="implicit"):
        hypergrad(ij.ArgminImplicit(max_steps=1, tol=1e-12), throw=True)
    assert np.isfinite(float(hypergrad(ij.ArgminImplicit(max_steps=1))))  # reported through the tap, not NaN
    assert float(backward_info(ij.ArgminImplicit(max_steps=1, tol=1e-12)).converged) == 0.0
