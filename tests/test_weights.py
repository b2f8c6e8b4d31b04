"""Sample weights through every flavour of EM, gradient ascent and mean shift (issue 14).

The invariants: integer weights give exactly the fit of the data with rows repeated
(and so rows of weight 0 change nothing), weights all equal to ``c`` give the
unweighted fit, and bad weights get one clear error each. Fits start from the same
given parameters, so the initialisation's draws do not enter the comparison.
"""

import jax
import numpy as np
import pytest

import mogjax as mg

ALL_TYPES = ("full", "tied", "diag", "spherical", "identity")
X = mg.load_old_faithful()
W = np.random.default_rng(0).integers(0, 4, len(X)).astype(float)  # zeros included
REPEATED = np.repeat(X, W.astype(int), axis=0)
K = 3
FIT = dict(tol=1e-8, max_iter=40)


def start(covariance_type):
    return mg.fit_em(X, K, covariance_type=covariance_type, max_iter=0).params


def assert_same_fit(a, b, atol=1e-10):
    assert int(a.n_iter) == int(b.n_iter)
    np.testing.assert_allclose(a.curve, b.curve, atol=atol, rtol=0, equal_nan=True)
    for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(u, v, atol=atol, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", ALL_TYPES)
def test_integer_weights_are_repeated_rows_and_constant_weights_change_nothing(covariance_type):
    p0 = start(covariance_type)
    fit = lambda x, **kw: mg.fit_em(x, K, covariance_type=covariance_type, init_params=p0,
                                    **FIT, **kw)
    weighted = fit(X, sample_weight=W)
    # rows of weight 0 are absent from REPEATED: they changed nothing
    assert_same_fit(weighted, fit(REPEATED))
    assert_same_fit(fit(X, sample_weight=np.full(len(X), 2.5)), fit(X))
    assert np.all(np.diff(np.asarray(weighted.curve[: int(weighted.n_iter) + 1])) > -1e-12)


def test_chunked_and_sharded_match_in_memory():
    p0 = start("full")
    ref = mg.fit_em(X, K, init_params=p0, sample_weight=W, **FIT)
    chunks = [X[:100], X[100:200], X[200:]]
    weights = [W[:100], W[100:200], W[200:]]
    assert_same_fit(mg.fit_em(chunks, K, init_params=p0, sample_weight=weights, **FIT), ref)
    assert_same_fit(mg.fit_em(X, K, init_params=p0, sample_weight=W, chunk_size=64, **FIT), ref)
    assert_same_fit(mg.fit_em_sharded(X, K, init_params=p0, sample_weight=W, **FIT), ref)


def test_weighted_start_and_curve_agree_across_flavours():
    """Without init_params every flavour draws its start by weight from the same key."""
    em = mg.fit_em(X, K, sample_weight=W)
    assert float(mg.fit_gradient(X, K, sample_weight=W, steps=2).curve[0]) == float(em.curve[0])
    assert float(mg.fit_em_sharded(X, K, sample_weight=W).curve[0]) == pytest.approx(
        float(em.curve[0]), abs=1e-12)
    seeds = mg.fit_em_seeds(X, K, seeds=[0, 5], sample_weight=W)
    np.testing.assert_allclose(seeds.curve[0], em.curve, atol=1e-10, equal_nan=True)
    np.testing.assert_allclose(
        float(em.final_log_likelihood), float(mg.mean_log_likelihood(em.params, X, W)),
        rtol=1e-12)
    # the weighted criteria are those of the repeated rows
    for crit in (mg.bic, mg.aic):
        np.testing.assert_allclose(crit(em.params, X, W), crit(em.params, REPEATED), rtol=1e-12)


def test_gradient_climbs_the_weighted_objective():
    p0 = start("diag")
    obj = mg.gradient.objective
    raw = mg.to_unconstrained(p0)
    np.testing.assert_allclose(obj(raw, X, 0.0, W), obj(raw, REPEATED), rtol=1e-12)
    grads = [jax.grad(obj)(raw, X, 0.0, W), jax.grad(obj)(raw, REPEATED)]
    for u, v in zip(*(jax.tree.leaves(g) for g in grads)):
        np.testing.assert_allclose(u, v, rtol=1e-9, atol=1e-12)
    res = mg.fit_gradient(X, K, covariance_type="diag", init_params=p0, sample_weight=W,
                          optimizer="lbfgs", steps=200, tol=1e-10)
    em = mg.fit_em(X, K, covariance_type="diag", init_params=p0, sample_weight=W,
                   tol=1e-10, max_iter=2000)
    assert abs(float(res.final_log_likelihood) - float(em.final_log_likelihood)) < 1e-3


def test_online_em_with_unit_weights_is_unweighted():
    kw = dict(batch_size=64, init_params=start("full"), n_epochs=2)
    a = mg.fit_online_em(X, K, sample_weight=np.ones(len(X)), **kw)
    b = mg.fit_online_em(X, K, **kw)
    np.testing.assert_allclose(a.curve, b.curve, rtol=1e-10)
    np.testing.assert_allclose(a.params.means, b.params.means, rtol=1e-10)


def test_mean_shift_weights_are_repeated_rows():
    a = mg.mean_shift(X, 0.5, sample_weight=W, tol=1e-6)
    b = mg.mean_shift(REPEATED, 0.5, tol=1e-6)
    np.testing.assert_allclose(np.sort(np.asarray(a.centers), axis=0),
                               np.sort(np.asarray(b.centers), axis=0), atol=1e-4)


@pytest.mark.parametrize("weights, error, match", [
    (-W, ValueError, "non-negative"),
    (np.where(W > 2, np.nan, W), ValueError, "NaN"),
    (W[:-1], ValueError, "shape"),
    (np.zeros(len(X)), ValueError, "zero everywhere"),
    (np.array(["a"] * len(X)), TypeError, "numeric"),
])
def test_bad_weights_are_named(weights, error, match):
    with pytest.raises(error, match=match):
        mg.fit_em(X, K, sample_weight=weights)
    with pytest.raises(error, match=match):
        mg.fit_gradient(X, K, sample_weight=weights)


def test_bad_chunked_weights_are_named():
    with pytest.raises(ValueError, match="chunk 1 has -1.0 at row 0"):
        mg.fit_em([X[:100], X[100:]], K, sample_weight=[W[:100], -np.ones(172)])
    with pytest.raises(ValueError, match="272 entries, the data more rows"):
        mg.fit_em([X, X], K, sample_weight=W)


def test_estimators_take_sample_weight():
    gm = mg.GaussianMixture(K, covariance_type="diag", random_state=0).fit(X, sample_weight=W)
    ref = mg.fit_em(X, K, covariance_type="diag", init="kmeans", seed=0, sample_weight=W)
    np.testing.assert_allclose(gm.means_, ref.params.means, rtol=1e-10)
    np.testing.assert_allclose(gm.score(X, sample_weight=W),
                               mg.mean_log_likelihood(gm.params_, X, W), rtol=1e-12)
    ms = mg.MeanShift(bandwidth=0.5).fit(X, sample_weight=W)
    np.testing.assert_allclose(ms.cluster_centers_, mg.mean_shift(X, 0.5, sample_weight=W).centers)
