"""ArgminJFB: the identity inverse u = v, against its formula."""

import chex

from tests.bilevel import ridge
from tests.bilevel.argmin_estimators.common import LAM, hypergrad


def test_jfb_is_the_identity_inverse_formula():
    chex.assert_trees_all_close(hypergrad("jfb"), ridge.hypergradient_for(LAM, ridge.outer_cotangent(LAM)), rtol=1e-8)
