"""scikit-learn-style estimators: a thin, stateful face over the functional core.

``GaussianMixture`` takes scikit-learn's parameter names and semantics and exposes
its attributes (as NumPy arrays), so code written for
``sklearn.mixture.GaussianMixture`` runs unchanged. All mathematics lives in
``mogjax.em``, ``mogjax.init`` and ``mogjax.mixture``.
"""

import numbers

import jax
import numpy as np

from mogjax import _validation as v
from mogjax import meanshift as _ms
from mogjax import mixture as mx
from mogjax.em import fit_em
from mogjax.gaussian import check_covariance_type
from mogjax.init import canonical_init


def _seed_from(random_state) -> int:
    """An integer seed from scikit-learn's ``random_state`` (None, int or RandomState)."""
    if random_state is None:
        return int(np.random.default_rng().integers(2**31))
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31))
    raise TypeError(
        f"random_state must be None, an int, a numpy RandomState or Generator, got {random_state!r}"
    )


class GaussianMixture:
    """Gaussian mixture fitted by EM, with scikit-learn's interface.

    Parameters are scikit-learn's (``sklearn.mixture.GaussianMixture``):

    Args:
      n_components: number of components ``k`` (>= 1).
      covariance_type: ``"full"`` (default), ``"tied"``, ``"diag"``,
        ``"spherical"``, or ``"identity"`` (covariances fixed to ``I``: soft
        k-means; not in scikit-learn).
      tol: convergence threshold on the gain in mean log-likelihood (>= 0;
        ``0`` runs all ``max_iter`` iterations).
      reg_covar: non-negative value added to the covariance diagonal.
      max_iter: number of EM iterations at most (>= 0).
      n_init: restarts, run side by side in one compiled program; the best wins.
      init_params: ``"kmeans"`` (default), ``"k-means++"``, ``"random"``,
        ``"random_from_data"``; see ``mogjax.init`` for how ours differ.
      weights_init, means_init, precisions_init: user-given initial values in
        scikit-learn's shapes.
      random_state: None, an int, or a NumPy ``RandomState``/``Generator``; drives
        a JAX key (so the same int gives the same fit, though not the same random
        numbers as scikit-learn).
      warm_start: start the next ``fit`` from the last solution (``n_init`` then
        counts as 1).
      verbose, verbose_interval: accepted for compatibility; unused (the whole
        curve is in ``curve_``).

    Attributes (after ``fit``):
      weights_, means_, covariances_, precisions_, precisions_cholesky_: NumPy
        arrays in scikit-learn's shapes.
      converged_, n_iter_: as scikit-learn.
      lower_bound_: as scikit-learn, the mean log-likelihood of the parameters
        before the last M-step (``curve_[n_iter_ - 1]``).
      curve_: mean log-likelihood per iteration, ``curve_[0]`` at the start and
        ``curve_[n_iter_]`` for the returned parameters (trimmed, no NaN).
      params_: the fitted ``MixtureParams`` for the functional API.
      n_features_in_: number of features seen in ``fit``.

    Examples:
      >>> import numpy as np
      >>> x = np.concatenate([np.random.default_rng(0).normal(m, 1.0, (100, 2)) for m in (-4, 4)])
      >>> gm = GaussianMixture(2, random_state=0).fit(x)
      >>> np.sort(gm.means_[:, 0]).round().tolist()
      [-4.0, 4.0]
      >>> gm.predict(x[:3]).shape, gm.predict_proba(x[:3]).sum(axis=1).round(6).tolist()
      ((3,), [1.0, 1.0, 1.0])
    """

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

    def get_params(self, deep=True):
        names = (
            "n_components covariance_type tol reg_covar max_iter n_init init_params "
            "weights_init means_init precisions_init random_state warm_start verbose "
            "verbose_interval"
        ).split()
        return {name: getattr(self, name) for name in names}

    def set_params(self, **params):
        for name, value in params.items():
            if name not in self.get_params():
                raise ValueError(f"Invalid parameter {name!r} for GaussianMixture")
            setattr(self, name, value)
        return self

    def __repr__(self):
        return f"GaussianMixture(n_components={self.n_components}, covariance_type={self.covariance_type!r})"

    def _check_hyperparameters(self):
        v.check_int(self.n_components, "n_components", 1)
        check_covariance_type(self.covariance_type)
        v.check_nonnegative(self.tol, "tol")
        v.check_nonnegative(self.reg_covar, "reg_covar")
        v.check_int(self.max_iter, "max_iter", 0)
        v.check_int(self.n_init, "n_init", 1)
        canonical_init(self.init_params)

    def fit(self, X, y=None):
        """Fit by EM (``n_init`` restarts, best kept). Returns ``self``."""
        self._check_hyperparameters()
        warm = self.warm_start and hasattr(self, "params_")
        if warm:
            init_given, n_init = self.params_, 1
        else:
            init_given = {
                "weights": self.weights_init,
                "means": self.means_init,
                "precisions": self.precisions_init,
            }
            n_init = self.n_init
        result = fit_em(
            np.asarray(X),  # in memory, as scikit-learn (a memmap would go the chunked way)
            self.n_components,
            covariance_type=self.covariance_type,
            init=self.init_params,
            max_iter=self.max_iter,
            tol=self.tol,
            reg_covar=self.reg_covar,
            n_init=n_init,
            seed=_seed_from(self.random_state),
            init_params=init_given,
        )
        self._set_result(result)
        return self

    def fit_predict(self, X, y=None):
        """Fit, then return the component of every point, (n,)."""
        return self.fit(X).predict(X)

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
        self.curve_ = np.asarray(result.curve[: n_iter + 1])
        self.lower_bound_ = float(self.curve_[max(n_iter - 1, 0)])
        self.n_features_in_ = params.n_features

    def _check_fitted(self, X):
        if not hasattr(self, "params_"):
            raise ValueError(
                "This GaussianMixture instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator."
            )
        return v.check_data(X, n_features=self.n_features_in_)

    def score_samples(self, X):
        """Log-density of the mixture at every point, (n,)."""
        x = self._check_fitted(X)
        return np.asarray(mx.score_samples(self.params_, x))

    def score(self, X, y=None):
        """Mean log-likelihood per sample (a float)."""
        x = self._check_fitted(X)
        return float(mx.mean_log_likelihood(self.params_, x))

    def predict(self, X):
        """Component of largest responsibility, (n,) integers."""
        x = self._check_fitted(X)
        return np.asarray(mx.predict(self.params_, x))

    def predict_proba(self, X):
        """Responsibilities, (n, k); rows sum to one."""
        x = self._check_fitted(X)
        return np.asarray(mx.responsibilities(self.params_, x))

    def sample(self, n_samples=1):
        """``(X, y)``: ``n_samples`` points from the fitted mixture and their components.

        As scikit-learn, the points come grouped by component.
        """
        if not hasattr(self, "params_"):
            self._check_fitted(np.zeros((1, 1)))
        v.check_int(n_samples, "n_samples", 1)
        key = jax.random.key(_seed_from(self.random_state))
        x, y = mx.sample(key, self.params_, n_samples)
        order = np.argsort(np.asarray(y), kind="stable")
        return np.asarray(x)[order], np.asarray(y)[order]

    def bic(self, X):
        """Bayesian information criterion on ``X`` (lower is better)."""
        x = self._check_fitted(X)
        return float(mx.bic(self.params_, x))

    def aic(self, X):
        """Akaike information criterion on ``X`` (lower is better)."""
        x = self._check_fitted(X)
        return float(mx.aic(self.params_, x))

    def _n_parameters(self):
        return mx.n_parameters(self.params_)




class MeanShift:
    """Mean shift clustering with a Gaussian kernel, with scikit-learn's interface.

    ``bandwidth`` is the Gaussian kernel's standard deviation sigma: every seed
    moves to the kernel-weighted mean ``sum_x K(x, p) x / sum_x K(x, p)`` with
    ``K(x, p) = exp(-|x - p|^2 / (2 sigma^2))``, over all the data. scikit-learn's
    ``MeanShift`` uses a flat kernel: its ``bandwidth`` ``h`` is a radius, and a
    seed moves to the plain mean of the points within ``h``. The two spread the
    same per coordinate when ``sigma = h / sqrt(d + 2)`` (``sigma = h / 2`` in 2-D);
    the same number as sigma smooths much more. All mathematics is in
    ``mogjax.meanshift``.

    Args:
      bandwidth: sigma (> 0); None: ``estimate_bandwidth(X) / sqrt(d + 2)``
        (scikit-learn's estimate, converted to the Gaussian sigma of equal spread).
      seeds: starting points, (m, d); default every point.
      bin_seeding: start from the grid cells of width ``bandwidth`` holding at
        least ``min_bin_freq`` points (ignored when ``seeds`` is given, as in
        scikit-learn).
      min_bin_freq: see ``bin_seeding``.
      cluster_all: if False, points farther than ``bandwidth * sqrt(d + 2)`` from
        their centre get label -1.
      n_jobs: accepted for compatibility; unused.
      max_iter: iterations at most.
      tol, merge_radius, blurring, block_size: see ``mogjax.mean_shift`` (not in
        scikit-learn).

    Attributes (after ``fit``):
      cluster_centers_: (k, d) NumPy array, sorted by cluster size.
      labels_: (n,) cluster of every training point.
      n_iter_: iterations run (the most any seed needed).
      bandwidth_: the sigma used.
      converged_, curve_ (largest move per iteration, ``n_iter_`` entries),
      result_ (the ``MeanShiftResult``), n_features_in_.

    Examples:
      >>> import numpy as np
      >>> X = np.array([[1, 1], [2, 1], [1, 0], [4, 7], [3, 5], [3, 6]])
      >>> ms = MeanShift(bandwidth=1.0).fit(X)
      >>> ms.labels_.tolist(), ms.predict([[0, 0], [5, 5]]).tolist()
      ([0, 0, 0, 1, 1, 1], [0, 1])
      >>> ms.cluster_centers_.astype(float).round(2).tolist()
      [[1.31, 0.69], [3.18, 5.84]]
    """

    _names = ("bandwidth", "seeds", "bin_seeding", "min_bin_freq", "cluster_all",
              "n_jobs", "max_iter", "tol", "merge_radius", "blurring", "block_size")

    def __init__(self, *, bandwidth=None, seeds=None, bin_seeding=False,
                 min_bin_freq=1, cluster_all=True, n_jobs=None, max_iter=300, tol=1e-3,
                 merge_radius=None, blurring=False, block_size=None):
        self.bandwidth = bandwidth
        self.seeds = seeds
        self.bin_seeding = bin_seeding
        self.min_bin_freq = min_bin_freq
        self.cluster_all = cluster_all
        self.n_jobs = n_jobs
        self.max_iter = max_iter
        self.tol = tol
        self.merge_radius = merge_radius
        self.blurring = blurring
        self.block_size = block_size

    def get_params(self, deep=True):
        return {name: getattr(self, name) for name in self._names}

    def set_params(self, **params):
        for name, value in params.items():
            if name not in self._names:
                raise ValueError(f"Invalid parameter {name!r} for MeanShift")
            setattr(self, name, value)
        return self

    def __repr__(self):
        return f"MeanShift(bandwidth={self.bandwidth!r})"

    def fit(self, X, y=None):
        """Cluster ``X`` (n, d). Returns ``self``."""
        x = v.check_data(X)
        bandwidth = self.bandwidth
        if bandwidth is None:
            bandwidth = _ms.estimate_bandwidth(x) / np.sqrt(x.shape[1] + 2)
            if not bandwidth > 0:
                raise ValueError("The estimated bandwidth is 0 (too many identical "
                                 "points); give bandwidth explicitly")
        result = _ms.mean_shift(
            x, bandwidth, max_iter=self.max_iter, tol=self.tol, seeds=self.seeds,
            bin_seeding=self.bin_seeding and self.seeds is None,
            min_bin_freq=self.min_bin_freq,
            cluster_all=self.cluster_all, merge_radius=self.merge_radius,
            blurring=self.blurring, block_size=self.block_size,
        )
        n_iter = int(result.n_iter)
        self.result_ = result
        self.bandwidth_ = float(bandwidth)
        self.cluster_centers_ = np.asarray(result.centers)
        self.labels_ = np.asarray(result.labels)
        self.n_iter_ = n_iter
        self.converged_ = bool(result.converged)
        self.curve_ = np.asarray(result.curve[1 : n_iter + 1])
        self.n_features_in_ = x.shape[1]
        return self

    def fit_predict(self, X, y=None):
        """Fit, then return ``labels_``, (n,)."""
        return self.fit(X).labels_

    def predict(self, X):
        """Index of the nearest cluster centre of every row of ``X``, (n,)."""
        if not hasattr(self, "cluster_centers_"):
            raise ValueError(
                "This MeanShift instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator."
            )
        x = v.check_data(X, n_features=self.n_features_in_)
        centers = np.asarray(self.cluster_centers_, x.dtype)
        return np.asarray(_ms.nearest_center(x, centers))
