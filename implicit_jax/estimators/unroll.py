r"""Backpropagation through every forward iteration (the reference, not an implicit estimator).

This differentiates the *computed* iterate, including its dependence on ``z0``. It
approaches the implicit gradient as the number of steps taken from a ``z0`` that does not
depend on the inputs grows; a warm start near :math:`z^\star` takes few steps and gives a
truncated gradient, and a sample that starts converged takes no step, so its result gets no
gradient at all with respect to ``params`` and ``x`` (use ``"implicit"`` for warm-started
solves). Two ways to get it:

* ``Unroll()`` (default): the forward solver runs ``max_steps`` masked iterations inside
  ``lax.scan`` (samples that converged are frozen) and JAX differentiates through all of
  them, in any mode (``grad``, ``jvp``, ``jacfwd``, ``hessian``). No ``custom_vjp`` is
  involved: that is the point of the baseline. Its time and memory grow with
  ``max_steps``, not with the steps taken: reverse mode through ``lax.cond`` pays for a
  skipped step about as much as for a taken one.
* ``Unroll(replay=True)``: reverse mode only. A ``jax.custom_vjp`` runs the usual
  ``lax.while_loop`` forward, storing the carry (iterate, evaluation, solver memory) before
  every step in a ``max_steps``-slot buffer, and the backward pass replays the VJP of each
  step taken, last to first, accumulating the cotangents of ``params``, ``x`` and ``z0``.
  Same gradient (it is the chain rule through the same steps), at a cost of one
  evaluation plus one VJP per step *taken*.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from implicit_jax.estimators.base import AbstractBackward
from implicit_jax.solvers.fixed_point.base import initial_carry, iteration_result, iteration_step, keep_iterating


@dataclasses.dataclass(frozen=True)
class Unroll(AbstractBackward):
    """Autodiff through the unrolled forward solver (a backward tap reads zeros).

    Attributes:
      replay: store every step's carry and replay the VJPs over the steps taken
        (reverse mode only; cost proportional to the steps taken). ``False``: plain
        autodiff through a ``lax.scan`` of ``max_steps`` masked steps, in any mode.
    """

    replay: bool = False

    name = "unroll"

    def check_solver(self, solver):
        if not solver.supports_unrolling:
            raise ValueError(f"backward='unroll' cannot differentiate through {solver!r}: {solver.unroll_hint}")

    def solve(self, problem, solver, criterion, inputs, z0, tap):
        if self.replay:
            return replay_fixed_point(problem, solver, criterion, inputs, z0)
        z, info, _ = problem.solve(solver, criterion, inputs, z0, unrolled=True)
        return z, info


def _is_differentiable(leaf) -> bool:
    return jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)


def _split(tree):
    """The floating-point leaves of ``tree`` (differentiated) and the others (step counts, masks)."""
    leaves = jax.tree_util.tree_leaves(tree)
    return [leaf for leaf in leaves if _is_differentiable(leaf)], [leaf for leaf in leaves if not _is_differentiable(leaf)]


def _merge(like, floats, others):
    floats, others = iter(floats), iter(others)
    leaves, treedef = jax.tree_util.tree_flatten(like)
    return jax.tree_util.tree_unflatten(treedef, [next(floats) if _is_differentiable(leaf) else next(others) for leaf in leaves])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def replay_fixed_point(problem, solver, criterion, inputs, z0):
    """Fixed-point solve whose ``jax.custom_vjp`` backward replays the VJPs of the steps taken."""
    return _forward(problem, solver, criterion, inputs, z0)[0]


def _forward(problem, solver, criterion, inputs, z0):
    fn = problem.flat_fn(*inputs)
    carry = initial_carry(solver, fn, z0, criterion)
    history = jax.tree_util.tree_map(lambda a: jnp.zeros((criterion.max_steps,) + jnp.shape(a), jnp.result_type(a)), carry)

    def body(loop):
        c, history = loop
        history = jax.tree_util.tree_map(lambda h, a: h.at[c.steps].set(a), history, c)
        return iteration_step(solver, fn, criterion, c), history

    carry, history = lax.while_loop(lambda loop: keep_iterating(criterion, loop[0]), body, (carry, history))
    z, info, _ = iteration_result(solver, criterion, carry)
    return (z, info), (inputs, z0, history, carry)


def _replay_fwd(problem, solver, criterion, inputs, z0):
    return _forward(problem, solver, criterion, inputs, z0)


def _replay_bwd(problem, solver, criterion, residuals, cotangents):
    inputs, z0, history, final = residuals
    g, _ = cotangents  # the diagnostics get no cotangent
    floats, others = _split(final)
    ct = _split(_merge(final, [jnp.zeros_like(a) for a in floats], others)._replace(best_z=g))[0]  # only z* is read
    # Only the floating-point leaves of (params, x) are differentiated and accumulated: an
    # integer or boolean leaf (a label, a flag) gets a float0 zero, which cannot be summed.
    input_floats, input_others = _split(inputs)

    def fn_of(fl_in):
        return problem.flat_fn(*_merge(inputs, fl_in, input_others))

    def back(i, acc):
        ct, d_inputs = acc
        carry_t = jax.tree_util.tree_map(lambda h: h[final.steps - 1 - i], history)
        floats, others = _split(carry_t)
        _, vjp = jax.vjp(
            lambda fl_in, fl: _split(iteration_step(solver, fn_of(fl_in), criterion, _merge(final, fl, others)))[0],
            input_floats,
            floats,
        )
        d, ct = vjp(ct)
        return ct, [a + b for a, b in zip(d_inputs, d)]

    ct, d_inputs = lax.fori_loop(0, final.steps, back, (ct, [jnp.zeros_like(a) for a in input_floats]))
    _, vjp = jax.vjp(lambda fl_in, z: _split(initial_carry(solver, fn_of(fl_in), z, criterion))[0], input_floats, z0)
    d, d_z0 = vjp(ct)
    no_cotangent = [np.zeros(jnp.shape(a), jax.dtypes.float0) for a in input_others]
    return _merge(inputs, [a + b for a, b in zip(d_inputs, d)], no_cotangent), d_z0


replay_fixed_point.defvjp(_replay_fwd, _replay_bwd)
