"""Shipped data sets and synthetic mixtures."""

import jax
import numpy as np
import pytest

import mogjax as mg
from mogjax.datasets import make_mixture_params


def test_old_faithful():
    x = mg.load_old_faithful()
    assert x.shape == (272, 2)
    assert x.dtype == np.float64
    assert np.all(np.isfinite(x))
    # The published column means: eruption 3.4878 min, waiting 70.897 min.
    np.testing.assert_allclose(x.mean(axis=0), [3.4878, 70.897], atol=1e-3)
    assert 1.5 < x[:, 0].min() and x[:, 0].max() < 5.2
    assert 40 < x[:, 1].min() and x[:, 1].max() < 100


def test_iris():
    x, y = mg.load_iris()
    assert x.shape == (150, 4) and y.shape == (150,)
    assert np.all(np.isfinite(x)) and np.all(x > 0)
    np.testing.assert_array_equal(np.bincount(y), [50, 50, 50])
    # Fisher's column means (cm): sepal length/width, petal length/width.
    np.testing.assert_allclose(
        x.mean(axis=0), [5.8433, 3.0573, 3.7580, 1.1993], atol=1e-3
    )


def test_make_mixture_is_reproducible(blobs):
    x, labels, params = blobs
    x2, labels2, params2 = mg.make_mixture(0, 300, 3, 2, separation=5.0)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(labels, labels2)
    np.testing.assert_array_equal(params.means, params2.means)
    x3, _, params3 = mg.make_mixture(1, 300, 3, 2, separation=5.0)
    assert not np.allclose(x, x3)
    assert not np.allclose(params.means, params3.means)


def test_make_mixture_draws_from_its_params(blobs):
    x, labels, params = blobs
    assert x.shape == (300, 2) and labels.shape == (300,)
    w = np.asarray(params.weights)
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-12)
    freq = np.bincount(labels, minlength=3) / len(labels)
    assert np.all(np.abs(freq - w) < 4 * np.sqrt(w * (1 - w) / len(labels)))
    # Each label's points are centred on that component's mean.
    cov = np.asarray(params.covariances)
    for j in range(3):
        xj = x[labels == j]
        se = np.sqrt(np.diag(cov[j]) / len(xj))
        assert np.all(np.abs(xj.mean(axis=0) - np.asarray(params.means)[j]) < 5 * se)
    # Each point is far more likely under its own component (well separated).
    joint = np.asarray(mg.mixture.log_prob_components(params, x))
    assert np.mean(np.argmax(joint, axis=1) == labels) > 0.95


@pytest.mark.parametrize("covariance_type", mg.COVARIANCE_TYPES)
def test_make_mixture_params_types(covariance_type):
    params = make_mixture_params(3, 3, 2, covariance_type=covariance_type)
    assert params.covariance_type == covariance_type
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(params))
    cov = np.asarray(params.covariances)
    if covariance_type in ("full", "tied"):
        eig = np.linalg.eigvalsh(cov)
        assert np.all((eig > 0.5 - 1e-9) & (eig < 2.0 + 1e-9))
    elif covariance_type == "identity":
        np.testing.assert_allclose(cov, 1.0)
    else:
        assert np.all((cov > 0.5 - 1e-9) & (cov < 2.0 + 1e-9))


def test_load_file_reads_missing_entries_only_when_asked(tmp_path):
    path = tmp_path / "holes.csv"
    path.write_text("a,b,c\n1,,3\nNA,5,nan\n7,8,9\n")
    with pytest.raises(ValueError, match=r"line 2, column 2: '' is not a number: a missing "
                                         r"entry; missing=True reads"):
        mg.datasets.load_file(path)
    x = mg.datasets.load_file(path, missing=True)
    np.testing.assert_array_equal(np.isnan(x), [[0, 1, 0], [1, 0, 1], [0, 0, 0]])
    assert x[2].tolist() == [7.0, 8.0, 9.0]
    np.save(tmp_path / "inf.npy", np.array([[1.0, np.nan], [np.inf, 2.0]]))
    with pytest.raises(ValueError, match=r"contains infinity \(row 2, column 1\)"):
        mg.datasets.load_file(tmp_path / "inf.npy", missing=True)
