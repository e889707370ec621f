import importlib.util
from pathlib import Path

import jax.numpy as jnp
import ml_collections
import pytest
from flax import nnx

import implicit_jax as ij
from implicit_jax.nn import DEQMLP, ConvDEQ
from implicit_jax.train.config import (
    base_config,
    estimator_from_config,
    model_from_config,
    optimizer_from_config,
    validate_config,
)

# Training configs; the bi-level ones (configs/bilevel_*.py) have their own schemas (tests/examples/test_config.py).
CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[2] / "configs").glob("*.py") if not p.stem.startswith("bilevel_"))


def load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_are_valid(path):
    validate_config(load(path))


def test_all_problems_are_reported_at_once():
    # ConfigDict itself refuses type changes of an existing config; a config built from a
    # dict (e.g. a hand-written file) is caught here instead.
    fields = dict(base_config().to_dict(), backward="adjoint", batch_size=-3, learning_rate="fast", colour="red")
    config = ml_collections.ConfigDict(fields)
    with pytest.raises(ValueError) as error:
        validate_config(config)
    message = str(error.value)
    assert "backward='adjoint' is not one of" in message and "'implicit'" in message
    assert "batch_size=-3 is out of range" in message
    assert "learning_rate='fast' must be of type float" in message
    assert "unknown field(s) ['colour']" in message


def test_atol_needs_the_mixed_stop_mode():
    config = base_config()
    config.atol = 1e-6
    with pytest.raises(ValueError, match="stop_mode='mixed' only"):
        validate_config(config)
    config.stop_mode = "mixed"
    validate_config(config)


def test_conv_width_must_split_into_groups():
    config = base_config()
    config.model, config.width, config.groups = "conv_deq", 30, 8
    with pytest.raises(ValueError, match="divisible by groups"):
        validate_config(config)


@pytest.mark.slow
def test_model_and_optimizer_from_config():
    config = base_config()
    assert isinstance(model_from_config(config, (8, 8, 1), 4, nnx.Rngs(0)), DEQMLP)
    config.model, config.width, config.groups, config.normalization = "conv_deq", 8, 4, "weight"
    assert isinstance(model_from_config(config, (8, 8, 1), 4, nnx.Rngs(0)), ConvDEQ)
    for name in ["adam", "adamw", "sgd"]:
        config.optimizer, config.grad_clip = name, 1.0
        assert optimizer_from_config(config, 10) is not None


def test_solver_and_backward_options_configure_the_objects():
    config = base_config()
    config.backward, config.backward_options = "phantom_unroll", dict(k=3, damping=0.8)
    config.solver_options = dict(memory=8)
    validate_config(config)
    solver, backward = estimator_from_config(config)
    assert backward == ij.PhantomUnroll(k=3, damping=0.8) and solver == ij.Anderson(memory=8)
    model = model_from_config(config, (8, 8, 1), 4, nnx.Rngs(0))
    assert model.deq.backward == backward and model.deq.solver == solver


def test_an_option_of_another_estimator_is_refused_with_the_valid_ones():
    config = base_config()
    config.backward_options = dict(k=3)  # backward is 'implicit', which has no k
    with pytest.raises(
        ValueError, match=r"backward 'implicit' has no option 'k'. Options of 'implicit' \(with defaults\): solver='auto'"
    ):
        validate_config(config)
    config = base_config()
    config.solver, config.solver_options = "broyden", dict(memory=-1)
    with pytest.raises(ValueError, match=r"solver 'broyden'.*memory"):
        validate_config(config)


def test_a_low_precision_state_needs_a_reachable_tolerance_and_the_mlp():
    config = base_config()
    config.dtype, config.tol = "bfloat16", 1e-4
    with pytest.raises(ValueError, match=r"tol=0.0001 is below what a bfloat16 state can resolve; use tol >= 0.01"):
        validate_config(config)
    config.tol = 1e-2
    validate_config(config)
    model = model_from_config(config, (8, 8, 1), 4, nnx.Rngs(0))
    assert model.dtype == jnp.bfloat16
    config.model, config.width, config.groups = "conv_deq", 8, 4
    with pytest.raises(ValueError, match="dtype='bfloat16' is supported by model='deq_mlp' only"):
        validate_config(config)
