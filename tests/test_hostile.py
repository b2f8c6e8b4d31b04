"""Hostile conditions: extreme values and odd input end cleanly (issue 18).

Each case states what used to go wrong and asserts the clean outcome.
"""

import threading

import jax
import numpy as np
import pytest

import mogjax as mg
from mogjax import _validation as v

FAITHFUL32 = mg.load_old_faithful().astype(np.float32)
N_DISTINCT = len(np.unique(FAITHFUL32, axis=0))


def finishes(fn, seconds: float):
    """``fn()``'s value, or a test failure if it runs longer than ``seconds``."""
    out = {}
    worker = threading.Thread(target=lambda: out.update(value=fn()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    return out["value"]


def all_finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(a)))) for a in jax.tree.leaves(tree))


# --- mean shift at bandwidths far below the data's spacing -------------------------------


@pytest.mark.parametrize("scale, bandwidth", [
    (1.0, 1e-6 * 50),  # 1e-6 of Old Faithful's spread: used to hang (NaN seeds never merged)
    (1.0, 1e-20),
    (1e3, 1e-2),  # used to merge distinct points 100 bandwidths apart (255 of 256)
])
def test_mean_shift_keeps_every_distinct_point_at_tiny_bandwidths(scale, bandwidth):
    x = FAITHFUL32 * np.float32(scale)
    res = finishes(lambda: mg.mean_shift(x, bandwidth), 120)
    centers = np.asarray(res.centers)
    assert np.all(np.isfinite(centers)) and len(centers) == N_DISTINCT
    # every point is labelled with the mode it sits on: nothing a bandwidth away joined it
    gap = np.linalg.norm(x - centers[np.asarray(res.labels)], axis=1)
    assert np.all(gap <= bandwidth)


# --- densities of points far from the data -------------------------------------------------


@pytest.fixture(scope="module")
def faithful_fit():
    return mg.fit_em(FAITHFUL32, 2).params


@pytest.mark.parametrize("far", [1e20, 1e30, -1e30])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_far_points_never_give_nan(faithful_fit, far, dtype):
    """The squared features of 1e20 overflow float32: densities used to be NaN."""
    params = jax.tree.map(lambda a: a.astype(dtype), faithful_fit)
    z = np.array([[far, far], [3.0, 70.0]], dtype)
    score = np.asarray(mg.score_samples(params, z))
    resp = np.asarray(mg.responsibilities(params, z))
    assert not np.any(np.isnan(score)) and score[0] < score[1] and np.isfinite(score[1])
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=1e-6)
    assert np.all(np.isfinite(resp)) and np.all(resp >= 0)
    assert set(np.asarray(mg.predict(params, z)).tolist()) <= {0, 1}
    gm = mg.GaussianMixture(2, random_state=0).fit(FAITHFUL32)
    assert not np.any(np.isnan(gm.score_samples(z))) and np.all(np.isfinite(gm.predict_proba(z)))


# --- degenerate fits keep finite parameters ------------------------------------------------


@pytest.mark.parametrize("case", ["constant column", "collapsed duplicates", "outlier at 1e20"])
def test_degenerate_error_carries_finite_parameters(case):
    x = {
        "constant column": np.c_[FAITHFUL32[:, :1], np.ones(len(FAITHFUL32), np.float32)],
        "collapsed duplicates": np.repeat(FAITHFUL32[:3], 50, axis=0),
        "outlier at 1e20": np.r_[FAITHFUL32, np.float32([[1e20, 1e20]])],
    }[case]
    with pytest.raises(mg.DegenerateCovarianceError, match="reg_covar") as err:
        mg.fit_em(x, 3, reg_covar=0.0)
    assert all_finite(err.value.result.params)


# --- seeds, sample sizes, data that change between passes -------------------------------


def test_seeds_of_any_size():
    big = 2**70
    res = mg.fit_em(FAITHFUL32, 2, seed=big)
    assert bool(res.converged)
    keys = [np.asarray(jax.random.key_data(v.split_keys(s, 1)[0])) for s in (big, big + 2**32, 0)]
    assert not np.array_equal(keys[0], keys[1]) and not np.array_equal(keys[0], keys[2])
    np.testing.assert_array_equal(  # small seeds keep their keys
        keys[2], np.asarray(jax.random.key_data(jax.random.split(jax.random.key(0), 1)[0])))
    with pytest.raises(ValueError, match="seed"):
        mg.fit_em(FAITHFUL32, 2, seed=-1)


def test_negative_sample_size_is_named(faithful_fit):
    with pytest.raises(ValueError, match="n_samples"):
        mg.sample(jax.random.key(0), faithful_fit, -1)


def test_nan_appearing_on_a_later_pass_is_named():
    """Chunked EM reads the data once per iteration; NaN met after the first pass
    used to be blamed on a covariance."""
    passes = [0]

    def source():
        passes[0] += 1
        y = FAITHFUL32.copy()
        if passes[0] > 2:
            y[100, 1] = np.nan
        return iter([y[:150], y[150:]])

    with pytest.raises(ValueError, match=r"chunk 0 contains NaN \(row 100 .*column 1"):
        mg.fit_em(source, 2, chunk_size=100)
