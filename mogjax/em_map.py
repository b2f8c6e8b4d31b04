r"""EM as a map on a flat vector, and the compiled loop every accelerated EM shares.

SQUAREM, DAAREM, over-relaxed EM and ECG (``mogjax.accelerated``) all iterate one
map, EM's: an E-step (``mogjax.estep``, through the ``e_step_fn`` the fit builds,
exactly the one ``mogjax.em.em_loop`` uses) and the M-step
(``mogjax.suffstats.m_step``). Nothing here re-implements either.

**Where they extrapolate** (``coordinates``). Every method moves along affine
combinations of EM points, ``theta + a (M(theta) - theta) + ...``.

- ``"natural"`` (the default): the flat vector is ``(weights, means, covariances)``
  in scikit-learn's shapes (``jax.flatten_util.ravel_pytree`` order, each
  row-major; ``identity`` has no covariance part). EM's update is a ratio of
  statistics linear in the responsibilities, so its map is close to linear here
  and the extrapolations work best (measured: SQUAREM needs about half the E-steps
  it needs in the unconstrained coordinates on a slow 1-D case). Affine
  combinations keep the weights summing to one, but a proposal can leave the
  feasible set: a weight at or below zero, or a covariance with an eigenvalue
  below ``reg_covar`` (EM's own floor). ``toward`` then *steps back toward the EM
  point* it extrapolates from (halving the distance, at most 30 times, no E-step
  spent), so every evaluated proposal is a mixture EM itself could reach.
- ``"unconstrained"``: ``mogjax.unconstrained``'s coordinates (logits against the
  last component, means, log-Cholesky factors of the covariance above the floor),
  where every vector is feasible. The local rate is the same (EM's Jacobian in
  other coordinates is similar), but the map is more curved.

An EM point is always used as the M-step made it, never through ``at``, so a method
that falls back to EM takes EM's very step.

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
      tol: the fit's stopping tolerance (mean log-likelihood): a method may end an
        iteration early when EM's step gains less (``squarem1`` stops there too).
    """

    e_step_fn: Callable
    reg_covar: Array
    equal_weights: bool
    unravel: Callable
    tol: Array
    covariance_type: str = "full"
    coordinates: str = "natural"

    def flatten(self, params: MixtureParams) -> Array:
        """``params`` as a flat vector in ``coordinates`` (module doc)."""
        return ravel_pytree(coordinates_of(params, self.coordinates, self.reg_covar))[0]

    def at(self, u: Array) -> MixtureParams:
        """The mixture at the flat vector ``u``; NaN where ``u`` is not feasible."""
        if self.coordinates == "unconstrained":
            return from_unconstrained(self.unravel(u), self.reg_covar)
        return natural_params(*self.unravel(u), self.reg_covar, self.covariance_type)

    def toward(self, anchor: Array, u: Array, anchor_params: MixtureParams):
        """``(params, u)``: the first feasible point of ``u``, ``anchor + (u - anchor) /
        2``, ``anchor + (u - anchor) / 4``, ... (30 halvings at most, then the anchor
        itself, whose parameters are ``anchor_params``). No E-step."""

        def cond(c):
            i, v, params = c
            return (i < 30) & ~is_finite(params)

        def body(c):
            i, v, _ = c
            v = anchor + 0.5 * (v - anchor)
            return i + 1, v, self.at(v)

        i, v, params = jax.lax.while_loop(cond, body, (jnp.int32(0), u, self.at(u)))
        ok = is_finite(params)
        return pick(ok, params, anchor_params), jnp.where(ok, v, anchor)

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


def coordinates_of(params: MixtureParams, coordinates: str, reg_covar):
    """The pytree ``EMMap.flatten`` flattens (module doc)."""
    if coordinates == "unconstrained":
        return to_unconstrained(params, reg_covar)
    cov = () if params.covariance_type == "identity" else params.covariances
    return params.weights, params.means, cov


def natural_params(weights, means, cov, reg_covar, covariance_type: str) -> MixtureParams:
    """The mixture of natural coordinates; every array NaN unless the weights are
    positive and every covariance's eigenvalues at least ``reg_covar`` (to rounding)."""
    ok = jnp.all(weights > 0)
    slack = 16 * jnp.finfo(means.dtype).eps
    if covariance_type == "identity":
        cov = jnp.ones((means.shape[0],), means.dtype)
    elif covariance_type in ("full", "tied"):
        cov = 0.5 * (cov + jnp.swapaxes(cov, -1, -2))
        eig = jnp.linalg.eigvalsh(cov)
        ok &= jnp.all(eig >= reg_covar - slack * jnp.max(jnp.abs(eig)))
    else:
        ok &= jnp.all(cov >= reg_covar - slack * jnp.max(jnp.abs(cov)))
    params = MixtureParams.from_covariances(jnp.where(ok, weights, 1.0), means, cov,
                                            covariance_type)
    return jax.tree.map(lambda a: jnp.where(ok, a, jnp.nan), params)


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
    esteps: Array


def accelerated_loop(method, e_step_fn, params: MixtureParams, tol, reg_covar, max_iter,
                     equal_weights: bool = False, verbose: int = 0, patience=1,
                     previous=None, capacity: int | None = None) -> FitResult:
    """Run ``method`` (a settings object of ``mogjax.accelerated``) from ``params``.

    ``method.init(em_map, point) -> state`` and
    ``method.iterate(em_map, point, state) -> (point, state, n_esteps, ok)`` define
    one iteration; ``ok`` False means EM's own step failed (a covariance that is not
    positive definite): the loop stops there, ``degenerate``, as ``em_loop`` does.
    Arguments as ``mogjax.em.em_loop``'s; the result also counts ``n_esteps``, every
    call of ``e_step_fn`` (the start's included), and ``esteps``, the count when each
    curve point was reached.
    """
    dtype = params.means.dtype
    coordinates = getattr(method, "coordinates", "natural")
    unravel = ravel_pytree(coordinates_of(params, coordinates, reg_covar))[1]
    em_map = EMMap(e_step_fn, jnp.asarray(reg_covar, dtype), equal_weights, unravel,
                   jnp.asarray(tol, dtype), params.covariance_type, coordinates)
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
        n_esteps = s.n_esteps + used
        esteps = s.esteps.at[i].set(jnp.where(ok, n_esteps, s.esteps[i]))
        return _State(point, method_state, best_params, best_value, curve, i, counter,
                      ok & stop, ~ok, n_esteps, esteps)

    start = _State(point, method.init(em_map, point), params, point.value, curve,
                   jnp.int32(0), start_counter(curve[0], previous), jnp.bool_(False),
                   jnp.bool_(False), jnp.int32(1),
                   jnp.full((capacity + 1,), -1, jnp.int32).at[0].set(1))
    s = jax.lax.while_loop(cond, body, start)
    curve = s.curve.at[s.step].set(jnp.where(jnp.isfinite(s.curve[0]), s.best_value,
                                             s.curve[s.step]))
    degenerate = s.degenerate | ~jnp.isfinite(curve[0])
    return FitResult(s.best_params, curve, s.step, s.converged, degenerate, s.n_esteps,
                     s.esteps)
