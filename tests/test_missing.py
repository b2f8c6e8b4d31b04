"""Missing values marginalised (issue 14): exact EM on the observed coordinates, the
marginal densities against SciPy, the closed-form imputation."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

import mogjax as mg
from mogjax.gaussian import full_covariances
from mogjax.missing import impute

X, _, TRUE = mg.make_mixture(0, 1000, 3, 3, separation=6.0)
X = np.asarray(X)
HOLES = np.random.default_rng(1).random(X.shape) < 0.2  # 20% missing completely at random
XM = np.where(HOLES, np.nan, X)
XM = XM[~np.isnan(XM).all(axis=1)]


def scipy_marginal(params, x) -> np.ndarray:
    """log sum_j pi_j N(x_o; mu_jo, Sigma_joo), row by row with SciPy."""
    k, d = params.n_components, params.n_features
    cov = np.asarray(full_covariances(params.covariances, params.covariance_type, k, d))
    w, mu = np.asarray(params.weights), np.asarray(params.means)
    out = []
    for row in x:
        o = ~np.isnan(row)
        dens = [w[j] * multivariate_normal.pdf(row[o], mu[j, o], cov[j][np.ix_(o, o)])
                for j in range(k)]
        out.append(np.log(np.sum(dens)))
    return np.array(out)


@pytest.fixture(scope="module", params=["full", "diag"])
def fitted(request):
    return request.param, mg.fit_em(XM, 3, covariance_type=request.param,
                                     missing="marginalize", tol=1e-10, max_iter=300)


def test_em_with_missing_values_is_exact_em(fitted):
    covariance_type, res = fitted
    curve = np.asarray(res.curve[: int(res.n_iter) + 1])
    assert bool(res.converged) and np.all(np.diff(curve) > -1e-12)  # never decreases
    # the curve is the observed-data likelihood, computed directly with SciPy
    np.testing.assert_allclose(curve[-1], scipy_marginal(res.params, XM).mean(), rtol=0,
                               atol=1e-8)
    # the means are recovered within sampling error (6 sigma apart, n = 1000)
    got = np.sort(np.asarray(res.params.means), axis=0)
    np.testing.assert_allclose(got, np.sort(np.asarray(TRUE.means), axis=0), atol=0.2)


def test_densities_and_predictions_marginalise(fitted):
    _, res = fitted
    np.testing.assert_allclose(mg.score_samples(res.params, XM), scipy_marginal(res.params, XM),
                               rtol=0, atol=1e-8)
    resp = np.asarray(mg.responsibilities(res.params, XM))
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=1e-12)
    complete = ~np.isnan(XM).any(axis=1)  # rows without NaN: the usual numbers
    np.testing.assert_array_equal(mg.predict(res.params, XM)[complete],
                                  mg.predict(res.params, XM[complete]))


def test_impute_is_the_conditional_mean():
    params = mg.fit_em(X, 2, covariance_type="full").params
    row = np.array([[X[0, 0], np.nan, X[0, 2]]])
    o, m = np.array([0, 2]), np.array([1])
    cov, mu = np.asarray(params.covariances), np.asarray(params.means)
    logp = [np.log(w) + multivariate_normal.logpdf(row[0, o], mu[j, o], cov[j][np.ix_(o, o)])
            for j, w in enumerate(np.asarray(params.weights))]
    resp = np.exp(np.array(logp) - np.logaddexp.reduce(logp))
    cond = [mu[j, m] + cov[j][np.ix_(m, o)] @ np.linalg.solve(cov[j][np.ix_(o, o)],
                                                               row[0, o] - mu[j, o])
            for j in range(2)]
    filled = np.asarray(impute(params, row))
    np.testing.assert_allclose(filled[0, m], resp @ np.array(cond)[:, 0], rtol=1e-10)
    np.testing.assert_array_equal(filled[0, o], row[0, o])


def test_without_missing_values_the_fit_is_the_complete_one():
    a = mg.fit_em(X, 3, missing="marginalize")
    b = mg.fit_em(X, 3)
    np.testing.assert_array_equal(a.curve, b.curve)
    np.testing.assert_array_equal(a.params.means, b.params.means)


def test_bad_missing_input_is_named():
    with pytest.raises(ValueError, match=r"NaN \(first at row"):
        mg.fit_em(XM, 3)  # the default stays an error
    empty = XM.copy()
    empty[7] = np.nan
    with pytest.raises(ValueError, match="row 7 of X has every entry missing"):
        mg.fit_em(empty, 3, missing="marginalize")
    with pytest.raises(ValueError, match="missing"):
        mg.fit_em(XM, 3, missing="impute")


def test_gaussian_mixture_marginalizes_when_asked():
    gm = mg.GaussianMixture(3, covariance_type="diag", random_state=0, missing="marginalize")
    gm.fit(XM)
    ref = mg.fit_em(XM, 3, covariance_type="diag", init="kmeans", seed=0, missing="marginalize")
    np.testing.assert_allclose(gm.means_, ref.params.means, rtol=1e-10)
    np.testing.assert_allclose(gm.score_samples(XM), scipy_marginal(gm.params_, XM), atol=1e-8)
    assert np.all(np.isfinite(gm.predict_proba(XM)))
    with pytest.raises(ValueError, match="NaN"):
        mg.GaussianMixture(3).fit(XM)  # scikit-learn's default: NaN is an error


def test_chunked_data_refuse_to_marginalise():
    x = np.zeros((10, 2))
    with pytest.raises(ValueError, match="missing='marginalize' needs in-memory data"):
        mg.fit_em(x, 2, chunk_size=5, missing="marginalize")
