"""Component alignment (mogjax/align.py): closed forms and invariants."""

import numpy as np
import pytest

from mogjax.align import align, bhattacharyya, full_covariances, parameter_gaps, permute
from mogjax.mixture import MixtureParams


def _mixture(covariance_type="full", seed=0, k=3, d=2):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 5, (k, d))
    a = rng.normal(0, 1, (k, d, d))
    full = a @ np.swapaxes(a, -1, -2) + np.eye(d)
    cov = {"full": full, "diag": np.diagonal(full, axis1=1, axis2=2),
           "spherical": full[:, 0, 0], "tied": full[0]}[covariance_type]
    return MixtureParams.from_covariances(rng.dirichlet(np.ones(k)), means, cov, covariance_type)


def test_one_dimensional_distance_is_the_closed_form():
    m, s2 = np.array([[0.0], [3.0]]), np.array([1.0, 4.0])
    p = MixtureParams.from_covariances(np.ones(2), m, s2, "spherical")
    got = bhattacharyya(p, p)[0, 1]
    want = (3.0 ** 2) / (4 * (1 + 4)) + 0.5 * np.log((1 + 4) / (2 * 1 * 2))
    np.testing.assert_allclose(got, want, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical", "tied"])
def test_a_permuted_mixture_aligns_back(covariance_type):
    ref = _mixture(covariance_type)
    dist = bhattacharyya(ref, ref)
    np.testing.assert_allclose(np.diag(dist), 0, atol=1e-10)
    np.testing.assert_allclose(dist, dist.T, rtol=1e-10)
    perm = [2, 0, 1]
    shuffled = permute(ref, perm)
    gaps = parameter_gaps(ref, shuffled)
    assert gaps["permutation"] == list(np.argsort(perm))
    assert gaps["max_mean_gap"] < 1e-12 and gaps["max_weight_gap"] < 1e-12
    assert gaps["max_covariance_gap"] < 1e-9
    np.testing.assert_allclose(full_covariances(align(ref, shuffled)), full_covariances(ref),
                               rtol=1e-10)


def test_gaps_measure_matched_components():
    ref = _mixture("full", seed=1)
    moved = permute(ref.replace(means=ref.means + np.array([[0.1, 0], [0, 0], [0, -0.3]])),
                    [1, 2, 0])
    gaps = parameter_gaps(ref, moved)
    np.testing.assert_allclose(gaps["max_mean_gap"], 0.3, rtol=1e-10)
    assert gaps["max_weight_gap"] < 1e-12


def test_mixtures_of_different_sizes_are_refused():
    with pytest.raises(ValueError, match="cannot align"):
        parameter_gaps(_mixture(k=3), _mixture(k=2))
