"""The main job: a small convolutional DEQ (MDEQ-tiny cell, 32 channels at 14x14) on Fashion-MNIST.

About 11 minutes on 2 CPU cores for 2.5 epochs (Jacobian regularisation keeps the solves short); any estimator is one override away:
``--config.backward=shine --config.solver=broyden``.
"""

from implicit_jax.train.config import base_config


def get_config():
    config = base_config()
    config.dataset = "fashion_mnist"
    config.model = "conv_deq"
    config.width = 32
    config.groups = 8
    config.normalization = "weight"
    config.solver = "anderson"
    config.backward = "implicit"
    config.tol = 1e-2
    config.max_steps = 15
    config.jac_reg_weight = 1.0
    config.optimizer = "adam"
    config.learning_rate = 2e-3
    config.schedule = "warmup_cosine"
    config.lr_warmup_steps = 100
    config.grad_clip = 1.0
    config.batch_size = 128
    config.num_epochs = 2.5
    config.eval_every = 468
    config.log_every = 20
    config.checkpoint_every = 200
    config.eval_batch_size = 500
    return config
