"""``MeanShift``: scikit-learn's clustering estimator over ``mogjax.mean_shift``."""

import math
from numbers import Integral, Real
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from mogjax import _validation as v
from mogjax.bandwidth import estimate_bandwidth
from mogjax.estimators._common import DTYPE, check_X, precision
from mogjax.init import nearest_center
from mogjax.meanshift import MeanShiftResult, mean_shift

_nearest_center = jax.jit(nearest_center)  # one program per shape, not eager steps


class MeanShift(ClusterMixin, BaseEstimator):
    """Mean shift clustering with a Gaussian kernel: scikit-learn's estimator.

    A scikit-learn estimator (``BaseEstimator``, ``ClusterMixin``) with
    ``sklearn.cluster.MeanShift``'s parameters and attributes. One difference is
    the kernel: ``bandwidth`` is the Gaussian kernel's standard deviation sigma,
    and every seed moves to the kernel-weighted mean
    ``sum_x K(x, p) x / sum_x K(x, p)``, ``K(x, p) = exp(-|x - p|^2 / (2 sigma^2))``,
    over all the data. scikit-learn's kernel is flat: its ``bandwidth`` ``h`` is a
    radius, and a seed moves to the plain mean of the points within ``h``. The two
    spread the same per coordinate when ``sigma = h / sqrt(d + 2)`` (``h / 2`` in
    2-D); the same number as sigma smooths much more. So with one bandwidth the
    two can find different clusters, a seed far from all data still climbs (no seed
    is orphaned), and ties in cluster size go to the denser mode. All mathematics
    is in ``mogjax.meanshift``.

    Args:
      bandwidth: sigma (> 0). None: scikit-learn's estimate (``estimate_bandwidth``,
        a flat radius) over ``sqrt(d + 2)``; an estimate of 0 (most points
        repeated: 1-D constant data, one sample) makes every distinct point its own
        cluster, as scikit-learn does.
      seeds: starting points, (m, d); default every point.
      bin_seeding: start from the grid cells of side ``bandwidth`` holding at least
        ``min_bin_freq`` points (ignored when ``seeds`` is given, as in
        scikit-learn).
      min_bin_freq: see ``bin_seeding``.
      cluster_all: if False, points farther than ``bandwidth * sqrt(d + 2)`` (the
        flat radius of the same spread) from their centre get label -1.
      n_jobs: accepted for compatibility; unused (the fit is one compiled program).
      max_iter: iterations at most (>= 0).
      tol, merge_radius, blurring, block_size: see ``mogjax.mean_shift`` (not in
        scikit-learn).
      dtype: the working precision, as ``GaussianMixture``'s: ``None`` (default)
        float32, or float64 with ``jax_enable_x64``; ``"float64"``: float64
        whatever the flag; ``"float32"``: float32. float32 input stays float32.

    Attributes (after ``fit``):
      cluster_centers_: (k, d) NumPy array, the largest cluster first.
      labels_: (n,) cluster of every training point (-1: an orphan).
      n_iter_: iterations run (the most any seed needed).
      bandwidth_: the sigma used.
      converged_, curve_ (largest move per iteration, ``n_iter_`` entries),
      result_ (the ``MeanShiftResult``), n_features_in_, feature_names_in_.

    Examples:
      >>> import numpy as np
      >>> X = np.array([[1, 1], [2, 1], [1, 0], [4, 7], [3, 5], [3, 6]])
      >>> ms = MeanShift(bandwidth=1.0).fit(X)
      >>> ms.labels_.tolist(), ms.predict([[0, 0], [5, 5]]).tolist()
      ([0, 0, 0, 1, 1, 1], [0, 1])
      >>> ms.cluster_centers_.astype(float).round(2).tolist()
      [[1.31, 0.69], [3.18, 5.84]]
      >>> MeanShift().fit(np.ones((5, 1))).cluster_centers_.tolist()  # estimate 0
      [[1.0]]
    """

    _parameter_constraints: ClassVar[dict] = {
        "bandwidth": [Interval(Real, 0, None, closed="neither"), None],
        "seeds": ["array-like", None],
        "bin_seeding": ["boolean"],
        "min_bin_freq": [Interval(Integral, 1, None, closed="left")],
        "cluster_all": ["boolean"],
        "n_jobs": [Integral, None],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "merge_radius": [Interval(Real, 0, None, closed="left"), None],
        "blurring": ["boolean"],
        "block_size": [Interval(Integral, 1, None, closed="left"), tuple, None],
        "dtype": DTYPE,
    }

    def __init__(self, *, bandwidth=None, seeds=None, bin_seeding=False,
                 min_bin_freq=1, cluster_all=True, n_jobs=None, max_iter=300, tol=1e-3,
                 merge_radius=None, blurring=False, block_size=None, dtype=None):
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
        self.dtype = dtype

    def __sklearn_is_fitted__(self):
        return hasattr(self, "cluster_centers_")

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None):
        """Cluster ``X`` (n, d); ``y`` is ignored. Returns ``self``.

        ``sample_weight`` (n,): non-negative row weights; the density is the weighted
        kernel estimate (``mogjax.mean_shift``).
        """
        with precision(self.dtype):
            x = check_X(self, X, reset=True)
            v.check_sample_weight(sample_weight, x.shape[0], x.dtype)
            bandwidth = self.bandwidth
            if bandwidth is None:
                bandwidth = float(estimate_bandwidth(x)) / math.sqrt(x.shape[1] + 2)
            if bandwidth > 0:
                result = mean_shift(
                    x, bandwidth, max_iter=self.max_iter, tol=self.tol, seeds=self.seeds,
                    bin_seeding=self.bin_seeding and self.seeds is None,
                    min_bin_freq=self.min_bin_freq, cluster_all=self.cluster_all,
                    merge_radius=self.merge_radius, blurring=self.blurring,
                    block_size=self.block_size, sample_weight=sample_weight,
                )
            else:
                result = self._distinct_points(x)
        n_iter = int(result.n_iter)
        self.result_ = result
        self.bandwidth_ = float(bandwidth)
        self.cluster_centers_ = np.asarray(result.centers)
        self.labels_ = np.asarray(result.labels)
        self.n_iter_ = n_iter
        self.converged_ = bool(result.converged)
        self.curve_ = np.asarray(result.curve[1 : n_iter + 1])
        return self

    def _distinct_points(self, x) -> MeanShiftResult:
        """Bandwidth 0 (scikit-learn's estimate on data of repeated points): every
        distinct seed that is a data point is a cluster; largest first, ties as
        scikit-learn (larger coordinates first); points go to the nearest centre."""
        xn = np.asarray(x)
        seeds = xn if self.seeds is None else np.asarray(v.check_data(self.seeds, "seeds"),
                                                         xn.dtype)
        rows, counts = np.unique(xn, axis=0, return_counts=True)
        cand = np.unique(seeds, axis=0)
        match = (cand[:, None, :] == rows[None, :, :]).all(-1)  # (seeds, distinct rows)
        has = match.any(axis=1)
        if not has.any():
            raise ValueError("No point was within bandwidth=0 of any seed. Try a "
                             "different seeding strategy or increase the bandwidth.")
        centers, size = cand[has], (match[has] * counts).sum(axis=1)
        order = np.lexsort(tuple(centers[:, j] for j in reversed(range(xn.shape[1])))
                           + (size,))[::-1]
        centers, size = centers[order], size[order]
        labels = np.asarray(_nearest_center(x, jnp.asarray(centers)))
        if not self.cluster_all:
            labels = np.where((centers[labels] == xn).all(axis=1), labels, -1)
        nan = jnp.full(1, jnp.nan, x.dtype)
        return MeanShiftResult(
            centers=centers, labels=labels, counts=np.bincount(labels[labels >= 0],
                                                               minlength=len(centers)),
            n_iter=0, converged=True, curve=nan, mean_curve=nan, n_active=np.zeros(1, int),
            limits=seeds,  # with bandwidth 0 no seed moves
            kernel_evaluations=0,
        )

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return ``labels_``, (n,)."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def predict(self, X):
        """Index of the nearest cluster centre of every row of ``X``, (n,)."""
        check_is_fitted(self)
        with precision(self.dtype):
            x = check_X(self, X, reset=False)
            centers = jnp.asarray(self.cluster_centers_, x.dtype)
            return np.asarray(_nearest_center(x, centers))
