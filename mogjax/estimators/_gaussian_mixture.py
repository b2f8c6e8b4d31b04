"""``GaussianMixture``: scikit-learn's estimator over ``mogjax.fit_em``."""

import time
import warnings
from numbers import Integral, Real
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator, DensityMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from mogjax import _validation as v
from mogjax import mixture as mx
from mogjax.accelerated import ACCELERATIONS
from mogjax.em import fit_em
from mogjax.estimators._common import (
    DTYPE,
    RANDOM_STATE,
    check_X,
    key_from,
    precision,
    seed_from,
)
from mogjax.results import DegenerateCovarianceError

NOT_CONVERGED = (
    "Best performing initialization did not converge. Try different init "
    "parameters, or increase max_iter, tol, or check for degenerate data."
)


class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture fitted by EM: scikit-learn's estimator, mogjax's compiled fit.

    A scikit-learn estimator (``BaseEstimator``, ``DensityMixin``): parameters,
    attributes, errors and warnings are ``sklearn.mixture.GaussianMixture``'s, so
    ``clone``, ``Pipeline``, ``GridSearchCV`` and ``cross_val_score`` take it. Given
    the same initial values (``weights_init``, ``means_init``, ``precisions_init``)
    it computes scikit-learn's numbers; every fit (initialisation and all
    iterations) is one compiled program, ``mogjax.fit_em``.

    Args:
      n_components: number of components (>= 1).
      covariance_type: ``"full"`` (default), ``"tied"``, ``"diag"``,
        ``"spherical"``, or ``"identity"`` (covariances fixed to ``I``: soft
        k-means; not in scikit-learn).
      tol: convergence threshold on the change of the lower bound (the mean
        log-likelihood), >= 0; ``0`` runs all ``max_iter`` iterations.
      reg_covar: non-negative value added to the covariance diagonal.
      max_iter: EM iterations at most (>= 0; ``0`` keeps the initialisation).
      n_init: restarts, one after the other as in scikit-learn; the one of highest
        lower bound wins. Restart ``i`` starts the same whatever ``n_init`` (more
        restarts never end lower), and one compiled program serves every ``n_init``.
        A restart that meets a degenerate covariance loses; the error is raised only
        when every restart does.
      init_params: ``"kmeans"`` (default), ``"k-means++"``, ``"random"``,
        ``"random_from_data"``; mogjax's own k-means (``mogjax.init`` says how its
        starts differ from scikit-learn's).
      weights_init, means_init, precisions_init: initial values in scikit-learn's
        shapes.
      random_state: None, an int (any size: ``random_state=s`` fits as
        ``fit_em(..., seed=s)``), a NumPy ``RandomState`` (or ``Generator``). It
        drives a JAX key: the same int gives the same fit, not scikit-learn's
        random numbers.
      warm_start: the next ``fit`` continues from the last solution (``n_init``
        then counts as 1), comparing its first lower bound with ``lower_bound_``
        as scikit-learn does, so ``max_iter=1`` fits converge.
      verbose: ``1`` prints, after the fit, the iterations of the returned run
        every ``verbose_interval``; ``2`` adds the change of the lower bound and the
        mean time per iteration (the fit is one compiled program: nothing can
        print while it runs).
      verbose_interval: see ``verbose``.
      dtype: the working precision. ``None`` (default): mogjax's rule, float32, or
        float64 when ``jax_enable_x64`` is on; float32 input stays float32.
        ``"float64"`` (or ``np.float64``): scikit-learn's precision whatever the
        flag (computed under ``jax.enable_x64``; float32 input stays float32, as in
        scikit-learn). ``"float32"``: float32 always.
      missing: ``"error"`` (default, as scikit-learn: NaN is refused) or
        ``"marginalize"``: NaN entries are missing at random; ``fit`` is exact EM on
        the observed coordinates and ``predict``, ``predict_proba``,
        ``score_samples`` and ``score`` use each row's observed coordinates
        (``mogjax.missing``).
      compute_standard_errors: after ``fit``, set ``standard_errors_``: the
        asymptotic standard errors of the fitted parameters, from the inverse observed
        information (``mogjax.theory.standard_errors``; costs about ``p`` E-steps for
        ``p`` free parameters). Meaningful for a converged fit with a small
        ``reg_covar``, in float64. Complete rows only.
      acceleration: ``None`` (default, plain EM) or accelerated EM from the same
        start to the same stopping rule: ``"squarem"``, ``"daarem"``,
        ``"overrelaxed"``, ``"ecg"`` or a settings object of ``mogjax.accelerated``
        (see ``mogjax.fit_em``). ``max_iter``, ``n_iter_`` and ``tol`` then count
        the method's iterations, and the fitted parameters are the best point
        visited. Complete rows only (not with ``missing="marginalize"``).

    Attributes (after ``fit``):
      weights_, means_, covariances_, precisions_, precisions_cholesky_: NumPy
        arrays in scikit-learn's shapes, in the working dtype.
      converged_, n_iter_: as scikit-learn (``n_iter_`` counts this fit's
        iterations, also in a warm start).
      lower_bounds_: the lower bound of every iteration, (n_iter_,): the mean
        log-likelihood of the parameters entering its M-step (scikit-learn's).
      lower_bound_: the last of them (``-inf`` when ``max_iter=0``).
      curve_: mean log-likelihood per iteration, (n_iter_ + 1,): ``curve_[0]`` at
        the start, ``curve_[n_iter_]`` for the returned parameters; so
        ``lower_bounds_ == curve_[:-1]``.
      params_: the fitted ``MixtureParams`` for the functional API.
      n_esteps_: E-steps (passes over the data) the returned run made:
        ``n_iter_ + 1`` for plain EM; with ``acceleration``, every one, stabilising
        steps, rejected proposals and line searches included (``FitResult.n_esteps``).
      standard_errors_: with ``compute_standard_errors``, a dict of NumPy arrays,
        ``weights`` (k,), ``means`` (k, d) and ``covariances`` (the shape of
        ``covariances_``); ``None``, with a ``UserWarning`` naming why, when the
        observed information is singular (a degenerate fit) or ``X`` has missing
        entries.
      n_features_in_, feature_names_in_ (for DataFrames with string column names).

    Raises:
      ValueError: bad input (scikit-learn's ``InvalidParameterError`` for
        parameters); ``DegenerateCovarianceError``, a ``ValueError`` with
        scikit-learn's message, when a covariance is not positive definite.
      NotFittedError: ``predict``, ``score``, ... before ``fit``.

    Warns:
      ConvergenceWarning: when the fit stops at ``max_iter`` (``max_iter > 0``).

    Examples:
      >>> import numpy as np
      >>> x = np.concatenate([np.random.default_rng(0).normal(m, 1.0, (100, 2)) for m in (-4, 4)])
      >>> gm = GaussianMixture(2, random_state=0).fit(x)
      >>> np.sort(gm.means_[:, 0]).round().tolist(), gm.converged_
      ([-4.0, 4.0], True)
      >>> gm.predict(x[:3]).shape, gm.predict_proba(x[:3]).sum(axis=1).round(6).tolist()
      ((3,), [1.0, 1.0, 1.0])
      >>> bool(np.all(gm.lower_bounds_ == gm.curve_[:-1]))
      True
    """

    _parameter_constraints: ClassVar[dict] = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions({"full", "tied", "diag", "spherical", "identity"})],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "reg_covar": [Interval(Real, 0.0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_params": [
            StrOptions({"kmeans", "k-means++", "random", "random_from_data", "kmeans++"})
        ],
        "weights_init": ["array-like", None],
        "means_init": ["array-like", None],
        "precisions_init": ["array-like", None],
        "random_state": RANDOM_STATE,
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "verbose_interval": [Interval(Integral, 1, None, closed="left")],
        "dtype": DTYPE,
        "missing": [StrOptions({"error", "marginalize"})],
        "compute_standard_errors": ["boolean"],
        "acceleration": [None, StrOptions(set(ACCELERATIONS)), *ACCELERATIONS.values()],
    }

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        dtype=None,
        missing="error",
        compute_standard_errors=False,
        acceleration=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.dtype = dtype
        self.missing = missing
        self.compute_standard_errors = compute_standard_errors
        self.acceleration = acceleration

    def __sklearn_is_fitted__(self):
        return hasattr(self, "params_")

    def __getstate__(self):
        """Pickled with NumPy arrays in place of JAX ones: a JAX array loads in the
        loading process's default precision (a float64 fit read back as float32 where
        ``jax_enable_x64`` is off), a NumPy array keeps its dtype, and every method
        computes in ``dtype`` (``jax.enable_x64`` for float64) whatever the flag."""
        state = super().__getstate__()
        return jax.tree.map(lambda a: np.asarray(a) if isinstance(a, jax.Array) else a, state)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None):
        """Fit by EM (``n_init`` restarts, the best kept). Returns ``self``.

        ``y`` is ignored. ``sample_weight`` (n,): non-negative row weights (a row of
        weight ``c`` counts as ``c`` copies; see ``mogjax.fit_em``). Warns
        ``ConvergenceWarning`` when the fit did not converge.
        """
        with precision(self.dtype):
            x = self._check(X, reset=True)
            if x.shape[0] < 2:
                raise ValueError(
                    f"Found array with {x.shape[0]} sample(s) (shape={tuple(x.shape)}) "
                    "while a minimum of 2 is required by GaussianMixture.")
            warm = self.warm_start and hasattr(self, "converged_")
            start, previous = time.perf_counter(), None
            if warm:  # continue from the last solution; its bound is the one before
                previous = self.lower_bound_ if np.isfinite(self.lower_bound_) else None
                result = self._fit_em(x, self.params_, 0, sample_weight, previous)
            else:
                result = self._restarts(x, sample_weight)
            self._set_result(result)
            self._set_standard_errors(x, sample_weight)
        if self.verbose:
            self._print_curve(time.perf_counter() - start, previous)
        if not self.converged_ and self.max_iter > 0:
            warnings.warn(NOT_CONVERGED, ConvergenceWarning)
        return self

    def _fit_em(self, x, init_params, seed, sample_weight, previous=None):
        return fit_em(
            x, self.n_components, covariance_type=self.covariance_type,
            init=self.init_params, max_iter=self.max_iter, tol=self.tol,
            reg_covar=self.reg_covar, n_init=1, seed=seed, init_params=init_params,
            previous_log_likelihood=previous, sample_weight=sample_weight,
            missing=self.missing, acceleration=self.acceleration,
        )

    def _check(self, X, *, reset: bool):
        """``check_X``, letting NaN through when ``missing="marginalize"``."""
        holes = np.isnan(np.asarray(X, dtype=float)) if self.missing != "error" else None
        if holes is None or not holes.any():
            return check_X(self, X, reset=reset)
        x = check_X(self, np.where(holes, 0.0, np.asarray(X, dtype=float)), reset=reset)
        validate_data(self, X, reset=reset, skip_check_array=True)  # feature names
        return jnp.where(holes, jnp.nan, x)

    def _restarts(self, x, sample_weight):
        """``n_init`` fits, one after the other: restart 0 from ``seed``
        (``random_state=s`` fits as ``fit_em(..., seed=s)``), restart ``i`` from the
        key ``fold_in(key(seed), i)``. So restart ``i`` starts where it would for any
        ``n_init`` (``n_init=5`` includes the ``n_init=1`` fit, as in scikit-learn),
        and one compiled program serves every ``n_init``. As in scikit-learn the
        best has the highest lower bound (``curve[n_iter - 1]``); degenerate
        restarts lose, and only when all are degenerate does the error (the last)
        propagate."""
        given = {"weights": self.weights_init, "means": self.means_init,
                 "precisions": self.precisions_init}
        seed = seed_from(self.random_state)
        key = v.split_keys(seed, 1)[0]
        best, best_bound, error = None, -np.inf, None
        for i in range(self.n_init):
            try:
                result = self._fit_em(x, given, jax.random.fold_in(key, i) if i else seed,
                                      sample_weight)
            except DegenerateCovarianceError as err:
                error = err
                continue
            bound = float(np.asarray(result.curve)[max(int(result.n_iter) - 1, 0)])
            if best is None or bound > best_bound:
                best, best_bound = result, bound
        if best is None:
            raise error
        return best

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return the component of every point, (n,): ``fit(X).predict(X)``."""
        return self.fit(X, sample_weight=sample_weight).predict(X)

    def _set_result(self, result):
        params = result.params
        n_iter = int(result.n_iter)
        arrays = mx.to_numpy(params)
        self.params_ = params
        self.weights_ = arrays["weights"]
        self.means_ = arrays["means"]
        self.covariances_ = arrays["covariances"]
        self.precisions_cholesky_ = arrays["precisions_cholesky"]
        self.precisions_ = np.asarray(params.precisions)
        self.converged_ = bool(result.converged)
        self.n_iter_ = n_iter
        self.n_esteps_ = int(result.n_esteps)
        self.curve_ = np.asarray(result.curve)[: n_iter + 1]
        self.lower_bounds_ = self.curve_[:n_iter]
        self.lower_bound_ = float(self.curve_[n_iter - 1]) if n_iter else -np.inf

    def _set_standard_errors(self, x, sample_weight) -> None:
        """``standard_errors_`` when asked (``None`` and a warning when undefined)."""
        if not self.compute_standard_errors:
            self.__dict__.pop("standard_errors_", None)
            return
        from mogjax.theory import standard_errors

        try:
            self.standard_errors_ = standard_errors(self.params_, x, sample_weight)
        except ValueError as err:
            warnings.warn(f"standard_errors_ is None: {err}", UserWarning)
            self.standard_errors_ = None

    def _print_curve(self, seconds: float, previous) -> None:
        """scikit-learn's verbose lines, for the returned run, after the fit."""
        bounds = self.lower_bounds_
        before = np.concatenate([[-np.inf if previous is None else previous], bounds[:-1]])
        per_iteration = seconds / max(self.n_iter_, 1)
        print("Initialization (the best of the restarts)")
        for t in range(1, self.n_iter_ + 1):
            if t % self.verbose_interval == 0:
                if self.verbose == 1:
                    print(f"  Iteration {t}")
                else:
                    change = bounds[t - 1] - before[t - 1]
                    print(f"  Iteration {t}\t time lapse {per_iteration:.5f}s\t "
                          f"ll change {change:.5f}")
        state = "converged" if self.converged_ else "did not converge"
        if self.verbose == 1:
            print(f"Initialization {state}.")
        else:
            print(f"Initialization {state}. time lapse {seconds:.5f}s\t lower bound"
                  f" {self.lower_bound_:.5f}.")

    def _checked(self, X):
        """``(params_, X checked)`` for the functional API; ``NotFittedError`` first."""
        check_is_fitted(self)
        return self.params_, self._check(X, reset=False)

    def score_samples(self, X):
        """Log-density of the mixture at every point, (n,)."""
        with precision(self.dtype):
            return np.asarray(mx.score_samples(*self._checked(X)))

    def score(self, X, y=None, sample_weight=None):
        """Mean log-likelihood per sample (a float): the mean of ``score_samples``, as
        in scikit-learn; weighted by ``sample_weight`` (n,) when given."""
        log_density = self.score_samples(X)
        if sample_weight is None:
            return float(np.mean(log_density))
        w = np.asarray(v.check_sample_weight(sample_weight, len(log_density), np.float64))
        return float(np.sum(np.where(w > 0, w * log_density, 0.0)) / np.sum(w))

    def predict(self, X):
        """Component of largest responsibility, (n,) integers."""
        return np.argmax(self.predict_proba(X), axis=1)

    def predict_proba(self, X):
        """Responsibilities, (n, k); rows sum to one."""
        with precision(self.dtype):
            return np.asarray(mx.responsibilities(*self._checked(X)))

    def sample(self, n_samples=1):
        """``(X, y)``: ``n_samples`` points from the fitted mixture and their components.

        As in scikit-learn, the points come grouped by component and an int
        ``random_state`` gives the same points every call. (Drawn as the first
        ``n_samples`` of a sample of at least 256, a power of two, so sizes share
        compiled programs.)
        """
        check_is_fitted(self)
        if isinstance(n_samples, Integral) and not isinstance(n_samples, bool) and n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples} . The sampling requires at "
                "least one sample.")
        n_samples = v.check_int(n_samples, "n_samples", 1)
        size = max(256, 1 << (n_samples - 1).bit_length())
        with precision(self.dtype):
            x, y = mx.sample(key_from(self.random_state), self.params_, size)
            x, y = np.asarray(x)[:n_samples], np.asarray(y)[:n_samples]
        order = np.argsort(y, kind="stable")
        return x[order], y[order]

    def bic(self, X):
        """Bayesian information criterion on ``X`` (lower is better), scikit-learn's
        ``-2 n score + p log n``."""
        log_density = self.score_samples(X)
        n = len(log_density)
        return float(-2 * np.mean(log_density) * n + self._n_parameters() * np.log(n))

    def aic(self, X):
        """Akaike information criterion on ``X`` (lower is better), scikit-learn's
        ``-2 n score + 2 p``."""
        log_density = self.score_samples(X)
        return float(-2 * np.mean(log_density) * len(log_density) + 2 * self._n_parameters())

    def _n_parameters(self):
        """Free parameters of the fitted model (scikit-learn's private name)."""
        return mx.n_parameters(self.params_)
