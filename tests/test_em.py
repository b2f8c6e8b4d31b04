"""EM: agreement with scikit-learn, the lecture's update, invariants, compile-once."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

import mogjax as mg
from mogjax import em
from mogjax.datasets import load_old_faithful

from .conftest import COVARIANCE_TYPES
from .helpers import sklearn_from_params

K = 3


@pytest.fixture(scope="module")
def starts(offset_data):
    """Initial parameters per covariance type (a short EM run, so not symmetric)."""
    return {
        ct: mg.fit_em(offset_data, K, covariance_type=ct, max_iter=2, tol=0, seed=1).params
        for ct in COVARIANCE_TYPES
    }


def assert_params_match_sklearn(params, sk, rtol=1e-6):
    np.testing.assert_allclose(params.weights, sk.weights_, rtol=rtol)
    np.testing.assert_allclose(params.means, sk.means_, rtol=rtol)
    np.testing.assert_allclose(params.prec_chol, sk.precisions_cholesky_, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(params.covariances, sk.covariances_, rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_one_em_step_equals_sklearn(offset_data, starts, covariance_type):
    params = starts[covariance_type]
    sk = sklearn_from_params(params, max_iter=1, tol=0).fit(offset_data)
    new = mg.em_step(params, offset_data, reg_covar=1e-6)
    assert_params_match_sklearn(new, sk)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_forty_iterations_equal_sklearn(offset_data, starts, covariance_type):
    params = starts[covariance_type]
    sk = sklearn_from_params(params, max_iter=40, tol=0).fit(offset_data)
    res = mg.fit_em(offset_data, K, covariance_type=covariance_type, max_iter=40, tol=0,
                    init_params=params)
    assert int(res.n_iter) == 40 and not bool(res.converged)  # tol=0 runs them all
    assert_params_match_sklearn(res.params, sk)
    np.testing.assert_allclose(res.curve[39], sk.lower_bound_, rtol=1e-9)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_stopping_rule_matches_sklearn(offset_data, starts, covariance_type):
    params = starts[covariance_type]
    sk = sklearn_from_params(params, max_iter=200, tol=1e-3).fit(offset_data)
    res = mg.fit_em(offset_data, K, covariance_type=covariance_type, max_iter=200,
                    tol=1e-3, init_params=params)
    assert int(res.n_iter) == sk.n_iter_ and bool(res.converged) == sk.converged_
    assert_params_match_sklearn(res.params, sk)


def test_curve_layout(offset_data, starts):
    params = starts["full"]
    res = mg.fit_em(offset_data, K, max_iter=30, tol=1e-2, init_params=params)
    n = int(res.n_iter)
    assert res.curve.shape == (31,)
    np.testing.assert_allclose(res.curve[0], mg.mean_log_likelihood(params, offset_data), rtol=1e-12)
    np.testing.assert_allclose(res.curve[n], mg.mean_log_likelihood(res.params, offset_data), rtol=1e-12)
    assert np.all(np.isfinite(res.curve[: n + 1])) and np.all(np.isnan(res.curve[n + 1 :]))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES + ("identity",))
def test_curve_never_decreases(offset_data, covariance_type):
    res = mg.fit_em(offset_data, K, covariance_type=covariance_type, reg_covar=0.0,
                    max_iter=60, tol=0, seed=3)
    curve = np.asarray(res.curve[: int(res.n_iter) + 1])
    assert np.all(np.diff(curve) >= -1e-10 * np.abs(curve[1:]))
    assert curve[-1] > curve[0]


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_one_component_is_sample_mean_and_covariance(offset_data, covariance_type):
    x = offset_data
    res = mg.fit_em(x, 1, covariance_type=covariance_type, max_iter=1, tol=0, reg_covar=1e-3)
    cov = np.cov(x.T, bias=True) + 1e-3 * np.eye(3)
    expected = {
        "full": cov[None], "tied": cov, "diag": np.diag(cov)[None],
        "spherical": np.array([np.trace(cov) / 3]),
    }[covariance_type]
    np.testing.assert_allclose(res.params.means[0], x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(res.params.covariances, expected, rtol=1e-10)
    np.testing.assert_allclose(res.params.weights, [1.0])


def test_recovers_parameters_of_sampled_data():
    true = mg.datasets.make_mixture_params(7, 3, 2, separation=8.0)
    x, _ = mg.sample(jax.random.key(7), true, 3000)
    res = mg.fit_em(x, 3, n_init=3, seed=0, tol=1e-8)
    order = [int(np.argmin(np.linalg.norm(res.params.means - m, axis=1))) for m in true.means]
    assert sorted(order) == [0, 1, 2]
    fitted = mg.mixture.to_numpy(res.params)
    np.testing.assert_allclose(fitted["means"][order], true.means, atol=0.15)
    np.testing.assert_allclose(fitted["weights"][order], true.weights, atol=0.03)
    np.testing.assert_allclose(fitted["covariances"][order], true.covariances, atol=0.25)


def lecture_em(x, means, covs, n_iter):
    """The lecture's loop, literally: w_ij = f_j(x_i) / sum_l f_l(x_i), then mu, Sigma."""
    k = len(means)
    for _ in range(n_iter):
        dens = np.stack([multivariate_normal(means[j], covs[j]).pdf(x) for j in range(k)], 1)
        w = dens / dens.sum(axis=1, keepdims=True)
        big_w = w.sum(axis=0)
        means = (w.T @ x) / big_w[:, None]
        covs = np.stack([
            ((x - means[j]).T * w[:, j]) @ (x - means[j]) / big_w[j] for j in range(k)
        ])
    return means, covs


def test_equal_weights_reproduce_the_lecture_update():
    x = load_old_faithful()
    res = mg.fit_em(x, 2, init="random_from_data", equal_weights=True, reg_covar=0.0,
                    max_iter=0, seed=4)
    start = res.params
    np.testing.assert_allclose(start.weights, [0.5, 0.5])
    res = mg.fit_em(x, 2, init_params=start, equal_weights=True, reg_covar=0.0,
                    max_iter=8, tol=0)
    means, covs = lecture_em(x, np.asarray(start.means), np.asarray(start.covariances), 8)
    np.testing.assert_allclose(res.params.weights, [0.5, 0.5])
    np.testing.assert_allclose(res.params.means, means, rtol=1e-9)
    np.testing.assert_allclose(res.params.covariances, covs, rtol=1e-8)


def test_identity_is_soft_kmeans(blobs):
    x, _, _ = blobs
    res = mg.fit_em(x, 3, covariance_type="identity", max_iter=5, tol=0, seed=0)
    np.testing.assert_allclose(res.params.covariances, np.ones(3))
    resp = np.asarray(mg.responsibilities(res.params, x))
    prev = mg.fit_em(x, 3, covariance_type="identity", max_iter=4, tol=0, seed=0).params
    w = np.asarray(mg.responsibilities(prev, x))
    np.testing.assert_allclose(res.params.means, (w.T @ x) / w.sum(0)[:, None], rtol=1e-9)
    assert resp.shape == (300, 3)


def test_restarts_keep_the_best(offset_data):
    keys = jax.random.split(jax.random.key(0), 4)
    best, runs = em.fit_em_compiled(
        jnp.asarray(offset_data), keys, {}, 1e-3, 1e-6, k=K,
        covariance_type="full", init="random", capacity=50, equal_weights=False,
        block_size=None,
    )
    finals = [float(runs.curve[i, int(runs.n_iter[i])]) for i in range(4)]
    assert len(set(np.round(finals, 8))) > 1  # the restarts really differ
    np.testing.assert_allclose(best.final_log_likelihood, max(finals))
    res = mg.fit_em(offset_data, K, init="random", n_init=4, seed=0, max_iter=50)
    np.testing.assert_allclose(res.final_log_likelihood, max(finals))


def test_block_size_does_not_change_the_fit(offset_data, starts):
    params = starts["full"]
    a = mg.fit_em(offset_data, K, max_iter=10, tol=0, init_params=params)
    b = mg.fit_em(offset_data, K, max_iter=10, tol=0, init_params=params, block_size=7)
    np.testing.assert_allclose(a.curve, b.curve, rtol=1e-12)
    np.testing.assert_allclose(a.params.means, b.params.means, rtol=1e-12)


def test_uncached_features_path_agrees(offset_data, starts, monkeypatch):
    params = starts["diag"]
    a = mg.fit_em(offset_data, K, covariance_type="diag", max_iter=5, tol=0, init_params=params)
    monkeypatch.setattr(em, "FEATURE_CACHE_BYTES", 0)
    b = mg.fit_em(offset_data, K, covariance_type="diag", max_iter=5, tol=0,
                  init_params=params, reg_covar=1.0000001e-6)  # new trace
    np.testing.assert_allclose(a.curve, b.curve, rtol=1e-9)


def test_changing_tol_reg_covar_and_max_iter_does_not_recompile(offset_data, caplog):
    mg.fit_em(offset_data, 2, covariance_type="spherical", tol=1e-3, reg_covar=1e-6, seed=0)
    with jax.log_compiles(), caplog.at_level(logging.DEBUG):
        caplog.clear()
        res = mg.fit_em(offset_data, 2, covariance_type="spherical", tol=1e-5, reg_covar=1e-4,
                        seed=0, max_iter=7, patience=2)
        compiled = [r.getMessage() for r in caplog.records if "fit_em_compiled" in r.getMessage()]
    assert compiled == [] and res.curve.shape == (8,)
    with jax.log_compiles(), caplog.at_level(logging.DEBUG):  # the check can see a compile
        caplog.clear()
        mg.fit_em(offset_data, 2, covariance_type="spherical", n_init=2, seed=0)
        compiled = [r.getMessage() for r in caplog.records if "fit_em_compiled" in r.getMessage()]
    assert compiled


def test_float32_and_float64_agree_on_raw_old_faithful():
    x = load_old_faithful()
    start = mg.fit_em(x, 2, max_iter=0, seed=0).params
    r64 = mg.fit_em(x, 2, init_params=start, tol=0, max_iter=100)
    r32 = mg.fit_em(x.astype(np.float32), 2, init_params=start, tol=0, max_iter=100)
    assert r32.curve.dtype == jnp.float32 and r64.curve.dtype == jnp.float64
    ll64, ll32 = float(r64.curve[-1]), float(r32.curve[-1])
    assert abs(ll32 - ll64) <= 1e-4 * abs(ll64)
    np.testing.assert_allclose(r32.params.means, r64.params.means, rtol=1e-3)


def test_collapsing_component_is_held_by_reg_covar():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.zeros((20, 2)), rng.normal(5.0, 1.0, (40, 2))])
    res = mg.fit_em(x, 2, reg_covar=1e-6, seed=0, max_iter=50)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(res.params))
    assert np.all(np.isfinite(res.curve[: int(res.n_iter) + 1]))
    assert np.min(np.linalg.eigvalsh(res.params.covariances)) >= 1e-6 * 0.99


def test_degenerate_covariance_raises_with_advice():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.zeros((20, 2)), rng.normal(5.0, 1.0, (40, 2))])
    with pytest.raises(mg.DegenerateCovarianceError, match="increase reg_covar") as info:
        mg.fit_em(x, 2, reg_covar=0.0, seed=0, max_iter=50)
    partial = info.value.result
    assert bool(partial.degenerate)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(partial.params)) or int(partial.n_iter) == 0
    assert isinstance(info.value, ValueError)


def test_progress_is_reported_at_the_stride_only(offset_data, caplog):
    with caplog.at_level(logging.INFO, logger="mogjax.progress"):
        res = mg.fit_em(offset_data, 2, covariance_type="diag", tol=0, max_iter=9, verbose=4)
    lines = [r.getMessage() for r in caplog.records if r.name == "mogjax.progress"]
    assert [line.split(":")[0] for line in lines] == ["EM iteration 4", "EM iteration 8"]
    assert f"{float(res.curve[8]):.6f}" in lines[1]
