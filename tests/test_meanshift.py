"""Mean shift: fixed points checked in NumPy, scikit-learn's clusters and bandwidth,
blocked vs unblocked, float32 vs float64, and every bad input.

Every new shape or static option compiles the whole program (~2 s), so most tests
share the (180, 2) data sets below.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.optimize import minimize
from scipy.stats import gaussian_kde
from sklearn.cluster import estimate_bandwidth as sk_estimate_bandwidth
from sklearn.cluster import mean_shift as sk_mean_shift
from sklearn.metrics import adjusted_rand_score as ari

import mogjax
from mogjax import meanshift as ms
from mogjax.estimators import MeanShift
from mogjax.meanshift import estimate_bandwidth, mean_shift, mean_shift_step, modes_init

A = np.asarray
SK_EXAMPLE = np.array([[1, 1], [2, 1], [1, 0], [4, 7], [3, 5], [3, 6]], dtype=float)
BW = 1.5


def make_blobs(seed=0, offset=100.0):
    """Three unit blobs 10 apart, 60 points each, far from the origin: (180, 2)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    y = np.repeat(np.arange(3), 60)
    return centres[y] + rng.normal(size=(180, 2)) + offset, y


@pytest.fixture(scope="module")
def blobs():
    return make_blobs()


@pytest.fixture(scope="module")
def fitted(blobs):
    return mean_shift(blobs[0], BW)


def kde(p, x, sigma):
    """The (unnormalised) Gaussian density estimate at every row of p."""
    return np.exp(-((p[:, None] - x[None]) ** 2).sum(-1) / (2 * sigma**2)).sum(1)


def np_update(p, x, sigma):
    """The lecture's update, computed directly: u(p) for every row of p."""
    k = np.exp(-((p[:, None, :] - x[None, :, :]) ** 2).sum(-1) / (2 * sigma**2))
    return k @ x / k.sum(1, keepdims=True)


def kde_hessian(c, x, sigma):
    """Hessian of sum_i exp(-|c - x_i|^2 / 2 sigma^2) at c."""
    diff = x - c
    k = np.exp(-(diff**2).sum(1) / (2 * sigma**2))
    outer = diff[:, :, None] * diff[:, None, :] / sigma**4 - np.eye(len(c)) / sigma**2
    return (k[:, None, None] * outer).sum(0)


def test_centres_are_fixed_points_and_local_maxima(blobs, fitted):
    x, _ = blobs
    c = A(fitted.centers)
    assert np.all(np.linalg.norm(np_update(c, x, BW) - c, axis=1) < 1e-3 * BW)
    angle = np.arange(8) * np.pi / 4
    circle = 0.05 * BW * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    for centre in c:  # grad log f = (u(c) - c) / sigma^2 ~ 0 (above); Hessian < 0
        assert np.all(np.linalg.eigvalsh(kde_hessian(centre, x, BW)) < 0)
        assert np.all(kde(centre + circle, x, BW) < kde(centre[None], x, BW))


def test_blobs_give_the_truth(blobs, fitted):
    _, y = blobs
    assert len(fitted.centers) == 3 and bool(fitted.converged)
    assert ari(y, A(fitted.labels)) == 1.0
    assert_array_equal(A(fitted.counts), [60, 60, 60])


def test_result_layout(fitted):
    n_iter = int(fitted.n_iter)
    curve, active = A(fitted.curve), A(fitted.n_active)
    assert curve.shape == (301,) and np.isnan(curve[0])
    assert np.all(np.isnan(curve[n_iter + 1 :])) and np.all(curve[1 : n_iter + 1] >= 0)
    assert curve[n_iter] <= 1e-3 * BW
    assert active[0] == 180 and active[n_iter] == 0
    assert np.all(np.diff(active[: n_iter + 1]) <= 0)
    assert np.all(A(fitted.mean_curve)[1 : n_iter + 1] <= curve[1 : n_iter + 1] + 1e-12)
    assert fitted.limits.shape == (180, 2) and fitted.labels.shape == (180,)
    assert 0 < float(fitted.kernel_evaluations) <= 180 * 180 * n_iter
    counts = A(fitted.counts)
    assert np.all(np.diff(counts) <= 0)
    assert_array_equal(counts, np.bincount(A(fitted.labels)))
    # every seed's limit lies within the merge radius of its cluster's centre
    gap = np.linalg.norm(A(fitted.limits) - A(fitted.centers)[A(fitted.labels)], axis=1)
    assert np.all(gap <= BW / 2)


def test_one_blob_has_one_mode_at_the_density_peak():
    z = np.random.default_rng(2).normal(size=(180, 2)) * [1.0, 0.5] + 100.0
    res = mean_shift(z, BW, tol=1e-6)
    assert len(res.centers) == 1
    options = {"xatol": 1e-10, "fatol": 1e-14}
    peak = minimize(lambda p: -kde(p[None], z, BW)[0], z.mean(0), method="Nelder-Mead",
                    options=options).x
    assert_allclose(A(res.centers[0]), peak, atol=1e-5)


def test_sklearn_docstring_example_gives_the_same_groups():
    _, sk_labels = sk_mean_shift(SK_EXAMPLE, bandwidth=2)
    res = mean_shift(SK_EXAMPLE, 1.0)  # the Gaussian sigma of that spread: h / sqrt(4)
    assert ari(sk_labels, A(res.labels)) == 1.0
    labels = MeanShift(bandwidth=1.0).fit_predict(SK_EXAMPLE)
    assert labels.tolist() == A(res.labels).tolist()


def test_mean_shift_step_matches_numpy_blocked_or_not(blobs):
    x, _ = blobs
    p = x[::3] + 0.3
    ref = np_update(p, x, BW)
    for block in [None, 7, (16, 50), (60, 180)]:
        assert_allclose(A(mean_shift_step(p, x, BW, block_size=block)), ref, rtol=1e-12)
    # a huge bandwidth moves every point to the data mean in one step
    far = A(mean_shift_step(p, x, 1e4))
    assert_allclose(far, np.tile(x.mean(0), (60, 1)), rtol=1e-6)


def test_blocked_and_unblocked_fits_agree(blobs, fitted):
    res = mean_shift(blobs[0], BW, block_size=(16, 50))
    assert_allclose(A(res.centers), A(fitted.centers), rtol=1e-10)
    assert_array_equal(A(res.labels), A(fitted.labels))
    assert int(res.n_iter) == int(fitted.n_iter)


def test_float32_and_float64_agree(blobs):
    x, _ = blobs
    c64 = mean_shift(x, BW, tol=1e-5)
    c32 = mean_shift(x.astype(np.float32), BW, tol=1e-5)
    assert c32.centers.dtype == np.float32 and c64.centers.dtype == np.float64
    assert_allclose(A(c32.centers), A(c64.centers), rtol=1e-4)
    assert_array_equal(A(c32.labels), A(c64.labels))


def test_far_seeds_underflow_harmlessly_in_float32(blobs):
    x, y = blobs
    x32 = x.astype(np.float32)
    seeds = np.array([[130.0, 130.0], [-900.0, 100.0], [100.0, 100.0]], np.float32)
    res = mean_shift(x32, BW, seeds=seeds)  # 20 to 700 bandwidths away
    assert np.all(np.isfinite(A(res.limits)))
    assert np.all(np.isfinite(A(mean_shift_step(seeds, x32, BW))))
    assert ari(y, A(res.labels)) > 0.5


def test_coinciding_points_travel_as_one(blobs, fitted):
    x, _ = blobs
    res = mean_shift(np.concatenate([x, x]), BW)  # same density, twice the weight
    assert_allclose(A(res.centers), A(fitted.centers), rtol=1e-10)
    assert_array_equal(A(res.labels), np.tile(A(fitted.labels), 2))
    assert_array_equal(A(res.counts), 2 * A(fitted.counts))
    near = mean_shift(np.concatenate([x, x + 1e-7]), BW)  # one cell: one path
    active = A(near.n_active)
    assert active[0] == 360 and active[1] < 200
    assert_allclose(A(near.centers), A(fitted.centers), atol=1e-3 * BW)


def test_seeds_bin_seeding_and_orphans(blobs, fitted):
    x, y = blobs
    ref = A(fitted.centers)
    some = mean_shift(x, BW, seeds=x[::10])
    assert_allclose(np.sort(A(some.centers), 0), np.sort(ref, 0), atol=0.05)
    assert ari(y, A(some.labels)) == 1.0 and some.limits.shape == (18, 2)
    binned = mean_shift(x, BW, bin_seeding=True, min_bin_freq=3)
    assert len(ms.bin_seeds(x, BW, 3)) < 60
    assert ari(y, A(binned.labels)) == 1.0
    # a point far from every mode: -1 without cluster_all, as in scikit-learn
    xo = np.concatenate([x[:-1], [[150.0, 150.0]]])
    lone = mean_shift(xo, BW, seeds=ref + 0.1, cluster_all=False)
    nearest = A(lone.centers)[A(ms.nearest_center(xo, lone.centers))]
    gap = np.linalg.norm(xo - nearest, axis=1)
    labels = A(lone.labels)
    assert_array_equal(labels == -1, gap > BW * 2)  # the radius: sigma sqrt(d + 2)
    assert labels[-1] == -1 and np.mean(labels >= 0) > 0.95
    assert mean_shift(xo, BW, seeds=ref + 0.1).labels[-1] >= 0


def test_blurring_finds_the_blobs(blobs):
    x, y = blobs
    res = mean_shift(x, BW, blurring=True)
    assert len(res.centers) == 3 and bool(res.converged)
    assert ari(y, A(res.labels)) == 1.0
    assert np.all(A(res.n_active)[: int(res.n_iter)] == 180)


def test_merge_radius_max_iter_and_one_compilation(blobs, fitted):
    x, _ = blobs
    size = ms._mean_shift_compiled._cache_size()
    assert len(mean_shift(x, 2 * BW, tol=1e-2, merge_radius=50.0).centers) == 1
    assert ms._mean_shift_compiled._cache_size() == size  # bandwidth, tol: traced
    stopped = mean_shift(x, BW, max_iter=1)
    assert int(stopped.n_iter) == 1 and not bool(stopped.converged)


def test_estimate_bandwidth_equals_sklearn(blobs):
    x, _ = blobs
    for q in (0.05, 0.3, 1.0):
        expected = sk_estimate_bandwidth(x, quantile=q)
        assert_allclose(estimate_bandwidth(x, q), expected, rtol=1e-12)
    expected = sk_estimate_bandwidth(x, quantile=0.3, n_samples=50, random_state=3)
    got = estimate_bandwidth(x, 0.3, n_samples=50, seed=3, block_size=7)
    assert_allclose(got, expected, rtol=1e-12)
    expected = sk_estimate_bandwidth(SK_EXAMPLE, quantile=0.5)
    assert_allclose(estimate_bandwidth(SK_EXAMPLE, 0.5), expected, rtol=1e-12)


def test_scott_and_silverman_match_scipy():
    z = np.random.default_rng(1).normal(3.0, 2.0, (180, 1))
    density = gaussian_kde(z[:, 0])
    for method in ("scott", "silverman"):
        density.set_bandwidth(method)
        expected = density.factor * np.std(z, ddof=1)
        got = estimate_bandwidth(z, method=method)
        assert got == pytest.approx(expected, rel=1e-10)


def test_estimator(blobs, fitted):
    x, y = blobs
    est = MeanShift(bandwidth=BW).fit(x)
    assert_array_equal(est.labels_, A(fitted.labels))
    assert_array_equal(est.predict(x), est.labels_)
    assert est.cluster_centers_.shape == (3, 2) and est.n_iter_ == int(fitted.n_iter)
    assert est.curve_.shape == (est.n_iter_,) and est.converged_
    auto = MeanShift().fit(x)  # scikit-learn's estimate over sqrt(d + 2)
    assert auto.bandwidth_ == pytest.approx(sk_estimate_bandwidth(x) / 2, rel=1e-10)
    assert ari(y, auto.labels_) == 1.0
    assert MeanShift().set_params(max_iter=5).get_params()["max_iter"] == 5
    with pytest.raises(ValueError, match="not fitted"):
        MeanShift().predict(x)
    with pytest.raises(ValueError, match="features"):
        est.predict(x[:, :1])
    with pytest.raises(ValueError, match="Invalid parameter"):
        MeanShift().set_params(radius=1)


def test_modes_start_em(blobs, fitted):
    x, y = blobs
    params = modes_init(x, BW, covariance_type="diag")
    assert params.n_components == 3
    assert_array_equal(A(ms.nearest_center(x, params.means)), A(fitted.labels))
    res = mogjax.fit_em(x, init_params=params, covariance_type="diag")
    assert ari(y, A(mogjax.predict(res.params, x))) == 1.0


def nan_where_far(x, value=np.nan):
    return np.where(x > 105, value, x)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x: mean_shift(x, 0.0), "bandwidth"),
        (lambda x: mean_shift(x, -1.0), "bandwidth"),
        (lambda x: mean_shift(x, float("nan")), "bandwidth"),
        (lambda x: mean_shift(x, float("inf")), "bandwidth"),
        (lambda x: mean_shift(nan_where_far(x), 1.0), "NaN"),
        (lambda x: mean_shift(nan_where_far(x, np.inf), 1.0), "infinity"),
        (lambda x: mean_shift(x[:, 0], 1.0), "2-D"),
        (lambda x: mean_shift(x[None], 1.0), "2-D"),
        (lambda x: mean_shift(x[:0], 1.0), "no rows"),
        (lambda x: mean_shift(x, 1.0, seeds=x[:, :1]), "seeds"),
        (lambda x: mean_shift(x, 1.0, seeds=x[0]), "seeds"),
        (lambda x: mean_shift(x, 1.0, seeds=np.full((2, 2), np.nan)), "seeds contains"),
        (lambda x: mean_shift(x, 1.0, tol=-1.0), "tol"),
        (lambda x: mean_shift(x, 1.0, max_iter=-1), "max_iter"),
        (lambda x: mean_shift(x, 1.0, merge_radius=-1.0), "merge_radius"),
        (lambda x: mean_shift(x, 1.0, block_size=0), "block_size"),
        (lambda x: mean_shift(x, 1.0, bin_seeding=True, min_bin_freq=0), "min_bin"),
        (lambda x: mean_shift(x, 0.01, bin_seeding=True, min_bin_freq=2), "min_bin"),
        (lambda x: mean_shift(x, 1.0, blurring=True, seeds=x), "blurring"),
        (lambda x: estimate_bandwidth(x, quantile=0.0), "quantile"),
        (lambda x: estimate_bandwidth(x, quantile=1.5), "quantile"),
        (lambda x: estimate_bandwidth(x, quantile=-0.1), "quantile"),
        (lambda x: estimate_bandwidth(x, n_samples=0), "n_samples"),
        (lambda x: estimate_bandwidth(x, method="median"), "method"),
        (lambda x: estimate_bandwidth(x[:0]), "no rows"),
        (lambda x: estimate_bandwidth(nan_where_far(x)), "NaN"),
        (lambda x: MeanShift(bandwidth=0.0).fit(x), "bandwidth"),
        (lambda x: MeanShift(bandwidth=1.0).fit(x[:, 0]), "2-D"),
        (lambda x: modes_init(x, 1.0, covariance_type="round"), "covariance"),
        (lambda x: mean_shift_step(x[:, :1], x, 1.0), "share d"),
    ],
)
def test_bad_input_raises(blobs, call, match):
    with pytest.raises(ValueError, match=match):
        call(blobs[0])
