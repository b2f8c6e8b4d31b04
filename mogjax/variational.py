r"""Variational Bayesian Gaussian mixtures, compiled end to end on EM's E-step.

One iteration is scikit-learn's ``BayesianGaussianMixture`` iteration: the
variational E-step (the block E-step of ``mogjax.estep``, whose log-weights and
log-determinants are the posterior's expectations, ``mogjax.posterior``) reduced at
once to sufficient statistics, then the variational M-step
(``posterior_from_stats``), then the lower bound of the new posterior:

.. math::

   r_{ij} \propto \exp\big(E[\log \pi_j] + E[\log \mathcal N(x_i \mid \mu_j,
   \Lambda_j^{-1})]\big), \qquad q(\pi, \mu, \Lambda) \leftarrow
   \text{prior} + (N_j, \bar x_j, S_j).

The responsibilities' entropy the bound needs comes from the same statistics, with
no extra pass: :math:`\sum_{ij} r_{ij} \log r_{ij} = \sum_j r_{\cdot j}^T \ell_{\cdot
j} - \sum_i \log \sum_j e^{\ell_{ij}}`, and the first sum is linear in the moments.
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mogjax import variational_checks as vc
from mogjax._typing import Array, ArrayLike
from mogjax.estep import e_step_data, terms_moments
from mogjax.init import canonical_init, initial_responsibilities
from mogjax.mixture import MixtureParams
from mogjax.posterior import (
    VARIATIONAL_COVARIANCE_TYPES,
    WEIGHT_PRIORS,
    VariationalPosterior,
    VariationalPrior,
    default_prior,
    density_terms,
    lower_bound,
    posterior_from_stats,
)
from mogjax.results import (
    StopCounter,
    all_finite,
    best_of,
    count_small_gains,
    finite_params,
    raise_if_degenerate,
    start_counter,
)
from mogjax.suffstats import accumulate, stats_from_moments


class VariationalResult(NamedTuple):
    """What ``fit_variational`` returns.

    Attributes:
      posterior: the fitted ``VariationalPosterior``.
      curve: scikit-learn's lower bound per iteration, ``(max_iter + 1,)``:
        ``curve[t]`` after ``t`` iterations (``curve[1:n_iter + 1]`` is
        scikit-learn's ``lower_bounds_``), ``curve[0]`` that of the initial
        posterior and its responsibilities; NaN after ``n_iter``. A total over the
        data, as scikit-learn's (``tol`` applies to it).
      n_iter: iterations taken.
      converged: whether the stopping rule was met.
      degenerate: whether a step met a covariance that is not positive definite
        and was undone.
      prior: the prior used, defaults filled in.
    """

    posterior: VariationalPosterior
    curve: Array
    n_iter: Array
    converged: Array
    degenerate: Array
    prior: VariationalPrior

    @property
    def params(self) -> MixtureParams:
        """The plug-in mixture (``posterior.mixture``)."""
        return self.posterior.mixture

    @property
    def lower_bound(self) -> Array:
        """``curve[n_iter]``, scikit-learn's ``lower_bound_``."""
        return self.curve[self.n_iter]


class _State(NamedTuple):
    post: VariationalPosterior
    curve: Array
    step: Array
    counter: StopCounter
    converged: Array
    degenerate: Array


def variational_e_step(post, data, center, block_size, data_are_features: bool):
    """``(SufficientStats, entropy)`` of the responsibilities of ``post`` over
    ``data`` (rows, or their quadratic features); ``entropy`` is
    :math:`-\\sum_{ij} r_{ij} \\log r_{ij}`."""
    cov_type = post.covariance_type
    terms = density_terms(post, center)
    ll, counts, moments = terms_moments(terms, data, center, cov_type, block_size,
                                        data_are_features)
    theta, offset, log_const = terms
    expected = counts @ log_const - 0.5 * (jnp.sum(moments * theta.T) + counts @ offset)
    n = jnp.asarray(data.shape[0], data.dtype)
    return stats_from_moments(n, ll, center, counts, moments, cov_type), ll - expected


def _count_now(counter: StopCounter, gain, tol, patience):
    """``count_small_gains`` with the gain counted at once.

    EM's curve value of a step is known one E-step after the step, so the shared
    rule counts it a step late (scikit-learn's ``GaussianMixture``). The lower
    bound here is the posterior's after its M-step, and scikit-learn's
    ``BayesianGaussianMixture`` stops on it at once: same rule, no lag.
    """
    return count_small_gains(counter._replace(pending=gain), gain, tol, patience)


def _run(post0, curve0, e_step_fn, prior, tol, reg_covar, patience, previous, max_iter,
         weight_prior):
    curve = jnp.full((max_iter + 1,), jnp.nan, curve0.dtype).at[0].set(curve0)

    def cond(s: _State):
        return (s.step < max_iter) & ~s.converged & ~s.degenerate

    def body(s: _State) -> _State:
        stats, entropy = e_step_fn(s.post)
        new = posterior_from_stats(stats, prior, reg_covar, weight_prior)
        bound = lower_bound(new, entropy)
        ok = all_finite(new) & jnp.isfinite(bound)
        post = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, s.post)
        i = s.step + ok.astype(s.step.dtype)
        curve = s.curve.at[i].set(jnp.where(ok, bound, s.curve[i]))
        before = jnp.where(i == 1, previous, curve[i - 1])  # scikit-learn: -inf at a fresh start
        gain = jnp.where(jnp.isnan(before), jnp.inf, jnp.abs(curve[i] - before))
        counter, stop = _count_now(s.counter, gain, tol, patience)
        return _State(post, curve, i, counter, ok & stop, ~ok)

    start = _State(post0, curve, jnp.int32(0), start_counter(curve0), jnp.bool_(False),
                   jnp.bool_(False))
    s = jax.lax.while_loop(cond, body, start)
    degenerate = s.degenerate | ~all_finite(post0)
    return s.post, s.curve, s.step, s.converged, degenerate


def finite_posterior(post: VariationalPosterior) -> VariationalPosterior:
    """``post`` with every component whose precision factor is not finite given a
    unit covariance (``covariances`` and ``prec_chol`` alike, as
    ``mogjax.results.finite_params``), non-finite means 0 and non-finite counts 1
    (degrees of freedom ``d``): what a ``DegenerateCovarianceError`` carries."""
    fixed = finite_params(post.mixture)
    chol = post.prec_chol
    axes = (-2, -1) if post.covariance_type in ("full", "tied") else (
        (-1,) if chol.ndim == 2 else ())
    ok = jnp.all(jnp.isfinite(chol), axis=axes, keepdims=True) if axes else jnp.isfinite(chol)
    cov = jnp.where(ok & jnp.isfinite(post.covariances), post.covariances, fixed.prec_chol)
    fill = lambda a, v: jnp.where(jnp.isfinite(a), a, jnp.asarray(v, a.dtype))
    return post.replace(
        weight_concentration=jax.tree.map(lambda a: fill(a, 1.0), post.weight_concentration),
        mean_precision=fill(post.mean_precision, 1.0), means=fixed.means,
        degrees_of_freedom=fill(post.degrees_of_freedom, float(post.n_features)),
        covariances=cov, prec_chol=jnp.where(ok, chol, fixed.prec_chol))


def _neg_entropy(resp: Array) -> Array:
    return jnp.sum(jnp.where(resp > 0, resp * jnp.log(jnp.where(resp > 0, resp, 1.0)), 0.0))


@functools.partial(
    jax.jit,
    static_argnames=("k", "covariance_type", "weight_prior", "init", "max_iter", "block_size"),
)
def _fit_compiled(x, keys, start, given_prior, tol, reg_covar, patience, previous, *, k,
                  covariance_type, weight_prior, init, max_iter, block_size):
    """Priors, initialisation and the loop for every key (``vmap``); the best run."""
    prior = default_prior(x, k, covariance_type, **given_prior)
    data, center, cached = e_step_data(x, covariance_type)
    e_step_fn = lambda post: variational_e_step(post, data, center, block_size, cached)

    def one_run(key):
        if isinstance(start, VariationalPosterior):
            post0, curve0 = start, previous
        else:
            resp = initial_responsibilities(key, x, k, init) if start is None else start
            stats = accumulate(x, resp, covariance_type, center=center, block_size=block_size)
            post0 = posterior_from_stats(stats, prior, reg_covar, weight_prior)
            curve0 = lower_bound(post0, -_neg_entropy(resp))
        post, curve, n_iter, converged, degenerate = _run(
            post0, curve0, e_step_fn, prior, tol, reg_covar, patience, previous, max_iter,
            weight_prior)
        return VariationalResult(post, curve, n_iter, converged, degenerate, prior)

    if keys.shape[0] == 1:
        runs = jax.tree.map(lambda a: a[None], one_run(keys[0]))
    else:
        runs = jax.vmap(one_run)(keys)
    return best_of(runs)


def fit_variational(
    x: ArrayLike,
    k: int,
    *,
    weight_prior: str = "dirichlet_process",
    weight_concentration_prior: float | None = None,
    mean_precision_prior: float | None = None,
    mean_prior: ArrayLike | None = None,
    degrees_of_freedom_prior: float | None = None,
    covariance_prior: ArrayLike | float | None = None,
    covariance_type: str = "full",
    init: str = "kmeans",
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    n_init: int = 1,
    seed=0,
    init_params=None,
    block_size: int | None = None,
    patience: int = 1,
    previous_lower_bound: float | None = None,
) -> VariationalResult:
    r"""Fit a variational Bayesian Gaussian mixture; the whole loop is one program.

    scikit-learn's ``BayesianGaussianMixture`` (its priors, defaults, updates and
    lower bound, for every covariance type) on EM's block E-step and sufficient
    statistics; see ``mogjax.posterior`` for the model. ``n_init`` restarts run
    side by side with ``vmap``; the one of highest final lower bound wins. ``tol``,
    ``reg_covar``, ``patience`` and the prior values are traced (a sweep over them
    compiles once).

    Stopping rule: ``mogjax.results``' (``tol``, ``patience``), on the lower bound
    after each iteration's M-step, counted at once as scikit-learn does: after
    iteration ``t >= 2`` the fit stops when the ``patience`` gains up to
    :math:`|\mathcal L_t - \mathcal L_{t-1}|` are all below ``tol`` (the first
    iteration is compared with ``previous_lower_bound`` only). ``n_iter``,
    ``converged`` and the posterior then equal scikit-learn's from the same start.

    Args:
      x: data, (n, d), n >= 2; float32 stays float32.
      k: number of components (the truncation level of the Dirichlet process).
      weight_prior: ``"dirichlet_process"`` (stick breaking) or
        ``"dirichlet_distribution"``: scikit-learn's
        ``weight_concentration_prior_type``.
      weight_concentration_prior: ``gamma`` or ``alpha_0`` (> 0; default ``1/k``).
      mean_precision_prior: ``beta_0`` (> 0; default 1).
      mean_prior: ``m_0``, (d,) (default: the mean of ``x``).
      degrees_of_freedom_prior: ``nu_0`` (> d - 1; default d).
      covariance_prior: ``Psi_0``: (d, d) for ``full``/``tied``, (d,) for ``diag``,
        a number for ``spherical`` (default: the covariance of ``x``, ``ddof=1``).
      covariance_type: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``.
      init: how the initial responsibilities are drawn: ``"kmeans"``,
        ``"kmeans++"``, ``"random"``, ``"random_from_data"`` (``mogjax.init``).
      max_iter: iterations at most (>= 0).
      tol: threshold on the gain in lower bound (>= 0; 0 runs ``max_iter``).
      reg_covar: added to the diagonal of every component's scatter (>= 0).
      n_init: restarts (>= 1), batched with ``vmap``.
      seed: an integer or a JAX key; restarts use ``jax.random.split(key, n_init)``.
      init_params: the start instead of ``init``: initial responsibilities (n, k),
        rows on the simplex (scikit-learn's ``_initialize(X, resp)``), or a
        ``VariationalPosterior`` to continue from (scikit-learn's ``warm_start``);
        either way there is one run, whatever ``n_init``.
      block_size: rows per block of the E-step (``None``: chosen from the sizes).
      patience: consecutive small gains that stop the fit (>= 1).
      previous_lower_bound: when continuing from a posterior, the lower bound it
        was fitted with (``curve[0]``; the first gain is measured from it).

    Returns:
      ``VariationalResult``: ``posterior``, ``curve`` (the lower bound, ``max_iter
      + 1`` entries), ``n_iter``, ``converged``, ``degenerate``, ``prior``;
      ``.params`` is the plug-in ``MixtureParams``.

    Raises:
      ValueError, TypeError: bad input, named, before any compute;
        ``DegenerateCovarianceError`` when every restart met a covariance that is not
        positive definite.

    Examples:
      >>> import numpy as np
      >>> rng = np.random.default_rng(0)
      >>> x = np.concatenate([rng.normal(m, 0.5, (100, 2)) for m in (-3, 0, 3)])
      >>> res = fit_variational(x, 8, covariance_type="diag", max_iter=300, seed=0)
      >>> int(np.sum(np.asarray(res.posterior.weights) > 0.05))
      3
      >>> bool(np.all(np.diff(res.curve[1: int(res.n_iter) + 1]) > -1e-6))
      True
    """
    vc.check_choice(weight_prior, "weight_prior", WEIGHT_PRIORS)
    vc.check_choice(covariance_type, "covariance_type", VARIATIONAL_COVARIANCE_TYPES)
    k = vc.check_int(k, "k", 1)
    init = canonical_init(init)
    max_iter = vc.check_int(max_iter, "max_iter", 0)
    n_init = vc.check_int(n_init, "n_init", 1)
    tol = vc.check_real(tol, "tol")
    reg_covar = vc.check_real(reg_covar, "reg_covar")
    patience = vc.check_int(patience, "patience", 1)
    previous = (float("nan") if previous_lower_bound is None
                else vc.check_real(previous_lower_bound, "previous_lower_bound", -math.inf))
    x = vc.check_data(x, min_samples=2)
    n, d = x.shape
    if n < k:
        raise ValueError(f"Expected n_samples >= n_components but got n_components = {k}, "
                         f"n_samples = {n}")
    given = vc.check_prior(covariance_type, d, weight_concentration=weight_concentration_prior,
                        mean_precision=mean_precision_prior, mean=mean_prior,
                        degrees_of_freedom=degrees_of_freedom_prior,
                        covariance=covariance_prior)
    start = None
    if init_params is not None:
        start = vc.check_start(init_params, n, k, d, covariance_type, weight_prior)
        start = jax.tree.map(lambda a: jnp.asarray(a, x.dtype), start)
        n_init = 1
    if block_size is not None:
        block_size = min(vc.check_int(block_size, "block_size", 1), n)
    dt = lambda v: jnp.asarray(v, x.dtype)
    best = _fit_compiled(
        x, vc.split_keys(seed, n_init), start, jax.tree.map(dt, given), dt(tol), dt(reg_covar),
        jnp.int32(patience), dt(previous), k=k, covariance_type=covariance_type,
        weight_prior=weight_prior, init=init, max_iter=max_iter, block_size=block_size,
    )
    if bool(best.degenerate):
        raise_if_degenerate(best._replace(posterior=finite_posterior(best.posterior)), x.dtype)
    return best
