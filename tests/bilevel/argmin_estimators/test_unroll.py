"""ArgminUnroll: backprop through the inner iterations."""

import pytest

from tests.bilevel.argmin_estimators.common import backward_info, hypergrad, rel_error


@pytest.mark.slow
def test_unroll_with_few_steps_differs_from_implicit_but_converges():
    short = hypergrad("unroll", max_steps=3)
    assert rel_error(short) > 1e-3
    assert rel_error(hypergrad("unroll", max_steps=30)) < 1e-7


def test_unroll_rejects_backward_tap():
    with pytest.raises(ValueError, match="unroll"):
        backward_info("unroll")
