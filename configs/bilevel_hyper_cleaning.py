"""Data hyper-cleaning on Fashion-MNIST with 50% corrupted labels (scripts/bilevel.py)."""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.experiment = "hyper_cleaning"
    c.num_train = 5000
    c.num_val = 5000
    c.num_test = 10000
    c.corruption = 0.5
    c.backwards = "implicit,shine"
    c.outer_steps = 40
    c.outer_lr = 1.0
    c.l2 = 1e-3
    return c
