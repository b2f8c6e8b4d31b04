r"""What every fit returns, the one stopping rule they share, and how they fail.

**The stopping rule** (EM in every flavour and gradient ascent alike). A fit records
its mean log-likelihood after every iteration or step in ``curve``. The *gain* of
step ``s`` is :math:`|\ell_s - \ell_{s-1}|`. After step ``t`` the fit stops when the
``patience`` steps before the latest one each gained less than ``tol``:

.. math::

   |\ell_s - \ell_{s-1}| < \mathrm{tol} \quad\text{for}\quad
   s = t - \mathrm{patience}, \dots, t - 1.

With ``patience=1`` this is scikit-learn's rule for ``GaussianMixture``, which
compares each iteration's lower bound with the previous one *before* its M-step: the
step after the first small gain is still taken, so ``n_iter`` and the parameters
equal scikit-learn's. Gradient ascent counts its gains the same way, so one
``tol`` and one ``patience`` mean the same thing for every method. ``tol=0`` never
stops early. A fit that continues an earlier one (scikit-learn's ``warm_start``)
passes the earlier curve's last value, and the gain into its start is counted first.

The rule lives in ``count_small_gains``: a counter of consecutive small gains and
the latest gain, still to be counted (``StopCounter``); it works on NumPy scalars
(host loops) and traced JAX values (compiled loops) alike.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mogjax._typing import Array
from mogjax.mixture import MixtureParams

FAILURE_ADVICE = (
    "Fitting the mixture model failed because some components have ill-defined "
    "empirical covariance (for instance caused by singleton or collapsed samples). "
    "Try to decrease the number of components, increase reg_covar, or scale the "
    "input data{extra}."
)

# Why a fit stopped: codes stored in results (compiled loops return integers).
# (the last is decided on the host: gradient ascent whose steps never improved on its start)
STOP_REASONS = ("steps", "tol", "grad_norm", "degenerate", "no_progress")
STEPS, TOL, GRAD_NORM, DEGENERATE, NO_PROGRESS = range(len(STOP_REASONS))


class FitResult(NamedTuple):
    """What a fit returns: the parameters and the whole likelihood curve as data.

    Attributes:
      params: the fitted ``MixtureParams`` (never NaN).
      curve: mean log-likelihood per iteration, ``(max_iter + 1,)``: ``curve[0]``
        for the initial parameters, ``curve[t]`` after ``t`` iterations,
        ``curve[n_iter]`` the final value, NaN after it.
      n_iter: iterations taken (an integer array).
      converged: whether the stopping rule was met before ``max_iter``.
      degenerate: whether a step produced a non-finite covariance and was undone
        (the fit stopped at the last finite parameters).
      n_esteps: E-step evaluations the loop made (each one pass over the data giving
        the likelihood and the statistics): the start's, every iteration's, and for
        accelerated EM (``mogjax.accelerated``) stabilising steps, rejected proposals
        and line searches too. Plain EM: ``n_iter + 1``, plus one when a failed step
        stopped it (``degenerate``). ``-1``: not counted (chunked EM).
      esteps: E-steps made by the time each curve point was reached, shaped as
        ``curve``: ``esteps[t]`` for ``curve[t]`` (``esteps[0] == 1``), ``-1`` after
        ``n_iter``; so ``(esteps, curve)`` is the curve against E-steps. ``None``
        where not recorded (chunked EM).
    """

    params: MixtureParams
    curve: Array
    n_iter: Array
    converged: Array
    degenerate: Array | bool = False
    n_esteps: Array | int = -1
    esteps: Array | None = None

    @property
    def final_log_likelihood(self) -> Array:
        """``curve[n_iter]``: the mean log-likelihood of ``params``."""
        return self.curve[self.n_iter]

    @property
    def stop_reason(self) -> str:
        """``"tol"``, ``"degenerate"`` or ``"steps"`` (``max_iter`` ran out)."""
        if bool(np.any(self.degenerate)):
            return "degenerate"
        return "tol" if bool(np.all(self.converged)) else "steps"


class DegenerateCovarianceError(ValueError):
    """A fit met a covariance that is not positive definite.

    ``result`` holds what was computed up to the failure, so callers can still log
    it: the curve so far and the last finite parameters, where a component whose
    covariance was never positive definite (a degenerate start) carries a unit
    covariance (``finite_params``).
    """

    def __init__(self, message: str, result):
        super().__init__(message)
        self.result = result


def all_finite(tree) -> Array:
    """Whether every entry of every array in ``tree`` is finite (a traced bool)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree)]))


def finite_params(params: MixtureParams) -> MixtureParams:
    """``params`` with every non-finite entry replaced: a component's precision factor
    by the identity's (unit covariance), a mean by 0, the weights by equal ones."""
    k = params.n_components
    chol = params.prec_chol
    if params.covariance_type in ("full", "tied"):
        ok = jnp.all(jnp.isfinite(chol), axis=(-2, -1), keepdims=True)
        chol = jnp.where(ok, chol, jnp.eye(chol.shape[-1], dtype=chol.dtype))
    else:
        ok = jnp.all(jnp.isfinite(chol), axis=-1, keepdims=True) if chol.ndim == 2 else jnp.isfinite(chol)
        chol = jnp.where(ok, chol, 1.0)
    log_w = params.log_weights
    log_w = jnp.where(jnp.all(jnp.isfinite(log_w)), log_w, jnp.full_like(log_w, -np.log(k)))
    means = jnp.where(jnp.isfinite(params.means), params.means, 0.0)
    return params.replace(log_weights=log_w, means=means, prec_chol=chol)


def raise_if_degenerate(result, dtype) -> None:
    """Raise ``DegenerateCovarianceError`` (scikit-learn's advice) if ``result`` is;
    its ``result`` has finite parameters (``finite_params``) when it holds a
    ``params`` field. A result of another kind (``VariationalResult`` keeps a
    posterior) is passed as given: its fit makes it finite first."""
    if bool(np.any(result.degenerate)):
        extra = ", or use float64 (jax_enable_x64)" if np.dtype(dtype) == np.float32 else ""
        if "params" in getattr(result, "_fields", ()):
            result = result._replace(params=finite_params(result.params))
        raise DegenerateCovarianceError(FAILURE_ADVICE.format(extra=extra), result)


class StopCounter(NamedTuple):
    """The stopping rule's state: ``small`` consecutive small gains counted so far,
    and ``pending``, the latest gain (counted at the next step: the rule's lag)."""

    small: Array
    pending: Array


def start_counter(curve0, previous=None) -> StopCounter:
    """The counter before the first step; ``previous`` is the value before the start
    (continuing a fit), ``None`` or NaN for none."""
    curve0 = jnp.asarray(curve0)
    if previous is None:
        pending = jnp.full_like(curve0, jnp.inf)
    else:
        previous = jnp.asarray(previous, curve0.dtype)
        pending = jnp.where(jnp.isnan(previous), jnp.inf, jnp.abs(curve0 - previous))
    return StopCounter(jnp.int32(0), pending)


def count_small_gains(counter: StopCounter, gain, tol, patience) -> tuple[StopCounter, Array]:
    """Count the pending gain, hold ``gain`` back; return ``(counter, stop)``.

    ``stop`` is True once ``patience`` consecutive counted gains were below ``tol``.
    """
    small = jnp.where(counter.pending < tol, counter.small + 1, 0)
    return StopCounter(small, jnp.asarray(gain, counter.pending.dtype)), small >= patience


def best_of(runs: FitResult) -> FitResult:
    """Of results stacked on a leading axis (restarts), the non-degenerate one of
    highest final value (the first on ties); traceable."""
    final = jnp.take_along_axis(runs.curve, runs.n_iter[:, None], axis=1)[:, 0]
    score = jnp.where(runs.degenerate, -jnp.inf, jnp.nan_to_num(final, nan=-jnp.inf))
    best = jnp.argmax(score)
    return jax.tree.map(lambda a: a[best], runs)


def pick_best(results: list) -> FitResult:
    """``best_of`` a list of results (restarts run one after the other)."""
    return best_of(jax.tree.map(lambda *a: jnp.stack([jnp.asarray(x) for x in a]), *results))
