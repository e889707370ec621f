"""Checks the scripts run on their command line before absl parses it: one-line errors, no tracebacks.

``scripts/train.py``, ``scripts/compare_backward.py`` and ``scripts/bilevel.py`` take
``--config PATH`` (an ``ml_collections`` config file) and ``--config.FIELD=VALUE`` overrides.
A missing or broken config file, or an override naming a field the config does not have,
would otherwise surface as a long absl/ml_collections traceback; :func:`preflight` reports
each as one line (``error: ...``) and exits with status 1.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Sequence

import ml_collections
from absl import flags

from implicit_jax.train.sharding import initialize_distributed


def _flag_value(argv: Sequence[str], name: str) -> str | None:
    """The value of ``--name=VALUE`` or ``--name VALUE`` in ``argv`` (the last one given), else None."""
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """``get_config()`` of the file ``spec`` names (``path`` or ``path:argument``, as ml_collections takes it)."""
    path, _, argument = spec.partition(":")
    if not os.path.isfile(path):
        raise ValueError(f"config file {path!r} does not exist (from --config={spec}); the shipped ones are in configs/.")
    module_spec = importlib.util.spec_from_file_location("_config_file", path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"config file {path!r} cannot be loaded as a Python module (from --config={spec}).")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:
        raise ValueError(f"config file {path!r} failed to load: {type(error).__name__}: {error}") from None
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path!r} has no get_config() function.")
    return module.get_config(argument) if argument else module.get_config()


def override_problems(argv: Sequence[str], config: ml_collections.ConfigDict) -> list[str]:
    """Overrides ``--config.NAME=...`` whose first component ``config`` lacks, or that go below a plain value.

    ``--config.backward_options.k=3`` is fine when ``backward_options`` is a ConfigDict: its
    keys are options of the chosen class, checked by the config's validation.
    """
    problems = []
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        path = arg[len("--config.") :].split("=", 1)[0]
        head, _, rest = path.partition(".")
        if head not in config:
            problems.append(f"unknown config field {head!r} in {arg!r}; valid fields are {sorted(config.keys())}")
        elif rest and not isinstance(config[head], ml_collections.ConfigDict):
            problems.append(f"config field {head!r} is a value, not a group, so {arg!r} cannot set {rest!r} under it")
    return problems


def preflight(argv: Sequence[str]) -> None:
    """Exit with a one-line error if ``--config`` is missing or broken or an override names an unknown field."""
    spec = _flag_value(argv, "config")
    if spec is None:
        return  # absl reports the missing required flag itself, in one line
    try:
        config = load_config_file(spec)
    except ValueError as error:
        sys.exit(f"error: {error}")
    problems = override_problems(argv, config)
    if problems:
        sys.exit("error: " + "; ".join(problems))


def define_distributed_flags() -> None:
    """The process flags every script takes (the names of ``jax.distributed.initialize``'s arguments)."""
    flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0, for a multi-process run")
    flags.DEFINE_integer("num_processes", None, "number of processes of a multi-process run")
    flags.DEFINE_integer("process_id", None, "this process's index in [0, num_processes)")
    flags.DEFINE_bool("distributed", False, "join a multi-process run with JAX's cluster auto-detection (SLURM, Cloud TPU, ...)")


def initialize_distributed_from_flags() -> None:
    """Join the multi-process run the process flags describe (nothing for a single process); one-line errors."""
    values = flags.FLAGS
    try:
        initialize_distributed(values.coordinator_address, values.num_processes, values.process_id, auto=values.distributed)
    except ValueError as error:
        sys.exit(f"error: {error}")


@contextlib.contextmanager
def exit_on_run_errors():
    """Turn what a run reports into one line and an exit status: 128 + signal after Ctrl-C/SIGTERM, 1 on errors.

    Covers :class:`~implicit_jax.train.RunInterrupted` (the run checkpointed first),
    :class:`~implicit_jax.train.health.NonFiniteError`, :class:`~implicit_jax.train.lock.RunLockedError`
    and ValueError (a bad workdir, config or checkpoint); anything else keeps its traceback.
    """
    from implicit_jax.train.health import NonFiniteError
    from implicit_jax.train.lock import RunLockedError
    from implicit_jax.train.loop import RunInterrupted

    try:
        yield
    except RunInterrupted as interrupted:
        print(interrupted, file=sys.stderr)
        sys.exit(128 + interrupted.signum)
    except KeyboardInterrupt:
        print("interrupted (SIGINT)", file=sys.stderr)
        sys.exit(130)
    except (ValueError, NonFiniteError, RunLockedError) as error:
        sys.exit(f"error: {error}")


#: set to ``1`` to make the scripts stop after checking their command line (flags, config file,
#: overrides, estimator specs) and before loading data or computing anything: the docs' tests run
#: every documented command this way.
DRY_RUN_ENV = "IMPLICIT_JAX_DRY_RUN"


def exit_if_dry_run(what: str) -> None:
    """Print ``dry run: <what>`` and exit 0 when :data:`DRY_RUN_ENV` is ``1``; otherwise do nothing."""
    if os.environ.get(DRY_RUN_ENV) == "1":
        print(f"dry run: {what}; nothing was loaded or run")
        sys.exit(0)
