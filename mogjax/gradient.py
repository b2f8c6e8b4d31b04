r"""Gradient ascent on the mean log-likelihood with optax, from EM's starting point.

**The objective and its gradient cost one E-step.** Write component ``j``'s log
density at ``x`` as ``log_const_j - (phi(x) . theta_j + offset_j) / 2`` with the
quadratic features ``phi`` of ``mogjax.gaussian``. Then

.. math::

   \frac{\partial \ell}{\partial\,\mathrm{log\_const}_j} = \frac{W_j}{n}, \qquad
   \frac{\partial \ell}{\partial\,\mathrm{offset}_j} = -\frac{W_j}{2n}, \qquad
   \frac{\partial \ell}{\partial \theta_j} = -\frac{1}{2n} \sum_i w_{ij}\,\phi(x_i),

exactly EM's statistics (``W_j`` and the moments ``resp^T @ features``), which the
E-step computes in its two matrix products per row block over the cached features.
``objective`` is that E-step behind a ``jax.custom_jvp``; JAX differentiates only
the small map from ``UnconstrainedParams`` to ``(theta, offset, log_const)``, so a
step costs one E-step plus ``O(k d^3)`` work on the parameters (``benchmarks/gradient.py``).

**The loop** (``fit_gradient``) is one ``lax.while_loop`` over optax updates of the
unconstrained parameters (``mogjax.unconstrained``). It starts from ``mogjax.init``
with EM's key, so ``curve[0]`` is EM's own number; it stops by the shared rule of
``mogjax.results`` (``tol``, ``patience``), on a small gradient norm (``grad_tol``),
or when ``steps`` run out. A step is *rejected* (parameters and optimiser state
stay, the count grows) when its objective, gradient or parameters are not finite,
and, for optimisers with a line search (L-BFGS), when it lowers the objective by
more than rounding; a rejected line-search step also clears the optimiser's memory.
The result is the best point visited: ``curve[n_iter]`` is its value, so a
full-batch curve never ends below its maximum.
"""

import functools
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mogjax import _validation as v
from mogjax.em import curve_capacity, trimmed
from mogjax.estep import data_center, density_terms, e_step_data, stats_of, terms_moments
from mogjax.init import initialize
from mogjax.mixture import MixtureParams
from mogjax.optimizers import make_optimizer, uses_line_search, with_hyperparams
from mogjax.progress import report_every
from mogjax.results import (
    DEGENERATE, GRAD_NORM, STEPS, STOP_REASONS, TOL, StopCounter, all_finite, count_small_gains,
    raise_if_degenerate, start_counter,
)
from mogjax.unconstrained import UnconstrainedParams, from_unconstrained, to_unconstrained
from mogjax._typing import Array, ArrayLike


class _Data(NamedTuple):
    """How the E-step reads the data (static): see ``mogjax.em.e_step_data``."""

    covariance_type: str
    block_size: int | None
    cached: bool


def _total(data, weight):
    return data.shape[0] if weight is None else jnp.sum(weight)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _mean_log_likelihood(how: _Data, terms, data, center, weight):
    ll, _, _ = terms_moments(terms, data, center, how.covariance_type, how.block_size,
                             how.cached, weight)
    return ll / _total(data, weight)


@_mean_log_likelihood.defjvp
def _mean_log_likelihood_jvp(how: _Data, primals, tangents):
    """The E-step's statistics are the gradient (module doc); data are constants."""
    terms, data, center, weight = primals
    d_theta, d_offset, d_log_const = tangents[0]
    ll, counts, moments = terms_moments(terms, data, center, how.covariance_type,
                                        how.block_size, how.cached, weight)
    n = _total(data, weight)
    slope = counts @ d_log_const - 0.5 * (counts @ d_offset + jnp.sum(moments.T * d_theta))
    return ll / n, slope / n


def _objective(raw: UnconstrainedParams, data, center, reg_covar, how: _Data,
               weight=None) -> Array:
    params = from_unconstrained(raw, reg_covar)
    terms = density_terms(params, center, data.dtype)
    return _mean_log_likelihood(how, terms, data, center, weight)


def objective(raw: UnconstrainedParams, x: ArrayLike, reg_covar=0.0, sample_weight=None) -> Array:
    """The function gradient ascent maximises: ``mean_log_likelihood`` of ``raw``
    (weighted by ``sample_weight``, (n,), when given).

    Differentiable in ``raw`` (not in ``x``) at the cost of one E-step.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> raw = UnconstrainedParams(
      ...     jnp.zeros(0), jnp.zeros((1, 1)), jnp.zeros((1, 1)), "diag")
      >>> g = jax.grad(objective)(raw, jnp.array([[1.0], [3.0]]))
      >>> round(float(g.means[0, 0]), 4), round(float(g.scale[0, 0]), 4)
      (2.0, 2.0)
    """
    x = jnp.asarray(x)
    w = None if sample_weight is None else jnp.asarray(sample_weight, x.dtype)
    how = _Data(raw.covariance_type, None, False)
    center = jax.lax.stop_gradient(data_center(x, w))
    return _objective(raw, x, center, reg_covar, how, w)


class GradientResult(NamedTuple):
    """What ``fit_gradient`` returns; its first seven fields are ``FitResult``'s.

    Attributes:
      params: the best parameters visited (by the full-data objective).
      curve: full-data mean log-likelihood, ``(steps + 1,)``: ``curve[0]`` for the
        initial parameters (EM's own ``curve[0]``), ``curve[t]`` after ``t`` steps,
        ``curve[n_iter]`` the value of ``params``, NaN after it. With mini-batches
        the full objective is evaluated every ``eval_every`` steps and held between.
      n_iter: steps taken, rejected ones included.
      converged: the stopping rule (``tol``) or the gradient norm stopped the fit.
      degenerate: some step was rejected (``n_rejected > 0``).
      n_esteps: E-steps made (each one pass over the data, the unit of
        ``FitResult.n_esteps``): 2 at the start (the start's statistics, and the
        value and gradient of the unconstrained start), 1 per step, or the line
        search's evaluations (L-BFGS) plus any the optimiser had to redo; with
        mini-batches, the full evaluations plus the batches' rows in passes over
        the data (rounded up).
      esteps: E-steps made by the time each curve point was reached (as
        ``FitResult.esteps``; with mini-batches, the batches' rows up to that step
        in passes over the data, rounded up), ``-1`` after ``n_iter``.
      n_rejected: steps rejected (module doc).
      stop_code: index into ``mogjax.results.STOP_REASONS`` (see ``stop_reason``).
      best_iter: the step after which ``params`` were reached.
    """

    params: MixtureParams
    curve: Array
    n_iter: Array
    converged: Array
    degenerate: Array
    n_esteps: Array
    esteps: Array
    n_rejected: Array
    stop_code: Array
    best_iter: Array

    @property
    def final_log_likelihood(self) -> Array:
        """``curve[n_iter]``: the mean log-likelihood of ``params``."""
        return self.curve[self.n_iter]

    @property
    def stop_reason(self) -> str:
        """``"tol"``, ``"grad_norm"``, ``"steps"``, ``"degenerate"`` (the start), or
        ``"no_progress"``: the steps ran out and no step improved on the start."""
        reason = STOP_REASONS[int(self.stop_code)]
        if reason == "steps" and int(self.n_iter) > 0 and int(self.best_iter) == 0:
            return "no_progress"
        return reason


class _State(NamedTuple):
    """The compiled loop's state; ``value``/``grad`` belong to ``raw`` (full batch)."""

    raw: UnconstrainedParams
    opt_state: Any
    value: Array
    grad: UnconstrainedParams
    best_raw: UnconstrainedParams
    best_value: Array
    best_iter: Array
    curve: Array
    step: Array
    n_rejected: Array
    counter: StopCounter
    stop: Array
    n_esteps: Array
    esteps: Array


class _Settings(NamedTuple):
    """Traced loop settings."""

    tol: Array
    patience: Array
    grad_tol: Array
    reg_covar: Array
    steps: Array


def _pick(ok, new, old):
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def _loop(raw0, curve0, data, weight, center, key, s: _Settings, opt, hyper, *, capacity, how,
          batch_size, eval_every, verbose) -> _State:
    loss = lambda raw, d, w: -_objective(raw, d, center, s.reg_covar, how, w)
    full_loss = lambda raw: loss(raw, data, weight)
    state0 = with_hyperparams(opt.init(raw0), hyper)
    line_search = uses_line_search(state0)
    slack = 100 * jnp.finfo(data.dtype).eps
    n = data.shape[0]

    def full_step(st: _State):
        updates, opt_state = opt.update(st.grad, st.opt_state, st.raw, value=-st.value,
                                        grad=st.grad, value_fn=full_loss)
        raw = optax.apply_updates(st.raw, updates)
        if line_search:
            new_loss, grad = optax.value_and_grad_from_state(full_loss)(raw, state=opt_state)
            searched = optax.tree.get(opt_state, "num_linesearch_steps", 0)
            redone = ~jnp.isfinite(optax.tree.get(opt_state, "value"))  # recomputed then
            used = jnp.asarray(searched, jnp.int32) + redone.astype(jnp.int32)
        else:
            new_loss, grad = jax.value_and_grad(full_loss)(raw)
            used = jnp.int32(1)
        return raw, opt_state, -new_loss, grad, jnp.bool_(True), used

    def batch_step(st: _State):
        idx = jax.random.randint(jax.random.fold_in(key, st.step), (batch_size,), 0, n)
        rows, w = data[idx], None if weight is None else weight[idx]
        value_b, grad = jax.value_and_grad(loss)(st.raw, rows, w)
        updates, opt_state = opt.update(grad, st.opt_state, st.raw, value=value_b, grad=grad,
                                        value_fn=lambda r: loss(r, rows, w))
        raw = optax.apply_updates(st.raw, updates)
        due = ((st.step + 1) % eval_every == 0) | (st.step + 1 == s.steps)
        value = jax.lax.cond(due, lambda: -full_loss(raw), lambda: st.value)
        return raw, opt_state, value, grad, due, due.astype(jnp.int32)

    def body(st: _State) -> _State:
        raw, opt_state, value, grad, evaluated, used = (
            full_step if batch_size is None else batch_step)(st)
        ok = jnp.isfinite(value) & all_finite(raw) & all_finite(grad)
        if line_search:  # a monotone method: a step down is a failed step
            ok &= value >= st.value - slack * jnp.maximum(1.0, jnp.abs(st.value))
        kept = opt.init(st.raw) if line_search else st.opt_state
        raw, value, grad = _pick(ok, (raw, value, grad), (st.raw, st.value, st.grad))
        opt_state = _pick(ok, opt_state, with_hyperparams(kept, hyper) if line_search else kept)
        i = st.step + 1
        curve = st.curve.at[i].set(value)
        better = ok & evaluated & (value > st.best_value)
        best_raw, best_value, best_iter = _pick(better, (raw, value, i),
                                                (st.best_raw, st.best_value, st.best_iter))
        if batch_size is None:
            gain, flat = jnp.abs(value - st.value), ok & (optax.tree.norm(grad) < s.grad_tol)
        else:  # gains between evaluations of the full objective; batch gradients are noise
            gain, flat = jnp.abs(value - st.curve[jnp.maximum(i - eval_every, 0)]), False
        counter, small = count_small_gains(st.counter, gain, s.tol, s.patience)
        counter = _pick(evaluated, counter, st.counter)
        stop = jnp.where(evaluated & small, TOL, jnp.where(flat, GRAD_NORM, STEPS))
        report_every(verbose, i, value, "gradient step")
        return _State(raw, opt_state, value, grad, best_raw, best_value, best_iter, curve, i,
                      st.n_rejected + ~ok, counter, stop, st.n_esteps + used,
                      st.esteps.at[i].set(st.n_esteps + used))

    value, grad = jax.value_and_grad(full_loss)(raw0)
    curve = jnp.full((capacity + 1,), jnp.nan, data.dtype).at[0].set(curve0)
    start = _State(raw0, state0, -value if batch_size is None else curve0, grad, raw0, curve0,
                   jnp.int32(0), curve, jnp.int32(0), jnp.int32(0), start_counter(curve0),
                   jnp.where(jnp.isfinite(curve0), STEPS, DEGENERATE), jnp.int32(2),
                   jnp.full((capacity + 1,), -1, jnp.int32).at[0].set(2))
    return jax.lax.while_loop(lambda st: (st.step < s.steps) & (st.stop == STEPS), body, start)


@functools.partial(jax.jit, static_argnames=(
    "k", "covariance_type", "init", "capacity", "opt", "batch_size", "eval_every",
    "block_size", "verbose"))
def _fit(x, weight, init_key, shuffle_key, user_init, s: _Settings, hyper, *, k,
         covariance_type, init, capacity, opt, batch_size, eval_every, block_size,
         verbose) -> GradientResult:
    """Initialise as EM does, then run the optimiser: one compiled program."""
    params0 = initialize(init_key, x, k, covariance_type, init, s.reg_covar,
                         block_size=block_size, sample_weight=weight, **user_init)
    data, center, cached = e_step_data(x, covariance_type, weight=weight)
    how = _Data(covariance_type, block_size, cached)
    stats0 = stats_of(params0, data, center, block_size, cached, weight)
    curve0 = stats0.mean_log_likelihood  # EM's curve[0], the same computation
    # The optimiser steps in the frame EM's statistics use: means relative to the data's
    # mean (the features are already of x - center). In absolute coordinates far from
    # the origin a step below their rounding (ulp(1e6) = 0.0625 in float32) vanishes.
    raw0 = to_unconstrained(params0.replace(means=params0.means - center), s.reg_covar)
    rows = data if cached else x - center
    st = _loop(raw0, curve0, rows, weight, jnp.zeros_like(center), shuffle_key, s, opt, hyper,
               capacity=capacity, how=how, batch_size=batch_size, eval_every=eval_every,
               verbose=verbose)
    at_start = st.best_iter == 0
    best = from_unconstrained(st.best_raw, s.reg_covar)
    params = _pick(at_start, params0, best.replace(means=best.means + center))
    curve = st.curve.at[st.step].set(st.best_value)
    converged = (st.stop == TOL) | (st.stop == GRAD_NORM)
    n_esteps, esteps = st.n_esteps, st.esteps
    if batch_size is not None:  # the batches' rows, in passes over the data
        rows = lambda t: (t * batch_size + x.shape[0] - 1) // x.shape[0]
        n_esteps += rows(st.step)
        t = jnp.arange(capacity + 1, dtype=jnp.int32)
        esteps = jnp.where(t <= st.step, esteps + rows(t), -1)
    return GradientResult(params, curve, st.step, converged, st.n_rejected > 0, n_esteps,
                          esteps, st.n_rejected, st.stop, st.best_iter)


def fit_gradient(
    x: ArrayLike,
    k: int | None = None,
    *,
    covariance_type: str = "full",
    init: str = "kmeans++",
    optimizer="adam",
    learning_rate: float | None = None,
    steps: int = 500,
    tol: float | None = None,
    patience: int = 5,
    grad_tol: float = 0.0,
    reg_covar: float = 1e-6,
    seed=0,
    init_params=None,
    batch_size: int | None = None,
    eval_every: int | None = None,
    schedule: str = "constant",
    schedule_kwargs: dict | None = None,
    clip_norm: float | None = None,
    block_size: int | None = None,
    verbose: int = 0,
    sample_weight: ArrayLike | None = None,
    **optimizer_kwargs,
) -> GradientResult:
    r"""Fit a Gaussian mixture by gradient ascent on the mean log-likelihood (optax).

    Every step maximises :math:`\ell(\theta) = \frac1n \sum_i \log \sum_j \pi_j
    f_j(x_i)` over the unconstrained parameters (``mogjax.unconstrained``), with
    covariances floored at ``reg_covar`` as in EM, from EM's start (same ``k``,
    ``covariance_type``, ``init``, ``seed``, ``init_params``: ``curve[0]`` equals
    ``fit_em``'s bit for bit). The whole run is one compiled program. Compiled in:
    the shapes, ``covariance_type``, ``init``, ``batch_size``,
    ``eval_every`` and the optimiser's structure. Traced (no new compilation): the
    data, ``learning_rate`` and the optimiser's other float hyperparameters,
    ``reg_covar``, ``tol``, ``patience``, ``grad_tol``, ``clip_norm``, ``seed`` and
    ``steps`` (up to a power of two, as ``fit_em``'s ``max_iter``; with a schedule,
    which decays over ``steps``, a new ``steps`` compiles).

    Args:
      x: data, (n, d).
      k: number of components (may be omitted when ``init_params`` is a
        ``MixtureParams``).
      covariance_type, init, reg_covar, seed, init_params: as ``fit_em``.
      optimizer: an optax optimiser's name (``"adam"``, ``"sgd"``, ``"lbfgs"``, ...)
        or an ``optax.GradientTransformation``; see ``mogjax.optimizers``.
      learning_rate: the step size (> 0). Default ``1e-2``; ``"lbfgs"`` without one
        lets its line search choose. With a transformation built by
        ``optax.inject_hyperparams``, replaces the value in its state.
      steps: most optimiser steps (>= 1); ``curve`` has ``steps + 1`` entries.
      tol, patience: the stopping rule of ``mogjax.results`` (``None`` or 0: run
        until ``steps`` or ``grad_tol``).
      grad_tol: stop when the gradient's global norm (unconstrained parameters) is
        below it (0: never).
      batch_size: rows per mini-batch (``None``: full batch), drawn uniformly with
        replacement for every step (key ``fold_in(key, step)``), so a step costs in
        proportion to the batch. The full objective is evaluated every
        ``eval_every`` steps (default ``n // batch_size``: once per ``n`` rows seen)
        and the stopping rule and the best point use those evaluations. Not with
        line-search optimisers.
      schedule, schedule_kwargs: ``"constant"``, ``"cosine"`` (to ``alpha``, 0 by
        default) or ``"exponential"`` (to ``decay_rate``, 1%) over ``steps``.
      clip_norm: clip the gradient to this global norm first.
      block_size: rows per block of the E-step (``None``: chosen from the sizes).
      verbose: ``N > 0`` reports progress every ``N`` steps (``mogjax.progress``).
      sample_weight: (n,) row weights, as ``fit_em``: the same weighted objective
        and the same weighted start (mini-batches weigh their rows too).
      **optimizer_kwargs: hyperparameters of the named optimiser (``momentum``,
        ``b1``, ``weight_decay``, ``memory_size``, ...).

    Returns:
      ``GradientResult``.

    Raises:
      ValueError: bad input, named; ``DegenerateCovarianceError`` when the initial
        parameters are already degenerate.

    Examples:
      >>> import numpy as np
      >>> rng = np.random.default_rng(0)
      >>> x = np.concatenate([rng.normal(m, 1.0, (100, 2)) for m in (-5, 5)])
      >>> res = fit_gradient(x, 2, covariance_type="diag", init="random",
      ...                    learning_rate=0.1, steps=200)
      >>> res.curve.shape, int(res.n_iter), res.stop_reason
      ((201,), 200, 'steps')
      >>> from mogjax import fit_em
      >>> em = fit_em(x, 2, covariance_type="diag", init="random")  # the same start
      >>> float(em.curve[0]) == float(res.curve[0])
      True
      >>> round(float(res.final_log_likelihood), 2), round(float(em.final_log_likelihood), 2)
      (-3.51, -3.51)
    """
    x = v.check_data(x)
    n, d = x.shape
    weight = v.check_sample_weight(sample_weight, n, x.dtype)
    k, init, _, _, tol, reg_covar = v.check_fit_settings(
        k, init_params, covariance_type, init, 0, 1, 0.0 if tol is None else tol, reg_covar)
    v.check_enough_samples(n if weight is None else int(jnp.sum(weight > 0)), k)
    user_init = v.check_user_init(init_params, k, d, covariance_type)
    steps = v.check_int(steps, "steps", 1)
    patience, _ = v.check_stop_rule(patience, None)
    grad_tol = v.check_nonnegative(grad_tol, "grad_tol")
    opt, hyper = make_optimizer(optimizer, learning_rate, schedule, schedule_kwargs, clip_norm,
                                steps, optimizer_kwargs)
    if batch_size is not None:
        batch_size = v.check_int(batch_size, "batch_size", 1)
        if batch_size > n:
            raise ValueError(f"Invalid value for 'batch_size': {batch_size}; it must be <= "
                             f"n_samples = {n}")
        if uses_line_search(jax.eval_shape(opt.init, jnp.zeros(1))):
            raise ValueError(f"optimizer {optimizer!r} has a line search, which needs the "
                             "exact objective: it is full-batch only; leave batch_size=None")
        eval_every = n // batch_size if eval_every is None else eval_every
    eval_every = v.check_int(1 if eval_every is None else eval_every, "eval_every", 1)
    init_key = v.split_keys(seed, 1)[0]  # EM's key for one restart: the very same start
    shuffle_key = v.split_keys(seed, 2)[1]
    dtype = x.dtype
    settings = _Settings(jnp.asarray(tol, dtype), jnp.int32(patience),
                         jnp.asarray(grad_tol, dtype), jnp.asarray(reg_covar, dtype),
                         jnp.int32(steps))
    result = _fit(x, weight, init_key, shuffle_key, user_init, settings, hyper, k=k,
                  covariance_type=covariance_type, init=init, capacity=curve_capacity(steps),
                  opt=opt, batch_size=batch_size, eval_every=eval_every, block_size=block_size,
                  verbose=v.check_int(verbose, "verbose", 0))
    result = trimmed(result, steps)
    raise_if_degenerate(result._replace(degenerate=result.stop_code == DEGENERATE), dtype)
    warn_if_stuck(result, optimizer, tol, steps)
    return result


def warn_if_stuck(result: GradientResult, optimizer, tol, steps: int) -> None:
    """A ``RuntimeWarning`` when the run says less than it seems to: it never improved
    on its start (its parameters are the start's: every step rejected or downhill,
    e.g. a learning rate far too large, or a line search from a singular start), or
    it stopped on its budget of ``steps`` before the gains fell below ``tol``."""
    n_iter, rejected = int(result.n_iter), int(result.n_rejected)
    name = optimizer if isinstance(optimizer, str) else "the optimiser"
    if n_iter > 0 and int(result.best_iter) == 0:
        warnings.warn(
            f"gradient ascent ({name}) never improved on its start in {n_iter} steps "
            f"({rejected} rejected as non-finite or downhill): the result is the initial "
            "parameters (stop_reason 'no_progress'); try a smaller learning_rate, "
            "clip_norm, or another start", RuntimeWarning, stacklevel=3)
    elif result.stop_reason == "steps" and tol:
        warnings.warn(
            f"gradient ascent ({name}) stopped on its budget of steps={steps} before the "
            f"gain fell below tol={tol:g} (stop_reason 'steps'); raise steps or the "
            "learning_rate", RuntimeWarning, stacklevel=3)
