"""Gaussian log-densities, Mahalanobis distances and precision factors.

Compared with SciPy and direct NumPy linear algebra (H15: reference first, then
closed forms).
"""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from mogjax import gaussian as gs

ALL_TYPES = gs.COVARIANCE_TYPES  # includes "identity"
K, D = 3, 3


def random_spd(rng, d):
    """An SPD matrix with eigenvalues in [0.3, 3] and a random orientation."""
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return (q * rng.uniform(0.3, 3.0, size=d)) @ q.T


def typed_covariances(rng, covariance_type, k=K, d=D):
    """``(covariances in the type's shape, the (k, d, d) full matrices they mean)``."""
    if covariance_type == "full":
        cov = np.stack([random_spd(rng, d) for _ in range(k)])
        return cov, cov
    if covariance_type == "tied":
        cov = random_spd(rng, d)
        return cov, np.broadcast_to(cov, (k, d, d))
    if covariance_type == "diag":
        cov = rng.uniform(0.3, 3.0, size=(k, d))
        return cov, np.stack([np.diag(c) for c in cov])
    if covariance_type == "spherical":
        cov = rng.uniform(0.3, 3.0, size=k)
        return cov, cov[:, None, None] * np.eye(d)
    cov = np.ones(k)
    return cov, np.broadcast_to(np.eye(d), (k, d, d))


def problem(covariance_type, offset, seed=0, n=50):
    """Points, means, typed covariances and their full matrices, near ``offset``."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=3.0, size=(K, D)) + offset
    cov, full = typed_covariances(rng, covariance_type)
    x = rng.normal(scale=3.0, size=(n, D)) + offset
    return x, means, cov, full


@pytest.mark.parametrize("offset", [0.0, 100.0])
@pytest.mark.parametrize("covariance_type", ALL_TYPES)
def test_log_density_matches_scipy(covariance_type, offset):
    x, means, cov, full = problem(covariance_type, offset)
    prec_chol = gs.precision_cholesky(jnp.asarray(cov), covariance_type)
    got = np.asarray(gs.log_gaussian_density(x, means, prec_chol, covariance_type))
    want = np.stack(
        [multivariate_normal(means[j], full[j]).logpdf(x) for j in range(K)], axis=1
    )
    assert got.shape == (len(x), K)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("offset", [100.0, 1000.0])
@pytest.mark.parametrize("covariance_type", ALL_TYPES)
def test_log_density_float32_far_from_origin(covariance_type, offset):
    """In float32 the centred expansion keeps the error near rounding of the inputs.

    Expanding about the origin instead loses ``1e-7 * ||x||^2 / sigma^2``: about 3e-3
    at +100 and 0.3 at +1000 here, far above the tolerance.
    """
    x, means, cov, _ = problem(covariance_type, offset)
    x32, means32 = jnp.asarray(x, jnp.float32), jnp.asarray(means, jnp.float32)
    prec_chol = gs.precision_cholesky(jnp.asarray(cov, jnp.float32), covariance_type)
    got = gs.log_gaussian_density(x32, means32, prec_chol, covariance_type)
    assert got.dtype == jnp.float32
    # Reference in float64 from the float32-rounded inputs: only arithmetic error left.
    cov32 = np.asarray(
        gs.covariances_from_cholesky(prec_chol, covariance_type), np.float64
    )
    full = {
        "full": lambda c: c,
        "tied": lambda c: np.broadcast_to(c, (K, D, D)),
        "diag": lambda c: np.stack([np.diag(v) for v in c]),
    }.get(covariance_type, lambda c: c[:, None, None] * np.eye(D))(cov32)
    x64, means64 = np.asarray(x32, np.float64), np.asarray(means32, np.float64)
    want = np.stack(
        [multivariate_normal(means64[j], full[j]).logpdf(x64) for j in range(K)], axis=1
    )
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-6, atol=2e-4)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_log_density_does_not_depend_on_center(covariance_type):
    """The centre only conditions the expansion: another centre gives the same."""
    x, means, cov, _ = problem(covariance_type, 100.0)
    prec_chol = gs.precision_cholesky(jnp.asarray(cov), covariance_type)
    a = gs.log_gaussian_density(x, means, prec_chol, covariance_type)
    b = gs.log_gaussian_density(x, means, prec_chol, covariance_type, center=x[0])
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("offset", [0.0, 100.0])
@pytest.mark.parametrize("covariance_type", ALL_TYPES)
def test_mahalanobis_matches_numpy(covariance_type, offset):
    x, means, cov, full = problem(covariance_type, offset)
    prec_chol = gs.precision_cholesky(jnp.asarray(cov), covariance_type)
    got = np.asarray(gs.mahalanobis(x, means, prec_chol, covariance_type))
    diff = x[:, None, :] - means[None, :, :]  # (n, k, d)
    want = np.sqrt(np.einsum("nki,kij,nkj->nk", diff, np.linalg.inv(full), diff))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("covariance_type", ALL_TYPES)
def test_mahalanobis_of_a_mean_to_itself_is_zero_not_nan(covariance_type):
    _, means, cov, _ = problem(covariance_type, 100.0)
    prec_chol = gs.precision_cholesky(jnp.asarray(cov), covariance_type)
    dist = np.asarray(gs.mahalanobis(means, means, prec_chol, covariance_type))
    assert np.all(np.isfinite(dist))
    np.testing.assert_allclose(np.diag(dist), 0.0, atol=1e-6)
    off_diag = dist[~np.eye(K, dtype=bool)]
    assert np.all(off_diag > 0.1)


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_precision_cholesky_is_upper_factor_of_inverse(covariance_type):
    _, _, cov, _ = problem(covariance_type, 0.0)
    u = np.asarray(gs.precision_cholesky(jnp.asarray(cov), covariance_type))
    assert u.shape == cov.shape
    np.testing.assert_array_equal(u, np.triu(u))
    assert np.all(np.diagonal(u, axis1=-2, axis2=-1) > 0)
    np.testing.assert_allclose(
        u @ np.swapaxes(u, -1, -2), np.linalg.inv(cov), rtol=1e-10
    )


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_precision_cholesky_of_variances(covariance_type):
    _, _, cov, _ = problem(covariance_type, 0.0)
    u = np.asarray(gs.precision_cholesky(jnp.asarray(cov), covariance_type))
    np.testing.assert_allclose(u, 1.0 / np.sqrt(cov), rtol=1e-14)


def test_precision_cholesky_identity_is_ones():
    u = gs.precision_cholesky(jnp.full(K, 7.0), "identity")
    np.testing.assert_array_equal(u, np.ones(K))


@pytest.mark.parametrize("covariance_type", ALL_TYPES)
def test_covariances_from_cholesky_inverts_precision_cholesky(covariance_type):
    _, _, cov, _ = problem(covariance_type, 0.0)
    u = gs.precision_cholesky(jnp.asarray(cov), covariance_type)
    back = np.asarray(gs.covariances_from_cholesky(u, covariance_type))
    np.testing.assert_allclose(back, cov, rtol=1e-10, atol=1e-12)
    prec = np.asarray(gs.precisions_from_cholesky(u, covariance_type))
    if covariance_type in ("full", "tied"):
        np.testing.assert_allclose(prec, np.linalg.inv(cov), rtol=1e-10)
    else:
        np.testing.assert_allclose(prec, 1.0 / cov, rtol=1e-12)


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_precision_cholesky_from_precisions_gives_upper_factor(covariance_type):
    _, _, cov, _ = problem(covariance_type, 0.0, seed=3)
    prec = np.linalg.inv(cov)
    u = np.asarray(
        gs.precision_cholesky_from_precisions(jnp.asarray(prec), covariance_type)
    )
    np.testing.assert_array_equal(u, np.triu(u))
    assert np.all(np.diagonal(u, axis1=-2, axis2=-1) > 0)
    np.testing.assert_allclose(u @ np.swapaxes(u, -1, -2), prec, rtol=1e-10)
    # The upper factor with a positive diagonal is unique: both routes agree.
    from_cov = np.asarray(gs.precision_cholesky(jnp.asarray(cov), covariance_type))
    np.testing.assert_allclose(u, from_cov, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_precision_cholesky_from_precision_values(covariance_type):
    _, _, cov, _ = problem(covariance_type, 0.0)
    u = np.asarray(
        gs.precision_cholesky_from_precisions(jnp.asarray(1.0 / cov), covariance_type)
    )
    np.testing.assert_allclose(u, 1.0 / np.sqrt(cov), rtol=1e-14)


@pytest.mark.parametrize("covariance_type", ALL_TYPES)
def test_half_log_det_precision_is_minus_half_slogdet(covariance_type):
    _, _, cov, full = problem(covariance_type, 0.0, seed=5)
    u = gs.precision_cholesky(jnp.asarray(cov), covariance_type)
    got = np.asarray(gs.half_log_det_precision(u, covariance_type, D))
    sign, logdet = np.linalg.slogdet(full)
    assert np.all(sign > 0)
    want = -0.5 * logdet
    if covariance_type == "tied":
        assert got.shape == ()
        want = want[0]
    else:
        assert got.shape == (K,)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    ("covariance_type", "cov", "bad"),
    [
        ("full", [[[1.0, 0.0], [0.0, 1.0]], [[1.0, 2.0], [2.0, 1.0]]], 1),  # indefinite
        ("full", [[[-1.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [0.0, 1.0]]], 0),
        ("tied", [[1.0, 2.0], [2.0, 1.0]], None),
        ("diag", [[1.0, 1.0], [0.0, 1.0]], 1),
        ("spherical", [1.0, -1.0], 1),
    ],
)
def test_non_positive_definite_gives_nan_not_exception(covariance_type, cov, bad):
    u = np.asarray(gs.precision_cholesky(jnp.asarray(cov), covariance_type))
    if bad is None:
        assert np.all(np.isnan(u[np.triu_indices(2)]))
    else:
        assert np.any(np.isnan(u[bad]))
        assert np.all(np.isfinite(u[1 - bad]))


def test_non_positive_precisions_give_nan():
    u = gs.precision_cholesky_from_precisions(
        jnp.array([[1.0, 2.0], [2.0, 1.0]]), "tied"
    )
    assert np.any(np.isnan(np.asarray(u)))
    v = gs.precision_cholesky_from_precisions(jnp.array([1.0, 0.0]), "spherical")
    assert np.isfinite(v[0]) and np.isnan(v[1])


def test_check_covariance_type():
    for ct in ALL_TYPES:
        assert gs.check_covariance_type(ct) == ct
    with pytest.raises(ValueError, match="bogus") as err:
        gs.check_covariance_type("bogus")
    for ct in ALL_TYPES:
        assert repr(ct) in str(err.value)
