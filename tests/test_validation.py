"""Every bad input gets a ValueError or TypeError naming the problem, before compute."""

import numpy as np
import pytest

import mogjax as mg

GOOD = np.random.default_rng(0).normal(size=(20, 2))


def with_value(value, row=3, col=1):
    x = GOOD.copy()
    x[row, col] = value
    return x


BAD_DATA = [
    (with_value(np.nan), ValueError, "contains NaN"),
    (with_value(np.inf), ValueError, "contains infinity"),
    (GOOD[:, 0], ValueError, "2-D array"),
    (GOOD[None], ValueError, "2-D array"),
    (np.zeros((0, 2)), ValueError, "no rows"),
    (np.zeros((5, 0)), ValueError, "no columns"),
    (np.array([["a", "b"], ["c", "d"]]), TypeError, "numeric"),
    (np.array([[1.0, None]], dtype=object), TypeError, "numeric"),
]


@pytest.mark.parametrize("x, error, match", BAD_DATA)
def test_bad_data_fit_em(x, error, match):
    with pytest.raises(error, match=match):
        mg.fit_em(x, 1)


@pytest.mark.parametrize("x, error, match", BAD_DATA)
def test_bad_data_estimator(x, error, match):
    with pytest.raises(error, match=match):
        mg.GaussianMixture(1).fit(x)


BAD_ARGS = [
    (dict(k=0), ValueError, "'k': 0; it must be >= 1"),
    (dict(k=2.5), TypeError, "k must be an integer"),
    (dict(k=21), ValueError, "n_samples >= n_components"),
    (dict(covariance_type="ful"), ValueError, "covariance_type"),
    (dict(init="kmeans+"), ValueError, "'init'"),
    (dict(tol=-1e-3), ValueError, "'tol'"),
    (dict(reg_covar=-1.0), ValueError, "'reg_covar'"),
    (dict(reg_covar=float("nan")), ValueError, "'reg_covar'"),
    (dict(max_iter=-1), ValueError, "'max_iter'"),
    (dict(n_init=0), ValueError, "'n_init'"),
    (dict(seed=-1), ValueError, "'seed'"),
    (dict(init_params={"weights": [0.5, 0.6]}), ValueError, "normalized"),
    (dict(init_params={"weights": [1.5, -0.5]}), ValueError, r"range \[0, 1\]"),
    (dict(init_params={"weights": [1.0]}), ValueError, "shape"),
    (dict(init_params={"means": np.zeros((2, 3))}), ValueError, "shape"),
    (dict(init_params={"means": [[0.0, np.nan], [1.0, 1.0]]}), ValueError, "NaN"),
    (dict(init_params={"precisions": np.zeros((2, 2))}), ValueError, "shape"),
    (dict(init_params={"precisions": np.stack([np.eye(2), -np.eye(2)])}), ValueError,
     "positive-definite"),
    (dict(init_params={"precisions": np.stack([np.eye(2), [[1.0, 2.0], [0.0, 1.0]]])}),
     ValueError, "symmetric"),
    (dict(covariance_type="diag", init_params={"precisions": [[1.0, 1.0], [1.0, 0.0]]}),
     ValueError, "positive"),
    (dict(covariance_type="identity", init_params={"precisions": [1.0, 1.0]}), ValueError,
     "identity"),
    (dict(init_params={"mean": np.zeros((2, 2))}), ValueError, "Unknown keys"),
    (dict(block_size=0), ValueError, "block_size"),
]


@pytest.mark.parametrize("kwargs, error, match", BAD_ARGS)
def test_bad_arguments_fit_em(kwargs, error, match):
    kwargs = {"k": 2, **kwargs}
    k = kwargs.pop("k")
    with pytest.raises(error, match=match):
        mg.fit_em(GOOD, k, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_components=0), "n_components"),
        (dict(n_components=2, covariance_type="bogus"), "covariance_type"),
        (dict(n_components=2, init_params="bogus"), "'init_params'"),
        (dict(n_components=2, tol=-1.0), "'tol'"),
        (dict(n_components=2, reg_covar=-1.0), "'reg_covar'"),
        (dict(n_components=2, max_iter=-2), "'max_iter'"),
        (dict(n_components=2, means_init=np.zeros((3, 2))), "shape"),
        (dict(n_components=2, weights_init=[0.2, 0.2]), "normalized"),
        (dict(n_components=2, precisions_init=np.zeros((2, 2, 2))), "positive-definite"),
    ],
)
def test_bad_arguments_estimator(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mg.GaussianMixture(**kwargs).fit(GOOD)


def test_predict_before_fit_and_wrong_features():
    gm = mg.GaussianMixture(2)
    for method in (gm.predict, gm.predict_proba, gm.score, gm.score_samples, gm.bic, gm.aic):
        with pytest.raises(ValueError, match="not fitted yet"):
            method(GOOD)
    with pytest.raises(ValueError, match="not fitted yet"):
        gm.sample(3)
    gm.fit(GOOD)
    with pytest.raises(ValueError, match="X has 3 features, but GaussianMixture is expecting 2 features"):
        gm.predict(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="contains NaN"):
        gm.predict(with_value(np.nan))


def test_random_state_type_error():
    with pytest.raises(TypeError, match="random_state"):
        mg.GaussianMixture(2, random_state="zero").fit(GOOD)


def test_integer_and_bool_data_are_accepted():
    res = mg.fit_em(np.arange(40).reshape(20, 2), 2, seed=0)
    assert np.all(np.isfinite(res.curve[: int(res.n_iter) + 1]))
