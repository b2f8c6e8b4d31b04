"""Small test helpers."""

import numpy as np
from sklearn.mixture import GaussianMixture as SkGaussianMixture


def sklearn_from_params(params, **kwargs) -> SkGaussianMixture:
    """A scikit-learn GaussianMixture started from our parameters (float64)."""
    return SkGaussianMixture(
        n_components=params.n_components,
        covariance_type=params.covariance_type,
        weights_init=np.asarray(params.weights, np.float64),
        means_init=np.asarray(params.means, np.float64),
        precisions_init=np.asarray(params.precisions, np.float64),
        **kwargs,
    )
