"""The DEQ MLP (tanh cell, spectrally normalised to 0.9, 128 units) on scikit-learn's 8x8 digits (about a minute)."""

from implicit_jax.train.config import base_config


def get_config():
    config = base_config()
    config.dataset = "digits"
    config.model = "deq_mlp"
    config.width = 128
    config.normalization = "spectral"
    config.solver = "anderson"
    config.backward = "implicit"
    config.tol = 1e-4
    config.max_steps = 40
    config.optimizer = "adam"
    config.learning_rate = 3e-3
    config.schedule = "cosine"
    config.batch_size = 64
    config.num_epochs = 30.0
    config.eval_every = 220
    config.log_every = 10
    config.checkpoint_every = 200
    config.eval_batch_size = 360
    return config
