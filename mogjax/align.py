r"""Match the components of two fitted mixtures before comparing their parameters.

A mixture's likelihood does not change when its components are permuted, so two fits
of the same data (EM and gradient ascent, or two seeds) may list the same Gaussians in
different orders. ``align`` finds the order of ``params`` that best matches
``reference``: the assignment of least total Bhattacharyya distance between the
components (the Hungarian method, ``scipy.optimize.linear_sum_assignment``),

.. math::

   D_B(\mathcal N_1, \mathcal N_2) = \tfrac18 (\mu_1 - \mu_2)^\top \Sigma^{-1}
   (\mu_1 - \mu_2) + \tfrac12 \log \frac{|\Sigma|}{\sqrt{|\Sigma_1|\,|\Sigma_2|}},
   \qquad \Sigma = \tfrac12 (\Sigma_1 + \Sigma_2),

which is symmetric, zero only for equal Gaussians, and finite for any two (unlike the
KL divergence's asymmetry). ``parameter_gaps`` then reports the largest differences
of weights, means and covariances between matched components. NumPy on the host: the
mixtures compared here have a handful of components.
"""

import numpy as np
from scipy.optimize import linear_sum_assignment

from mogjax.mixture import MixtureParams


def full_covariances(params: MixtureParams) -> np.ndarray:
    """Every component's covariance as a full ``(k, d, d)`` matrix, any covariance type.

    Examples:
      >>> import numpy as np
      >>> p = MixtureParams.from_covariances(np.ones(2), np.zeros((2, 3)),
      ...                                    np.array([1.0, 4.0]), "spherical")
      >>> full_covariances(p)[1].diagonal().tolist()
      [4.0, 4.0, 4.0]
    """
    k, d = params.n_components, params.n_features
    cov = np.asarray(params.covariances, dtype=np.float64)
    kind = params.covariance_type
    if kind == "full":
        return cov
    if kind == "tied":
        return np.broadcast_to(cov, (k, d, d)).copy()
    if kind == "diag":
        return cov[:, :, None] * np.eye(d)
    return cov[:, None, None] * np.eye(d)  # spherical, identity


def bhattacharyya(a: MixtureParams, b: MixtureParams) -> np.ndarray:
    """Bhattacharyya distance between every component of ``a`` and of ``b``: (k_a, k_b).

    Examples:
      >>> import numpy as np
      >>> p = MixtureParams.from_covariances(np.ones(2), np.array([[0.0], [2.0]]),
      ...                                    np.ones((2, 1, 1)))
      >>> np.round(bhattacharyya(p, p), 3).tolist()   # (2 - 0)^2 / 8 off the diagonal
      [[0.0, 0.5], [0.5, 0.0]]
    """
    mean_a, mean_b = np.asarray(a.means, np.float64), np.asarray(b.means, np.float64)
    cov_a, cov_b = full_covariances(a), full_covariances(b)
    cov = 0.5 * (cov_a[:, None] + cov_b[None, :])  # (k_a, k_b, d, d)
    diff = mean_a[:, None] - mean_b[None, :]
    maha = np.einsum("abi,abi->ab", diff, np.linalg.solve(cov, diff[..., None])[..., 0])
    logdet = np.linalg.slogdet(cov)[1]
    logdet_a, logdet_b = np.linalg.slogdet(cov_a)[1], np.linalg.slogdet(cov_b)[1]
    return maha / 8 + 0.5 * (logdet - 0.5 * (logdet_a[:, None] + logdet_b[None, :]))


def alignment(reference: MixtureParams, params: MixtureParams) -> np.ndarray:
    """The order of ``params``' components that matches ``reference``'s: component
    ``j`` of ``reference`` goes with component ``perm[j]`` of ``params``.

    Raises:
      ValueError: the two mixtures differ in ``k`` or ``d``.
    """
    if (reference.n_components, reference.n_features) != (params.n_components,
                                                          params.n_features):
        raise ValueError(
            f"cannot align a mixture of {params.n_components} components in "
            f"{params.n_features}-D to one of {reference.n_components} in "
            f"{reference.n_features}-D")
    rows, cols = linear_sum_assignment(bhattacharyya(reference, params))
    return cols[np.argsort(rows)]


def permute(params: MixtureParams, perm) -> MixtureParams:
    """``params`` with its components in the order ``perm`` (a tied covariance stays)."""
    perm = np.asarray(perm)
    prec = params.prec_chol if params.covariance_type == "tied" else params.prec_chol[perm]
    return params.replace(log_weights=params.log_weights[perm], means=params.means[perm],
                          prec_chol=prec)


def align(reference: MixtureParams, params: MixtureParams) -> MixtureParams:
    """``params`` with its components reordered to match ``reference``'s.

    Examples:
      >>> import numpy as np
      >>> ref = MixtureParams.from_covariances(np.array([0.3, 0.7]),
      ...                                      np.array([[0.0, 0.0], [5.0, 5.0]]),
      ...                                      np.ones(2), "spherical")
      >>> swapped = permute(ref, [1, 0])
      >>> np.asarray(align(ref, swapped).means).tolist()
      [[0.0, 0.0], [5.0, 5.0]]
    """
    return permute(params, alignment(reference, params))


def parameter_gaps(reference: MixtureParams, params: MixtureParams) -> dict:
    """How far ``params`` lies from ``reference`` once aligned: the largest absolute
    weight difference, the largest Euclidean distance between matched means, the
    largest Frobenius norm of the difference of matched covariances, and the order.

    Returns:
      ``{"permutation": [...], "max_weight_gap": float, "max_mean_gap": float,
      "max_covariance_gap": float}``.

    Examples:
      >>> import numpy as np
      >>> ref = MixtureParams.from_covariances(np.array([0.5, 0.5]),
      ...                                      np.array([[0.0], [4.0]]), np.ones(2), "spherical")
      >>> moved = MixtureParams.from_covariances(np.array([0.4, 0.6]),
      ...                                        np.array([[4.0], [0.5]]), np.ones(2), "spherical")
      >>> gaps = parameter_gaps(ref, moved)
      >>> gaps["permutation"], round(gaps["max_mean_gap"], 6), round(gaps["max_weight_gap"], 6)
      ([1, 0], 0.5, 0.1)
    """
    perm = alignment(reference, params)
    matched = permute(params, perm)
    weight = np.abs(np.asarray(reference.weights) - np.asarray(matched.weights))
    mean = np.linalg.norm(np.asarray(reference.means) - np.asarray(matched.means), axis=-1)
    cov = np.linalg.norm(full_covariances(reference) - full_covariances(matched), axis=(-2, -1))
    return {"permutation": perm.tolist(), "max_weight_gap": float(weight.max()),
            "max_mean_gap": float(mean.max()), "max_covariance_gap": float(cov.max())}
