"""``BayesianGaussianMixture``: scikit-learn's estimator over ``mogjax.fit_variational``.

The same protocol as ``mogjax.GaussianMixture`` (``mogjax.estimators``): a real
scikit-learn estimator whose numbers come from the compiled functional core. Like
it, this module imports scikit-learn; ``import mogjax`` loads it on first use.
"""

import time
import warnings
from numbers import Integral, Real

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator, DensityMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from mogjax import mixture as mx
from mogjax.estimators._common import DTYPE, RANDOM_STATE, check_X, key_from, precision, seed_from
from mogjax.posterior import weighted_log_prob
from mogjax.variational import fit_variational

NOT_CONVERGED = (
    "Best performing initialization did not converge. Try different init "
    "parameters, or increase max_iter, tol, or check for degenerate data."
)


class BayesianGaussianMixture(DensityMixin, BaseEstimator):
    """Variational Bayesian Gaussian mixture: scikit-learn's estimator, mogjax's fit.

    ``sklearn.mixture.BayesianGaussianMixture``'s parameters, attributes, errors and
    warnings; given the same initial responsibilities it computes scikit-learn's
    numbers (``mogjax.fit_variational``: initialisation, every iteration and the
    ``n_init`` restarts are one compiled program). Unneeded components get weights
    near zero, so ``n_components`` is an upper bound on the number used.

    Args:
      n_components: components at most (>= 1).
      covariance_type: ``"full"`` (default), ``"tied"``, ``"diag"``, ``"spherical"``.
      tol: convergence threshold on the change of the lower bound (>= 0).
      reg_covar: non-negative value added to the diagonal of every scatter.
      max_iter: iterations at most (>= 0; ``0`` keeps the initialisation).
      n_init: restarts, run side by side; the one of highest lower bound wins.
      init_params: ``"kmeans"`` (default), ``"k-means++"``, ``"random"``,
        ``"random_from_data"``: how the initial responsibilities are drawn
        (mogjax's own, ``mogjax.init``); or the initial responsibilities themselves,
        (n_samples, n_components), rows on the simplex (not in scikit-learn: its
        ``_initialize(X, resp)``; one run, whatever ``n_init``).
      weight_concentration_prior_type: ``"dirichlet_process"`` (default) or
        ``"dirichlet_distribution"``.
      weight_concentration_prior, mean_precision_prior, mean_prior,
        degrees_of_freedom_prior, covariance_prior: the priors (``None``:
        scikit-learn's defaults; ``mogjax.posterior.default_prior``).
      random_state: None, an int (``random_state=s`` fits as
        ``fit_variational(..., seed=s)``), a NumPy ``RandomState`` or ``Generator``.
      warm_start: the next ``fit`` continues from the last posterior (``n_init``
        then counts as 1), its first lower bound compared with ``lower_bound_``.
      verbose, verbose_interval: ``verbose >= 1`` prints scikit-learn's progress
        lines after the fit (the fit is one compiled program).
      dtype: the working precision, as ``mogjax.GaussianMixture``'s.

    Attributes (after ``fit``): scikit-learn's ``weights_``, ``means_``,
    ``covariances_``, ``precisions_``, ``precisions_cholesky_``,
    ``weight_concentration_`` (a pair of arrays for the Dirichlet process),
    ``mean_precision_``, ``degrees_of_freedom_``, the ``*_prior_`` values used,
    ``converged_``, ``n_iter_``, ``lower_bounds_`` (the lower bound after every
    iteration), ``lower_bound_`` (the last; ``-inf`` when ``max_iter=0``),
    ``n_features_in_``, ``feature_names_in_``; and ``posterior_`` (the
    ``VariationalPosterior``), ``curve_`` (``curve_[0]`` the initial bound, then
    ``lower_bounds_``).

    Examples:
      >>> import numpy as np
      >>> rng = np.random.default_rng(0)
      >>> x = np.concatenate([rng.normal(m, 0.5, (100, 2)) for m in (-3, 0, 3)])
      >>> bgm = BayesianGaussianMixture(n_components=6, max_iter=300, random_state=0).fit(x)
      >>> int(np.sum(bgm.weights_ > 0.05)), bgm.converged_
      (3, True)
      >>> bgm.predict_proba(x[:2]).sum(axis=1).round(6).tolist()
      [1.0, 1.0]
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions({"full", "tied", "diag", "spherical"})],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "reg_covar": [Interval(Real, 0.0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_params": [StrOptions({"kmeans", "k-means++", "random", "random_from_data",
                                    "kmeans++"}), "array-like"],
        "weight_concentration_prior_type": [
            StrOptions({"dirichlet_process", "dirichlet_distribution"})],
        "weight_concentration_prior": [None, Interval(Real, 0.0, None, closed="neither")],
        "mean_precision_prior": [None, Interval(Real, 0.0, None, closed="neither")],
        "mean_prior": [None, "array-like"],
        "degrees_of_freedom_prior": [None, Interval(Real, 0.0, None, closed="neither")],
        "covariance_prior": [None, "array-like", Interval(Real, 0.0, None, closed="neither")],
        "random_state": RANDOM_STATE,
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "verbose_interval": [Interval(Integral, 1, None, closed="left")],
        "dtype": DTYPE,
    }

    def __init__(
        self,
        *,
        n_components=1,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=None,
        mean_precision_prior=None,
        mean_prior=None,
        degrees_of_freedom_prior=None,
        covariance_prior=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        dtype=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.dtype = dtype

    def __sklearn_is_fitted__(self):
        return hasattr(self, "posterior_")

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the variational posterior (``n_init`` restarts, the best kept).

        ``y`` is ignored. Returns ``self``; warns ``ConvergenceWarning`` when the fit
        did not converge.
        """
        with precision(self.dtype):
            x = check_X(self, X, reset=True)
            if x.shape[0] < 2:
                raise ValueError(
                    f"Found array with {x.shape[0]} sample(s) (shape={tuple(x.shape)}) "
                    "while a minimum of 2 is required by BayesianGaussianMixture.")
            warm = self.warm_start and hasattr(self, "converged_")
            start, seed, n_init, previous = None, seed_from(self.random_state), self.n_init, None
            init = self.init_params if isinstance(self.init_params, str) else "kmeans"
            if not isinstance(self.init_params, str):
                start = np.asarray(self.init_params)
            if warm:
                start, seed, n_init = self.posterior_, 0, 1
                previous = self.lower_bound_ if np.isfinite(self.lower_bound_) else None
            began = time.perf_counter()
            result = fit_variational(
                x, self.n_components, weight_prior=self.weight_concentration_prior_type,
                weight_concentration_prior=self.weight_concentration_prior,
                mean_precision_prior=self.mean_precision_prior, mean_prior=self.mean_prior,
                degrees_of_freedom_prior=self.degrees_of_freedom_prior,
                covariance_prior=self.covariance_prior, covariance_type=self.covariance_type,
                init=init, max_iter=self.max_iter, tol=self.tol,
                reg_covar=self.reg_covar, n_init=n_init, seed=seed, init_params=start,
                previous_lower_bound=previous,
            )
            self._set_result(result)
        if self.verbose:
            self._print_curve(time.perf_counter() - began, previous)
        if not self.converged_ and self.max_iter > 0:
            warnings.warn(NOT_CONVERGED, ConvergenceWarning)
        return self

    def fit_predict(self, X, y=None):
        """Fit, then return the component of every point, (n,): ``fit(X).predict(X)``."""
        return self.fit(X).predict(X)

    def _set_result(self, result):
        post, prior = result.posterior, result.prior
        n_iter = int(result.n_iter)
        as_np = lambda a: np.asarray(a)
        self.posterior_ = post
        self.weights_ = as_np(post.weights)
        self.means_ = as_np(post.means)
        self.covariances_ = as_np(post.covariances)
        self.precisions_ = as_np(post.precisions)
        self.precisions_cholesky_ = as_np(post.prec_chol)
        concentration = post.weight_concentration
        self.weight_concentration_ = (tuple(map(as_np, concentration))
                                      if isinstance(concentration, tuple) else as_np(concentration))
        self.mean_precision_ = as_np(post.mean_precision)
        self.degrees_of_freedom_ = as_np(post.degrees_of_freedom)
        self.weight_concentration_prior_ = float(prior.weight_concentration)
        self.mean_precision_prior_ = float(prior.mean_precision)
        self.mean_prior_ = as_np(prior.mean)
        self.degrees_of_freedom_prior_ = float(prior.degrees_of_freedom)
        self.covariance_prior_ = (float(prior.covariance) if self.covariance_type == "spherical"
                                  else as_np(prior.covariance))
        self.converged_ = bool(result.converged)
        self.n_iter_ = n_iter
        self.curve_ = as_np(result.curve[: n_iter + 1])
        self.lower_bounds_ = self.curve_[1:]
        self.lower_bound_ = float(self.curve_[n_iter]) if n_iter else -np.inf

    def _print_curve(self, seconds: float, previous) -> None:
        """scikit-learn's verbose lines, for the returned run, after the fit."""
        bounds = self.lower_bounds_
        before = np.concatenate([[-np.inf if previous is None else previous], bounds[:-1]])
        print("Initialization (the best of the restarts)")
        for t in range(self.verbose_interval, self.n_iter_ + 1, self.verbose_interval):
            if self.verbose == 1:
                print("  Iteration %d" % t)
            else:
                print("  Iteration %d\t time lapse %.5fs\t ll change %.5f"
                      % (t, seconds / max(self.n_iter_, 1), bounds[t - 1] - before[t - 1]))
        state = "converged" if self.converged_ else "did not converge"
        tail = "" if self.verbose == 1 else (
            f" time lapse {seconds:.5f}s\t lower bound {self.lower_bound_:.5f}")
        print(f"Initialization {state}.{tail}")

    def _weighted_log_prob(self, X) -> jax.Array:
        """scikit-learn's ``_estimate_weighted_log_prob``: ``NotFittedError`` first."""
        check_is_fitted(self)
        return weighted_log_prob(self.posterior_, check_X(self, X, reset=False))

    def score_samples(self, X):
        """Log-density of every point under the variational predictive, (n,)."""
        with precision(self.dtype):
            return np.asarray(jax.nn.logsumexp(self._weighted_log_prob(X), axis=1))

    def score(self, X, y=None):
        """Mean of ``score_samples`` (a float)."""
        return float(np.mean(self.score_samples(X)))

    def predict(self, X):
        """Component of largest responsibility, (n,) integers."""
        with precision(self.dtype):
            return np.asarray(jnp.argmax(self._weighted_log_prob(X), axis=1))

    def predict_proba(self, X):
        """Responsibilities, (n, k); rows sum to one."""
        with precision(self.dtype):
            return np.asarray(jax.nn.softmax(self._weighted_log_prob(X), axis=1))

    def sample(self, n_samples=1):
        """``(X, y)``: points from the plug-in mixture (``weights_``, ``means_``,
        ``covariances_``), grouped by component, as scikit-learn's."""
        check_is_fitted(self)
        if isinstance(n_samples, bool) or not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples} . The sampling "
                             "requires at least one sample.")
        size = 1 << (int(n_samples) - 1).bit_length()  # sizes share compiled programs
        with precision(self.dtype):
            x, y = mx.sample(key_from(self.random_state), self.posterior_.mixture, size)
            x, y = np.asarray(x)[:n_samples], np.asarray(y)[:n_samples]
        order = np.argsort(y, kind="stable")
        return x[order], y[order]
