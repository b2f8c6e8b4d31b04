"""Initialisations: k-means(++), the lecture's start, user values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import mogjax as mg
from mogjax import gaussian as gs
from mogjax import init

ALL_TYPES = gs.COVARIANCE_TYPES
K = 3

PARAM_SHAPES = {
    "full": (K, 3, 3),
    "tied": (3, 3),
    "diag": (K, 3),
    "spherical": (K,),
    "identity": (K,),
}


# One compiled program per (type, method): eager calls would re-trace and recompile
# the k-means(++) loops on every call. ``reg_covar`` is always passed, so traced.
_initialize = jax.jit(
    mg.initialize,
    static_argnames=("k", "covariance_type", "method", "equal_weights"),
)
kmeans = jax.jit(mg.kmeans, static_argnames=("k",))
kmeans_plusplus = jax.jit(mg.kmeans_plusplus, static_argnames=("k",))


def initialize(key, x, covariance_type, method, reg_covar=1e-6, **kwargs):
    return _initialize(
        key, jnp.asarray(x), K, covariance_type, method, reg_covar, **kwargs
    )


def params_equal(a, b):
    return a.covariance_type == b.covariance_type and all(
        np.array_equal(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


@pytest.mark.parametrize("method", init.INIT_METHODS)
@pytest.mark.parametrize("covariance_type", ALL_TYPES)
def test_initialize_is_finite_and_shaped(offset_data, method, covariance_type):
    params = initialize(jax.random.key(0), offset_data, covariance_type, method)
    assert params.covariance_type == covariance_type
    assert params.log_weights.shape == (K,)
    assert params.means.shape == (K, 3)
    assert params.prec_chol.shape == PARAM_SHAPES[covariance_type]
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(params))
    np.testing.assert_allclose(np.sum(params.weights), 1.0, rtol=1e-12)
    assert np.all(np.asarray(params.weights) > 0)
    # The means are M-step means: inside the data's bounding box.
    assert np.all(params.means >= offset_data.min(axis=0))
    assert np.all(params.means <= offset_data.max(axis=0))
    again = initialize(jax.random.key(0), offset_data, covariance_type, method)
    assert params_equal(params, again)


def test_initialize_eager_equals_jitted(offset_data):
    """The tests jit ``initialize`` for speed; the library function runs eagerly too."""
    eager = mg.initialize(
        jax.random.key(0), jnp.asarray(offset_data), K, "full", "random_from_data"
    )
    jitted = initialize(jax.random.key(0), offset_data, "full", "random_from_data")
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("method", ["kmeans++", "random_from_data", "random"])
def test_initialize_depends_on_key(offset_data, method):
    x = jnp.asarray(offset_data)
    a = initialize(jax.random.key(0), x, "full", method)
    b = initialize(jax.random.key(1), x, "full", method)
    assert not np.allclose(a.means, b.means)


@pytest.mark.parametrize("method", ["kmeans"])
def test_initialize_vmaps_over_keys(offset_data, method):
    x = jnp.asarray(offset_data)
    keys = jax.random.split(jax.random.key(5), 3)
    batched = jax.vmap(lambda k: initialize(k, x, "full", method))(keys)
    assert batched.means.shape == (3, K, 3)
    for i in range(3):
        one = initialize(keys[i], x, "full", method)
        np.testing.assert_allclose(batched.means[i], one.means, rtol=1e-12)
        np.testing.assert_allclose(batched.prec_chol[i], one.prec_chol, rtol=1e-10)


# ------------------------------------------------------------------ k-means(++)


def nearest_point(x, c):
    """Index of the point of ``x`` nearest to each row of ``c``, and the distances."""
    d2 = ((x[None, :, :] - c[:, None, :]) ** 2).sum(axis=-1)
    idx = np.argmin(d2, axis=1)
    return idx, np.sqrt(d2[np.arange(len(c)), idx])


@pytest.mark.parametrize("seed", range(4))
def test_kmeans_plusplus_picks_one_point_per_blob(blobs, seed):
    x, labels, _ = blobs
    centres = np.asarray(kmeans_plusplus(jax.random.key(seed), jnp.asarray(x), K))
    assert centres.shape == (K, 2)
    idx, dist = nearest_point(x, centres)
    # Points of X (up to the rounding of centring and un-centring), all distinct.
    np.testing.assert_allclose(dist, 0.0, atol=1e-12)
    assert len(set(idx.tolist())) == K
    assert sorted(labels[idx].tolist()) == list(range(K))


def test_kmeans_plusplus_with_duplicate_points_stays_finite(blobs):
    """Fewer distinct points than centres: the draws fall back to uniform, no NaN."""
    x = (blobs[1][:, None] == 0) * np.array(
        [1.0, 2.0]
    )  # two distinct points, blobs' shape
    centres = np.asarray(kmeans_plusplus(jax.random.key(0), jnp.asarray(x), K))
    assert np.all(np.isfinite(centres))
    _, dist = nearest_point(x, centres)
    np.testing.assert_allclose(dist, 0.0, atol=1e-12)
    assert {tuple(c) for c in np.round(centres, 9)} == {(0.0, 0.0), (1.0, 2.0)}


@pytest.mark.parametrize("seed", range(3))
def test_kmeans_recovers_blobs_at_a_lloyd_fixed_point(blobs, seed):
    x, true_labels, _ = blobs
    centres, labels = kmeans(jax.random.key(seed), jnp.asarray(x), K)
    centres, labels = np.asarray(centres), np.asarray(labels)
    assert adjusted_rand_score(true_labels, labels) == 1.0
    for j in range(K):
        np.testing.assert_allclose(centres[j], x[labels == j].mean(axis=0), rtol=1e-12)
    d2 = ((x[:, None, :] - centres[None]) ** 2).sum(axis=-1)
    np.testing.assert_array_equal(labels, np.argmin(d2, axis=1))


# ---------------------------------------------------------- the lecture's start


def cell_m_step(x, labels, k, covariance_type, reg_covar):
    """The M-step from hard labels, directly in NumPy (biased covariances)."""
    n, d = x.shape
    counts = np.array([np.sum(labels == j) for j in range(k)], float)
    means = np.stack([x[labels == j].mean(axis=0) for j in range(k)])
    scatter = np.stack(
        [(x[labels == j] - means[j]).T @ (x[labels == j] - means[j]) for j in range(k)]
    )
    full = scatter / counts[:, None, None]
    cov = {
        "full": full + reg_covar * np.eye(d),
        "tied": scatter.sum(axis=0) / n + reg_covar * np.eye(d),
        "diag": np.diagonal(full, axis1=1, axis2=2) + reg_covar,
        "spherical": np.trace(full, axis1=1, axis2=2) / d + reg_covar,
        "identity": np.ones(k),
    }[covariance_type]
    return counts / n, means, cov


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("covariance_type", ALL_TYPES)
def test_random_from_data_is_the_nearest_centre_m_step(
    offset_data, covariance_type, seed
):
    x = offset_data
    key = jax.random.key(seed)
    reg_covar = 1e-3
    idx = np.asarray(jax.random.choice(key, len(x), (K,), replace=False))
    assert len(set(idx.tolist())) == K
    d2 = ((x[:, None, :] - x[idx][None]) ** 2).sum(axis=-1)
    labels = np.argmin(d2, axis=1)
    weights, means, cov = cell_m_step(x, labels, K, covariance_type, reg_covar)
    params = initialize(key, x, covariance_type, "random_from_data", reg_covar)
    np.testing.assert_allclose(params.weights, weights, rtol=1e-12)
    np.testing.assert_allclose(params.means, means, rtol=1e-12)
    np.testing.assert_allclose(params.covariances, cov, rtol=1e-9, atol=1e-12)


def test_kmeans_init_is_the_m_step_of_kmeans_labels(offset_data):
    x = offset_data
    key = jax.random.key(0)
    _, labels = kmeans(key, jnp.asarray(x), K)
    weights, means, cov = cell_m_step(x, np.asarray(labels), K, "full", 1e-6)
    params = initialize(key, x, "full", "kmeans")
    np.testing.assert_allclose(params.weights, weights, rtol=1e-12)
    np.testing.assert_allclose(params.means, means, rtol=1e-12)
    np.testing.assert_allclose(params.covariances, cov, rtol=1e-9)


# ------------------------------------------------------------ user-given values


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_user_values_replace_the_method(offset_data, covariance_type):
    x = jnp.asarray(offset_data)
    rng = np.random.default_rng(0)
    weights = np.array([0.2, 0.3, 0.5])
    means = 100.0 + rng.normal(size=(K, 3))
    base = initialize(jax.random.key(0), x, covariance_type, "random")
    precisions = np.asarray(base.precisions) * 2.0
    params = initialize(
        jax.random.key(0),
        x,
        covariance_type,
        "random",
        weights=weights,
        means=means,
        precisions=precisions,
    )
    np.testing.assert_allclose(params.weights, weights, rtol=1e-14)
    np.testing.assert_array_equal(params.means, means)
    np.testing.assert_allclose(params.precisions, precisions, rtol=1e-12)
    if covariance_type in ("full", "tied"):
        u = np.asarray(params.prec_chol)
        np.testing.assert_array_equal(u, np.triu(u))


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_only_means_given_keeps_the_method_covariances(offset_data, covariance_type):
    """scikit-learn: covariances not given come from the method's assignment."""
    x = offset_data
    key = jax.random.key(3)
    means = x[:K] + 0.5
    params = initialize(key, x, covariance_type, "random_from_data", means=means)
    np.testing.assert_array_equal(params.means, means)
    idx = np.asarray(jax.random.choice(key, len(x), (K,), replace=False))
    labels = np.argmin(((x[:, None, :] - x[idx][None]) ** 2).sum(axis=-1), axis=1)
    weights, _, cov = cell_m_step(x, labels, K, covariance_type, 1e-6)
    np.testing.assert_allclose(params.weights, weights, rtol=1e-12)
    np.testing.assert_allclose(params.covariances, cov, rtol=1e-9)


def test_identity_with_weights_and_means_given(offset_data):
    weights, means = np.full(K, 1.0 / K), offset_data[:K]
    params = initialize(
        jax.random.key(0),
        offset_data,
        "identity",
        "kmeans",
        weights=weights,
        means=means,
    )
    np.testing.assert_array_equal(params.prec_chol, np.ones(K))
    np.testing.assert_array_equal(params.means, means)
    np.testing.assert_allclose(params.weights, weights, rtol=1e-14)


# --------------------------------------------------------------------- options


def test_canonical_init():
    assert init.canonical_init("k-means++") == "kmeans++"
    for method in init.INIT_METHODS:
        assert init.canonical_init(method) == method
    with pytest.raises(ValueError, match="bogus") as err:
        init.canonical_init("bogus")
    for method in init.INIT_METHODS:
        assert repr(method) in str(err.value)


@pytest.mark.parametrize("method", ["random_from_data", "random"])
def test_equal_weights(offset_data, method):
    params = initialize(
        jax.random.key(0), offset_data, "full", method, equal_weights=True
    )
    np.testing.assert_array_equal(params.log_weights, np.full(K, -math.log(K)))
    np.testing.assert_allclose(params.weights, np.full(K, 1.0 / K), rtol=1e-15)
    plain = initialize(jax.random.key(0), offset_data, "full", method)
    # Only the weights change.
    np.testing.assert_array_equal(params.means, plain.means)
    np.testing.assert_array_equal(params.prec_chol, plain.prec_chol)
    assert not np.allclose(plain.weights, 1.0 / K)
