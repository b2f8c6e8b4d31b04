"""Variational Bayesian mixtures against scikit-learn's BayesianGaussianMixture.

Every comparison starts both from the same initial responsibilities (scikit-learn
through its ``_initialize(X, resp)``) and runs 30 iterations; one compiled program
per (data set, covariance type, weight prior) is shared by the tests that need it.
"""

import logging
import warnings

import jax
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import BayesianGaussianMixture as SkBayesianGaussianMixture

from sklearn.utils.estimator_checks import parametrize_with_checks

from mogjax.bayesian_mixture import BayesianGaussianMixture
from mogjax.datasets import load_iris, make_mixture
from mogjax.posterior import WEIGHT_PRIORS
from mogjax.variational import fit_variational
from tests.conftest import COVARIANCE_TYPES

ITERS = 30
K = 4


@pytest.fixture(scope="module")
def problems():
    """Iris from random responsibilities; a 5-D mixture from k-means' hard labels."""
    iris = np.asarray(load_iris()[0], np.float64)
    rng = np.random.default_rng(0)
    soft = rng.uniform(size=(iris.shape[0], K))
    soft /= soft.sum(axis=1, keepdims=True)
    x5, _, _ = make_mixture(1, 240, 3, 5, separation=3.0)
    labels = KMeans(K, n_init=1, random_state=0).fit(x5).labels_
    hard = np.eye(K)[labels]
    return {"iris": (iris, soft), "mixture5d": (np.asarray(x5, np.float64), hard)}


def sklearn_fit(x, resp, covariance_type, weight_prior, **kwargs):
    """scikit-learn's fit started from ``resp`` (its ``_initialize(X, resp)``)."""
    kwargs = {"max_iter": ITERS, "tol": 0.0, **kwargs}
    sk = SkBayesianGaussianMixture(n_components=resp.shape[1], covariance_type=covariance_type,
                                   weight_concentration_prior_type=weight_prior, **kwargs)
    sk._initialize_parameters = lambda X, random_state, xp=None: sk._initialize(X, resp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning with tol=0
        return sk.fit(x)


def ours(x, resp, covariance_type, weight_prior, **kwargs):
    kwargs = {"max_iter": ITERS, "tol": 0.0, **kwargs}
    return fit_variational(x, resp.shape[1], covariance_type=covariance_type,
                           weight_prior=weight_prior, init_params=resp, **kwargs)


def assert_close(actual, expected, name):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected, np.float64),
                               rtol=1e-8, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("weight_prior", WEIGHT_PRIORS)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("data", ["iris", "mixture5d"])
def test_thirty_iterations_match_sklearn(problems, data, covariance_type, weight_prior):
    x, resp = problems[data]
    sk = sklearn_fit(x, resp, covariance_type, weight_prior)
    res = ours(x, resp, covariance_type, weight_prior)
    post = res.posterior
    assert int(res.n_iter) == sk.n_iter_ == ITERS and bool(res.converged) == sk.converged_
    assert_close(res.curve[1:], np.ravel(sk.lower_bounds_), "lower_bounds_")
    assert_close(res.lower_bound, sk.lower_bound_, "lower_bound_")
    assert np.isfinite(float(res.curve[0]))
    assert_close(post.weights, sk.weights_, "weights_")
    assert_close(post.means, sk.means_, "means_")
    assert_close(post.covariances, sk.covariances_, "covariances_")
    assert_close(post.precisions, sk.precisions_, "precisions_")
    assert_close(post.prec_chol, sk.precisions_cholesky_, "precisions_cholesky_")
    assert_close(post.mean_precision, sk.mean_precision_, "mean_precision_")
    assert_close(post.degrees_of_freedom, sk.degrees_of_freedom_, "degrees_of_freedom_")
    assert_close(post.weight_concentration, sk.weight_concentration_, "weight_concentration_")
    prior = res.prior
    assert_close(prior.weight_concentration, sk.weight_concentration_prior_, "prior")
    assert_close(prior.mean, sk.mean_prior_, "mean_prior_")
    assert_close(prior.degrees_of_freedom, sk.degrees_of_freedom_prior_, "dof prior")
    assert_close(prior.covariance, sk.covariance_prior_, "covariance_prior_")


@pytest.mark.parametrize("tol", [1e-1, 3.0])
def test_stopping_rule_and_given_priors_match_sklearn(problems, tol, caplog):
    """n_iter and converged as scikit-learn's (the gain counted at once); new prior
    values and tol reuse the compiled program."""
    x, resp = problems["iris"]
    priors = dict(weight_concentration_prior=0.5, mean_precision_prior=0.3,
                  mean_prior=x.mean(axis=0) + 0.2, degrees_of_freedom_prior=5.5,
                  covariance_prior=np.cov(x.T) * 1.5)
    sk = sklearn_fit(x, resp, "full", "dirichlet_process", tol=tol, **priors)
    ours(x, resp, "full", "dirichlet_process", tol=0.0, **priors)  # compiled
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        caplog.clear()
        res = ours(x, resp, "full", "dirichlet_process", tol=tol, **priors)
    assert not [r for r in caplog.records if "Finished XLA compilation" in r.getMessage()]
    assert sk.converged_ and int(res.n_iter) == sk.n_iter_ < ITERS and bool(res.converged)
    n = sk.n_iter_
    assert_close(res.curve[1: n + 1], np.ravel(sk.lower_bounds_), "lower_bounds_")
    assert np.all(np.isnan(np.asarray(res.curve[n + 1:])))
    assert_close(res.posterior.means, sk.means_, "means_")
    assert_close(res.posterior.covariances, sk.covariances_, "covariances_")


def test_continuing_from_a_posterior_is_one_longer_fit(problems):
    """``init_params=posterior`` (warm start): 10 then 20 iterations equal 30."""
    x, resp = problems["mixture5d"]
    full = ours(x, resp, "diag", "dirichlet_process")
    first = ours(x, resp, "diag", "dirichlet_process", max_iter=10)
    rest = fit_variational(x, K, covariance_type="diag", init_params=first.posterior,
                           previous_lower_bound=float(first.lower_bound), max_iter=20, tol=0.0)
    assert int(rest.n_iter) == 20
    assert_close(rest.curve, full.curve[10:], "curve")
    assert_close(rest.posterior.means, full.posterior.means, "means")


def test_dirichlet_process_keeps_three_of_ten_components():
    x, _, _ = make_mixture(0, 600, 3, 2, separation=5.0)
    res = fit_variational(x, 10, max_iter=300, seed=0)
    weights = np.asarray(res.posterior.weights)
    assert bool(res.converged) and np.sum(weights > 1e-2) == 3
    assert np.isclose(weights.sum(), 1.0)
    bound = np.asarray(res.curve[1: int(res.n_iter) + 1])
    assert np.all(np.diff(bound) > -1e-6 * np.abs(bound[1:]))  # the bound climbs
    r32 = fit_variational(x.astype(np.float32), 10, max_iter=300, seed=0, n_init=3)  # vmapped
    assert r32.curve.dtype == np.float32 and r32.posterior.means.dtype == np.float32
    w32 = np.sort(np.asarray(r32.posterior.weights))
    assert np.sum(w32 > 1e-2) == 3  # the best of 3 restarts: the same clusters
    np.testing.assert_allclose(w32[-3:], np.sort(weights)[-3:], atol=1e-2)


def test_row_blocks_give_the_same_fit(problems):
    """The E-step summed over blocks of 64 rows (two and a remainder) is the same."""
    x, resp = problems["iris"]
    whole = ours(x, resp, "tied", "dirichlet_process")
    blocks = ours(x, resp, "tied", "dirichlet_process", block_size=64)
    assert_close(blocks.curve, whole.curve, "curve")
    assert_close(blocks.posterior.covariances, whole.posterior.covariances, "covariances")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(covariance_type="identity"), "covariance_type"),
        (dict(weight_prior="dirichlet"), "weight_prior"),
        (dict(k=0), "'k'"),
        (dict(k=400), "n_samples >= n_components"),
        (dict(tol=-1.0), "'tol'"),
        (dict(init="nope"), "'init'"),
        (dict(weight_concentration_prior=0.0), "weight_concentration_prior"),
        (dict(degrees_of_freedom_prior=2.5), "greater than 3"),
        (dict(mean_prior=np.zeros(3)), "mean_prior"),
        (dict(covariance_prior=-np.eye(4)), "positive-definite"),
        (dict(covariance_type="diag", covariance_prior=np.zeros(4)), "positive"),
        (dict(init_params=np.ones((150, 3))), "shape"),
        (dict(init_params=np.full((150, 2), 0.4)), "summing to 1"),
        (dict(x=np.full((150, 4), np.nan)), "NaN"),
        (dict(x=np.zeros((1, 4)), k=1), "at least 2 rows"),
        (dict(x=np.zeros(5)), "2-D"),
    ],
)
def test_bad_input_is_named_before_any_compute(problems, kwargs, message):
    args = {"x": problems["iris"][0], "k": 2, **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        fit_variational(args.pop("x"), args.pop("k"), **args)



# ------------------------------------------------------------ the scikit-learn estimator


def assert_estimators_agree(ours_est, sk, x):
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_",
                 "mean_precision_", "degrees_of_freedom_", "weight_concentration_",
                 "weight_concentration_prior_", "mean_precision_prior_", "mean_prior_",
                 "degrees_of_freedom_prior_", "covariance_prior_", "lower_bound_"):
        assert_close(getattr(ours_est, name), getattr(sk, name), name)
    assert_close(ours_est.lower_bounds_, np.ravel(sk.lower_bounds_), "lower_bounds_")
    assert (ours_est.n_iter_, ours_est.converged_) == (sk.n_iter_, sk.converged_)
    assert_close(ours_est.score_samples(x), sk.score_samples(x), "score_samples")
    assert_close(ours_est.predict_proba(x), sk.predict_proba(x), "predict_proba")
    np.testing.assert_array_equal(ours_est.predict(x), sk.predict(x))
    assert np.isclose(ours_est.score(x), sk.score(x), rtol=1e-10)


@pytest.mark.parametrize("data, covariance_type, weight_prior", [
    ("iris", "full", "dirichlet_process"),
    ("mixture5d", "spherical", "dirichlet_distribution"),
])
def test_estimator_matches_sklearn_from_the_same_responsibilities(
        problems, data, covariance_type, weight_prior):
    x, resp = problems[data]
    kwargs = {"covariance_type": covariance_type, "max_iter": ITERS, "tol": 0.0,
              "weight_concentration_prior_type": weight_prior}
    sk = sklearn_fit(x, resp, covariance_type, weight_prior)
    with pytest.warns(ConvergenceWarning):
        est = BayesianGaussianMixture(n_components=K, init_params=resp, **kwargs).fit(x)
    assert_estimators_agree(est, sk, x)
    samples, labels = est.sample(7)
    assert samples.shape == (7, x.shape[1]) and np.all(np.diff(labels) >= 0)


def test_estimator_warm_start_matches_sklearn(problems):
    """Two warm fits of 10 iterations, as scikit-learn's, with the default tol."""
    x, resp = problems["iris"]
    sk = SkBayesianGaussianMixture(n_components=K, warm_start=True, max_iter=10)
    sk._initialize_parameters = lambda X, random_state, xp=None: sk._initialize(X, resp)
    est = BayesianGaussianMixture(n_components=K, warm_start=True, max_iter=10, init_params=resp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(2):
            sk.fit(x)
            est.fit(x)
            assert_estimators_agree(est, sk, x)


@parametrize_with_checks([BayesianGaussianMixture()])
def test_sklearn_estimator_checks(estimator, check):
    """Every check of scikit-learn's passes (the one skipped needs SCIPY_ARRAY_API)."""
    check(estimator)
