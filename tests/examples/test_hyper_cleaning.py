import numpy as np
import pytest

from examples.bilevel import hyper_cleaning as H


def test_corrupt_labels_flips_the_requested_fraction_to_other_classes():
    labels = np.arange(1000) % 10
    noisy, corrupted = H.corrupt_labels(labels, 0.5, 10, seed=0)
    assert corrupted.sum() == 500
    assert np.all(noisy[corrupted] != labels[corrupted]) and np.all(noisy[~corrupted] == labels[~corrupted])


def test_flagging_scores():
    corrupted = np.array([True, True, False, False])
    scores = H.flagging_scores(np.array([-1.0, 1.0, -1.0, 1.0]), corrupted)
    assert scores == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "flagged": 2}


def _synthetic(seed=0, n=300, d=20):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(10, d)) * 3

    def draw(m):
        y = rng.integers(0, 10, m)
        return (centers[y] + rng.normal(size=(m, d))).astype(np.float32), y.astype(np.int32)

    x, y = draw(n)
    noisy, corrupted = H.corrupt_labels(y, 0.5, 10, seed)
    xv, yv = draw(200)
    xt, yt = draw(200)
    return H.CleaningData(x, noisy, corrupted, xv, yv, xt, yt)


@pytest.mark.slow
def test_hypergradient_weights_find_the_corrupted_labels():
    result = H.run(_synthetic(), "implicit", outer_steps=15, learning_rate=1.0)
    assert result["val_loss_curve"][-1] < result["val_loss_curve"][0]
    assert result["precision"] > 0.8 and result["recall"] > 0.5
    assert result["test_accuracy_cleaned"] >= result["test_accuracy_unweighted"]
