r"""EM as a map on a flat vector, and the compiled loop every accelerated EM shares.

SQUAREM, DAAREM, over-relaxed EM and ECG (``mogjax.accelerated``) all iterate one
map, EM's: an E-step (``mogjax.estep``, through the ``e_step_fn`` the fit builds,
exactly the one ``mogjax.em.em_loop`` uses) and the M-step
(``mogjax.suffstats.m_step``). Nothing here re-implements either.

**Where they extrapolate.** Every method moves along differences of EM points,
``theta + a (M(theta) - theta) + ...``, which in the natural parameters can leave
the simplex or the positive-definite cone. They move instead in the unconstrained
parametrisation of ``mogjax.unconstrained`` (logits against the last component,
means, log-Cholesky factors of the free covariance above the ``reg_covar`` floor),
flattened by ``flatten`` in the order ``logits, means, scale`` (each row-major,
``jax.flatten_util.ravel_pytree`` of ``UnconstrainedParams``). Any vector is a
valid mixture there, so a proposal is never infeasible, only worse (or, far out,
not finite: then it is rejected like a worse one). The reparametrisation does not
change the local behaviour: EM's Jacobian in the new coordinates is similar to the
old one (same eigenvalues, the same rate). An EM point is always used as the
M-step made it, never through the round trip, so a method that falls back to EM
takes EM's very step.

**Costs.** ``evaluate`` is the only place an E-step happens, and every method
reports how many it made: statistics and likelihood come from the same pass, so a
proposal's E-step also prepares the next EM step when the proposal is accepted.

**The loop** (``accelerated_loop``) is ``mogjax.em.em_loop``'s: one
``lax.while_loop``, the curve as data, stopped by ``mogjax.results``' rule
(``tol``, ``patience``, ``max_iter`` counted in the method's iterations). It returns
the best iterate visited; ``curve[n_iter]`` is that point's value.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from mogjax._typing import Array
from mogjax.estep import density_terms
from mogjax.mixture import MixtureParams, is_finite
from mogjax.progress import report_every
from mogjax.results import FitResult, StopCounter, count_small_gains, start_counter
from mogjax.suffstats import SufficientStats, m_step
from mogjax.unconstrained import from_unconstrained, to_unconstrained


class EMMap(NamedTuple):
    """EM's map and the flat parametrisation it is iterated in (built per trace).

    Attributes:
      e_step_fn: ``params -> SufficientStats``, the fit's E-step.
      reg_covar: the covariance floor of the M-step and of the parametrisation.
      equal_weights: the M-step keeps ``pi_j = 1/k``.
      unravel: flat vector -> ``UnconstrainedParams``.
    """

    e_step_fn: Callable
    reg_covar: Array
    equal_weights: bool
    unravel: Callable

    def flatten(self, params: MixtureParams) -> Array:
        """``params`` as a flat unconstrained vector (module doc)."""
        return ravel_pytree(to_unconstrained(params, self.reg_covar))[0]

    def at(self, u: Array) -> MixtureParams:
        """The mixture at the flat unconstrained vector ``u``."""
        return from_unconstrained(self.unravel(u), self.reg_covar)

    def m_step(self, stats: SufficientStats) -> MixtureParams:
        """EM's M-step (``mogjax.suffstats.m_step``)."""
        return m_step(stats, self.reg_covar, equal_weights=self.equal_weights)

    def evaluate(self, params: MixtureParams, u: Array | None = None) -> "Point":
        """One E-step at ``params``: the point, its statistics and flat coordinates."""
        stats = self.e_step_fn(params)
        return Point(params, self.flatten(params) if u is None else u, stats)

    def em_step(self, point: "Point") -> "Point":
        """EM's step from ``point``: M-step, then one E-step (counted by the caller)."""
        return self.evaluate(self.m_step(point.stats))

    def gradient(self, point: "Point") -> Array:
        r"""Gradient of the mean log-likelihood in the flat coordinates, from the
        point's statistics alone (no E-step): by Fisher's identity it is the gradient
        of EM's expected complete-data log-likelihood :math:`Q(\theta' | \theta)` at
        :math:`\theta' = \theta`, and :math:`Q` is linear in the statistics:
        :math:`\sum_j W_j\, \mathrm{log\_const}_j - \tfrac12 (M_j \cdot \theta_j +
        W_j\, \mathrm{offset}_j)` in the density terms of ``mogjax.estep``."""
        stats = point.stats
        moments = packed_moments(stats)

        def q(u):
            theta, offset, log_const = density_terms(self.at(u), stats.center,
                                                     stats.sum_x.dtype)
            return (stats.counts @ log_const
                    - 0.5 * (jnp.sum(moments.T * theta) + stats.counts @ offset)) / stats.n

        return jax.grad(q)(point.u)


def packed_moments(stats: SufficientStats) -> Array:
    """``resp^T @ quadratic_features`` (k, D) again from the statistics: the layout
    ``mogjax.estep`` sums (upper triangle of ``Q_j``, or its diagonal, or its trace;
    then ``S_j``)."""
    sxx, cov_type = stats.sum_xx, stats.covariance_type
    if cov_type in ("full", "tied"):
        rows, cols = jnp.triu_indices(sxx.shape[-1])
        quad = sxx[:, rows, cols]
    elif cov_type == "diag":
        quad = sxx
    else:
        quad = sxx[:, None]
    return jnp.concatenate([quad, stats.sum_x], axis=-1)


class Point(NamedTuple):
    """A visited point: the mixture, its flat coordinates, its E-step's statistics."""

    params: MixtureParams
    u: Array
    stats: SufficientStats

    @property
    def value(self) -> Array:
        """Mean log-likelihood (the curve's unit)."""
        return self.stats.mean_log_likelihood

    @property
    def total(self) -> Array:
        """Total (weighted) log-likelihood: the unit of the papers' tolerances."""
        return self.stats.log_likelihood

    @property
    def finite(self) -> Array:
        return is_finite(self.params) & jnp.isfinite(self.stats.log_likelihood)


def pick(ok, new, old):
    """``new`` where ``ok`` else ``old``, leaf by leaf (a traced choice)."""
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


class _State(NamedTuple):
    point: Point
    method_state: Any
    best_params: MixtureParams
    best_value: Array
    curve: Array
    step: Array
    counter: StopCounter
    converged: Array
    degenerate: Array
    n_esteps: Array


def accelerated_loop(method, e_step_fn, params: MixtureParams, tol, reg_covar, max_iter,
                     equal_weights: bool = False, verbose: int = 0, patience=1,
                     previous=None, capacity: int | None = None) -> FitResult:
    """Run ``method`` (a settings object of ``mogjax.accelerated``) from ``params``.

    ``method.init(em_map, point) -> state`` and
    ``method.iterate(em_map, point, state) -> (point, state, n_esteps, ok)`` define
    one iteration; ``ok`` False means EM's own step failed (a covariance that is not
    positive definite): the loop stops there, ``degenerate``, as ``em_loop`` does.
    Arguments as ``mogjax.em.em_loop``'s; the result also counts ``n_esteps``, every
    call of ``e_step_fn`` (the start's included).
    """
    probe = to_unconstrained(params, reg_covar)
    unravel = ravel_pytree(probe)[1]
    em_map = EMMap(e_step_fn, jnp.asarray(reg_covar, params.means.dtype), equal_weights,
                   unravel)
    point = em_map.evaluate(params)
    dtype = point.stats.log_likelihood.dtype
    capacity = max_iter if capacity is None else capacity
    curve = jnp.full((capacity + 1,), jnp.nan, dtype).at[0].set(point.value)

    def cond(s: _State):
        return (s.step < max_iter) & ~s.converged & ~s.degenerate

    def body(s: _State) -> _State:
        new, method_state, used, ok = method.iterate(em_map, s.point, s.method_state)
        ok = ok & new.finite
        point = pick(ok, new, s.point)
        i = s.step + ok.astype(s.step.dtype)
        curve = s.curve.at[i].set(jnp.where(ok, point.value, s.curve[i]))
        counter, stop = count_small_gains(s.counter, jnp.abs(curve[i] - curve[i - 1]), tol,
                                          patience)
        better = ok & (point.value > s.best_value)
        best_params, best_value = pick(better, (point.params, point.value),
                                       (s.best_params, s.best_value))
        report_every(verbose, i, curve[i], "accelerated EM iteration")
        return _State(point, method_state, best_params, best_value, curve, i, counter,
                      ok & stop, ~ok, s.n_esteps + used)

    start = _State(point, method.init(em_map, point), params, point.value, curve,
                   jnp.int32(0), start_counter(curve[0], previous), jnp.bool_(False),
                   jnp.bool_(False), jnp.int32(1))
    s = jax.lax.while_loop(cond, body, start)
    curve = s.curve.at[s.step].set(jnp.where(jnp.isfinite(s.curve[0]), s.best_value,
                                             s.curve[s.step]))
    degenerate = s.degenerate | ~jnp.isfinite(curve[0])
    return FitResult(s.best_params, curve, s.step, s.converged, degenerate, s.n_esteps)
