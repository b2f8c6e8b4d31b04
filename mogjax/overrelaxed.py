r"""Adaptive over-relaxed EM (Salakhutdinov & Roweis 2003).

Salakhutdinov, R. and Roweis, S. (2003), "Adaptive overrelaxed bound optimization
methods", *Proceedings of the 20th International Conference on Machine Learning
(ICML)*, 664-671. With EM's map :math:`M`, one iteration proposes

.. math::

   \theta' = \theta + \eta\,(M(\theta) - \theta),

and keeps it when it raises the log-likelihood; then :math:`\eta \leftarrow
\text{growth}\cdot\eta` (the paper's :math:`\alpha > 1`; default 1.1). A proposal that
lowers it (or is not finite) is discarded: :math:`\eta \leftarrow 1` and the
iteration takes the plain EM step :math:`M(\theta)`, so the method never goes down.
:math:`\eta = 1` is EM itself.

The step is taken in the flat coordinates of ``mogjax.em_map`` (natural by
default); a proposal outside the feasible set steps back toward :math:`M(\theta)`
(a smaller effective :math:`\eta`, no E-step spent). E-steps per iteration: 1 (the proposal's,
whose statistics serve the next iteration), 2 after a rejected proposal.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mogjax.em_map import EMMap, Point


class OverRelaxed(NamedTuple):
    """Adaptive over-relaxed EM's settings (module doc).

    Attributes:
      growth: the factor by which ``eta`` grows after a successful step (> 1).
      eta0: the first step factor (1: the first iteration is EM's).
      coordinates: ``"natural"`` or ``"unconstrained"`` (``mogjax.em_map``).
    """

    growth: float = 1.1
    eta0: float = 1.0
    coordinates: str = "natural"

    def init(self, em_map: EMMap, point: Point):
        return jnp.asarray(self.eta0, point.u.dtype)

    def iterate(self, em_map: EMMap, point: Point, eta):
        em_params = em_map.m_step(point.stats)
        u_em = em_map.flatten(em_params)
        relaxed = eta != 1.0
        u = point.u + eta * (u_em - point.u)

        def propose():
            proposal = em_map.evaluate(*em_map.toward(u_em, u, em_params))
            return proposal, proposal.finite & (proposal.total >= point.total)

        def em_only():
            return em_map.evaluate(em_params, u_em), jnp.bool_(True)

        proposal, good = jax.lax.cond(relaxed, propose, em_only)
        fallback = relaxed & ~good
        new = jax.lax.cond(fallback, lambda: em_map.evaluate(em_params, u_em),
                           lambda: proposal)
        ok = jnp.all(jnp.isfinite(u_em)) & new.finite
        eta = jnp.where(fallback, 1.0, eta * self.growth)
        return new, eta, 1 + fallback.astype(jnp.int32), ok
