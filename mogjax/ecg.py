r"""ECG: expectation-conjugate-gradient (Salakhutdinov, Roweis & Ghahramani 2003).

Salakhutdinov, R., Roweis, S. and Ghahramani, Z. (2003), "Optimization with EM and
Expectation-Conjugate-Gradient", *Proceedings of the 20th International Conference
on Machine Learning (ICML)*, 672-679. EM's step is a preconditioned gradient,
:math:`M(\theta) - \theta = P(\theta) \nabla \ell(\theta)` with :math:`P` positive
definite (Xu & Jordan 1996); ECG runs nonlinear conjugate gradient with that
preconditioner: with :math:`\tilde g_t = M(\theta_t) - \theta_t` and the gradient
:math:`g_t = \nabla \ell(\theta_t)`, the preconditioned Polak-Ribiere coefficient
and direction

.. math::

   \beta_t = \max\Big(0, \frac{g_t^T (\tilde g_t - \tilde g_{t-1})}
   {g_{t-1}^T \tilde g_{t-1}}\Big), \qquad d_t = \tilde g_t + \beta_t d_{t-1},

restarted (:math:`\beta_t = 0`, the EM direction) every ``p`` iterations
(:math:`p` parameters), after a failed line search, and whenever :math:`d_t` is not
an ascent direction; then a line search along :math:`d_t`. Along the EM direction,
step 1 is EM's own point. The gradient comes from the E-step's statistics (Fisher's
identity, ``mogjax.em_map.EMMap.gradient``): no extra pass over the data.

**The line search** maximises :math:`\phi(a) = \ell(\theta_t + a d_t)` with the
strong Wolfe conditions (sufficient increase ``c1`` = 1e-4, curvature ``c2`` = 0.1,
the values of Rasmussen's ``minimize``, which the paper's experiments used):
expansion by 4 until the maximum is bracketed, then safeguarded cubic
interpolation (Nocedal & Wright 2006, Algorithms 3.5-3.6), at most
``max_linesearch`` evaluations. The first trial is 1, then the previous step times
the ratio of the previous slope to the new one (at most 10, as ``minimize``). Every
trial is one E-step and is counted. When no trial increased :math:`\ell` enough,
the iteration takes EM's step (one more E-step) and restarts the directions; so
ECG never goes down. Near the optimum, where EM's step would gain (to first order,
:math:`g_t^T \tilde g_t`) less than the fit's ``tol`` or less than 8 ulps of the
objective (a search cannot measure such gains), the iteration is EM's step alone.
Coordinates: the flat vector of ``mogjax.em_map`` (natural by default); a trial
outside the feasible set counts as too far (no E-step spent on it).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mogjax.em_map import EMMap, Point, pick
from mogjax.mixture import is_finite


class EcgState(NamedTuple):
    direction: jnp.ndarray
    em_step: jnp.ndarray  # \tilde g of the previous iteration
    grad: jnp.ndarray
    slope: jnp.ndarray  # phi'(0) of the previous line search
    step: jnp.ndarray  # its accepted step
    since_restart: jnp.ndarray
    fresh: jnp.ndarray  # the next direction is EM's


class _Search(NamedTuple):
    i: jnp.ndarray
    alpha: jnp.ndarray
    lo: jnp.ndarray  # (a, phi, phi') of the best acceptable trial (0 at first)
    hi: jnp.ndarray
    bracketed: jnp.ndarray
    done: jnp.ndarray
    best: Point
    best_step: jnp.ndarray
    found: jnp.ndarray
    n_esteps: jnp.ndarray


def _cubic_max(lo, hi):
    """The maximiser of the cubic through two (a, phi, phi') triples, safeguarded to
    the middle 80% of the interval; the midpoint where it is not defined."""
    a, fa, ga = lo[0], -lo[1], -lo[2]  # as a minimisation
    b, fb, gb = hi[0], -hi[1], -hi[2]
    d1 = ga + gb - 3.0 * (fa - fb) / (a - b)
    d2 = jnp.sign(b - a) * jnp.sqrt(d1**2 - ga * gb)
    x = b - (b - a) * (gb + d2 - d1) / (gb - ga + 2.0 * d2)
    left, right = jnp.minimum(a, b), jnp.maximum(a, b)
    width = right - left
    x = jnp.clip(x, left + 0.1 * width, right - 0.1 * width)
    return jnp.where(jnp.isfinite(x), x, 0.5 * (a + b))


class ECG(NamedTuple):
    """ECG's settings (module doc).

    Attributes:
      max_linesearch: E-steps at most per line search (10).
      c1, c2: the strong Wolfe constants (1e-4, 0.1).
      expand: the factor of the search's expansion (4).
      ratio: the largest growth of the first trial step (10).
      coordinates: ``"natural"`` or ``"unconstrained"`` (``mogjax.em_map``).
    """

    max_linesearch: int = 10
    c1: float = 1e-4
    c2: float = 0.1
    expand: float = 4.0
    ratio: float = 10.0
    coordinates: str = "natural"

    def init(self, em_map: EMMap, point: Point) -> EcgState:
        zero, dtype = jnp.zeros_like(point.u), point.u.dtype
        one = jnp.asarray(1.0, dtype)
        return EcgState(zero, zero, zero, one, one, jnp.int32(0), jnp.bool_(True))

    def _search(self, em_map: EMMap, point: Point, d, slope0, alpha0):
        f0 = point.value
        start = jnp.stack([jnp.zeros_like(f0), f0, slope0])

        def cond(s: _Search):
            return (s.i < self.max_linesearch) & ~s.done

        def body(s: _Search) -> _Search:
            u = point.u + s.alpha * d
            params = em_map.at(u)
            feasible = is_finite(params)  # else no E-step: the trial is too far
            trial = jax.lax.cond(feasible, lambda: em_map.evaluate(params, u),
                                 lambda: jax.tree.map(lambda a: jnp.full_like(a, jnp.nan),
                                                      point))
            f = trial.value
            g = em_map.gradient(trial) @ d
            finite = trial.finite & jnp.isfinite(g)
            sufficient = finite & (f >= f0 + self.c1 * s.alpha * slope0)
            too_far = ~sufficient | (f <= s.lo[1])
            wolfe = ~too_far & (jnp.abs(g) <= self.c2 * slope0)
            here = jnp.stack([s.alpha, jnp.where(finite, f, -jnp.inf), g])
            # a new upper end: the trial itself, or the old lower end when the slope
            # at the trial points away from the old upper end
            turn = ~too_far & jnp.where(s.bracketed, g * (s.hi[0] - s.alpha) < 0, g < 0)
            hi = jnp.where(too_far, here, jnp.where(turn, s.lo, s.hi))
            lo = jnp.where(too_far, s.lo, here)
            bracketed = s.bracketed | too_far | turn
            better = sufficient & (f > s.best.value)
            best, best_step = pick(better, (trial, s.alpha), (s.best, s.best_step))
            alpha = jnp.where(bracketed,
                              jnp.where(jnp.isfinite(hi[1]), _cubic_max(lo, hi),
                                        0.5 * (lo[0] + hi[0])),
                              s.alpha * self.expand)
            return _Search(s.i + 1, alpha, lo, hi, bracketed, wolfe, best, best_step,
                           s.found | better, s.n_esteps + feasible.astype(jnp.int32))

        s = jax.lax.while_loop(cond, body, _Search(
            jnp.int32(0), alpha0, start, start, jnp.bool_(False), jnp.bool_(False), point,
            jnp.zeros_like(alpha0), jnp.bool_(False), jnp.int32(0)))
        return s.best, s.best_step, s.found, s.n_esteps

    def iterate(self, em_map: EMMap, point: Point, st: EcgState):
        em_params = em_map.m_step(point.stats)
        u_em = em_map.flatten(em_params)
        em_step = u_em - point.u
        grad = em_map.gradient(point)
        beta = grad @ (em_step - st.em_step) / (st.grad @ st.em_step)
        restart = st.fresh | (st.since_restart >= point.u.shape[0]) | ~jnp.isfinite(beta)
        beta = jnp.where(restart, 0.0, jnp.maximum(beta, 0.0))
        d = em_step + beta * st.direction
        slope = grad @ d
        uphill = slope > 0
        d = jnp.where(uphill, d, em_step)
        slope = jnp.where(uphill, slope, grad @ em_step)
        restart = restart | ~uphill
        alpha0 = jnp.where(st.fresh, 1.0, st.step * jnp.minimum(self.ratio, st.slope / slope))
        alpha0 = jnp.where(jnp.isfinite(alpha0) & (alpha0 > 0), alpha0, 1.0)
        # at the optimum (EM's step would gain less than tol, or less than a search
        # can measure in this precision): EM's step, no search
        floor = 8 * jnp.finfo(point.u.dtype).eps * jnp.maximum(1.0, jnp.abs(point.value))
        small = grad @ em_step < jnp.maximum(em_map.tol, floor)
        best, step, found, n_evals = jax.lax.cond(
            small, lambda: (point, jnp.ones_like(alpha0), jnp.bool_(False), jnp.int32(0)),
            lambda: self._search(em_map, point, d, slope, alpha0))
        new = jax.lax.cond(found, lambda: best, lambda: em_map.evaluate(em_params, u_em))
        ok = jnp.all(jnp.isfinite(u_em)) & new.finite
        state = EcgState(d, em_step, grad, slope, jnp.where(found, step, 1.0),
                         jnp.where(restart, 1, st.since_restart + 1), ~found)
        return new, state, n_evals + (~found).astype(jnp.int32), ok
