"""mogjax.GaussianMixture against sklearn.mixture.GaussianMixture, same start."""

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGaussianMixture

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
    x, labels, _ = blobs
    gm = mg.GaussianMixture(3, covariance_type="identity", random_state=0).fit(x)
    np.testing.assert_allclose(gm.covariances_, np.ones(3))
    assert gm._n_parameters() == 2 + 3 * 2


def test_get_and_set_params():
    gm = mg.GaussianMixture(2)
    assert gm.get_params()["n_components"] == 2
    assert gm.set_params(n_components=4).n_components == 4
    with pytest.raises(ValueError, match="Invalid parameter"):
        gm.set_params(n_component=3)
