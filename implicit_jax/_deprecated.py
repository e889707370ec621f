"""Old import paths that keep working, with a ``DeprecationWarning``, until release 0.3.

Modules that moved are served by an import hook that returns an alias of the new module;
names that moved out of a module that still exists are served by that module's
``__getattr__`` (PEP 562), built by :func:`moved_names`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings
from collections.abc import Callable, Mapping, Sequence

REMOVAL = "0.3"

#: old module path -> the module(s) that now hold its names, searched in order.
MOVED_MODULES: Mapping[str, Sequence[str]] = {
    "implicit_jax.solvers.base": ("implicit_jax.solvers.fixed_point.base", "implicit_jax.solvers.stopping"),
    "implicit_jax.solvers.anderson": ("implicit_jax.solvers.fixed_point.anderson",),
    "implicit_jax.solvers.broyden": ("implicit_jax.solvers.fixed_point.broyden",),
    "implicit_jax.solvers.fixed_point_iteration": ("implicit_jax.solvers.fixed_point.iteration",),
    "implicit_jax.solvers.cg": ("implicit_jax.solvers.linear.cg",),
    "implicit_jax.solvers.gmres": ("implicit_jax.solvers.linear.gmres",),
    "implicit_jax.solvers.lbfgs": ("implicit_jax.solvers.minimizers.lbfgs",),
    "implicit_jax.solvers.linesearch": ("implicit_jax.solvers.minimizers.linesearch",),
    "implicit_jax.solvers.minimize": ("implicit_jax.solvers.minimizers.base",),
    "implicit_jax.solvers.optax_minimizer": ("implicit_jax.solvers.minimizers.optax_minimizer",),
    "implicit_jax.bilevel.argmin_base": ("implicit_jax.bilevel.argmin_estimators.base", "implicit_jax.adjoint"),
    "implicit_jax.bilevel.argmin_backwards": ("implicit_jax.bilevel.argmin_estimators",),
    "implicit_jax.bilevel.unrolled_base": ("implicit_jax.bilevel.unrolled_methods.base",),
    "implicit_jax.bilevel.fds": ("implicit_jax.bilevel.unrolled_methods.fds",),
    "implicit_jax.bilevel.fg2u": ("implicit_jax.bilevel.unrolled_methods.fg2u",),
    "implicit_jax.problems": ("implicit_jax.testing",),
}


def _warn(old: str, new: str, stacklevel: int) -> None:
    warnings.warn(
        f"{old} moved to {new}; the old path will be removed in implicit_jax {REMOVAL}.",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


class _AliasModule(types.ModuleType):
    """A module whose attributes are looked up in the modules that replaced it."""

    def __init__(self, name: str, targets: Sequence[types.ModuleType]):
        super().__init__(name, f"Deprecated alias of {', '.join(t.__name__ for t in targets)}.")
        self._targets = tuple(targets)

    def __getattr__(self, name: str):
        for target in self._targets:
            if hasattr(target, name):
                return getattr(target, name)
        raise AttributeError(
            f"module {self.__name__!r} (now {', '.join(t.__name__ for t in self._targets)}) has no attribute {name!r}"
        )

    def __dir__(self):
        return sorted({name for target in self._targets for name in dir(target)})

    def __call__(self, *args, **kwargs):
        # Importing ``pkg.gmres`` binds the module over the function ``pkg.gmres`` of the same
        # name; calling it still calls that function.
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new = MOVED_MODULES[spec.name]
        _warn(spec.name, " and ".join(new), stacklevel=8)
        return _AliasModule(spec.name, [importlib.import_module(name) for name in new])

    def exec_module(self, module):
        pass


def moved_names(module: str, moved: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` serving the names that moved out of ``module`` (``name -> new module``)."""

    def __getattr__(name: str):
        if name in moved:
            _warn(f"{module}.{name}", f"{moved[name]}.{name}", stacklevel=3)
            return getattr(importlib.import_module(moved[name]), name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__


def custom_fixed_point(rule, name: str, keeps_solver_state: bool = False):
    """The cotangent-rule wrapper with its old signature ``(config, problem, solver, criterion, want_info, params, x, z0, tap)``."""
    from implicit_jax.adjoint import custom_root

    _warn("implicit_jax.estimators.custom_fixed_point", "implicit_jax.adjoint.custom_root", stacklevel=3)
    root = custom_root(rule, name, keeps_solver_state=keeps_solver_state)

    def solve(config, problem, solver, criterion, want_info, params, x, z0, tap):
        return root(config, problem, solver, criterion, (params, x), z0, tap)

    return solve


if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _AliasFinder())
