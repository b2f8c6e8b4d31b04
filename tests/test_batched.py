"""Many seeds in one compiled EM program: each seed is the fit ``fit_em`` gives."""

import numpy as np
import pytest

import mogjax as mg


def test_every_seed_matches_its_own_fit(blobs):
    x = blobs[0]
    seeds = [0, 3, 7]
    batch = mg.fit_em_seeds(x, 3, seeds, covariance_type="diag", n_init=2, init="random")
    assert batch.curve.shape == (3, 101) and batch.params.means.shape == (3, 3, 2)
    for i, seed in enumerate(seeds):
        one = mg.fit_em(x, 3, covariance_type="diag", n_init=2, init="random", seed=seed)
        assert int(batch.n_iter[i]) == int(one.n_iter)
        np.testing.assert_allclose(batch.curve[i], one.curve, rtol=1e-10, equal_nan=True)
        np.testing.assert_allclose(batch.params.means[i], one.params.means, rtol=1e-9)
        np.testing.assert_allclose(batch.params.prec_chol[i], one.params.prec_chol, rtol=1e-9)
    # different seeds really start differently
    assert not np.allclose(batch.curve[0, 0], batch.curve[1, 0])


def test_a_degenerate_seed_is_flagged_not_raised():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (60, 2)), np.tile([[3.0, 3.0]], (8, 1))])
    batch = mg.fit_em_seeds(x, 2, [0, 1], reg_covar=0.0)
    ok = mg.fit_em_seeds(x, 2, [0, 1], reg_covar=1e-2)
    assert not np.any(np.asarray(ok.degenerate))
    for i, seed in enumerate([0, 1]):
        try:
            mg.fit_em(x, 2, reg_covar=0.0, seed=seed)
            raised = False
        except mg.DegenerateCovarianceError:
            raised = True
        assert bool(batch.degenerate[i]) == raised
        assert np.all(np.isfinite(np.asarray(batch.params.means[i])))


@pytest.mark.parametrize("kwargs, message", [
    (dict(seeds=[]), "at least one seed"),
    (dict(seeds=[-1]), "seeds entry"),
    (dict(seeds=[0], k=None), "k .the number of components"),
])
def test_bad_arguments(blobs, kwargs, message):
    args = {"k": 2, **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        mg.fit_em_seeds(blobs[0], args.pop("k"), **args)
