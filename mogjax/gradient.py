r"""Gradient ascent on the mean log-likelihood with optax, from EM's starting point.

The objective is EM's: ``mogjax.mixture.mean_log_likelihood``, differentiated by JAX
with respect to an *unconstrained* twin of ``MixtureParams`` (``UnconstrainedParams``)
that any optax optimiser can step freely. Its ``logits`` (k - 1,) are
:math:`\log \pi_j - \log \pi_k` (the last component's logit is fixed at 0), its
``means`` (k, d) are the means, and its ``scale`` holds the free part of the
covariances:

=============  ===============  =======================================================
type           ``scale``        meaning
=============  ===============  =======================================================
``full``       (k, d(d+1)/2)    lower Cholesky factor ``L_j`` of
                                :math:`\Sigma^{free}_j = L_j L_j^T`, packed in
                                ``np.tril_indices`` order, its diagonal as a log
``tied``       (d(d+1)/2,)      one such ``L`` for every component
``diag``       (k, d)           log of the free variances
``spherical``  (k,)             log of the free variance
``identity``   (0,)             nothing: :math:`\Sigma_j = I` is fixed
=============  ===============  =======================================================

**The reg_covar floor.** The optimised covariance is

.. math::

   \Sigma_j = \Sigma^{free}_j + \mathrm{reg\_covar}\; I, \qquad \Sigma^{free}_j \succ 0,

so no covariance falls below ``reg_covar`` in any direction, the floor EM's M-step
sets by adding ``reg_covar`` to the covariance diagonal. ``from_unconstrained``
builds :math:`\Sigma_j` and turns it into ``prec_chol`` with
``mogjax.gaussian.precision_cholesky``; ``to_unconstrained`` subtracts the floor
again, so both maps take ``reg_covar`` (the same value for both). The two methods
climb the same function over the same set of covariances. Their stationary points
differ only at second order: EM's covariance is the weighted scatter *plus*
``reg_covar``, gradient ascent's the scatter itself (where the likelihood is flat),
so their final mean log-likelihoods differ by :math:`O(\mathrm{reg\_covar}^2)`. A
covariance on the floor (a collapsed component: singular or rounding-indefinite
:math:`\Sigma^{free}`) maps to the nearest representable point,
:math:`\Sigma^{free}_+ + \epsilon\,\mathrm{reg\_covar}\,I`, a change at rounding level.

With ``k - 1`` logits against the last component the maps are exact inverses in both
directions (up to rounding), for every covariance type.

**Start and curve.** ``fit_gradient`` takes its initial parameters from ``fit_em``
with ``max_iter=0`` (same keys, same ``mogjax.init.initialize`` call), so for the
same data, ``k``, ``covariance_type``, ``init`` and ``seed`` both methods start from
bit-identical parameters and ``curve[0]`` is EM's own number. Entry ``t`` is
``mean_log_likelihood`` on the full data after ``t`` steps (also with mini-batches);
the two evaluations agree to rounding.
"""

import dataclasses
import functools
import inspect
import math
import numbers
import time
from collections import OrderedDict
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mogjax import _validation as v
from mogjax import gaussian as gs
from mogjax._typing import Array, ArrayLike
from mogjax.em import _keys, fit_em
from mogjax.mixture import MixtureParams, mean_log_likelihood

OPTIMIZERS = {
    "adam": optax.adam, "adamw": optax.adamw, "sgd": optax.sgd,
    "rmsprop": optax.rmsprop, "adagrad": optax.adagrad, "lbfgs": optax.lbfgs,
}
SCHEDULES = {
    "constant": None,
    "cosine": (optax.cosine_decay_schedule, {"decay_steps": None, "alpha": 0.0}),
    "exponential": (
        optax.exponential_decay, {"transition_steps": None, "decay_rate": 0.01}
    ),
}
DEFAULT_LEARNING_RATE = 1e-2


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["logits", "means", "scale"], meta_fields=["covariance_type"],
)
@dataclasses.dataclass(frozen=True)
class UnconstrainedParams:
    """Unconstrained mixture parameters (shapes in the module table): a JAX pytree.

    Attributes:
      logits: (k - 1,) log-weights relative to the last component.
      means: (k, d).
      scale: the free covariance part, shaped by ``covariance_type``.
      covariance_type: static metadata, as in ``MixtureParams``.
    """

    logits: Array
    means: Array
    scale: Array
    covariance_type: str = "full"


def _tril(d: int):
    rows, cols = np.tril_indices(d)
    return rows, cols, rows == cols


def _free_cholesky(free: Array, reg_covar) -> Array:
    """Lower ``L`` with ``L L^T = free`` (symmetric, (..., d, d)).

    Where ``free`` is singular or (by rounding) indefinite, ``L`` is the factor of
    its positive part plus ``eps * reg_covar * I``, through a QR decomposition that
    needs no positive-definiteness.
    """
    dtype, d = free.dtype, free.shape[-1]
    chol = jnp.linalg.cholesky(free)
    ok = jnp.all(jnp.isfinite(chol), axis=(-2, -1), keepdims=True)
    floor = jnp.sqrt(jnp.finfo(dtype).eps * reg_covar + jnp.finfo(dtype).tiny)
    lam, vec = jnp.linalg.eigh(free)
    root = jnp.sqrt(jnp.maximum(lam, 0.0))[..., :, None] * jnp.swapaxes(vec, -1, -2)
    eye = jnp.broadcast_to(floor * jnp.eye(d, dtype=dtype), free.shape)
    r = jnp.linalg.qr(jnp.concatenate([root, eye], axis=-2), mode="r")
    sign = jnp.where(jnp.diagonal(r, axis1=-2, axis2=-1) < 0, -1.0, 1.0).astype(dtype)
    return jnp.where(ok, chol, jnp.swapaxes(r * sign[..., :, None], -1, -2))


def to_unconstrained(params: MixtureParams, reg_covar=0.0) -> UnconstrainedParams:
    r"""Map mixture parameters to the unconstrained space; inverse of ``from_unconstrained``.

    Args:
      params: a ``MixtureParams`` whose covariances are at least ``reg_covar``.
      reg_covar: the floor :math:`\Sigma = \Sigma^{free} + \mathrm{reg\_covar}\,I`
        (the value the fit uses; ``0`` for a plain reparametrisation).

    Returns:
      ``UnconstrainedParams``; every entry finite for finite ``params``.

    Examples:
      >>> import jax.numpy as jnp
      >>> p = MixtureParams.from_covariances(
      ...     jnp.array([0.25, 0.75]), jnp.zeros((2, 1)), jnp.array([1.0, 4.0]),
      ...     "spherical")
      >>> raw = to_unconstrained(p)
      >>> [round(float(a), 4) for a in raw.logits], [round(float(s), 4) for s in raw.scale]
      ([-1.0986], [0.0, 1.3863])
    """
    cov_type, dtype = params.covariance_type, params.means.dtype
    tiny, eps = jnp.finfo(dtype).tiny, jnp.finfo(dtype).eps
    log_w = jnp.maximum(params.log_weights, jnp.log(tiny))  # a zero weight stays finite
    logits = log_w[:-1] - log_w[-1]
    if cov_type in ("full", "tied"):
        d = params.n_features
        free = params.covariances - reg_covar * jnp.eye(d, dtype=dtype)
        free = 0.5 * (free + jnp.swapaxes(free, -1, -2))
        chol = _free_cholesky(free, reg_covar)
        rows, cols, diag = _tril(d)
        vals = chol[..., rows, cols]
        scale = jnp.where(diag, jnp.log(jnp.where(diag, vals, 1.0)), vals)
    elif cov_type in ("diag", "spherical"):
        free = params.covariances - reg_covar
        scale = jnp.log(jnp.maximum(free, eps * reg_covar + tiny))
    else:
        scale = jnp.zeros((0,), dtype)
    return UnconstrainedParams(logits, params.means, scale, cov_type)


def from_unconstrained(raw: UnconstrainedParams, reg_covar=0.0) -> MixtureParams:
    r"""Map unconstrained parameters to a ``MixtureParams`` (differentiable).

    .. math::

       \log \pi = \mathrm{log\_softmax}([\mathrm{logits}, 0]), \qquad
       \Sigma_j = L_j L_j^T + \mathrm{reg\_covar}\, I \;\;\text{or}\;\;
       \exp(\mathrm{scale}_j) + \mathrm{reg\_covar}.

    Args:
      raw: ``UnconstrainedParams``.
      reg_covar: the covariance floor (traced; the value given to ``to_unconstrained``).

    Returns:
      ``MixtureParams`` of the same covariance type.

    Examples:
      >>> import jax.numpy as jnp
      >>> raw = UnconstrainedParams(
      ...     jnp.zeros(1), jnp.zeros((2, 1)), jnp.zeros((2, 1)), "diag")
      >>> p = from_unconstrained(raw, reg_covar=1.0)
      >>> [round(float(w), 3) for w in p.weights], [round(float(c), 3) for c in p.covariances[:, 0]]
      ([0.5, 0.5], [2.0, 2.0])
    """
    cov_type, dtype = raw.covariance_type, raw.means.dtype
    k, d = raw.means.shape
    logits = jnp.concatenate([raw.logits, jnp.zeros((1,), dtype)])
    log_weights = jax.nn.log_softmax(logits)
    if cov_type in ("full", "tied"):
        rows, cols, diag = _tril(d)
        vals = jnp.where(diag, jnp.exp(jnp.where(diag, raw.scale, 0.0)), raw.scale)
        chol = jnp.zeros(raw.scale.shape[:-1] + (d, d), dtype)
        chol = chol.at[..., rows, cols].set(vals)
        cov = chol @ jnp.swapaxes(chol, -1, -2) + reg_covar * jnp.eye(d, dtype=dtype)
        prec_chol = gs.precision_cholesky(cov, cov_type)
    elif cov_type in ("diag", "spherical"):
        prec_chol = gs.precision_cholesky(jnp.exp(raw.scale) + reg_covar, cov_type)
    else:
        prec_chol = jnp.ones((k,), dtype)
    return MixtureParams(log_weights, raw.means, prec_chol, cov_type)


def objective(raw: UnconstrainedParams, x: ArrayLike, reg_covar=0.0) -> Array:
    """The function gradient ascent maximises: ``mean_log_likelihood`` of ``raw``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> raw = UnconstrainedParams(
      ...     jnp.zeros(0), jnp.zeros((1, 1)), jnp.zeros((1, 1)), "diag")
      >>> g = jax.grad(objective)(raw, jnp.array([[1.0], [3.0]]))
      >>> round(float(g.means[0, 0]), 4), round(float(g.scale[0, 0]), 4)
      (2.0, 2.0)
    """
    return mean_log_likelihood(from_unconstrained(raw, reg_covar), x)


class GradientResult(NamedTuple):
    """What ``fit_gradient`` returns; its first five fields are ``FitResult``'s.

    Attributes:
      params: the fitted ``MixtureParams`` (the last accepted step's).
      curve: full-data mean log-likelihood, ``(steps + 1,)``: ``curve[0]`` for the
        initial parameters (EM's own ``curve[0]``), ``curve[t]`` after ``t`` steps,
        NaN after ``n_iter``; never NaN before.
      n_iter: steps taken, rejected ones included.
      converged: a step's gain fell below ``tol`` (always False without ``tol``).
      degenerate: some step was rejected (``n_rejected > 0``).
      n_rejected: steps whose loss, gradient or parameters were not finite; the
        parameters and optimiser state stayed at the last finite point.
      seconds_per_step: wall-clock seconds of the compiled loop (compilation and
        initialisation excluded) divided by ``n_iter``, measured on the host.
      compile_seconds: seconds spent compiling the loop in this call (0 if cached).
    """

    params: MixtureParams
    curve: Array
    n_iter: Array
    converged: Array
    degenerate: Array
    n_rejected: Array
    seconds_per_step: float
    compile_seconds: float

    @property
    def final_log_likelihood(self) -> Array:
        """``curve[n_iter]``: the mean log-likelihood of ``params``."""
        return self.curve[self.n_iter]


class _Spec(NamedTuple):
    """Hashable optimiser settings (static); learning rate and clip norm are traced."""

    optimizer: object  # a name in OPTIMIZERS or an optax.GradientTransformation
    kwargs: tuple
    schedule: str
    schedule_kwargs: tuple
    use_learning_rate: bool
    clip: bool


def _build_optimizer(spec: _Spec, learning_rate, clip_norm, steps: int):
    """The optax transformation, built inside the compiled loop from static settings."""
    if isinstance(spec.optimizer, str):
        rate = None
        if spec.use_learning_rate:
            rate = learning_rate
            if spec.schedule != "constant":
                make, defaults = SCHEDULES[spec.schedule]
                kwargs = {key: steps if val is None else val
                          for key, val in defaults.items()}
                kwargs.update(spec.schedule_kwargs)
                rate = make(learning_rate, **kwargs)
        opt = OPTIMIZERS[spec.optimizer](rate, **dict(spec.kwargs))
    else:
        opt = spec.optimizer
    if spec.clip:
        opt = optax.chain(optax.clip_by_global_norm(clip_norm), opt)
    return optax.with_extra_args_support(opt)


def _all_finite(tree) -> Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree)]))


def _select(ok, new, old):
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


@functools.partial(jax.jit, static_argnames=("steps", "spec", "batch_size"))
def _run(params0, curve0, x, key, learning_rate, reg_covar, tol, clip_norm, *,
         steps: int, spec: _Spec, batch_size: int | None):
    """The whole optimisation as one ``lax.while_loop`` (stops early only on ``tol``)."""
    opt = _build_optimizer(spec, learning_rate, clip_norm, steps)
    loss = lambda raw, xb: -objective(raw, xb, reg_covar)
    full_loss = lambda raw: loss(raw, x)
    raw0 = to_unconstrained(params0, reg_covar)
    state0 = opt.init(raw0)
    if optax.tree.get(state0, "value") is not None:  # a line search stores value and grad
        value_and_grad = optax.value_and_grad_from_state(full_loss)
    else:
        value_and_grad = lambda raw, state: jax.value_and_grad(full_loss)(raw)
    n = x.shape[0]
    n_batches = 1 if batch_size is None else n // batch_size
    if batch_size is None:
        value0, grad0 = value_and_grad(raw0, state=state0)
    else:  # unused: every batch brings its own value and gradient
        value0, grad0 = -curve0, jax.tree.map(jnp.zeros_like, raw0)
    curve = jnp.full((steps + 1,), jnp.nan, x.dtype).at[0].set(curve0)
    perm0 = jnp.arange(n, dtype=jnp.int32)

    def body(c):
        raw, state, value, grad, curve, i, n_acc, n_rej, _, perm = c
        if batch_size is None:
            value_fn = full_loss
        else:
            b = i % n_batches
            epoch_key = jax.random.fold_in(key, i // n_batches)
            perm = jax.lax.cond(
                b == 0,
                lambda: jax.random.permutation(epoch_key, n).astype(jnp.int32),
                lambda: perm,
            )
            xb = x[jax.lax.dynamic_slice_in_dim(perm, b * batch_size, batch_size)]
            value_fn = lambda r: loss(r, xb)
            value, grad = jax.value_and_grad(value_fn)(raw)
        updates, new_state = opt.update(
            grad, state, raw, value=value, grad=grad, value_fn=value_fn
        )
        new_raw = optax.apply_updates(raw, updates)
        if batch_size is None:
            new_value, new_grad = value_and_grad(new_raw, state=new_state)
        else:
            new_value, new_grad = full_loss(new_raw), grad
        ok = jnp.isfinite(new_value) & _all_finite(new_raw) & _all_finite(new_grad)
        new = (new_raw, new_state, new_value, new_grad)
        raw, state, value, grad = _select(ok, new, (raw, state, value, grad))
        curve = curve.at[i + 1].set(jnp.where(ok, -new_value, curve[i]))
        converged = ok & (jnp.abs(curve[i + 1] - curve[i]) < tol)
        n_acc, n_rej = n_acc + ok, n_rej + ~ok
        return raw, state, value, grad, curve, i + 1, n_acc, n_rej, converged, perm

    def cond(c):
        return (c[5] < steps) & ~c[8]

    zero = jnp.int32(0)
    no = jnp.bool_(False)
    start = (raw0, state0, value0, grad0, curve, zero, zero, zero, no, perm0)
    out = jax.lax.while_loop(cond, body, start)
    raw, _, _, _, curve, n_iter, n_acc, n_rej, converged, _ = out
    params = _select(n_acc > 0, from_unconstrained(raw, reg_covar), params0)
    return params, curve, n_iter, converged, n_rej


_COMPILED: OrderedDict = OrderedDict()
_COMPILED_MAX = 32


def _compiled_run(args: tuple, statics: dict):
    """AOT-compiled ``_run`` for these shapes and settings: (executable, compile seconds).

    Compiling ahead of time keeps compilation out of ``seconds_per_step``; the cache
    means a second call with new traced values (learning rate, ``reg_covar``, ``tol``,
    data of the same shape) does not compile again.
    """
    leaves, tree = jax.tree.flatten(args)
    avals = tuple((a.shape, a.dtype, getattr(a, "weak_type", False)) for a in leaves)
    sig = (tree, avals, tuple(sorted(statics.items())))
    if sig in _COMPILED:
        _COMPILED.move_to_end(sig)
        return _COMPILED[sig], 0.0
    start = time.perf_counter()
    compiled = _run.lower(*args, **statics).compile()
    seconds = time.perf_counter() - start
    _COMPILED[sig] = compiled
    while len(_COMPILED) > _COMPILED_MAX:
        _COMPILED.popitem(last=False)
    return compiled, seconds


def _positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"Invalid value for {name!r}: {value!r}; it must be a real number > 0"
        )
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"Invalid value for {name!r}: {value}; it must be a finite number > 0"
        )
    return float(value)


def _checked_kwargs(fn, given: dict, name: str, exclude=("learning_rate", "init_value")):
    """``given`` as a sorted, hashable tuple, with unknown names rejected."""
    allowed = [p for p in inspect.signature(fn).parameters if p not in exclude]
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"Unknown arguments for {name}: {unknown}; it accepts {allowed}")
    items = tuple(sorted(given.items()))
    try:
        hash(items)
    except TypeError as err:
        raise ValueError(
            f"Arguments for {name} must be hashable (they are compiled in)"
        ) from err
    return items


def _make_spec(
    optimizer, learning_rate, schedule, schedule_kwargs, clip_norm, optimizer_kwargs
):
    """Validate the optimiser settings; return (spec, learning rate or None)."""
    schedule_kwargs = dict(schedule_kwargs or {})
    v.check_choice(schedule, "schedule", tuple(SCHEDULES))
    if isinstance(optimizer, optax.GradientTransformation):
        given = (learning_rate is not None, schedule != "constant", schedule_kwargs,
                 optimizer_kwargs)
        if any(given):
            raise ValueError(
                "learning_rate, schedule and optimizer arguments cannot be given with an "
                "optax.GradientTransformation: build them into the transformation"
            )
        return _Spec(optimizer, (), "constant", (), False, clip_norm is not None), None
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise ValueError(
            f"Invalid value for 'optimizer': {optimizer!r}; it must be one of "
            f"{tuple(OPTIMIZERS)} or an optax.GradientTransformation"
        )
    kwargs = _checked_kwargs(
        OPTIMIZERS[optimizer], optimizer_kwargs, f"optimizer {optimizer!r}"
    )
    if learning_rate is None and optimizer != "lbfgs":
        learning_rate = DEFAULT_LEARNING_RATE
    if learning_rate is not None:
        learning_rate = _positive(learning_rate, "learning_rate")
    elif schedule != "constant":
        raise ValueError(
            "A schedule needs a learning_rate (lbfgs without one uses its line search)"
        )
    sched = ()
    if schedule != "constant":
        sched = _checked_kwargs(
            SCHEDULES[schedule][0], schedule_kwargs, f"schedule {schedule!r}"
        )
    elif schedule_kwargs:
        raise ValueError("schedule_kwargs need a schedule other than 'constant'")
    spec = _Spec(
        optimizer, kwargs, schedule, sched,
        use_learning_rate=learning_rate is not None, clip=clip_norm is not None,
    )
    return spec, learning_rate


def fit_gradient(
    x: ArrayLike,
    k: int | None = None,
    *,
    covariance_type: str = "full",
    init: str = "kmeans++",
    optimizer="adam",
    learning_rate: float | None = None,
    steps: int = 500,
    tol: float | None = None,
    reg_covar: float = 1e-6,
    seed=0,
    init_params=None,
    batch_size: int | None = None,
    schedule: str = "constant",
    schedule_kwargs: dict | None = None,
    clip_norm: float | None = None,
    **optimizer_kwargs,
) -> GradientResult:
    r"""Fit a Gaussian mixture by gradient ascent on the mean log-likelihood (optax).

    Every step maximises :math:`\ell(\theta) = \frac1n \sum_i \log \sum_j \pi_j
    f_j(x_i)` (``mean_log_likelihood``) over the unconstrained parameters of the
    module table, with covariances floored at ``reg_covar`` as in EM. The start is
    EM's (``fit_em`` with the same ``k``, ``covariance_type``, ``init``, ``seed``,
    ``reg_covar``, ``init_params``) and the whole run is one compiled
    ``lax.while_loop``. Compiled in: the shapes, ``covariance_type``, ``steps``,
    ``batch_size`` and the optimiser's name, keyword arguments and schedule. Traced
    (no new compilation): the data, ``learning_rate``, ``reg_covar``, ``tol``,
    ``clip_norm`` and ``seed``. A step whose loss, gradient or parameters are not
    finite is rejected (parameters and optimiser state stay) and counted.

    Args:
      x: data, (n, d).
      k: number of components (may be omitted when ``init_params`` is a
        ``MixtureParams``).
      covariance_type: ``"full"``, ``"tied"``, ``"diag"``, ``"spherical"`` or
        ``"identity"``.
      init: initialisation method, as ``fit_em``.
      optimizer: ``"adam"``, ``"adamw"``, ``"sgd"``, ``"rmsprop"``, ``"adagrad"``,
        ``"lbfgs"`` (full batch, zoom line search), or an
        ``optax.GradientTransformation`` (then ``learning_rate``, ``schedule`` and
        ``**optimizer_kwargs`` must not be given). Build a transformation once
        and reuse it: it is compiled in and hashes by identity.
      learning_rate: the step size (> 0). Default ``1e-2``; for ``"lbfgs"`` the
        default ``None`` lets the line search choose the step.
      steps: number of optimiser steps (>= 1); ``curve`` has ``steps + 1`` entries.
      tol: stop when a step changes the mean log-likelihood by less than ``tol``
        (``None``: run all ``steps``).
      reg_covar: non-negative covariance floor, as in ``fit_em``.
      seed: an integer or a JAX key: the initialisation uses EM's key, the batch
        shuffling a separate key derived from it.
      init_params: as ``fit_em``.
      batch_size: rows per mini-batch (1 <= batch_size <= n); the rows are
        reshuffled every epoch of ``n // batch_size`` steps, with the key
        ``fold_in(shuffle_key, epoch)``. ``None``: full batch. The curve is still
        evaluated on the full data after every step (and timed with it).
      schedule: ``"constant"``, ``"cosine"`` (``optax.cosine_decay_schedule`` to 0
        over ``steps``) or ``"exponential"`` (``optax.exponential_decay`` to 1% over
        ``steps``).
      schedule_kwargs: overrides for the schedule (e.g. ``{"alpha": 0.1}``,
        ``{"decay_rate": 0.5}``).
      clip_norm: clip the gradient to this global norm first
        (``optax.clip_by_global_norm``).
      **optimizer_kwargs: hyperparameters of the named optax optimiser
        (``momentum=0.9`` for ``"sgd"``, ``b1``, ``weight_decay``, ``memory_size``, ...).

    Returns:
      ``GradientResult`` (``params``, ``curve``, ``n_iter``, ``converged``,
      ``degenerate`` as ``FitResult``, plus ``n_rejected``, ``seconds_per_step``,
      ``compile_seconds``).

    Raises:
      ValueError: bad input, named (non-finite data, unknown optimiser or schedule,
        non-positive learning rate, steps or clip norm, k < 1, a batch size outside
        [1, n], lbfgs with mini-batches); ``DegenerateCovarianceError`` when EM's
        initial parameters are already degenerate.

    Examples:
      >>> import numpy as np
      >>> rng = np.random.default_rng(0)
      >>> x = np.concatenate([rng.normal(m, 1.0, (100, 2)) for m in (-5, 5)])
      >>> res = fit_gradient(x, 2, covariance_type="diag", init="random",
      ...                    learning_rate=0.1, steps=200)
      >>> res.curve.shape, int(res.n_iter), int(res.n_rejected)
      ((201,), 200, 0)
      >>> round(float(res.curve[0]), 2), round(float(res.curve[200]), 2)
      (-6.07, -3.51)
      >>> em = fit_em(x, 2, covariance_type="diag", init="random")  # the same start
      >>> float(em.curve[0]) == float(res.curve[0]), round(float(em.final_log_likelihood), 2)
      (True, -3.51)
      >>> sorted(round(float(m)) for m in res.params.means[:, 0])
      [-5, 5]
    """
    x = v.check_data(x)
    n = x.shape[0]
    spec, learning_rate = _make_spec(
        optimizer, learning_rate, schedule, schedule_kwargs, clip_norm, optimizer_kwargs
    )
    steps = v.check_int(steps, "steps", 1)
    tol = -1.0 if tol is None else v.check_nonnegative(tol, "tol")
    reg_covar = v.check_nonnegative(reg_covar, "reg_covar")
    if clip_norm is not None:
        clip_norm = _positive(clip_norm, "clip_norm")
    if batch_size is not None:
        batch_size = v.check_int(batch_size, "batch_size", 1)
        if batch_size > n:
            raise ValueError(
                f"Invalid value for 'batch_size': {batch_size}; it must be <= "
                f"n_samples = {n}"
            )
        if spec.optimizer == "lbfgs":
            raise ValueError("optimizer 'lbfgs' is full-batch only: its line search needs "
                             "the exact objective; leave batch_size=None")
    start = fit_em(
        x, k, covariance_type=covariance_type, init=init, max_iter=0, tol=0.0,
        reg_covar=reg_covar, n_init=1, seed=seed, init_params=init_params,
    )
    dtype = x.dtype
    scalar = lambda val: jnp.asarray(np.nan if val is None else val, dtype)
    args = (start.params, start.curve[0], x, _keys(seed, 2)[1], scalar(learning_rate),
            scalar(reg_covar), scalar(tol), scalar(clip_norm))
    compiled, compile_seconds = _compiled_run(
        args, {"steps": steps, "spec": spec, "batch_size": batch_size}
    )
    begin = time.perf_counter()
    params, curve, n_iter, converged, n_rejected = jax.block_until_ready(compiled(*args))
    seconds = time.perf_counter() - begin
    return GradientResult(
        params, curve, n_iter, converged, n_rejected > 0, n_rejected,
        seconds / max(int(n_iter), 1), compile_seconds,
    )
