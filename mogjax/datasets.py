"""Data: the small real data sets shipped with the package, and synthetic mixtures.

Files are read with NumPy's text parser (no pickle anywhere).
"""

from importlib import resources

import jax
import numpy as np

from mogjax.mixture import MixtureParams, sample


def _load_csv(name: str) -> tuple[np.ndarray, list[str]]:
    path = resources.files("mogjax") / "data" / name
    with path.open() as f:
        lines = [line for line in f if not line.startswith("#")]
    header = lines[0].strip().split(",")
    return np.loadtxt(lines[1:], delimiter=",", dtype=np.float64, ndmin=2), header


def load_old_faithful() -> np.ndarray:
    """Old Faithful geyser eruptions: (272, 2), duration and waiting time in minutes.

    Two clear clusters (short and long eruptions); the classic 2-D mixture example.

    Examples:
      >>> load_old_faithful().shape
      (272, 2)
    """
    data, _ = _load_csv("old_faithful.csv")
    return data


def load_iris() -> tuple[np.ndarray, np.ndarray]:
    """Fisher's Iris: measurements (150, 4) in cm and species labels (150,) in {0, 1, 2}.

    Examples:
      >>> x, y = load_iris()
      >>> x.shape, sorted(set(y.tolist()))
      ((150, 4), [0, 1, 2])
    """
    data, _ = _load_csv("iris.csv")
    return data[:, :4], data[:, 4].astype(np.int64)


def make_mixture_params(
    seed: int, n_components: int, n_features: int, *, separation: float = 6.0,
    covariance_type: str = "full",
) -> MixtureParams:
    """Random mixture parameters with means about ``separation`` standard deviations apart.

    Weights are drawn from a Dirichlet(5) (no tiny component); covariances are
    random SPD matrices with eigenvalues in [0.5, 2] (their diagonal for ``diag``,
    a scale for ``spherical``, one shared matrix for ``tied``).
    """
    rng = np.random.default_rng(seed)
    k, d = n_components, n_features
    weights = rng.dirichlet(np.full(k, 5.0))
    means = rng.normal(scale=separation, size=(k, d))
    q, _ = np.linalg.qr(rng.normal(size=(k, d, d)))
    eig = rng.uniform(0.5, 2.0, size=(k, d))
    full = np.einsum("kij,kj,klj->kil", q, eig, q)
    cov = {
        "full": full,
        "tied": full[0],
        "diag": eig,
        "spherical": eig[:, 0],
        "identity": np.ones(k),
    }[covariance_type]
    return MixtureParams.from_covariances(weights, means, cov, covariance_type)


def make_mixture(
    seed: int, n_samples: int, n_components: int, n_features: int, **kwargs
) -> tuple[np.ndarray, np.ndarray, MixtureParams]:
    """Points drawn from a random mixture: ``(x, labels, true_params)``.

    Args:
      seed: integer seed (parameters and points).
      n_samples, n_components, n_features: sizes.
      **kwargs: passed to ``make_mixture_params`` (``separation``, ``covariance_type``).

    Examples:
      >>> x, labels, params = make_mixture(0, 500, 3, 2)
      >>> x.shape, labels.shape, params.n_components
      ((500, 2), (500,), 3)
    """
    params = make_mixture_params(seed, n_components, n_features, **kwargs)
    x, labels = sample(jax.random.key(seed), params, n_samples)
    return np.asarray(x), np.asarray(labels), params
