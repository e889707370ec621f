import numpy as np
import pytest

from examples.bilevel import logreg_ho


@pytest.fixture(scope="module")
def split():
    return logreg_ho.breast_cancer()


def test_split_shapes_bias_and_labels(split):
    assert split.x_train.shape[1] == split.num_features + 1 == 31
    np.testing.assert_array_equal(split.x_train[:, -1], 1.0)
    assert set(np.unique(split.y_train)) == {-1.0, 1.0}
    assert len(split.y_train) + len(split.y_val) + len(split.y_test) == 569


@pytest.mark.slow
def test_hyperopt_lowers_the_held_out_loss_and_matches_sklearn(split):
    trace = logreg_ho.run_hyperopt(split, "implicit", outer_steps=40, learning_rate=0.2)
    assert trace.val_loss[-1] < trace.val_loss[0]
    assert len(trace.seconds) == 40 and all(b >= a for a, b in zip(trace.seconds, trace.seconds[1:]))
    grid = logreg_ho.sklearn_grid_search(split, np.linspace(-9.0, -4.0, 11))
    # The HO optimum sits within one grid cell of scikit-learn's best strength, at no worse held-out loss.
    assert abs(float(np.ravel(trace.log_lam)[0]) - grid["best_log_lam"]) <= 1.0
    assert min(trace.val_loss) <= grid["best_val_loss"] + 1e-3


def test_time_to_tolerance():
    trace = logreg_ho.Trace("x", [1.0, 2.0, 3.0], [0.5, 0.3, 0.2], [0, 0, 0], 0.0, [1, 1, 1])
    assert logreg_ho.time_to_tolerance(trace, 0.3) == 2.0
    assert logreg_ho.time_to_tolerance(trace, 0.1) is None
