r"""DAAREM: damped Anderson acceleration of EM with restarts (Henderson & Varadhan 2019).

Henderson, N. C. and Varadhan, R. (2019), "Damped Anderson acceleration with
restarts and monotonicity control for accelerating EM and EM-like algorithms",
*Journal of Computational and Graphical Statistics* 28(4):834-846; the defaults of
their R package ``daarem`` (``daarem_base_objfn``). With EM's map :math:`G`, the
residual :math:`f(x) = G(x) - x` and the last ``order`` differences
:math:`\Delta x_j`, :math:`\Delta f_j` (columns of :math:`X_k`, :math:`F_k`), one
iteration proposes

.. math::

   \gamma_k = (F_k^T F_k + \lambda_k I)^{-1} F_k^T f_k, \qquad
   x' = x_k - X_k \gamma_k + f_k - F_k \gamma_k ,

a ridge-damped Anderson step. The damping :math:`\lambda_k` is set so that
:math:`\|\gamma_k\|^2 = \delta_k \|\gamma_k^{LS}\|^2` (the undamped least-squares
coefficients), with :math:`\delta_k = 1 / (1 + \alpha^{\kappa - s_k})`,
:math:`\alpha = 1.2`, :math:`\kappa = 25` (paper, Section 3; here found by
bisection on :math:`\log \lambda` over the SVD of :math:`F_k`). :math:`s_k` counts
accepted proposals; at the end of each cycle of ``order`` iterations the history
restarts, and if the log-likelihood ended the cycle lower than it began (by more
than ``cycl_mon_tol``) :math:`s_k` drops by ``order`` (not below
:math:`-2\kappa`). Monotonicity control: a proposal is accepted when its
log-likelihood is at least the current one less ``mon_tol`` (0.01, total
log-likelihood, the package's unit); otherwise (or when it is not finite, which
also restarts the history) the iteration takes the EM step :math:`G(x_k)`.
``order`` defaults to :math:`\min(10, \lceil p/2 \rceil)` for :math:`p` free
parameters.

Anderson's step is a secant step: where EM's steps shrink it extrapolates forward,
but where they grow (EM leaving a saddle or a plateau, measured on 2-D overlapping
data) it extrapolates backward; those proposals are worse, rejected, and the
iteration costs two E-steps for one EM step. SQUAREM's S3 step always points forward.

The first iteration (no history yet) is the EM step, as the package's start. The
vectors are the flat coordinates of ``mogjax.em_map`` (natural by default); a
proposal outside the feasible set steps back toward the EM point
:math:`G(x_k)` (``EMMap.toward``, no E-step spent). E-steps per
iteration: 1 (the proposal's, whose statistics serve the next iteration), 2 after
a rejected proposal.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mogjax.em_map import EMMap, Point, pick


class DaaremState(NamedTuple):
    x_old: jnp.ndarray
    f_old: jnp.ndarray
    dx: jnp.ndarray  # (order, p) history of x differences
    df: jnp.ndarray  # (order, p) history of residual differences
    count: jnp.ndarray  # history columns in use
    started: jnp.ndarray
    shrink: jnp.ndarray  # s_k
    ell_star: jnp.ndarray  # log-likelihood at the start of the cycle


def damped_coefficients(df, f, n_cols, delta):
    """Anderson's ridge coefficients ``gamma`` ((order,)) with ``||gamma||^2 = delta *
    ||gamma_LS||^2`` over the first ``n_cols`` rows of ``df``."""
    order = df.shape[0]
    used = jnp.arange(order) < n_cols
    u, d, vt = jnp.linalg.svd(jnp.where(used[:, None], df, 0.0).T, full_matrices=False)
    uy = u.T @ f
    dtype = f.dtype
    keep = d > jnp.finfo(dtype).eps * max(df.shape) * jnp.max(d)
    d_safe = jnp.where(keep, d, 1.0)
    ls = jnp.sum(jnp.where(keep, (uy / d_safe) ** 2, 0.0))
    norm_sq = lambda lam: jnp.sum(jnp.where(keep, (d * uy / (d**2 + lam)) ** 2, 0.0))
    centre = 2.0 * jnp.log(jnp.max(d_safe))

    def bisect(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        too_big = norm_sq(jnp.exp(mid)) > delta * ls
        return jnp.where(too_big, mid, lo), jnp.where(too_big, hi, mid)

    lo, hi = jax.lax.fori_loop(0, 60, bisect, (centre - 50.0, centre + 50.0))
    lam = jnp.exp(0.5 * (lo + hi))
    gamma = vt.T @ jnp.where(keep, d * uy / (d**2 + lam), 0.0)
    return jnp.where(used & jnp.isfinite(gamma), gamma, 0.0)


class Daarem(NamedTuple):
    """DAAREM's settings (module doc).

    Attributes:
      order: Anderson's history length (``None``: ``min(10, ceil(p / 2))``).
      alpha, kappa: the damping schedule (1.2, 25).
      mon_tol: accepted drop of the total log-likelihood (0.01).
      cycl_mon_tol: accepted drop over a cycle before damping grows again (0).
      coordinates: ``"natural"`` or ``"unconstrained"`` (``mogjax.em_map``).
    """

    order: int | None = None
    alpha: float = 1.2
    kappa: float = 25.0
    mon_tol: float = 0.01
    cycl_mon_tol: float = 0.0
    coordinates: str = "natural"

    def _order(self, p: int) -> int:
        return self.order if self.order is not None else max(1, min(10, math.ceil(p / 2)))

    def init(self, em_map: EMMap, point: Point) -> DaaremState:
        p, dtype = point.u.shape[0], point.u.dtype
        m = self._order(p)
        zeros = jnp.zeros((m, p), dtype)
        return DaaremState(point.u, jnp.zeros_like(point.u), zeros, zeros, jnp.int32(0),
                           jnp.bool_(False), jnp.asarray(0.0, dtype), point.total)

    def iterate(self, em_map: EMMap, point: Point, st: DaaremState):
        m = st.dx.shape[0]
        em_params = em_map.m_step(point.stats)
        u_em = em_map.flatten(em_params)
        f = u_em - point.u
        col = jnp.minimum(st.count, m - 1)
        dx = jnp.where(st.started, st.dx.at[col].set(point.u - st.x_old), st.dx)
        df = jnp.where(st.started, st.df.at[col].set(f - st.f_old), st.df)
        count = st.count + st.started.astype(jnp.int32)
        delta = 1.0 / (1.0 + self.alpha ** (self.kappa - st.shrink))
        gamma = damped_coefficients(df, f, count, delta)
        u_prop = point.u - gamma @ dx + f - gamma @ df
        plain = count == 0
        params, u_prop = em_map.toward(u_em, u_prop, em_params)
        proposal = em_map.evaluate(pick(plain, em_params, params), jnp.where(plain, u_em, u_prop))
        finite = proposal.finite
        good = finite & (proposal.total >= point.total - self.mon_tol)
        new = jax.lax.cond(good, lambda: proposal, lambda: em_map.evaluate(em_params, u_em))
        shrink = st.shrink + (good & ~plain).astype(st.shrink.dtype)
        count = jnp.where(finite, count, 0)
        cycle_end = count == m
        ell_star = jnp.where(st.started, st.ell_star, new.total)
        dropped = cycle_end & (new.total < ell_star - self.cycl_mon_tol)
        shrink = jnp.where(dropped, jnp.maximum(shrink - m, -2.0 * self.kappa), shrink)
        ell_star = jnp.where(cycle_end, new.total, ell_star)
        count = jnp.where(cycle_end, 0, count)
        ok = jnp.all(jnp.isfinite(u_em)) & new.finite
        state = DaaremState(point.u, f, dx, df, count, jnp.bool_(True), shrink, ell_star)
        return new, state, 1 + (~good).astype(jnp.int32), ok
