r"""Conjugate priors and the variational posterior of a Bayesian Gaussian mixture.

The model is scikit-learn's ``BayesianGaussianMixture`` (Bishop, *PRML* 10.2): the
weights come from a Dirichlet distribution, or from a Dirichlet process truncated
at ``k`` sticks, and every component has a Gaussian-Wishart prior

.. math::

   \mu_j \mid \Lambda_j \sim \mathcal N\big(m_0, (\beta_0 \Lambda_j)^{-1}\big),
   \qquad \Lambda_j \sim \mathcal W(\Psi_0^{-1}, \nu_0).

The mean-field posterior :math:`q(\pi)\, q(\mu, \Lambda)` stays in these families.
Its update is EM's M-step with the prior added to the sufficient statistics
(``mogjax.suffstats``): with :math:`N_j, \bar x_j, S_j` the weighted count, mean and
covariance (``+ reg_covar``) of component ``j``,

.. math::

   \beta_j = \beta_0 + N_j, \quad m_j = \frac{\beta_0 m_0 + N_j \bar x_j}{\beta_j},
   \quad \nu_j = \nu_0 + N_j, \quad
   \Sigma_j = \frac{\Psi_0 + N_j S_j + \frac{\beta_0 N_j}{\beta_j}
   (\bar x_j - m_0)(\bar x_j - m_0)^T}{\nu_j},

and its E-step is EM's with expectations in place of the parameters: the expected
log-weights and the expected log-determinants are digamma terms (``density_terms``).
``covariances`` are scikit-learn's ``covariances_`` (the Wishart scale normalised by
:math:`\nu_j`, so ``prec_chol`` reads as a mixture's); ``tied``, ``diag`` and
``spherical`` follow scikit-learn's formulas exactly. Dimensions: ``n`` samples,
``d`` features, ``k`` components.
"""

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln

from mogjax import gaussian as gs
from mogjax._typing import Array
from mogjax.mixture import MixtureParams
from mogjax.suffstats import SufficientStats

WEIGHT_PRIORS = ("dirichlet_process", "dirichlet_distribution")
VARIATIONAL_COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


class VariationalPrior(NamedTuple):
    """The prior, scikit-learn's ``*_prior_`` attributes (arrays, so they are traced).

    Attributes:
      weight_concentration: ``gamma`` of the Dirichlet process or ``alpha_0`` of the
        Dirichlet distribution, a scalar.
      mean_precision: ``beta_0``, a scalar.
      mean: ``m_0``, (d,).
      degrees_of_freedom: ``nu_0``, a scalar (> d - 1).
      covariance: ``Psi_0``: (d, d) for ``full``/``tied``, (d,) for ``diag``, a
        scalar for ``spherical``.
    """

    weight_concentration: Array
    mean_precision: Array
    mean: Array
    degrees_of_freedom: Array
    covariance: Array


def default_prior(
    x: Array, k: int, covariance_type: str = "full", *, weight_concentration=None,
    mean_precision=None, mean=None, degrees_of_freedom=None, covariance=None,
) -> VariationalPrior:
    """The prior with scikit-learn's defaults for what is not given; jittable.

    Defaults: ``1/k``, ``1``, the data mean, ``d``, and the data covariance
    (``ddof=1``; its diagonal for ``diag``, the mean variance for ``spherical``).

    Examples:
      >>> import jax.numpy as jnp
      >>> p = default_prior(jnp.array([[0.0, 0.0], [2.0, 4.0]]), 4, "diag")
      >>> float(p.weight_concentration), p.mean.tolist(), p.covariance.tolist()
      (0.25, [1.0, 2.0], [2.0, 8.0])
    """
    dtype = x.dtype
    n, d = x.shape
    center = jnp.mean(x, axis=0)
    if covariance is None:
        xc = x - center
        if covariance_type in ("full", "tied"):
            covariance = xc.T @ xc / (n - 1)
        else:
            var = jnp.sum(xc * xc, axis=0) / (n - 1)
            covariance = var if covariance_type == "diag" else jnp.mean(var)
    cast = lambda value, default: jnp.asarray(default if value is None else value, dtype)
    return VariationalPrior(
        cast(weight_concentration, 1.0 / k), cast(mean_precision, 1.0), cast(mean, center),
        cast(degrees_of_freedom, float(d)), cast(covariance, None),
    )


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["weight_concentration", "mean_precision", "means", "degrees_of_freedom",
                 "covariances", "prec_chol"],
    meta_fields=["covariance_type", "weight_prior"],
)
@dataclasses.dataclass(frozen=True)
class VariationalPosterior:
    """The variational posterior: an immutable pytree with scikit-learn's fitted names.

    Attributes:
      weight_concentration: ``(a, b)``, two (k,) arrays of Beta parameters
        (``dirichlet_process``), or (k,) Dirichlet parameters
        (``dirichlet_distribution``).
      mean_precision: ``beta_j``, (k,).
      means: ``m_j``, (k, d).
      degrees_of_freedom: ``nu_j``, (k,); a scalar for ``tied``.
      covariances: the Wishart scale inverse over ``nu_j``, in scikit-learn's shapes
        (``full`` (k, d, d), ``tied`` (d, d), ``diag`` (k, d), ``spherical`` (k,)).
      prec_chol: Cholesky factor of ``inv(covariances)`` (``mogjax.gaussian``).
      covariance_type, weight_prior: static.
    """

    weight_concentration: Array | tuple[Array, Array]
    mean_precision: Array
    means: Array
    degrees_of_freedom: Array
    covariances: Array
    prec_chol: Array
    covariance_type: str = "full"
    weight_prior: str = "dirichlet_process"

    @property
    def n_components(self) -> int:
        return self.means.shape[-2]

    @property
    def n_features(self) -> int:
        return self.means.shape[-1]

    @property
    def weights(self) -> Array:
        """Expected weights, scikit-learn's ``weights_``, (k,)."""
        if self.weight_prior == "dirichlet_process":
            a, b = self.weight_concentration
            stick = jnp.concatenate([jnp.ones_like(a[:1]), jnp.cumprod(b / (a + b))[:-1]])
            w = a / (a + b) * stick
        else:
            w = self.weight_concentration
        return w / jnp.sum(w)

    @property
    def precisions(self) -> Array:
        """``inv(covariances)``, scikit-learn's ``precisions_``."""
        return gs.precisions_from_cholesky(self.prec_chol, self.covariance_type)

    @property
    def mixture(self) -> MixtureParams:
        """The plug-in mixture (expected weights, ``means``, ``covariances``), which
        scikit-learn's ``sample`` draws from."""
        return MixtureParams(jnp.log(self.weights), self.means, self.prec_chol,
                             self.covariance_type)

    def replace(self, **changes) -> "VariationalPosterior":
        return dataclasses.replace(self, **changes)


def gaussian_moments(stats: SufficientStats, reg_covar) -> tuple[Array, Array, Array]:
    """``(N_j, xbar_j, S_j)``: scikit-learn's ``_estimate_gaussian_parameters`` from
    the statistics (``N_j`` gets ``10 * eps``; ``S_j`` in the type's shape, ``+
    reg_covar``; ``tied`` pools the scatter)."""
    cov_type, dtype = stats.covariance_type, stats.sum_x.dtype
    nk = stats.counts + 10 * jnp.finfo(dtype).eps
    shift = stats.sum_x / nk[:, None]
    eye = jnp.eye(shift.shape[1], dtype=dtype)
    if cov_type == "full":
        sk = stats.sum_xx / nk[:, None, None] - shift[:, :, None] * shift[:, None, :]
        sk = sk + reg_covar * eye
    elif cov_type == "tied":
        total = jnp.sum(stats.sum_xx, axis=0) - jnp.einsum("k,ki,kj->ij", nk, shift, shift)
        sk = total / jnp.sum(nk) + reg_covar * eye
    else:
        if cov_type == "diag":
            sk = stats.sum_xx / nk[:, None] - shift**2
        else:  # the trace of the scatter over d: the mean of the diagonal
            sk = (stats.sum_xx / nk - jnp.sum(shift**2, axis=-1)) / shift.shape[1]
        sk = jnp.maximum(sk, 0.0) + reg_covar
    return nk, stats.center + shift, sk


def posterior_from_stats(
    stats: SufficientStats, prior: VariationalPrior, reg_covar=1e-6,
    weight_prior: str = "dirichlet_process",
) -> VariationalPosterior:
    r"""The variational M-step: the posterior given the responsibilities' statistics.

    scikit-learn's ``_m_step`` (module docstring); for the weights

    .. math::

       a_j = 1 + N_j, \quad b_j = \gamma + \textstyle\sum_{l > j} N_l
       \quad\text{(Dirichlet process)}, \qquad
       \alpha_j = \alpha_0 + N_j \quad\text{(Dirichlet distribution)}.

    A covariance that is not positive definite gives NaN in ``prec_chol``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from mogjax.suffstats import accumulate
      >>> x = jnp.array([[0.0], [1.0], [10.0], [11.0]])
      >>> s = accumulate(x, jnp.array([[1.0, 0], [1, 0], [0, 1], [0, 1]]), "spherical")
      >>> post = posterior_from_stats(s, default_prior(x, 2, "spherical"), 0.0)
      >>> [round(float(v), 3) for v in post.means[:, 0]]  # shrunk towards the mean, 5.5
      [2.167, 8.833]
      >>> [round(float(v), 3) for v in post.mean_precision]  # beta_0 + N_j
      [3.0, 3.0]
    """
    cov_type, dtype = stats.covariance_type, stats.sum_x.dtype
    prior = jax.tree.map(lambda a: jnp.asarray(a, dtype), prior)
    nk, xk, sk = gaussian_moments(stats, reg_covar)
    k = xk.shape[0]
    alpha = prior.weight_concentration
    if weight_prior == "dirichlet_process":
        later = jnp.concatenate([jnp.cumsum(nk[::-1])[-2::-1], jnp.zeros((1,), dtype)])
        concentration = (1.0 + nk, alpha + later)
    else:
        concentration = alpha + nk
    beta0, m0, nu0, psi0 = (prior.mean_precision, prior.mean, prior.degrees_of_freedom,
                            prior.covariance)
    beta = beta0 + nk
    means = (beta0 * m0 + nk[:, None] * xk) / beta[:, None]
    diff = xk - m0
    if cov_type == "full":
        nu = nu0 + nk
        scatter = nk[:, None, None] * sk + (nk * beta0 / beta)[:, None, None] * (
            diff[:, :, None] * diff[:, None, :])
        cov = (psi0 + scatter) / nu[:, None, None]
    elif cov_type == "tied":
        nu = nu0 + jnp.sum(nk) / k
        spread = beta0 / k * jnp.einsum("k,ki,kj->ij", nk / beta, diff, diff)
        cov = (psi0 + sk * jnp.sum(nk) / k + spread) / nu
    elif cov_type == "diag":
        nu = nu0 + nk
        cov = (psi0 + nk[:, None] * (sk + (beta0 / beta)[:, None] * diff**2)) / nu[:, None]
    else:
        nu = nu0 + nk
        cov = (psi0 + nk * (sk + beta0 / beta * jnp.mean(diff**2, axis=1))) / nu
    return VariationalPosterior(concentration, beta, means, nu, cov,
                                gs.precision_cholesky(cov, cov_type), cov_type, weight_prior)


def expected_log_weights(post: VariationalPosterior) -> Array:
    r""":math:`E_q[\log \pi_j]`, (k,): scikit-learn's ``_estimate_log_weights``.

    Dirichlet process: :math:`\psi(a_j) - \psi(a_j + b_j) + \sum_{l<j} (\psi(b_l) -
    \psi(a_l + b_l))`; Dirichlet distribution: :math:`\psi(\alpha_j) - \psi(\sum_l
    \alpha_l)`.
    """
    if post.weight_prior == "dirichlet_process":
        a, b = post.weight_concentration
        dg_sum = digamma(a + b)
        before = jnp.cumsum(digamma(b) - dg_sum)[:-1]
        return digamma(a) - dg_sum + jnp.concatenate([jnp.zeros_like(a[:1]), before])
    alpha = post.weight_concentration
    return digamma(alpha) - digamma(jnp.sum(alpha))


def _wishart_terms(post: VariationalPosterior):
    """``(nu, log_det, i)``: degrees of freedom with a trailing axis, the half
    log-determinant of the Wishart scale, and ``0 .. d-1``."""
    d = post.n_features
    nu = post.degrees_of_freedom
    log_det = (gs.half_log_det_precision(post.prec_chol, post.covariance_type, d)
               - 0.5 * d * jnp.log(nu))
    return nu, log_det, jnp.arange(d, dtype=nu.dtype)


def density_terms(post: VariationalPosterior, center: Array):
    r"""``(theta, offset, log_const)`` of the variational E-step, as EM's
    (``mogjax.estep.density_terms``): component ``j``'s expected log joint at ``x`` is
    ``log_const[j] - 0.5 * (features(x - center) @ theta + offset)[j]``, with

    .. math::

       \mathrm{log\_const}_j = E[\log \pi_j] + \tfrac12 E[\log|\Lambda_j|]
       - \tfrac d2 \log 2\pi - \tfrac{d}{2\beta_j}, \quad
       E[\log|\Lambda_j|] = \sum_{i<d} \psi\big(\tfrac{\nu_j - i}{2}\big) + d \log 2
       + \log|W_j|.
    """
    d = post.n_features
    theta, offset = gs.precision_features(post.means, post.prec_chol, post.covariance_type,
                                          center)
    nu, log_det, i = _wishart_terms(post)
    log_lambda = d * math.log(2.0) + jnp.sum(digamma(0.5 * (nu[..., None] - i)), axis=-1)
    log_const = (expected_log_weights(post) + log_det - 0.5 * d * math.log(2 * math.pi)
                 + 0.5 * (log_lambda - d / post.mean_precision))
    return theta, offset, log_const


@functools.partial(jax.jit, static_argnames="batch_size")
def weighted_log_prob(post: VariationalPosterior, x: Array, batch_size: int = 4096) -> Array:
    """``E[log pi_j] + E[log N(x_i | mu_j, Lambda_j^-1)]``, (n, k): scikit-learn's
    ``_estimate_weighted_log_prob``, whose ``logsumexp``, ``argmax`` and ``softmax``
    are ``score_samples``, ``predict`` and ``predict_proba``. Rows go in batches."""
    center = gs.default_center(post.means)
    theta, offset, log_const = density_terms(post, center)

    def row(xi):
        features = gs.quadratic_features((xi - center)[None], post.covariance_type)
        return (log_const - 0.5 * jnp.maximum(features @ theta + offset, 0.0))[0]

    return jax.lax.map(row, x, batch_size=min(batch_size, x.shape[0]))


def lower_bound(post: VariationalPosterior, entropy) -> Array:
    r"""scikit-learn's lower bound (``_compute_lower_bound``, constants dropped):

    .. math::

       \mathcal L = H[q(z)] - \sum_j \log B(W_j, \nu_j) - \log C(q(\pi))
       - \tfrac d2 \sum_j \log \beta_j,

    with ``entropy`` :math:`H[q(z)] = -\sum_{ij} r_{ij} \log r_{ij}` of the
    responsibilities ``post`` was computed from, ``B`` the Wishart normaliser and
    ``C`` the Dirichlet's (a product of Beta functions for the Dirichlet process).
    """
    d, k = post.n_features, post.n_components
    nu, log_det, i = _wishart_terms(post)
    log_wishart_norm = -(nu * log_det + nu * d * 0.5 * math.log(2.0)
                         + jnp.sum(gammaln(0.5 * (nu[..., None] - i)), axis=-1))
    if post.covariance_type == "tied":
        log_wishart = k * log_wishart_norm
    else:
        log_wishart = jnp.sum(log_wishart_norm)
    if post.weight_prior == "dirichlet_process":
        a, b = post.weight_concentration  # log B(a, b); jax's betaln errs by 1e-8 here
        log_norm_weight = -jnp.sum(gammaln(a) + gammaln(b) - gammaln(a + b))
    else:
        alpha = post.weight_concentration
        log_norm_weight = gammaln(jnp.sum(alpha)) - jnp.sum(gammaln(alpha))
    return (entropy - log_wishart - log_norm_weight
            - 0.5 * d * jnp.sum(jnp.log(post.mean_precision)))
