"""The parameter pytree and the functions reading it, against SciPy and scikit-learn."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.mixture import GaussianMixture as SkGaussianMixture

import mogjax as mg
from mogjax import _blocks
from mogjax import gaussian as gs
from mogjax.mixture import MixtureParams

from .conftest import COVARIANCE_TYPES

ALL_TYPES = gs.COVARIANCE_TYPES  # COVARIANCE_TYPES plus "identity"
K, D = 3, 3


def full_covariances(params):
    """The (k, d, d) covariance matrices that ``params`` stands for (NumPy)."""
    cov = np.asarray(params.covariances)
    k, d = params.n_components, params.n_features
    if params.covariance_type == "full":
        return cov
    if params.covariance_type == "tied":
        return np.broadcast_to(cov, (k, d, d))
    if params.covariance_type == "diag":
        return np.stack([np.diag(c) for c in cov])
    return cov[:, None, None] * np.eye(d)


def make_params(covariance_type, seed=0, center=100.0):
    """Three overlapping components around ``center`` in 3-D (like ``offset_data``)."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(K, 4.0))
    means = center + rng.normal(scale=2.5, size=(K, D))
    q, _ = np.linalg.qr(rng.normal(size=(K, D, D)))
    eig = rng.uniform(0.5, 3.0, size=(K, D))
    full = np.einsum("kij,kj,klj->kil", q, eig, q)
    cov = {
        "full": full,
        "tied": full[1],
        "diag": eig,
        "spherical": eig[:, 0],
        "identity": np.ones(K),
    }[covariance_type]
    return MixtureParams.from_covariances(weights, means, cov, covariance_type)


def direct_log_joint(params, x):
    """``log pi_j + log N(x_i | mu_j, Sigma_j)`` with SciPy: (n, k)."""
    full = full_covariances(params)
    means = np.asarray(params.means)
    logw = np.log(np.asarray(params.weights))
    return np.stack(
        [
            logw[j] + multivariate_normal(means[j], full[j]).logpdf(x)
            for j in range(len(logw))
        ],
        axis=1,
    )


# --------------------------------------------------------------------------- pytree


def test_params_is_a_pytree_of_three_arrays():
    params = make_params("full")
    leaves = jax.tree.leaves(params)
    assert len(leaves) == 3
    assert all(isinstance(a, jax.Array) for a in leaves)
    assert [a.shape for a in leaves] == [(K,), (K, D), (K, D, D)]
    rebuilt = jax.tree.unflatten(jax.tree.structure(params), leaves)
    assert rebuilt.covariance_type == "full"
    # The covariance type is structure, not a leaf.
    assert jax.tree.structure(params) != jax.tree.structure(make_params("diag"))


def test_params_pass_through_jit_and_keep_type():
    params = make_params("diag")
    out = jax.jit(lambda p: p.replace(means=p.means + 1.0))(params)
    assert isinstance(out, MixtureParams)
    assert out.covariance_type == "diag"
    np.testing.assert_allclose(out.means, np.asarray(params.means) + 1.0)
    np.testing.assert_array_equal(out.prec_chol, params.prec_chol)


def test_params_pass_through_vmap(offset_data):
    a, b = make_params("spherical", seed=1), make_params("spherical", seed=2)
    stacked = jax.tree.map(lambda u, v: jnp.stack([u, v]), a, b)
    assert stacked.covariance_type == "spherical"
    assert stacked.means.shape == (2, K, D)
    got = jax.vmap(mg.log_likelihood, in_axes=(0, None))(stacked, offset_data)
    want = [mg.log_likelihood(a, offset_data), mg.log_likelihood(b, offset_data)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    types = jax.vmap(lambda p: p)(stacked).covariance_type
    assert types == "spherical"


def test_params_are_frozen():
    params = make_params("full")
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.means = jnp.zeros((K, D))
    moved = params.replace(means=jnp.zeros((K, D)))
    assert np.all(np.asarray(moved.means) == 0) and np.all(
        np.asarray(params.means) != 0
    )


def test_from_covariances_normalises_weights():
    params = MixtureParams.from_covariances(
        jnp.array([1.0, 3.0]), jnp.zeros((2, 2)), jnp.array([1.0, 4.0]), "spherical"
    )
    np.testing.assert_allclose(params.weights, [0.25, 0.75], rtol=1e-15)
    with pytest.raises(ValueError, match="covariance_type"):
        MixtureParams.from_covariances(
            jnp.ones(2), jnp.zeros((2, 2)), jnp.ones(2), "bogus"
        )


# ------------------------------------------------------------------ likelihoods


@pytest.mark.parametrize("covariance_type", ALL_TYPES)
def test_log_likelihood_matches_scipy(offset_data, covariance_type):
    params = make_params(covariance_type)
    joint = direct_log_joint(params, offset_data)
    per_point = logsumexp(joint, axis=1)
    n = len(offset_data)
    np.testing.assert_allclose(
        mg.log_likelihood(params, offset_data), per_point.sum(), rtol=1e-11
    )
    np.testing.assert_allclose(
        mg.mean_log_likelihood(params, offset_data), per_point.sum() / n, rtol=1e-11
    )
    np.testing.assert_allclose(
        mg.score_samples(params, offset_data), per_point, rtol=1e-10
    )


@pytest.mark.parametrize("covariance_type", ALL_TYPES)
def test_responsibilities_are_the_posterior(offset_data, covariance_type):
    params = make_params(covariance_type)
    resp = np.asarray(mg.responsibilities(params, offset_data))
    assert resp.shape == (len(offset_data), K)
    assert np.all(resp >= 0)
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    joint = direct_log_joint(params, offset_data)
    want = np.exp(joint - logsumexp(joint, axis=1, keepdims=True))
    np.testing.assert_allclose(resp, want, rtol=1e-9, atol=1e-12)
    # The data overlap: the posterior is not a trivial one-hot everywhere.
    assert np.any((want > 0.1) & (want < 0.9))
    labels = np.asarray(mg.predict(params, offset_data))
    np.testing.assert_array_equal(labels, np.argmax(want, axis=1))
    assert len(np.unique(labels)) > 1


@pytest.mark.parametrize("covariance_type", ALL_TYPES)
def test_permuting_components_leaves_likelihood_unchanged(offset_data, covariance_type):
    params = make_params(covariance_type, seed=4)
    perm = np.array([2, 0, 1])
    permuted = params.replace(
        log_weights=params.log_weights[perm],
        means=params.means[perm],
        prec_chol=params.prec_chol
        if covariance_type == "tied"
        else params.prec_chol[perm],
    )
    np.testing.assert_allclose(
        mg.log_likelihood(permuted, offset_data),
        mg.log_likelihood(params, offset_data),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        mg.responsibilities(permuted, offset_data),
        np.asarray(mg.responsibilities(params, offset_data))[:, perm],
        atol=1e-12,
    )


@pytest.mark.parametrize("covariance_type", ["full", "spherical"])
def test_far_outliers_stay_finite(covariance_type):
    """Points hundreds of standard deviations away: log space, no underflow to -inf."""
    params = make_params(covariance_type)
    x = np.asarray(params.means)[:2] + np.array(
        [[300.0, 0.0, 0.0], [0.0, -500.0, 40.0]]
    )
    joint = direct_log_joint(params, x)
    assert np.all(joint < -1e4)  # every density underflows in linear space
    np.testing.assert_allclose(
        mg.score_samples(params, x), logsumexp(joint, axis=1), rtol=1e-10
    )
    resp = np.asarray(mg.responsibilities(params, x))
    assert np.all(np.isfinite(resp))
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(
        resp, np.exp(joint - logsumexp(joint, axis=1, keepdims=True)), atol=1e-9
    )


def test_is_finite_and_to_numpy():
    params = make_params("diag")
    assert bool(mg.mixture.is_finite(params))
    broken = params.replace(prec_chol=params.prec_chol.at[1, 0].set(jnp.nan))
    assert not bool(mg.mixture.is_finite(broken))
    out = mg.mixture.to_numpy(params)
    assert set(out) == {"weights", "means", "covariances", "precisions_cholesky"}
    assert all(isinstance(v, np.ndarray) for v in out.values())
    np.testing.assert_allclose(
        out["covariances"], 1.0 / out["precisions_cholesky"] ** 2
    )


def test_log_likelihood_wrong_shape_raises(offset_data):
    params = make_params("full")
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        mg.log_likelihood(params, offset_data[:, :2])
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        mg.score_samples(params, offset_data[0])  # 1-D


@pytest.mark.parametrize(
    "fn", ["log_likelihood", "mean_log_likelihood", "score_samples", "responsibilities", "predict"]
)
def test_no_points_is_rejected_at_the_boundary(fn):
    params = make_params("diag")
    with pytest.raises(ValueError, match="no rows"):
        getattr(mg, fn)(params, jnp.zeros((0, D)))


# ------------------------------------------------------------------------ blocks


N_BLOCK = 50


@pytest.fixture(scope="module")
def block_arrays():
    rng = np.random.default_rng(7)
    return jnp.asarray(rng.normal(size=(N_BLOCK, 3))), jnp.asarray(
        rng.normal(size=(N_BLOCK, 2))
    )


def _block_fn(a, b):
    """A pytree of row-summed (for sums) or per-row (for maps) values."""
    return {"ab": a.T @ b, "sq": jnp.sum(a**2, axis=0)}, jnp.sum(jnp.exp(b))


def _row_fn(a, b):
    return jnp.sum(a, axis=1) * b[:, 0], jnp.concatenate([a, b], axis=1)


# Divides n (1, 10, 25, 50), does not (7, 30), exceeds n (64, 1000).
BLOCK_SIZES = [1, 7, 10, 25, 30, N_BLOCK, 64, 1000]


@pytest.mark.parametrize("block_size", BLOCK_SIZES)
def test_sum_over_blocks_is_independent_of_block_size(block_arrays, block_size):
    a, b = block_arrays
    got = _blocks.sum_over_blocks(_block_fn, [a, b], block_size)
    want = _block_fn(a, b)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-12), got, want)


@pytest.mark.parametrize("block_size", BLOCK_SIZES)
def test_map_over_blocks_is_independent_of_block_size(block_arrays, block_size):
    a, b = block_arrays
    got = _blocks.map_over_blocks(_row_fn, [a, b], block_size)
    want = _row_fn(a, b)
    assert got[0].shape == (N_BLOCK,) and got[1].shape == (N_BLOCK, 5)
    jax.tree.map(lambda g, w: np.testing.assert_array_equal(g, w), got, want)


def test_choose_block_size():
    assert _blocks.choose_block_size(100, 10, 7) == 7
    assert _blocks.choose_block_size(100, 10, 1000) == 100
    assert _blocks.choose_block_size(100, 10) == 100  # small data: one block
    assert _blocks.choose_block_size(10**7, 10) % 256 == 0
    assert _blocks.choose_block_size(10**7, 10**9) == 512  # the floor
    with pytest.raises(ValueError, match="block_size"):
        _blocks.choose_block_size(100, 10, 0)


def test_public_functions_agree_across_blocks(monkeypatch):
    """With the smallest blocks (512 rows), 1100 points are 2 blocks + a remainder."""
    monkeypatch.setattr(_blocks, "BLOCK_ELEMENTS", 1)
    params = make_params("full", center=0.0)
    x = np.random.default_rng(3).normal(scale=3.0, size=(1100, D))
    n_rows = mg.mixture._block_rows(params, jnp.asarray(x))
    assert n_rows == 512
    joint = direct_log_joint(params, x)
    per_point = logsumexp(joint, axis=1)

    # Fresh jits of the bodies, so that the patched block size is read when tracing
    # (the public functions may already be compiled for these shapes).
    def fresh(fn):
        return jax.jit(fn.__wrapped__)(params, x)

    np.testing.assert_allclose(fresh(mg.log_likelihood), per_point.sum(), rtol=1e-11)
    np.testing.assert_allclose(fresh(mg.score_samples), per_point, rtol=1e-10)
    resp = fresh(mg.responsibilities)
    np.testing.assert_allclose(
        resp, np.exp(joint - per_point[:, None]), rtol=1e-9, atol=1e-12
    )
    np.testing.assert_array_equal(fresh(mg.predict), np.argmax(joint, axis=1))


# ----------------------------------------------------------------------- sampling


N_DRAWS = 20_000


def mixture_moments(params):
    w = np.asarray(params.weights)
    mu = np.asarray(params.means)
    full = full_covariances(params)
    mean = w @ mu
    second = np.einsum("k,kij->ij", w, full + mu[:, :, None] * mu[:, None, :])
    return mean, second - np.outer(mean, mean)


def assert_moments_within(x, mean, cov, n_se=5.0):
    """Sample mean and covariance within ``n_se`` standard errors of the truth."""
    n = len(x)
    se_mean = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(x.mean(axis=0) - mean) < n_se * se_mean)
    centred = x - x.mean(axis=0)
    products = centred[:, :, None] * centred[:, None, :]
    se_cov = products.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(products.mean(axis=0) - cov) < n_se * se_cov)


def test_sample_shapes():
    params = make_params("full", center=0.0)
    x, labels = mg.sample(jax.random.key(0), params, 7)
    assert x.shape == (7, D) and labels.shape == (7,)
    assert jnp.issubdtype(labels.dtype, jnp.integer)
    assert np.all((np.asarray(labels) >= 0) & (np.asarray(labels) < K))
    x2, labels2 = mg.sample(jax.random.key(0), params, 7)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(labels, labels2)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sample_moments(covariance_type):
    params = make_params(covariance_type, seed=2, center=0.0)
    x, labels = mg.sample(jax.random.key(11), params, N_DRAWS)
    x, labels = np.asarray(x), np.asarray(labels)
    w = np.asarray(params.weights)
    freq = np.bincount(labels, minlength=K) / N_DRAWS
    assert np.all(np.abs(freq - w) < 5 * np.sqrt(w * (1 - w) / N_DRAWS))
    mean, cov = mixture_moments(params)
    assert_moments_within(x, mean, cov)
    # Each component's draws have that component's mean and covariance.
    full = full_covariances(params)
    for j in range(K):
        assert_moments_within(x[labels == j], np.asarray(params.means)[j], full[j])


# ----------------------------------------------------------- information criteria


@pytest.fixture(scope="module")
def sklearn_fits(offset_data):
    return {
        ct: SkGaussianMixture(K, covariance_type=ct, max_iter=3, random_state=0).fit(
            offset_data
        )
        for ct in COVARIANCE_TYPES
    }


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_information_criteria_match_sklearn(offset_data, sklearn_fits, covariance_type):
    sk = sklearn_fits[covariance_type]
    params = MixtureParams.from_covariances(
        sk.weights_, sk.means_, sk.covariances_, covariance_type
    )
    np.testing.assert_allclose(params.prec_chol, sk.precisions_cholesky_, rtol=1e-10)
    assert mg.n_parameters(params) == sk._n_parameters()
    np.testing.assert_allclose(
        mg.bic(params, offset_data), sk.bic(offset_data), rtol=1e-11
    )
    np.testing.assert_allclose(
        mg.aic(params, offset_data), sk.aic(offset_data), rtol=1e-11
    )
    np.testing.assert_allclose(
        mg.mean_log_likelihood(params, offset_data), sk.score(offset_data), rtol=1e-11
    )


def test_n_parameters_identity():
    for k, d in [(1, 1), (3, 2), (2, 4)]:
        params = MixtureParams(jnp.zeros(k), jnp.zeros((k, d)), jnp.ones(k), "identity")
        assert mg.n_parameters(params) == k - 1 + k * d
