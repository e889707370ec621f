"""Regularisation of logistic regression by hypergradients (scripts/bilevel.py)."""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.experiment = "logreg_ho"
    c.dataset = "breast_cancer"  # or "fashion_mnist_pair" (classes 0 vs 6, 784 features)
    c.num_train = 2000  # fashion_mnist_pair only
    c.num_val = 2000
    c.regularizations = "scalar,per_feature"
    c.outer_steps = 60
    c.outer_lr = 0.2
    c.inner_tol = 1e-5
    # Neumann's step_size must stay below 2 / (largest Hessian eigenvalue); use 0.05 for fashion_mnist_pair.
    c.backwards = "implicit:max_steps=100,shine,shine:opa_every=5,neumann:k=20:step_size=1.0,jfb"
    c.grid_min = -10.0
    c.grid_max = 1.0
    c.grid_size = 45
    return c
