"""mogjax.GaussianMixture and MeanShift against scikit-learn's: same numbers from the
same start, and scikit-learn's protocol (issue 13)."""

import warnings

import jax
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.cluster import MeanShift as SkMeanShift
from sklearn.cluster import estimate_bandwidth as sk_estimate_bandwidth
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.utils._param_validation import InvalidParameterError

import mogjax as mg

from .conftest import COVARIANCE_TYPES

K = 3


@pytest.fixture(scope="module")
def inits(offset_data):
    """scikit-learn-shaped initial values per covariance type."""
    out = {}
    for ct in COVARIANCE_TYPES:
        p = mg.fit_em(offset_data, K, covariance_type=ct, max_iter=1, tol=0, seed=2).params
        out[ct] = dict(weights_init=np.asarray(p.weights), means_init=np.asarray(p.means),
                       precisions_init=np.asarray(p.precisions))
    return out


@pytest.fixture(scope="module")
def fitted_pairs(offset_data, inits):
    pairs = {}
    for ct in COVARIANCE_TYPES:
        kw = dict(n_components=K, covariance_type=ct, tol=1e-3, max_iter=100, **inits[ct])
        pairs[ct] = (mg.GaussianMixture(**kw).fit(offset_data),
                     SkGaussianMixture(**kw).fit(offset_data))
    return pairs


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_fit_matches_sklearn(fitted_pairs, covariance_type):
    ours, sk = fitted_pairs[covariance_type]
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(sk, name), rtol=1e-6, atol=1e-12,
                                   err_msg=name)
    assert ours.n_iter_ == sk.n_iter_ and ours.converged_ == sk.converged_
    np.testing.assert_allclose(ours.lower_bound_, sk.lower_bound_, rtol=1e-9)
    assert ours.curve_.shape == (ours.n_iter_ + 1,) and np.all(np.isfinite(ours.curve_))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_scoring_methods_match_sklearn(fitted_pairs, offset_data, covariance_type):
    ours, sk = fitted_pairs[covariance_type]
    x = offset_data[::7]
    np.testing.assert_allclose(ours.score_samples(x), sk.score_samples(x), rtol=1e-9)
    np.testing.assert_allclose(ours.score(x), sk.score(x), rtol=1e-9)
    np.testing.assert_allclose(ours.predict_proba(x), sk.predict_proba(x), atol=1e-9)
    np.testing.assert_array_equal(ours.predict(x), sk.predict(x))
    np.testing.assert_allclose(ours.bic(offset_data), sk.bic(offset_data), rtol=1e-9)
    np.testing.assert_allclose(ours.aic(offset_data), sk.aic(offset_data), rtol=1e-9)
    assert ours._n_parameters() == sk._n_parameters()


def test_tol_zero_runs_every_iteration(offset_data, inits):
    gm = mg.GaussianMixture(K, tol=0, max_iter=17, **inits["full"]).fit(offset_data)
    assert gm.n_iter_ == 17 and not gm.converged_ and gm.curve_.shape == (18,)


def test_fit_predict_equals_fit_then_predict(blobs):
    x, labels, _ = blobs
    a = mg.GaussianMixture(3, random_state=0).fit_predict(x)
    b = mg.GaussianMixture(3, random_state=0).fit(x).predict(x)
    np.testing.assert_array_equal(a, b)
    from sklearn.metrics import adjusted_rand_score
    assert adjusted_rand_score(labels, a) == 1.0


def test_random_state_reproducible_and_restarts(offset_data):
    a = mg.GaussianMixture(K, init_params="random", n_init=3, random_state=5).fit(offset_data)
    b = mg.GaussianMixture(K, init_params="random", n_init=3, random_state=5).fit(offset_data)
    np.testing.assert_array_equal(a.means_, b.means_)
    rs = mg.GaussianMixture(K, random_state=np.random.RandomState(0)).fit(offset_data)
    assert np.all(np.isfinite(rs.means_))


def test_warm_start_continues(offset_data, inits):
    gm = mg.GaussianMixture(K, tol=0, max_iter=5, warm_start=True, **inits["full"])
    gm.fit(offset_data)
    gm.fit(offset_data)
    cold = mg.GaussianMixture(K, tol=0, max_iter=10, **inits["full"]).fit(offset_data)
    np.testing.assert_allclose(gm.means_, cold.means_, rtol=1e-9)
    np.testing.assert_allclose(gm.covariances_, cold.covariances_, rtol=1e-9)


def test_sample_shapes_and_grouping(fitted_pairs):
    ours, _ = fitted_pairs["diag"]
    x, y = ours.sample(500)
    assert x.shape == (500, 3) and y.shape == (500,)
    assert np.all(np.diff(y) >= 0)  # grouped by component, as scikit-learn
    np.testing.assert_allclose(np.bincount(y, minlength=K) / 500, ours.weights_, atol=0.08)


def test_identity_covariance_estimator(blobs):
    x = blobs[0]
    gm = mg.GaussianMixture(3, covariance_type="identity", random_state=0).fit(x)
    np.testing.assert_allclose(gm.covariances_, np.ones(3))
    assert gm._n_parameters() == 2 + 3 * 2


def test_get_and_set_params():
    gm = mg.GaussianMixture(2)
    assert gm.get_params()["n_components"] == 2
    assert gm.set_params(n_components=4).n_components == 4
    with pytest.raises(ValueError, match="Invalid parameter"):
        gm.set_params(n_component=3)


# One cheap configuration shared by the tests below, so they share compiled programs.
CHEAP = {"covariance_type": "diag", "init_params": "random_from_data", "max_iter": 20}


def test_lower_bounds_match_sklearn(fitted_pairs):
    for ours, sk in fitted_pairs.values():
        np.testing.assert_allclose(ours.lower_bounds_, sk.lower_bounds_, rtol=1e-9)
        assert ours.lower_bound_ == ours.lower_bounds_[-1]
        np.testing.assert_array_equal(ours.lower_bounds_, ours.curve_[:-1])


def test_warm_start_max_iter_1_converges_as_sklearn(offset_data, inits):
    """One iteration per fit: convergence, n_iter_ and the bounds fit by fit as
    scikit-learn's (the first iteration compares with the previous lower_bound_)."""
    kw = dict(n_components=K, warm_start=True, max_iter=1, tol=1e-3, **inits["full"])
    ours, sk = mg.GaussianMixture(**kw), SkGaussianMixture(**kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(200):
            ours.fit(offset_data)
            sk.fit(offset_data)
            assert ours.converged_ == sk.converged_ and ours.n_iter_ == sk.n_iter_ == 1
            np.testing.assert_allclose(ours.lower_bound_, sk.lower_bound_, rtol=1e-9)
            if sk.converged_:
                break
    assert ours.converged_
    np.testing.assert_allclose(ours.means_, sk.means_, rtol=1e-6)


def test_convergence_warning_and_max_iter_zero(offset_data, inits):
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        gm = mg.GaussianMixture(K, tol=0, max_iter=17, **inits["full"]).fit(offset_data)
    assert not gm.converged_
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # no warning for max_iter=0
        gm = mg.GaussianMixture(K, max_iter=0, **inits["full"]).fit(offset_data)
    assert gm.n_iter_ == 0 and gm.lower_bound_ == -np.inf and gm.lower_bounds_.shape == (0,)
    np.testing.assert_allclose(gm.means_, inits["full"]["means_init"])


@pytest.mark.parametrize("est", [mg.GaussianMixture(2), mg.MeanShift()], ids=type)
def test_not_fitted_error(est):
    x = np.zeros((4, 2))
    methods = ["predict"]
    if isinstance(est, mg.GaussianMixture):
        methods += ["predict_proba", "score", "score_samples", "bic", "aic"]
    for method in methods:
        with pytest.raises(NotFittedError, match="is not fitted yet"):
            getattr(est, method)(x)
    if isinstance(est, mg.GaussianMixture):
        with pytest.raises(NotFittedError):
            est.sample(0)


def test_random_state_kinds(blobs):
    x = blobs[0]
    fit = lambda rs: mg.GaussianMixture(3, covariance_type="diag", random_state=rs).fit(x)
    a, b = fit(7), fit(np.int64(7))
    np.testing.assert_array_equal(a.means_, b.means_)  # an int is the core's seed:
    core = mg.fit_em(x, 3, covariance_type="diag", init="kmeans", seed=7, tol=1e-3)
    np.testing.assert_array_equal(a.means_, np.asarray(core.params.means))
    for rs in (2**70, np.random.RandomState(0), np.random.default_rng(0), None):
        assert np.all(np.isfinite(fit(rs).means_))
    shared = np.random.RandomState(0)  # a RandomState draws anew at every fit
    est = mg.GaussianMixture(3, covariance_type="diag", init_params="random",
                             random_state=shared)
    assert not np.array_equal(est.fit(x).means_, clone(est).fit(x).means_)
    for bad in ("zero", -1, 1.5):
        with pytest.raises(InvalidParameterError, match="'random_state' parameter"):
            mg.GaussianMixture(3, random_state=bad).fit(x)


def test_n_init_includes_the_single_fit(offset_data):
    """Restart i starts the same whatever n_init: more restarts are never worse."""
    one = mg.GaussianMixture(K, **CHEAP, random_state=3).fit(offset_data)
    five = mg.GaussianMixture(K, **CHEAP, n_init=5, random_state=3).fit(offset_data)
    assert five.lower_bound_ >= one.lower_bound_


def test_dtype_rule(blobs):
    """float32 by default, float64 when x64 is on (here, in the tests) or
    dtype="float64"; float32 input stays float32; dtype="float32" always float32."""
    x = blobs[0][:60]
    fit = lambda data, **kw: mg.GaussianMixture(2, **CHEAP, random_state=0, **kw).fit(data)
    assert fit(x).means_.dtype == np.float64  # x64 is on in the tests
    assert fit(x.astype(np.float32)).means_.dtype == np.float32
    assert fit(x.astype(int)).means_.dtype == np.float64
    f32 = fit(x, dtype="float32")
    assert f32.means_.dtype == f32.covariances_.dtype == np.float32
    assert f32.predict_proba(x).dtype == np.float32
    with jax.enable_x64(False):  # mogjax's default: float32 unless x64 is on
        assert fit(x).means_.dtype == np.float32
        f64 = fit(x, dtype=np.float64)
        assert f64.means_.dtype == np.float64 and f64.score_samples(x).dtype == np.float64
        ms = mg.MeanShift(bandwidth=1.0, dtype="float64").fit(x)
        assert ms.cluster_centers_.dtype == np.float64
    np.testing.assert_allclose(f64.means_, fit(x).means_, rtol=1e-12)
    np.testing.assert_allclose(f32.means_, fit(x).means_, rtol=1e-4)


def test_dataframes_object_and_complex_input(blobs):
    pd = pytest.importorskip("pandas")
    x = blobs[0][:60]
    frame = pd.DataFrame(x, columns=["a", "b"])
    gm = mg.GaussianMixture(2, **CHEAP, random_state=0).fit(frame)
    assert list(gm.feature_names_in_) == ["a", "b"] and gm.n_features_in_ == 2
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        gm.predict(x)
    with pytest.raises(ValueError, match="feature names should match"):
        gm.predict(frame.rename(columns={"a": "c"}))
    obj = mg.GaussianMixture(2, **CHEAP, random_state=0).fit(x.astype(object))
    np.testing.assert_array_equal(obj.means_, gm.means_)
    np.testing.assert_array_equal(obj.predict(x.astype(object)), gm.predict(frame))
    for fit in (mg.GaussianMixture(2).fit, mg.MeanShift().fit, lambda z: mg.fit_em(z, 2)):
        with pytest.raises(ValueError, match="Complex data not supported"):
            fit(x + 1j)


def test_fit_predict_sample_and_verbose(offset_data, inits, capsys):
    gm = mg.GaussianMixture(K, verbose=2, verbose_interval=1, **inits["full"])
    labels = gm.fit_predict(offset_data)
    np.testing.assert_array_equal(labels, gm.predict(offset_data))
    out = capsys.readouterr().out
    assert "Iteration 1\t time lapse" in out and "Initialization converged." in out
    for n in (1, 7, 300):
        x, y = gm.sample(n)
        assert x.shape == (n, 3) and y.shape == (n,) and np.all(np.diff(y) >= 0)
    with pytest.raises(ValueError, match="Invalid value for 'n_samples'"):
        gm.sample(0)


@pytest.mark.parametrize("x, kw", [
    (np.ones((10, 1)), {}),
    (np.array([1, 1, 1, 2, 2, 2, 3, 3.0]).reshape(-1, 1), {"bin_seeding": True}),
    (np.array([[3.0, 2.0]]), {}),
    (np.array([[1.0, 1], [1, 1], [2, 2], [2, 2], [0, 5]]), {}),
    (np.array([[1.0, 1], [1, 1], [2, 2], [2, 2], [0, 5]]),
     {"cluster_all": False, "seeds": [[1, 1], [2, 2]]}),
    (np.array([[1.0, 1], [1, 1], [2, 2], [2, 2], [0, 5]]), {"seeds": [[1, 1], [2, 2], [9, 9]]}),
])
def test_mean_shift_estimated_bandwidth_zero_as_sklearn(x, kw):
    """An estimated bandwidth of 0: every distinct point (that is a seed) is a cluster,
    ordered and labelled as scikit-learn does."""
    ours, sk = mg.MeanShift(**kw).fit(x), SkMeanShift(**kw).fit(x)
    assert ours.bandwidth_ == 0 and ours.n_iter_ == sk.n_iter_ == 0 and ours.converged_
    np.testing.assert_array_equal(ours.cluster_centers_, sk.cluster_centers_)
    np.testing.assert_array_equal(ours.labels_, sk.labels_)
    np.testing.assert_array_equal(ours.predict(x), sk.predict(x))


def test_mean_shift_bandwidth_zero_with_seeds_off_the_data():
    with pytest.raises(ValueError, match="No point was within bandwidth=0"):
        mg.MeanShift(seeds=[[9.0]]).fit(np.ones((4, 1)))
    with pytest.raises(InvalidParameterError, match="'bandwidth' parameter"):
        mg.MeanShift(bandwidth=0).fit(np.ones((4, 1)))


def test_estimate_bandwidth_numpy_scalar_and_random_state(blobs):
    x = blobs[0]
    got = mg.estimate_bandwidth(x, n_samples=50, random_state=3)
    assert isinstance(got, np.float64)
    np.testing.assert_allclose(got, sk_estimate_bandwidth(x, n_samples=50, random_state=3),
                               rtol=1e-12)
    rs = mg.estimate_bandwidth(x, n_samples=50, random_state=np.random.RandomState(3))
    assert rs == got and mg.estimate_bandwidth(x, n_samples=50, seed=3) == got
    assert mg.estimate_bandwidth(x.astype(np.float32)).dtype == np.float64  # as sklearn
