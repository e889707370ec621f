"""Synthetic clusters and a tiny DEQ MLP: a whole run in seconds (tests, CI, quick checks)."""

from implicit_jax.train.config import base_config


def get_config():
    config = base_config()
    config.dataset = "synthetic"
    config.model = "deq_mlp"
    config.width = 32
    config.batch_size = 32
    config.learning_rate = 1e-2
    config.num_epochs = 5.0
    config.eval_every = 40
    config.log_every = 4
    config.checkpoint_every = 10
    config.eval_batch_size = 128
    return config
