r"""SQUAREM: squared extrapolation of EM (Varadhan & Roland 2008).

Varadhan, R. and Roland, C. (2008), "Simple and globally convergent methods for
accelerating the convergence of any EM algorithm", *Scandinavian Journal of
Statistics* 35(2):335-353; the defaults and safeguards of their R package
``SQUAREM`` (``squarem1``). From the current point :math:`x` with EM map
:math:`F`, one iteration takes two EM steps,

.. math::

   r = F(x) - x, \qquad v = F(F(x)) - 2F(x) + x,

a step length (the paper's schemes, in the package's positive convention)

.. math::

   \text{S1: } \alpha = -\frac{r^T v}{v^T v}, \qquad
   \text{S2: } \alpha = -\frac{r^T r}{r^T v}, \qquad
   \text{S3: } \alpha = \sqrt{\frac{r^T r}{v^T v}} \;(\text{default}),

clipped to :math:`[\text{step\_min}, \text{step\_max}]`, and the proposal
:math:`x' = x + 2\alpha r + \alpha^2 v` (:math:`\alpha = 1` gives :math:`F(F(x))`).
When :math:`|\alpha - 1| > 0.01` one more EM step *stabilises* it,
:math:`x \leftarrow F(x')`. ``step_max`` starts at ``step_max0`` (1) and is
multiplied by ``mstep`` (4) whenever :math:`\alpha` hits it. The monotonicity
safeguard: a proposal whose log-likelihood is lower than the current one by more
than ``objfn_inc`` (total log-likelihood, the package's unit; default 1), or that is
not finite, is rejected: the iteration takes the double EM step :math:`F(F(x))`
instead, and a step length at the cap lowers the cap by ``mstep`` (not below
``step_max0``).

Feasibility: :math:`x` is the flat vector of ``mogjax.em_map`` (natural coordinates by
default); a proposal outside the feasible set steps back toward :math:`F(F(x))`
(``EMMap.toward``) before its E-step. One deviation from ``squarem1``: a step length
within 0.01 of 1 takes the double EM step itself (``squarem1`` would evaluate the
extrapolation, equal to it up to rounding), which saves an E-step. And where
``squarem1`` stops once an EM step's residual is below its tolerance, an iteration
here ends after the first EM step when that step gains less than the fit's ``tol``
(1 E-step): the shared stopping rule then decides, without two more E-steps per
iteration spent at the optimum.

E-steps per iteration: 2 (the EM steps, whose second statistics serve the next
iteration when no extrapolation is made), 4 with a stabilised proposal (its E-step
and the stabilised point's, which serves the next iteration); a rejected proposal's
two E-steps are counted too.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mogjax.em_map import EMMap, Point, pick


class SquaremState(NamedTuple):
    step_min: jnp.ndarray
    step_max: jnp.ndarray


class Squarem(NamedTuple):
    """SQUAREM's settings (module doc); ``fit_em(acceleration=Squarem(...))``.

    Attributes:
      scheme: 1, 2 or 3 (default): the step length S1, S2 or S3.
      step_min0, step_max0: the first bounds on the step length (1, 1).
      mstep: the factor by which ``step_max`` grows (and shrinks) (4).
      objfn_inc: largest accepted drop of the total log-likelihood (1).
      coordinates: ``"natural"`` or ``"unconstrained"`` (``mogjax.em_map``).
    """

    scheme: int = 3
    step_min0: float = 1.0
    step_max0: float = 1.0
    mstep: float = 4.0
    objfn_inc: float = 1.0
    coordinates: str = "natural"

    def init(self, em_map: EMMap, point: Point) -> SquaremState:
        dtype = point.u.dtype
        return SquaremState(jnp.asarray(self.step_min0, dtype), jnp.asarray(self.step_max0, dtype))

    def iterate(self, em_map: EMMap, point: Point, state: SquaremState):
        one = em_map.em_step(point)
        small = one.finite & (jnp.abs(one.value - point.value) < em_map.tol)
        return jax.lax.cond(small, lambda: (one, state, jnp.int32(1), jnp.bool_(True)),
                            lambda: self._squared(em_map, point, state, one))

    def _squared(self, em_map: EMMap, point: Point, state: SquaremState, one: Point):
        two = em_map.em_step(one)
        ok = one.finite & two.finite
        r = one.u - point.u
        v = two.u - 2.0 * one.u + point.u
        sr2, sv2, srv = r @ r, v @ v, r @ v
        alpha = {1: -srv / sv2, 2: -sr2 / srv, 3: jnp.sqrt(sr2 / sv2)}[self.scheme]
        alpha = jnp.where(jnp.isfinite(alpha), alpha, 1.0)
        alpha = jnp.maximum(state.step_min, jnp.minimum(state.step_max, alpha))
        extrapolate = ok & (jnp.abs(alpha - 1.0) > 0.01)

        def stabilised():
            u = point.u + 2.0 * alpha * r + alpha**2 * v
            proposal = em_map.evaluate(*em_map.toward(two.u, u, two.params))
            new = em_map.em_step(proposal)
            good = (proposal.finite & new.finite
                    & (new.total >= point.total - self.objfn_inc))
            return new, good

        new, good = jax.lax.cond(extrapolate, stabilised, lambda: (two, jnp.bool_(True)))
        rejected = extrapolate & ~good
        new = pick(rejected, two, new)
        at_cap = alpha == state.step_max
        step_max = jnp.where(rejected & at_cap,
                             jnp.maximum(self.step_max0, state.step_max / self.mstep),
                             state.step_max)
        alpha = jnp.where(rejected, 1.0, alpha)
        step_max = jnp.where(alpha == step_max, self.mstep * step_max, step_max)
        step_min = jnp.where((state.step_min < 0) & (alpha == state.step_min),
                             self.mstep * state.step_min, state.step_min)
        used = 2 + 2 * extrapolate.astype(jnp.int32)
        return new, SquaremState(step_min, step_max), used, ok
