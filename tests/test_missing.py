"""Missing values marginalised (issues 14, 27): exact EM on the observed coordinates, the
marginal densities against SciPy, the closed-form imputation, the pattern-block E-step
against the per-row one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.linalg import cho_solve
from scipy.stats import multivariate_normal

import mogjax as mg
from mogjax import missing
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


def assert_same_fit(a, b, rtol=1e-10):
    assert int(a.n_iter) == int(b.n_iter) and bool(a.converged) == bool(b.converged)
    np.testing.assert_allclose(a.curve, b.curve, rtol=rtol)  # NaN where NaN
    for f in ("log_weights", "means", "prec_chol"):
        np.testing.assert_allclose(getattr(a.params, f), getattr(b.params, f), rtol=rtol,
                                   atol=rtol)


@pytest.mark.parametrize("covariance_type", ("full", "spherical"))
def test_chunked_marginalised_em_is_the_in_memory_fit(covariance_type, tmp_path):
    w = np.random.default_rng(5).uniform(0.5, 2.0, len(XM))
    ref = mg.fit_em(XM, 3, covariance_type=covariance_type, missing="marginalize", tol=1e-8,
                    sample_weight=w)
    chunks = [XM[:130], XM[130:500], XM[500:]]  # chunks re-cut to 256 rows, the last padded
    got = mg.fit_em(chunks, 3, covariance_type=covariance_type, missing="marginalize",
                    tol=1e-8, chunk_size=256, sample_weight=[w[:130], w[130:500], w[500:]])
    assert_same_fit(got, ref)
    if covariance_type == "full":  # a memory-mapped .npy file with NaN
        np.save(tmp_path / "x.npy", XM)
        mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
        ref = mg.fit_em(XM, 3, missing="marginalize", tol=1e-8)
        assert_same_fit(mg.fit_em(mapped, 3, missing="marginalize", tol=1e-8,
                                  chunk_size=300), ref)


def test_chunked_missing_input_is_named():
    bad = [XM[:100], XM[100:200].copy()]
    bad[1][7] = np.nan
    with pytest.raises(ValueError, match=r"chunk 1 has a row with every entry missing "
                                         r"\(row 7 of the chunk, row 107"):
        mg.fit_em(bad, 3, missing="marginalize")
    with pytest.raises(ValueError, match=r"chunk 0 contains NaN"):
        mg.fit_em(bad, 3)  # the default stays an error
    bad[1][7] = np.inf
    with pytest.raises(ValueError, match=r"chunk 1 contains infinity"):
        mg.fit_em(bad, 3, missing="marginalize")


SHARDED = """
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import mogjax as mg
from mogjax.sharded import fit_em_sharded
assert jax.device_count() == 2
x = np.load(sys.argv[1])
w = np.random.default_rng(5).uniform(0.5, 2.0, len(x))
for ct in ("full", "diag"):
    a = mg.fit_em(x, 3, covariance_type=ct, missing="marginalize", tol=1e-8, sample_weight=w)
    b = fit_em_sharded(x, 3, covariance_type=ct, missing="marginalize", tol=1e-8,
                       sample_weight=w)
    assert int(a.n_iter) == int(b.n_iter) > 2, (a.n_iter, b.n_iter)
    for u, v in ((a.curve, b.curve), (a.params.means, b.params.means),
                 (a.params.prec_chol, b.params.prec_chol)):
        np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-10)
print("same")
"""


def test_sharded_marginalised_em_is_the_in_memory_fit(tmp_path):
    """Two devices (a subprocess: this one already holds JAX with one), rows of both
    shards grouped by pattern, the odd row count padding the second."""
    import subprocess
    import sys

    np.save(tmp_path / "x.npy", XM[:601])
    out = subprocess.run([sys.executable, "-c", SHARDED, str(tmp_path / "x.npy")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and out.stdout.strip() == "same", out.stderr[-3000:]


def test_online_marginalised_em_steps_on_expected_statistics():
    """Stepwise EM's first step has eta = 1: with a batch holding all the rows it is one
    exact marginalised EM step. Started at the batch fit's optimum, epochs of small
    batches stay there."""
    w = np.random.default_rng(6).uniform(0.5, 2.0, len(XM))
    start = mg.fit_em(XM, 3, missing="marginalize", max_iter=0, sample_weight=w).params
    batch = mg.fit_em(XM, missing="marginalize", max_iter=1, tol=0, init_params=start,
                      sample_weight=w)
    online = mg.fit_online_em(XM, batch_size=len(XM), missing="marginalize",
                              init_params=start, sample_weight=w, max_steps=1)
    for f in ("log_weights", "means", "prec_chol"):
        np.testing.assert_allclose(getattr(online.params, f), getattr(batch.params, f),
                                   rtol=1e-10, atol=1e-10)
    assert float(online.curve[0]) == pytest.approx(float(batch.curve[0]), rel=1e-12)
    # the batch fit's optimum is (up to the batches' noise) a fixed point of online EM
    full = mg.fit_em(XM, 3, missing="marginalize", tol=1e-8)
    res = mg.fit_online_em(XM, batch_size=100, n_epochs=3, missing="marginalize",
                           init_params=full.params, eval_data=XM, eval_every=10)
    assert np.all(np.isfinite(res.curve))
    np.testing.assert_allclose(res.curve, full.curve[int(full.n_iter)], atol=0.01)


def test_batched_seeds_marginalise_as_fit_em():
    res = mg.fit_em_seeds(XM, 3, seeds=[0, 3], missing="marginalize", tol=1e-8)
    for i, seed in enumerate((0, 3)):
        one = mg.fit_em(XM, 3, seed=seed, missing="marginalize", tol=1e-8)
        assert int(res.n_iter[i]) == int(one.n_iter)
        np.testing.assert_allclose(res.curve[i], one.curve, rtol=1e-10)
        np.testing.assert_allclose(res.params.means[i], one.params.means, rtol=1e-10)


# ---- the pattern-block E-step against the per-row one it replaced (issue 27) ----


def per_row_stats(params, x, center, weight):
    """The E-step as it was before issue 27, row by row: per row and component the
    conditioning on the observed block (a Cholesky factor of Sigma_oo (+) I), the
    conditional mean and the conditional-covariance correction, summed with the
    responsibilities of the observed coordinates. Returns (ll, counts, sum_x, full
    sum_xx (k, d, d))."""
    k, d = params.n_components, params.n_features
    cov = full_covariances(params.covariances, params.covariance_type, k, d)
    obs = ~jnp.isnan(x)

    def row(xr, mask):
        o = mask.astype(x.dtype)

        def comp(sigma, mu):
            a = o[:, None] * o[None, :] * sigma + jnp.diag(1.0 - o)
            chol = jnp.linalg.cholesky(a)
            dev = jnp.where(mask, xr - mu, 0.0)
            z = jnp.linalg.solve(a, dev)
            maha = dev @ z
            gain = (1.0 - o)[:, None] * cho_solve((chol, True), sigma).T
            miss = (1.0 - o)[:, None] * (1.0 - o)[None, :]
            cond = miss * (sigma - sigma @ (o[:, None] * cho_solve((chol, True), sigma)))
            x_hat = jnp.where(mask, xr, mu) + gain @ dev
            log_det = jnp.sum(jnp.log(jnp.diagonal(chol)))
            return -log_det - 0.5 * (jnp.sum(o) * jnp.log(2 * jnp.pi) + maha), x_hat, cond

        log_f, x_hat, cond = jax.vmap(comp)(cov, params.means)
        log_p = params.log_weights + log_f
        ll = jax.nn.logsumexp(log_p)
        r = jnp.exp(log_p - ll)
        y = x_hat - center
        return ll, r, r[:, None] * y, r[:, None, None] * (y[:, :, None] * y[:, None, :] + cond)

    ll, r, sx, sxx = jax.vmap(row)(jnp.where(obs, x, 0.0), obs)
    w = weight[:, None]
    return (jnp.sum(weight * ll), jnp.sum(w * r, 0), jnp.sum(w[..., None] * sx, 0),
            jnp.sum(w[..., None, None] * sxx, 0))


def holes(seed, n, d, fraction):
    """Rows with entries missing at random; every pattern mix, one-coordinate rows too."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 3.0
    x[rng.random(x.shape) < fraction] = np.nan
    x[: d * 3: 3] = np.nan
    x[np.arange(0, d * 3, 3), np.arange(d)] = 1.0 + np.arange(d)  # one observed coordinate
    x[np.isnan(x).all(axis=1), 0] = 0.5
    return x


def random_params(covariance_type, k=3, d=4, seed=4):
    """A mixture with correlated covariances (their diagonal, mean or one shared for the
    other types) around the data of ``holes``."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(k, d, d))
    cov = a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(d)
    typed = {"full": cov, "tied": cov[0], "diag": np.diagonal(cov, axis1=1, axis2=2),
             "spherical": np.trace(cov, axis1=1, axis2=2) / d, "identity": np.ones(k)}
    return mg.MixtureParams.from_covariances(rng.uniform(0.5, 1.0, k),
                                             rng.normal(3.0, 1.0, (k, d)),
                                             typed[covariance_type], covariance_type)


# (rows per block, rows per group of blocks, features cached): one row per block, a
# few, the default; the full type runs them all, the others one each
LAYOUTS = {"full": [(1, None, True), (4, 8, False), (None, None, True)],
           "tied": [(4, 8, True)], "diag": [(None, 8, False)],
           "spherical": [(1, None, True)], "identity": [(None, None, False)]}


@pytest.mark.parametrize("covariance_type", list(LAYOUTS))
def test_pattern_block_e_step_equals_the_per_row_one(covariance_type):
    xm = holes(2, 200, 4, 0.35)
    params = random_params(covariance_type)
    center = jnp.asarray(np.nanmean(xm, axis=0) + 0.1)
    weight = jnp.asarray(np.random.default_rng(3).uniform(0.2, 2.0, len(xm)))
    ll, counts, sum_x, sum_xx = per_row_stats(params, jnp.asarray(xm), center, weight)
    if covariance_type == "diag":
        sum_xx = jnp.diagonal(sum_xx, axis1=-2, axis2=-1)
    elif covariance_type in ("spherical", "identity"):
        sum_xx = jnp.trace(sum_xx, axis1=-2, axis2=-1)
    for block, block_size, cache in LAYOUTS[covariance_type]:
        data = missing.split_missing(xm, jnp.float64, block=block)
        e_step = (missing.missing_e_step(data, center, covariance_type, weight, block_size)
                  if cache else _uncached(data, center, covariance_type, weight, block_size))
        got = jax.jit(e_step)(params)
        for a, b in ((got.log_likelihood, ll), (got.counts, counts), (got.sum_x, sum_x),
                     (got.sum_xx, sum_xx)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
        assert float(got.n) == pytest.approx(float(jnp.sum(weight)), rel=1e-12)


def _uncached(data, center, covariance_type, weight, block_size):
    """The E-step computing the features block by block (data too large to cache)."""
    w = data.place(weight)

    def e_step(params):
        terms = missing.pattern_terms(params, data.patterns, center)
        sums = missing.pattern_moments(terms, data, center, covariance_type, w, None,
                                       block_size)
        return missing.expected_stats(params, data.patterns, center, sums)

    return e_step
