r"""EM's theory at a point: its rate, the information matrices, its preconditioner and
standard errors, all computed by differentiating the library's own EM map and
log-likelihood (``mogjax.em.em_step`` and the E-step's statistics and
log-likelihood, ``mogjax.estep``); nothing here re-implements the E-step or the M-step.

Everything works on a flat parameter vector (``flatten_params``), in this order:

1. the first ``k - 1`` weights (the last is one minus their sum);
2. the means, row by row (``k * d`` entries);
3. the covariance entries by type: ``full``, each component's upper triangle row by
   row (``k * d (d + 1) / 2``); ``diag``, the ``k x d`` variances row by row;
   ``spherical``, the ``k`` variances; ``tied``, one upper triangle; ``identity``,
   none.

Its length ``p`` is ``mogjax.n_parameters(params)``. Write :math:`M` for the EM map
(with ``reg_covar = 0``: the maximum-likelihood map), :math:`I_o` for the observed
information (minus the Hessian of the total log-likelihood), :math:`I_c` for the
complete-data information (minus the Hessian of EM's
:math:`Q(\theta \mid \theta_0) = \sum_i \sum_j w_{ij}(\theta_0) \log \pi_j f_j(x_i; \theta)`
at :math:`\theta = \theta_0`) and :math:`I_m = I_c - I_o` for the missing information.
At a fixed point of EM (Dempster, Laird & Rubin 1977, JRSS B 39:1-38, sec. 3; Meng &
Rubin 1991, "Using EM to obtain asymptotic variance-covariance matrices: the SEM
algorithm", JASA 86:899-909)

.. math::

   DM = \frac{\partial M}{\partial \theta} = I_c^{-1} I_m = I - I_c^{-1} I_o ,

so EM converges linearly at the spectral radius of :math:`DM`, the largest fraction
of missing information. Its eigenvalues are real and in :math:`[0, 1)` at a strict
local maximum. Away from an optimum ``em_map_jacobian`` is still the Jacobian of
the map, but the identity no longer holds.

Cost: a dense Jacobian or Hessian is ``p`` Jacobian-vector products, each about two
to four E-steps, batched so that their intermediates stay under about 256 MB
(``benchmarks/theory.py`` gives the measured ratios). Work in float64: the
information matrices of float32 fits are dominated by rounding.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mogjax import _validation as v
from mogjax import gaussian as gs
from mogjax._typing import Array, ArrayLike
from mogjax.em import em_step
from mogjax.estep import data_center, density_terms, e_step, e_step_moments
from mogjax.mixture import MixtureParams, n_parameters, responsibilities

# Elements held by the tangents of one batch of Jacobian or Hessian columns.
_BATCH_ELEMENTS = 2**25


def _cov_size(k: int, d: int, covariance_type: str) -> int:
    return {"full": k * d * (d + 1) // 2, "tied": d * (d + 1) // 2, "diag": k * d,
            "spherical": k, "identity": 0}[covariance_type]


def flatten_params(params: MixtureParams) -> Array:
    """The flat parameter vector ``(p,)`` in the module's documented order.

    Examples:
      >>> import jax.numpy as jnp
      >>> p = MixtureParams.from_covariances(jnp.array([0.25, 0.75]),
      ...     jnp.array([[0.0, 1.0], [2.0, 3.0]]), jnp.array([1.0, 4.0]), "spherical")
      >>> [round(float(v), 4) for v in flatten_params(p)]
      [0.25, 0.0, 1.0, 2.0, 3.0, 1.0, 4.0]
    """
    cov_type = params.covariance_type
    cov = params.covariances
    rows, cols = np.triu_indices(params.n_features)
    if cov_type == "full":
        cov = cov[:, rows, cols]
    elif cov_type == "tied":
        cov = cov[rows, cols]
    elif cov_type == "identity":
        cov = cov[:0]
    return jnp.concatenate([params.weights[:-1], params.means.ravel(), cov.ravel()])


def unflatten_params(vector: ArrayLike, like: MixtureParams) -> MixtureParams:
    """``MixtureParams`` from a flat vector, with the shapes and type of ``like``.

    The inverse of ``flatten_params``; differentiable (covariances go through their
    Cholesky factor, so a vector whose covariances are not positive definite gives
    NaN precision factors, as everywhere in mogjax).

    Examples:
      >>> import jax.numpy as jnp
      >>> p = MixtureParams.from_covariances(jnp.array([0.25, 0.75]),
      ...     jnp.zeros((2, 2)), jnp.array([1.0, 4.0]), "spherical")
      >>> q = unflatten_params(flatten_params(p), p)
      >>> [round(float(w), 4) for w in q.weights], [round(float(c), 4) for c in q.covariances]
      ([0.25, 0.75], [1.0, 4.0])
    """
    k, d, cov_type = like.n_components, like.n_features, like.covariance_type
    vector = jnp.asarray(vector, like.means.dtype)
    if vector.shape != (n_parameters(like),):
        raise ValueError(f"vector must have shape ({n_parameters(like)},) for these "
                         f"parameters, got {vector.shape}")
    head = vector[: k - 1]
    weights = jnp.concatenate([head, 1.0 - jnp.sum(head, keepdims=True)])
    means = vector[k - 1: k - 1 + k * d].reshape(k, d)
    tail = vector[k - 1 + k * d:]
    rows, cols = np.triu_indices(d)
    if cov_type in ("full", "tied"):
        shape = (k, d, d) if cov_type == "full" else (d, d)
        upper = tail.reshape(shape[:-2] + (len(rows),))
        cov = jnp.zeros(shape, vector.dtype)
        cov = cov.at[..., rows, cols].set(upper).at[..., cols, rows].set(upper)
    elif cov_type == "diag":
        cov = tail.reshape(k, d)
    elif cov_type == "spherical":
        cov = tail
    else:
        cov = jnp.ones((k,), vector.dtype)
    return MixtureParams(jnp.log(weights), means, gs.precision_cholesky(cov, cov_type), cov_type)


def _batch(p: int, n: int, width: int) -> int:
    """Columns computed together: their tangents stay under ``_BATCH_ELEMENTS``."""
    return int(max(1, min(p, _BATCH_ELEMENTS // max(n * width, 1))))


def _width(params: MixtureParams) -> int:
    return params.n_components + gs.n_quadratic_features(params.n_features,
                                                         params.covariance_type)


@functools.partial(jax.jit, static_argnames="kind")
def _products(params: MixtureParams, x: Array, weight, tangents: Array, kind: str) -> Array:
    """A batch of directional derivatives at ``flatten(params)``, (b, p) -> (b, p):
    of the EM map (``kind="em"``) or of the log-likelihood's gradient (``"hessian"``)."""
    vec = flatten_params(params)
    if kind == "em":
        f = _em_map(params, x)
    else:
        f = jax.grad(lambda t: e_step(unflatten_params(t, params), x,
                                      sample_weight=weight).log_likelihood)
    return jax.vmap(lambda t: jax.jvp(f, (vec,), (t,))[1])(tangents)


def _dense(params: MixtureParams, x: Array, weight, kind: str) -> Array:
    """The (p, p) matrix of ``_products`` along every coordinate, in batches of
    columns whose tangents stay under ``_BATCH_ELEMENTS`` (one compiled program; the
    last batch padded with zeros). A host loop: ``lax.map`` over batches of this
    size stalled XLA's CPU runtime here."""
    p = n_parameters(params)
    batch = _batch(p, x.shape[0], _width(params))
    eye = np.eye(p, dtype=np.dtype(params.means.dtype))
    columns = []
    for first in range(0, p, batch):
        tangents = np.zeros((batch, p), eye.dtype)
        block = eye[first: first + batch]
        tangents[: len(block)] = block
        # one batch at a time: many large programs in flight at once were seen to
        # deadlock XLA's CPU runtime (every thread idle, the result never ready)
        columns.append(jax.block_until_ready(
            _products(params, x, weight, jnp.asarray(tangents), kind))[: len(block)])
    return jnp.concatenate(columns).T


def _em_map(params: MixtureParams, x: Array):
    """``vector -> flatten(em_step(unflatten(vector)))`` with ``reg_covar = 0``."""
    return lambda vec: flatten_params(em_step(unflatten_params(vec, params), x, reg_covar=0.0))


def _check(params: MixtureParams, x) -> Array:
    """``x`` as a checked (n, d) array of finite values matching ``params``."""
    if not isinstance(params, MixtureParams):
        raise TypeError(f"params must be MixtureParams, got {type(params).__name__}")
    x = v.check_data(x, n_features=params.n_features)
    if not all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(params)):
        raise ValueError("params hold NaN or infinite values (a degenerate fit?)")
    return x.astype(params.means.dtype)


def em_map_jacobian(params: MixtureParams, x: ArrayLike) -> Array:
    r"""The Jacobian of the EM map in the flat parametrisation, ``(p, p)``.

    :math:`J_{ab} = \partial\, \mathrm{flatten}(M(\theta))_a / \partial \theta_b`, with
    :math:`M` one ``em_step`` at ``reg_covar = 0``, computed by ``jax.jvp`` through
    the library's E-step and M-step. At a fixed point it equals
    :math:`I - I_c^{-1} I_o` (Dempster, Laird & Rubin 1977; Meng & Rubin 1991).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> with jax.enable_x64(True):
      ...     x = jnp.array([[-1.0], [1.0]])
      ...     p = MixtureParams.from_covariances(jnp.ones(1), jnp.zeros((1, 1)),
      ...                                        jnp.ones((1, 1, 1)))
      ...     print(em_map_jacobian(p, x).round(6).tolist())  # one Gaussian: EM is exact
      [[0.0, 0.0], [0.0, 0.0]]
    """
    return _dense(params, _check(params, x), None, "em")


def _hessian_loglik(params: MixtureParams, x: Array, weight) -> Array:
    h = _dense(params, x, weight, "hessian")
    return 0.5 * (h + h.T)


def observed_information(params: MixtureParams, x: ArrayLike,
                         sample_weight: ArrayLike | None = None) -> Array:
    r"""Observed information :math:`I_o = -\nabla^2 \log L`, ``(p, p)``.

    The Hessian (forward over reverse) of the *total* log-likelihood in the flat
    parametrisation, as the E-step computes it (``mogjax.estep.e_step``; equal to
    ``mogjax.log_likelihood``, whose branch for missing entries costs four times
    the compile time). ``sample_weight`` (n,) weighs the rows as there (a row of
    weight ``c`` counts as ``c`` copies).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> with jax.enable_x64(True):
      ...     x = jnp.array([[-1.0], [1.0]])
      ...     p = MixtureParams.from_covariances(jnp.ones(1), jnp.zeros((1, 1)),
      ...                                        jnp.ones((1, 1, 1)))
      ...     print((observed_information(p, x).round(6) + 0.0).tolist())  # n / s2, n / (2 s2^2)
      [[2.0, 0.0], [0.0, 1.0]]
    """
    x = _check(params, x)
    weight = v.check_sample_weight(sample_weight, x.shape[0], x.dtype)
    return -_hessian_loglik(params, x, weight)


def _q_function(params: MixtureParams, x: Array):
    """``vector -> Q(unflatten(vector) | params)``, EM's expected complete-data
    log-likelihood, read from the E-step's statistics at ``params``."""
    center = data_center(x)
    # The E-step's statistics at params: counts W_j and moments sum_i w_ij phi(x_i - c).
    _, counts, moments = e_step_moments(params, x, center, None, False)
    counts, moments = jax.lax.stop_gradient((counts, moments))

    def q(vec):  # sum_ij w_ij log pi_j f_j(x_i; theta) = sum_ij w_ij (log_const - maha / 2)
        theta, offset, log_const = density_terms(unflatten_params(vec, params), center,
                                                 x.dtype)
        return jnp.sum(counts * (log_const - 0.5 * offset)) - 0.5 * jnp.sum(moments * theta.T)

    return q


@jax.jit
def _complete(params: MixtureParams, x: Array) -> Array:
    h = jax.hessian(_q_function(params, x))(flatten_params(params))
    return -0.5 * (h + h.T)


def complete_information(params: MixtureParams, x: ArrayLike) -> Array:
    r"""Complete-data information :math:`I_c = -\nabla^2_\theta Q(\theta \mid \theta_0)`
    at :math:`\theta = \theta_0 =` ``params``, ``(p, p)``.

    The responsibilities are held at ``params``; ``Q`` reads the data only through
    the E-step's sufficient statistics (``mogjax.estep.e_step_moments``), so this
    costs one E-step whatever ``p``. Positive definite near a maximum of the
    likelihood; away from one the covariance block can be indefinite.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> with jax.enable_x64(True):
      ...     x = jnp.array([[-1.0], [1.0]])
      ...     p = MixtureParams.from_covariances(jnp.ones(1), jnp.zeros((1, 1)),
      ...                                        jnp.ones((1, 1, 1)))
      ...     print((complete_information(p, x).round(6) + 0.0).tolist())  # no missing data
      [[2.0, 0.0], [0.0, 1.0]]
    """
    return _complete(params, _check(params, x))


def missing_information_fraction(params: MixtureParams, x: ArrayLike) -> np.ndarray:
    r"""Eigenvalues of :math:`I_c^{-1} I_m`, largest first, ``(p,)`` (NumPy).

    :math:`I_m = I_c - I_o`; the eigenvalues are those of the symmetric
    :math:`L^{-1} I_m L^{-T}` with :math:`I_c = L L^T` (real). At an optimum they
    are the eigenvalues of EM's Jacobian, so the first is its rate (Meng & Rubin
    1991); they are the fractions of information the labels would add,
    direction by direction. NaN when :math:`I_c` is not positive definite.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> with jax.enable_x64(True):
      ...     x = jnp.array([[-1.0], [1.0]])
      ...     p = MixtureParams.from_covariances(jnp.ones(1), jnp.zeros((1, 1)),
      ...                                        jnp.ones((1, 1, 1)))
      ...     print(missing_information_fraction(p, x).round(6).tolist())
      [0.0, 0.0]
    """
    x = _check(params, x)
    i_c = np.asarray(_complete(params, x), np.float64)
    i_m = i_c - np.asarray(-_hessian_loglik(params, x, None), np.float64)
    return _generalized_eigenvalues(i_m, i_c)


def _generalized_eigenvalues(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Eigenvalues of ``b^-1 a`` for symmetric ``a`` and positive definite ``b``,
    largest first; NaN when ``b`` is not positive definite."""
    try:
        chol = np.linalg.cholesky(b)
    except np.linalg.LinAlgError:
        return np.full(a.shape[0], np.nan)
    half = np.linalg.solve(chol, np.linalg.solve(chol, a).T)
    return np.sort(np.linalg.eigvalsh(0.5 * (half + half.T)))[::-1]


@functools.partial(jax.jit, static_argnames=("dim", "metric"))
def _arnoldi(params: MixtureParams, x: Array, dim: int, metric: bool) -> Array:
    """The ``(dim + 1, dim)`` Hessenberg matrix of ``dim`` Arnoldi steps on the EM
    map's Jacobian-vector product (``jax.linearize``), from a fixed random start,
    Gram-Schmidt applied twice. With ``metric`` the basis is orthonormal in the inner
    product of :math:`I_c` (a Hessian-vector product of ``Q``, no pass over the data)."""
    vec, f = flatten_params(params), _em_map(params, x)
    _, matvec = jax.linearize(f, vec)
    if metric:
        grad_q = jax.grad(_q_function(params, x))
        weigh = lambda u: -jax.jvp(grad_q, (vec,), (u,))[1]
    else:
        weigh = lambda u: u
    p = vec.shape[0]
    start = jax.random.normal(jax.random.key(0), (p,), vec.dtype)
    basis = jnp.zeros((dim + 1, p), vec.dtype).at[0].set(start / jnp.sqrt(start @ weigh(start)))
    hess = jnp.zeros((dim + 1, dim), vec.dtype)
    tiny = jnp.finfo(vec.dtype).eps

    def body(j, carry):
        basis, hess = carry
        w = matvec(basis[j])
        mask = (jnp.arange(dim + 1) <= j).astype(vec.dtype)
        h = (basis @ weigh(w)) * mask
        w = w - basis.T @ h
        h2 = (basis @ weigh(w)) * mask
        w, h = w - basis.T @ h2, h + h2
        beta = jnp.sqrt(jnp.maximum(w @ weigh(w), 0.0))
        ok = beta > tiny * jnp.linalg.norm(h)  # else the Krylov space is invariant
        hess = hess.at[:, j].set(h.at[j + 1].set(jnp.where(ok, beta, 0.0)))
        basis = basis.at[j + 1].set(jnp.where(ok, w / jnp.where(ok, beta, 1.0), 0.0))
        return basis, hess

    return jax.lax.fori_loop(0, dim, body, (basis, hess))[1]


def krylov_rate(params: MixtureParams, x: ArrayLike, *, dim: int = 30) -> tuple[float, float]:
    r"""Matrix-free spectral radius of EM's Jacobian: ``(rate, residual)``.

    ``dim`` Arnoldi steps, each one Jacobian-vector product of the EM map (one
    ``jax.linearize`` of ``em_step``: a product costs about two E-steps), from a fixed
    random start, orthonormal in the inner product of :math:`I_c`. At an optimum
    :math:`J = I_c^{-1} I_m` is self-adjoint in that inner product, so this is the
    Lanczos method: the Ritz values are real, ``rate`` (the largest) never exceeds
    the true rate and grows to it as ``dim`` grows, and some eigenvalue of
    :math:`J` lies within ``residual`` of it, where ``residual`` is
    :math:`\|J v - \lambda v\|_{I_c}` for the unit Ritz vector :math:`v`
    (:math:`|h_{m+1,m}\, y_m|`, exact by the Arnoldi relation). Away from an optimum
    the same numbers carry no such guarantee; where :math:`I_c` is not positive
    definite the Euclidean inner product is used instead. ``dim`` is capped at
    ``p``, and ``dim == p`` is exact up to rounding. Measured accuracy: see
    ``benchmarks/theory.py``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> with jax.enable_x64(True):
      ...     x = jnp.array([[-3.0], [-1.0], [1.0], [3.0]])
      ...     p = MixtureParams.from_covariances(jnp.ones(1), jnp.zeros((1, 1)),
      ...                                        jnp.full((1, 1, 1), 5.0))
      ...     rate, residual = krylov_rate(p, x, dim=2)
      >>> round(rate, 6), residual < 1e-6
      (0.0, True)
    """
    x = _check(params, x)
    dim = min(v.check_int(dim, "dim", 1), n_parameters(params))
    h = np.asarray(_arnoldi(params, x, dim, True), np.float64)
    if not np.all(np.isfinite(h)):
        h = np.asarray(_arnoldi(params, x, dim, False), np.float64)
    values, vectors = np.linalg.eig(h[:dim, :dim])
    top = int(np.argmax(np.abs(values)))
    y = vectors[:, top] / np.linalg.norm(vectors[:, top])
    return float(np.abs(values[top])), float(abs(h[dim, dim - 1] * y[-1]))


def em_rate(params: MixtureParams, x: ArrayLike, *, max_dense: int = 2000,
            krylov_dim: int = 30) -> float:
    r"""EM's local rate of convergence: the spectral radius of ``em_map_jacobian``.

    Near a strict local maximum the error of EM shrinks by this factor per iteration
    (Dempster, Laird & Rubin 1977; Meng & Rubin 1991); it is the largest
    fraction of missing information. For ``p <= max_dense`` the dense Jacobian's
    eigenvalues (``numpy.linalg.eigvals``); above it, matrix-free: ``krylov_rate``
    with ``krylov_dim`` Jacobian-vector products (its accuracy is documented there;
    call it directly for the residual).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> with jax.enable_x64(True):
      ...     x = jnp.array([[-3.0], [-1.0], [1.0], [3.0]])
      ...     p = MixtureParams.from_covariances(jnp.ones(1), jnp.zeros((1, 1)),
      ...                                        jnp.ones((1, 1, 1)))
      ...     print(round(em_rate(p, x), 6))
      0.0
    """
    v.check_int(max_dense, "max_dense", 0)
    if n_parameters(params) > max_dense:
        return krylov_rate(params, x, dim=krylov_dim)[0]
    jac = np.asarray(em_map_jacobian(params, x), np.float64)
    return float(np.max(np.abs(np.linalg.eigvals(jac)))) if jac.size else 0.0


def _sym_kron_block(cov: np.ndarray, scale) -> np.ndarray:
    r"""``scale * (Sigma (x) Sigma)`` acting on upper-triangle coordinates: the block
    mapping the gradient over the entries ``u_ab`` (a <= b) of a symmetric matrix to
    ``scale * vech(Sigma G Sigma)`` (``G``: the gradient over the matrix, an
    off-diagonal entry getting half of the flat gradient of ``u_ab``)."""
    rows, cols = np.triu_indices(cov.shape[-1])
    off = (rows != cols).astype(cov.dtype)
    ra, ca = rows[:, None], cols[:, None]
    rb, cb = rows[None, :], cols[None, :]
    block = cov[ra, rb] * cov[cb, ca] + off[None, :] * cov[ra, cb] * cov[rb, ca]
    return scale * block / (1.0 + off)[None, :]


def em_preconditioner(params: MixtureParams, x: ArrayLike) -> np.ndarray:
    r"""Xu & Jordan's (1996) matrix :math:`P` with EM step :math:`= P\, \nabla \log L`.

    ``(p, p)`` (NumPy), block diagonal, positive definite, in the flat
    parametrisation; :math:`\nabla \log L` is the gradient of the total
    log-likelihood over the flat vector, :math:`a` the weights, :math:`N = n` and
    :math:`W_j = \sum_t h_j(t)` the E-step's counts at ``params``. Xu & Jordan
    (1996, "On convergence properties of the EM algorithm for Gaussian mixtures",
    Neural Computation 8:129-151):

    .. math::

       P_a = \frac{\mathrm{diag}(a) - a a^T}{N}, \qquad
       P_{\mu_j} = \frac{\Sigma_j}{W_j}, \qquad
       P_{\Sigma_j} = \frac{2}{W_j}\, \Sigma_j \otimes \Sigma_j .

    The weights' block is :math:`P_a` restricted to the first ``k - 1`` weights
    (:math:`P_a \mathbf 1 = 0`, so the reduced gradient :math:`g_i - g_k` gives the
    same step). For the weights and the means the identity is exact for mogjax's EM
    step. For the covariances it is exact for the step that centres them on the *old*
    means, :math:`\Sigma_j^{new} = \sum_t h_j(t) (x_t - \mu_j)(x_t - \mu_j)^T / W_j`
    (Xu 1997's variant; the same local rate), which is EM's covariance plus
    :math:`\delta_j \delta_j^T` with :math:`\delta_j` the step of mean ``j``. The
    :math:`\Sigma \otimes \Sigma` block is written on the upper-triangle
    coordinates (an off-diagonal entry moves both of its matrix entries); ``diag``
    gives :math:`2\sigma^4 / W_j`, ``spherical`` :math:`2\sigma^4 / (d W_j)` and
    ``tied`` :math:`\frac{2}{N} \Sigma \otimes \Sigma`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> with jax.enable_x64(True):
      ...     x = jnp.array([[-1.0], [1.0]])
      ...     p = MixtureParams.from_covariances(jnp.ones(1), jnp.zeros((1, 1)),
      ...                                        jnp.ones((1, 1, 1)))
      ...     print(em_preconditioner(p, x).round(6).tolist())  # Sigma / n, 2 Sigma^2 / n
      [[0.5, 0.0], [0.0, 1.0]]
    """
    x = _check(params, x)
    k, d, cov_type = params.n_components, params.n_features, params.covariance_type
    counts = np.asarray(e_step(params, x).counts, np.float64)
    n = float(x.shape[0])
    a = np.asarray(params.weights, np.float64)
    cov = np.asarray(params.covariances, np.float64)
    blocks = [(np.diag(a) - np.outer(a, a))[: k - 1, : k - 1] / n]
    if cov_type in ("full", "tied"):
        mean_cov = cov if cov_type == "full" else np.broadcast_to(cov, (k, d, d))
    elif cov_type == "diag":
        mean_cov = np.stack([np.diag(c) for c in cov])
    else:
        mean_cov = cov[:, None, None] * np.eye(d)
    blocks += [mean_cov[j] / counts[j] for j in range(k)]
    if cov_type == "full":
        blocks += [_sym_kron_block(cov[j], 2.0 / counts[j]) for j in range(k)]
    elif cov_type == "tied":
        blocks.append(_sym_kron_block(cov, 2.0 / n))
    elif cov_type == "diag":
        blocks.append(np.diag((2.0 * cov**2 / counts[:, None]).ravel()))
    elif cov_type == "spherical":
        blocks.append(np.diag(2.0 * cov**2 / (d * counts)))
    size = n_parameters(params)
    out, at = np.zeros((size, size)), 0
    for block in blocks:
        out[at: at + len(block), at: at + len(block)] = block
        at += len(block)
    return out


def standard_errors(params: MixtureParams, x: ArrayLike,
                    sample_weight: ArrayLike | None = None) -> dict[str, np.ndarray]:
    r"""Asymptotic standard errors of the maximum-likelihood estimate ``params``.

    The square roots of the diagonal of :math:`I_o^{-1}` (``observed_information``;
    the usual large-sample covariance of the MLE, and what EM's SEM algorithm of Meng
    & Rubin 1991 estimates). The last weight, one minus the others, gets the delta
    method's :math:`\sqrt{\mathbf 1^T C \mathbf 1}` over the first ``k - 1``. For one
    component they are the closed forms :math:`\sqrt{\Sigma_{aa}/n}` for the means and
    :math:`\sqrt{(\Sigma_{aa}\Sigma_{bb} + \Sigma_{ab}^2)/n}` for the covariances;
    for well-separated components the weights' tend to :math:`\sqrt{a(1-a)/n}`.
    Meaningful at a maximum of the likelihood (a converged fit with
    ``reg_covar = 0`` or negligible), in float64.

    Args:
      params: the fitted mixture.
      x: the data it was fitted on, (n, d).
      sample_weight: (n,) row weights, as in ``mogjax.log_likelihood``.

    Returns:
      ``{"weights": (k,), "means": (k, d), "covariances": the shape of
      params.covariances}`` as NumPy arrays (``identity`` covariances, fixed: zeros).

    Raises:
      ValueError: when the observed information is singular or not positive
        definite, naming the smallest eigenvalue and the likely cause.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> with jax.enable_x64(True):
      ...     x = jnp.array([[-1.0], [1.0], [-2.0], [2.0]])  # mean 0, variance 2.5
      ...     p = MixtureParams.from_covariances(jnp.ones(1), jnp.zeros((1, 1)),
      ...                                        jnp.full((1, 1, 1), 2.5))
      ...     se = standard_errors(p, x)
      >>> round(float(se["means"][0, 0]) ** 2, 6), round(float(se["covariances"][0, 0, 0]) ** 2, 6)
      (0.625, 3.125)
    """
    info = np.asarray(observed_information(params, x, sample_weight), np.float64)
    k, d, cov_type = params.n_components, params.n_features, params.covariance_type
    eig = np.linalg.eigvalsh(info)
    scale = max(float(np.max(np.abs(eig))), np.finfo(float).tiny)
    if not np.all(np.isfinite(eig)) or eig[0] <= info.shape[0] * np.finfo(float).eps * scale:
        why = ("singular" if np.all(np.isfinite(eig)) and eig[0] > -1e-8 * scale
               else "not positive definite")
        raise ValueError(
            f"the observed information is {why} (smallest eigenvalue {eig[0]:.3g}, "
            f"largest {eig[-1]:.3g}, {info.shape[0]} parameters), so the standard errors "
            "are undefined: the parameters are not a strict local maximum of the "
            "likelihood (an unconverged fit, a component with too few points, two "
            "identical components, a collapsed covariance, or reg_covar large enough to "
            "move the optimum)")
    vectors = np.linalg.eigh(info)[1]
    cov = (vectors / eig) @ vectors.T
    var = np.diag(cov)
    last = np.sum(cov[: k - 1, : k - 1])
    weights = np.sqrt(np.concatenate([var[: k - 1], [last]]))
    means = np.sqrt(var[k - 1: k - 1 + k * d]).reshape(k, d)
    tail = np.sqrt(var[k - 1 + k * d:])
    if cov_type in ("full", "tied"):
        shape = (k, d, d) if cov_type == "full" else (d, d)
        rows, cols = np.triu_indices(d)
        covs = np.zeros(shape)
        upper = tail.reshape(shape[:-2] + (len(rows),))
        covs[..., rows, cols] = upper
        covs[..., cols, rows] = upper
    elif cov_type == "identity":
        covs = np.zeros(k)
    else:
        covs = tail.reshape(np.shape(params.covariances))
    return {"weights": weights, "means": means, "covariances": covs}


def _rate_from_ratios(ratios: np.ndarray, window: int) -> float:
    ratios = ratios[np.isfinite(ratios) & (ratios > 0)][-window:]
    return float(np.exp(np.mean(np.log(ratios)))) if len(ratios) else float("nan")


def empirical_rate(result=None, *, iterates: ArrayLike | None = None,
                   window: int = 3) -> float:
    r"""EM's rate measured on a run: from its curve, or from its parameter iterates.

    From ``result.curve`` (a ``FitResult``): near the optimum the gains
    :math:`\ell_t - \ell_{t-1}` shrink by the square of the rate per iteration, so
    the rate is :math:`\sqrt{(\ell_t - \ell_{t-1}) / (\ell_{t-1} - \ell_{t-2})}`,
    averaged (geometrically) over the last ``window`` ratios whose gains are above
    rounding (:math:`100\,\epsilon |\ell|`). From ``iterates`` (a ``(T, p)`` array
    of flat parameters, or a ``MixtureParams`` stacked on a leading axis): the ratio
    of successive step lengths :math:`\|\theta_{t+1} - \theta_t\| /
    \|\theta_t - \theta_{t-1}\|`, which tends to the rate itself. Only the linear
    regime near the optimum measures the rate: a fit stopped early by ``tol``
    may not have reached it. NaN when there are too few usable points.

    Examples:
      >>> import numpy as np
      >>> from mogjax.results import FitResult
      >>> curve = -1.0 - 0.5 ** (2 * np.arange(8))  # gains shrink by 0.25 = 0.5 ** 2
      >>> round(empirical_rate(FitResult(None, curve, np.int64(7), True)), 6)
      0.5
      >>> round(empirical_rate(iterates=0.3 ** np.arange(6)[:, None]), 6)
      0.3
    """
    window = v.check_int(window, "window", 1)
    if iterates is not None:
        if isinstance(iterates, MixtureParams):
            iterates = jax.vmap(flatten_params)(iterates)
        steps = np.linalg.norm(np.diff(np.asarray(iterates, np.float64), axis=0), axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return _rate_from_ratios(steps[1:] / steps[:-1], window)
    if result is None:
        raise ValueError("give a FitResult or iterates")
    curve = np.asarray(result.curve, np.float64)[: int(np.max(result.n_iter)) + 1]
    gains = np.diff(curve)
    floor = 100 * np.finfo(np.asarray(result.curve).dtype).eps * np.nanmax(np.abs(curve))
    gains = np.where(gains > floor, gains, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _rate_from_ratios(np.sqrt(gains[1:] / gains[:-1]), window)


def mean_normalized_entropy(params: MixtureParams, x: ArrayLike) -> float:
    r"""Mean over rows of the responsibilities' entropy divided by :math:`\log k`.

    0 when every point belongs to one component, 1 when every point is split evenly:
    a data-level measure of overlap, and so of missing information.

    Examples:
      >>> import jax.numpy as jnp
      >>> p = MixtureParams(jnp.log(jnp.array([0.5, 0.5])), jnp.array([[-1.0], [1.0]]),
      ...                   jnp.ones(2), "identity")
      >>> round(mean_normalized_entropy(p, jnp.zeros((3, 1))), 6)
      1.0
    """
    if params.n_components == 1:
        return 0.0
    resp = np.asarray(responsibilities(params, x), np.float64)
    logs = np.log(np.where(resp > 0, resp, 1.0))
    return float(np.mean(-np.sum(resp * logs, axis=1)) / np.log(params.n_components))


def fit_diagnostics(params: MixtureParams, x: ArrayLike, result=None, *,
                    max_dense: int = 2000) -> dict[str, float]:
    """EM's theory at a fitted point, as plain floats (for logging a run).

    Keys: ``em_rate`` (``em_rate``'s dense value) and ``missing_information_max``
    (the largest eigenvalue of :math:`I_c^{-1} I_m`), both only when
    ``n_parameters(params) <= max_dense`` and ``x`` has no missing entries;
    ``em_rate_empirical`` (``empirical_rate(result)``) when ``result`` is given;
    ``responsibility_entropy`` (``mean_normalized_entropy``). A key whose value is not
    finite (a degenerate fit, a run too short to show a rate) is left out rather
    than logged as NaN. At a converged fit ``em_rate`` and ``missing_information_max``
    agree; they differ in proportion to the distance from the optimum.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> with jax.enable_x64(True):
      ...     x = jnp.array([[-3.0], [-1.0], [1.0], [3.0]])
      ...     p = MixtureParams.from_covariances(jnp.ones(1), jnp.zeros((1, 1)),
      ...                                        jnp.full((1, 1, 1), 5.0))
      ...     print({k: round(v, 6) for k, v in fit_diagnostics(p, x).items()})
      {'em_rate': 0.0, 'missing_information_max': 0.0, 'responsibility_entropy': 0.0}
    """
    out = {}
    x = jnp.asarray(x)
    if n_parameters(params) <= max_dense and bool(jnp.all(jnp.isfinite(x))):
        try:
            out["em_rate"] = em_rate(params, x, max_dense=max_dense)
            out["missing_information_max"] = float(missing_information_fraction(params, x)[0])
        except (ValueError, np.linalg.LinAlgError):
            pass
    if result is not None:
        out["em_rate_empirical"] = empirical_rate(result)
    out["responsibility_entropy"] = mean_normalized_entropy(params, x)
    return {key: float(val) for key, val in out.items() if np.isfinite(val)}
