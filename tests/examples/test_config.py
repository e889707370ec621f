import importlib.util
from pathlib import Path

import ml_collections
import pytest

import implicit_jax as ij
from examples.bilevel.config import EXPERIMENTS, SCHEMAS, argmin_backwards, unrolled_methods, validate_bilevel_config

BILEVEL_CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("bilevel_*.py"))


def load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def test_every_experiment_has_a_shipped_config():
    assert {load(p).experiment for p in BILEVEL_CONFIGS} == set(EXPERIMENTS)


@pytest.mark.parametrize("path", BILEVEL_CONFIGS, ids=lambda p: p.stem)
def test_shipped_bilevel_configs_are_valid(path):
    config = load(path)
    validate_bilevel_config(config)
    assert set(config.keys()) == set(SCHEMAS[config.experiment])


def test_unknown_experiment_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"experiment='hpo' is not one of \['logreg_ho', 'schedule_tuning', 'hyper_cleaning'\]"):
        validate_bilevel_config(ml_collections.ConfigDict(dict(experiment="hpo")))


def test_all_problems_are_reported_at_once():
    fields = dict(load(BILEVEL_CONFIGS[0]).to_dict())  # hyper_cleaning
    fields.update(backwards="implicit,adjoint", corruption=1.5, outer_steps="many", colour="red")
    del fields["l2"]
    with pytest.raises(ValueError) as error:
        validate_bilevel_config(ml_collections.ConfigDict(fields))
    message = str(error.value)
    assert "backwards: entry 'adjoint': unknown argmin backward 'adjoint'; valid names are ['implicit'" in message
    assert "corruption=1.5 is out of range" in message
    assert "outer_steps='many' must be of type int" in message
    assert "unknown field(s) ['colour']" in message
    assert "missing field 'l2'" in message


@pytest.mark.parametrize("horizons, valid", [("100,1000", True), ("100,x", False), ("", False), ("0,10", False)])
def test_memory_horizons_must_be_positive_integers(horizons, valid):
    config = load(BILEVEL_CONFIGS[2])  # schedule_tuning
    assert config.experiment == "schedule_tuning"
    config.memory_horizons = horizons
    if valid:
        validate_bilevel_config(config)
    else:
        with pytest.raises(ValueError, match="memory_horizons"):
            validate_bilevel_config(config)


def test_logreg_grid_bounds_are_ordered():
    config = load(BILEVEL_CONFIGS[1])  # logreg_ho
    config.grid_min = 2.0
    with pytest.raises(ValueError, match="grid_min=2.0 must be below grid_max=1.0"):
        validate_bilevel_config(config)


def test_compared_estimators_take_options_and_bad_ones_are_named():
    config = load(BILEVEL_CONFIGS[1])  # logreg_ho
    config.backwards = "implicit:max_steps=50,neumann:k=40:step_size=0.5"
    validate_bilevel_config(config)
    assert argmin_backwards(config.backwards) == {
        "implicit:max_steps=50": ij.ArgminImplicit(max_steps=50),
        "neumann:k=40:step_size=0.5": ij.ArgminNeumann(k=40, step_size=0.5),
    }
    config.backwards = "implicit,neumann:kk=40"
    with pytest.raises(
        ValueError,
        match=r"backwards: entry 'neumann:kk=40': argmin backward 'neumann' has no option 'kk'. Options of 'neumann' \(with defaults\): k=20",
    ):
        validate_bilevel_config(config)
    schedules = load(BILEVEL_CONFIGS[2])
    assert unrolled_methods(schedules.methods)["fg2u:num_directions=8"] == ij.FG2U(num_directions=8)
    schedules.methods = "reverse,fds:chunk=2"
    with pytest.raises(ValueError, match="has no option 'chunk'"):
        validate_bilevel_config(schedules)
