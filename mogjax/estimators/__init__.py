"""scikit-learn estimators over the functional core: ``GaussianMixture``, ``MeanShift``.

They are real scikit-learn estimators (``BaseEstimator`` with ``DensityMixin`` or
``ClusterMixin``, tags, ``get_params``/``set_params``/``clone``, parameter
validation, ``NotFittedError``, ``ConvergenceWarning``), so ``Pipeline``,
``GridSearchCV`` and scikit-learn's estimator checks take them; the numbers come
from ``mogjax.fit_em`` and ``mogjax.mean_shift``. This is the one part of mogjax
that imports scikit-learn (>= 1.6); ``import mogjax`` does not load it until
``mogjax.GaussianMixture`` or ``mogjax.MeanShift`` is first used.
"""

try:
    import sklearn  # noqa: F401
except ImportError as err:  # pragma: no cover - scikit-learn comes with mlflow
    raise ImportError(
        "mogjax.GaussianMixture and mogjax.MeanShift are scikit-learn estimators: "
        "install scikit-learn>=1.6 (the functional API, mogjax.fit_em, ... needs "
        "no scikit-learn)") from err

from mogjax.estimators._gaussian_mixture import GaussianMixture
from mogjax.estimators._mean_shift import MeanShift

__all__ = ["GaussianMixture", "MeanShift"]
