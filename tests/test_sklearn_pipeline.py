"""mogjax's GaussianMixture inside scikit-learn's Pipeline and GridSearchCV."""

import numpy as np
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import mogjax as mg

# Kept small (6 settings, one training size) because every setting compiles a program.
GRID = {"gm__n_components": [2, 3, 4], "gm__covariance_type": ["full", "spherical"]}


def grid_search(gaussian_mixture, x):
    pipe = Pipeline([("scale", StandardScaler()), ("gm", gaussian_mixture)])
    cv = KFold(5, shuffle=True, random_state=0)  # Iris is sorted by species
    return GridSearchCV(pipe, GRID, cv=cv).fit(x)


def test_grid_search_on_iris_picks_sklearns_model():
    """The held-out mean log-likelihood (``score``) picks full covariances with 3
    components, with either estimator, at about the same score."""
    x, _ = mg.load_iris()
    ours = grid_search(mg.GaussianMixture(3, random_state=0), x)
    sk = grid_search(SkGaussianMixture(3, random_state=0), x)
    assert ours.best_params_ == sk.best_params_ == {
        "gm__covariance_type": "full", "gm__n_components": 3}
    np.testing.assert_allclose(ours.best_score_, sk.best_score_, rtol=0.01)
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"],
                               sk.cv_results_["mean_test_score"], rtol=0.05)
    best = ours.best_estimator_
    assert isinstance(best.named_steps["gm"], mg.GaussianMixture)
    assert best.named_steps["gm"].converged_ and best.predict(x).shape == (len(x),)
