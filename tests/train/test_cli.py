from pathlib import Path

import pytest

from implicit_jax.train.cli import (
    DRY_RUN_ENV,
    exit_if_dry_run,
    exit_on_run_errors,
    load_config_file,
    override_problems,
    preflight,
)
from implicit_jax.train.health import NonFiniteError
from implicit_jax.train.loop import RunInterrupted
from implicit_jax.train.sharding import initialize_distributed


def test_override_names_are_checked_against_the_loaded_config(tmp_path):
    config = load_config_file(str(Path(__file__).resolve().parents[2] / "configs" / "smoke.py"))
    assert override_problems(["--config.width=8", "--config.backward_options.k=3", "--workdir=x"], config) == []
    problems = override_problems(["--config.widht=8", "--config.seed.x=1"], config)
    assert problems[0].startswith("unknown config field 'widht' in '--config.widht=8'; valid fields are [")
    assert problems[1] == "config field 'seed' is a value, not a group, so '--config.seed.x=1' cannot set 'x' under it"


def test_config_files_that_are_missing_or_broken_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"config file 'nope.py' does not exist \(from --config=nope.py\)"):
        load_config_file("nope.py")
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    with pytest.raises(ValueError, match=r"broken.py' failed to load: SyntaxError"):
        load_config_file(str(broken))
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ValueError, match="has no get_config"):
        load_config_file(str(empty))


def test_process_options_must_come_together_and_make_sense():
    assert initialize_distributed() is False  # a single process: nothing to join
    with pytest.raises(ValueError, match=r"missing \['num_processes', 'process_id'\]"):
        initialize_distributed("127.0.0.1:1234")
    with pytest.raises(ValueError, match=r"process_id must lie in \[0, num_processes\)"):
        initialize_distributed("127.0.0.1:1234", 2, 2)
    with pytest.raises(ValueError, match="HOST:PORT"):
        initialize_distributed("localhost", 2, 0)


@pytest.mark.parametrize(
    "error, status, message",
    [
        (RunInterrupted("interrupted (SIGINT) after step 3", 3, 2), 130, "interrupted (SIGINT) after step 3"),
        (RunInterrupted("interrupted (SIGTERM) after step 3", 3, 15), 143, "interrupted (SIGTERM) after step 3"),
        (NonFiniteError("training stopped at step 2"), "error: training stopped at step 2", None),
        (ValueError("bad workdir"), "error: bad workdir", None),
    ],
)
def test_run_errors_become_one_line_and_an_exit_status(error, status, message, capsys):
    with pytest.raises(SystemExit) as exit_info, exit_on_run_errors():
        raise error
    assert exit_info.value.code == status
    if message:
        assert capsys.readouterr().err.strip() == message


def test_preflight_names_a_bad_config_and_a_dry_run_stops_after_the_checks(monkeypatch, capsys):
    smoke = str(Path(__file__).resolve().parents[2] / "configs" / "smoke.py")
    preflight(["--config", smoke, "--config.width=8"])  # fine: returns
    with pytest.raises(SystemExit, match="unknown config field 'widht'"):
        preflight(["--config", smoke, "--config.widht=8"])
    with pytest.raises(SystemExit, match="does not exist"):
        preflight(["--config=nope.py"])
    monkeypatch.delenv(DRY_RUN_ENV, raising=False)
    exit_if_dry_run("train")  # not a dry run: nothing happens
    monkeypatch.setenv(DRY_RUN_ENV, "1")
    with pytest.raises(SystemExit) as stop:
        exit_if_dry_run("train smoke")
    assert stop.value.code == 0 and capsys.readouterr().out == "dry run: train smoke; nothing was loaded or run\n"
