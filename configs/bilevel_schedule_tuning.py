"""Learning-rate / momentum / weight-decay schedules on digits through 1,000 SGD steps (scripts/bilevel.py)."""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.experiment = "schedule_tuning"
    c.num_steps = 1000
    c.num_values = 10  # K values per schedule, each shared by T/K contiguous steps
    c.outer_steps = 20
    c.outer_lr = 0.1
    c.methods = "reverse,fds,fg2u:num_directions=8"
    c.memory_horizons = "100,1000,10000"
    c.memory_budget_mib = 256
    return c
