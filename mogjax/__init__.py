"""mogjax: Gaussian mixtures and mean shift in JAX.

The functional core (pure, jittable functions over an immutable parameter pytree)
and a scikit-learn-style face over it. See docs/design.md for the layers.
"""

from mogjax.batched import fit_em_seeds
from mogjax.datasets import (
    bayes_error, load_iris, load_old_faithful, make_mixture, make_separated_mixture,
)
from mogjax.em import e_step, em_step, fit_em
from mogjax.bandwidth import estimate_bandwidth
from mogjax.gradient import GradientResult, fit_gradient
from mogjax.gaussian import (
    COVARIANCE_TYPES,
    log_gaussian_density,
    mahalanobis,
    precision_cholesky,
)
from mogjax.init import INIT_METHODS, initialize, kmeans, kmeans_plusplus
from mogjax.meanshift import MeanShiftResult, mean_shift, mean_shift_step, modes_init
from mogjax.mixture import (
    MixtureParams,
    aic,
    bic,
    log_likelihood,
    mean_log_likelihood,
    n_parameters,
    predict,
    responsibilities,
    sample,
    score_samples,
)
from mogjax.missing import impute
from mogjax.online import OnlineResult, fit_online_em
from mogjax.results import STOP_REASONS, DegenerateCovarianceError, FitResult
from mogjax.chunked import fit_em_chunked
from mogjax.suffstats import SufficientStats, m_step
from mogjax.sharded import ShardedData, e_step_sharded, fit_em_sharded, shard_rows
from mogjax.unconstrained import UnconstrainedParams, from_unconstrained, to_unconstrained
from mogjax.posterior import VariationalPosterior, VariationalPrior
from mogjax.variational import VariationalResult, fit_variational
from mogjax.theory import (
    complete_information, em_map_jacobian, em_preconditioner, em_rate, empirical_rate,
    fit_diagnostics, flatten_params, krylov_rate, mean_normalized_entropy,
    missing_information_fraction, observed_information, standard_errors, unflatten_params,
)

__version__ = "0.1.0"

__all__ = [
    "COVARIANCE_TYPES",
    "INIT_METHODS",
    "DegenerateCovarianceError",
    "FitResult",
    "BayesianGaussianMixture",
    "GaussianMixture",
    "GradientResult",
    "MeanShift",
    "MeanShiftResult",
    "MixtureParams",
    "OnlineResult",
    "STOP_REASONS",
    "SufficientStats",
    "UnconstrainedParams",
    "aic",
    "bic",
    "e_step",
    "em_step",
    "estimate_bandwidth",
    "fit_em",
    "fit_em_seeds",
    "fit_em_chunked",
    "fit_gradient",
    "fit_online_em",
    "impute",
    "from_unconstrained",
    "initialize",
    "kmeans",
    "kmeans_plusplus",
    "load_iris",
    "load_old_faithful",
    "log_gaussian_density",
    "log_likelihood",
    "m_step",
    "make_mixture",
    "make_separated_mixture",
    "bayes_error",
    "mahalanobis",
    "mean_log_likelihood",
    "mean_shift",
    "mean_shift_step",
    "modes_init",
    "n_parameters",
    "precision_cholesky",
    "predict",
    "responsibilities",
    "sample",
    "score_samples",
    "to_unconstrained",
    "ShardedData",
    "e_step_sharded",
    "fit_em_sharded",
    "shard_rows",
    "VariationalPosterior",
    "VariationalPrior",
    "VariationalResult",
    "fit_variational",
    "complete_information",
    "em_map_jacobian",
    "em_preconditioner",
    "em_rate",
    "empirical_rate",
    "fit_diagnostics",
    "flatten_params",
    "krylov_rate",
    "mean_normalized_entropy",
    "missing_information_fraction",
    "observed_information",
    "standard_errors",
    "unflatten_params",
]


def __getattr__(name):
    """``GaussianMixture`` and ``MeanShift`` on first use: they import scikit-learn,
    which the functional core does not need (PEP 562)."""
    if name in ("GaussianMixture", "MeanShift"):
        from mogjax import estimators

        return getattr(estimators, name)
    if name == "BayesianGaussianMixture":
        from mogjax.bayesian_mixture import BayesianGaussianMixture

        return BayesianGaussianMixture
    raise AttributeError(f"module 'mogjax' has no attribute {name!r}")
