"""Gradient ascent (mogjax.gradient): parametrisation, gradients, EM agreement, robustness.

Compilation dominates the cost here, so the tests share programs: one data set
(``blobs``), ``steps=STEPS`` wherever the number does not matter, and traced values
(learning rate, ``reg_covar``, ``tol``) varied rather than compiled-in ones.
"""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from mogjax.datasets import load_old_faithful, make_mixture_params
from mogjax.em import FitResult, fit_em
from mogjax.gradient import (
    GradientResult,
    UnconstrainedParams,
    fit_gradient,
    from_unconstrained,
    objective,
    to_unconstrained,
)
from mogjax.mixture import MixtureParams, mean_log_likelihood

ALL_TYPES = ("full", "tied", "diag", "spherical", "identity")
STEPS = 10
FIXED_POINT_ITERS = 300


def random_raw(seed: int, covariance_type: str, k: int, d: int) -> UnconstrainedParams:
    """Unconstrained parameters with every entry drawn at random (any raw is valid)."""
    rng = np.random.default_rng(seed)
    tri = d * (d + 1) // 2
    shape = {"full": (k, tri), "tied": (tri,), "diag": (k, d), "spherical": (k,),
             "identity": (0,)}[covariance_type]
    return UnconstrainedParams(
        jnp.asarray(rng.normal(size=k - 1)), jnp.asarray(rng.normal(size=(k, d))),
        jnp.asarray(0.5 * rng.normal(size=shape)), covariance_type,
    )


def assert_params_close(a: MixtureParams, b: MixtureParams, rtol=1e-9, atol=1e-12):
    assert a.covariance_type == b.covariance_type
    for name in ("log_weights", "means", "prec_chol"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=rtol, atol=atol,
                                   err_msg=name)


@jax.jit
def max_abs_gradient(params, x, reg_covar):
    grad = jax.grad(objective)(to_unconstrained(params, reg_covar), x, reg_covar)
    return jnp.max(jnp.abs(ravel_pytree(grad)[0]))


# --- the parametrisation ---------------------------------------------------------------


@pytest.mark.parametrize("covariance_type", ALL_TYPES)
@pytest.mark.parametrize("reg_covar", [0.0, 1e-2])
def test_round_trips(covariance_type, reg_covar):
    params = make_mixture_params(1, 3, 3, covariance_type=covariance_type)
    raw = to_unconstrained(params, reg_covar)
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(raw))
    assert_params_close(from_unconstrained(raw, reg_covar), params)

    raw = random_raw(2, covariance_type, 3, 3)
    back = to_unconstrained(from_unconstrained(raw, reg_covar), reg_covar)
    for name in ("logits", "means", "scale"):
        np.testing.assert_allclose(getattr(back, name), getattr(raw, name), rtol=1e-9,
                                   atol=1e-11, err_msg=name)


def test_raw_shapes_and_floor():
    """Shapes follow the module table; every covariance is at least reg_covar."""
    k, d, reg = 3, 2, 0.5
    for cov_type, shape in [("full", (k, 3)), ("tied", (3,)), ("diag", (k, d)),
                            ("spherical", (k,)), ("identity", (0,))]:
        raw = random_raw(0, cov_type, k, d)
        assert raw.scale.shape == shape
        p = from_unconstrained(raw, reg)
        assert p.covariance_type == cov_type
        np.testing.assert_allclose(jnp.sum(p.weights), 1.0, rtol=1e-12)
        cov = np.asarray(p.covariances)
        low = np.linalg.eigvalsh(cov).min() if cov_type in ("full", "tied") else cov.min()
        assert low >= reg * (1 - 1e-12) or cov_type == "identity"


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_covariance_on_the_floor_maps_to_finite_raw(covariance_type):
    """A collapsed component (Sigma = reg I, or rank-deficient scatter + reg I) has a
    singular free part: it maps to finite raw values and back to within rounding."""
    reg, d = 1e-3, 3
    u = np.array([1.0, 2.0, -1.0])
    cov = {
        "full": np.stack([np.outer(u, u) + reg * np.eye(d), reg * np.eye(d)]),
        "tied": np.outer(u, u) + reg * np.eye(d),
        "diag": np.array([[1.0, reg, 2.0], [reg, reg, reg]]),
        "spherical": np.array([reg, 1.0]),
    }[covariance_type]
    params = MixtureParams.from_covariances(np.array([0.4, 0.6]), np.zeros((2, d)), cov,
                                            covariance_type)
    raw = to_unconstrained(params, reg)
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(raw))
    back = from_unconstrained(raw, reg)
    np.testing.assert_allclose(back.covariances, params.covariances, rtol=1e-9, atol=1e-12)


# --- the gradient ----------------------------------------------------------------------


@pytest.mark.parametrize("covariance_type", ALL_TYPES)
def test_gradient_matches_central_differences(covariance_type, blobs):
    x = blobs[0][:60]
    reg = 1e-3
    flat, unravel = ravel_pytree(random_raw(3, covariance_type, 3, 2))
    h = 1e-6

    @jax.jit
    def both(theta):
        f = lambda t: objective(unravel(t), x, reg)
        steps = h * jnp.eye(theta.size, dtype=theta.dtype)
        central = (jax.vmap(f)(theta + steps) - jax.vmap(f)(theta - steps)) / (2 * h)
        return jax.grad(f)(theta), central

    grad, numeric = both(flat)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("covariance_type", ALL_TYPES)
def test_em_fixed_point_is_stationary(covariance_type, blobs):
    """At EM's fixed point the gradient vanishes (to O(reg_covar): EM adds the floor to
    the scatter, gradient ascent floors it) and Adam does not move the likelihood."""
    x = blobs[0]
    grads = {}
    for reg in (0.0, 1e-6):
        em = fit_em(x, 3, covariance_type=covariance_type, tol=0.0, max_iter=FIXED_POINT_ITERS,
                    reg_covar=reg)
        grads[reg] = float(max_abs_gradient(em.params, x, reg))
    assert grads[0.0] < 1e-10
    assert grads[1e-6] < 1e-5
    if covariance_type not in ("full", "diag"):
        return  # the optimiser run below compiles one more program per type

    res = fit_gradient(x, covariance_type=covariance_type, init_params=em.params,
                       learning_rate=1e-4, steps=STEPS, reg_covar=1e-6)
    np.testing.assert_allclose(res.curve[0], em.curve[em.n_iter], rtol=0, atol=1e-12)
    assert np.max(np.abs(np.asarray(res.curve) - float(res.curve[0]))) < 1e-6


@pytest.mark.parametrize("covariance_type", ALL_TYPES)
def test_same_start_as_em(covariance_type, blobs):
    x = blobs[0]
    em = fit_em(x, 3, covariance_type=covariance_type, tol=1e-3, max_iter=FIXED_POINT_ITERS)
    res = fit_gradient(x, 3, covariance_type=covariance_type, steps=STEPS)
    assert float(res.curve[0]) == float(em.curve[0])  # exactly
    start = fit_em(x, 3, covariance_type=covariance_type, max_iter=0).params
    # the objective at the shared start agrees with EM's evaluation to rounding
    np.testing.assert_allclose(mean_log_likelihood(start, x), em.curve[0], rtol=1e-13)
    assert res.curve.shape == (STEPS + 1,)
    assert not np.any(np.isnan(np.asarray(res.curve[: int(res.n_iter) + 1])))


# --- agreement with EM on real data --------------------------------------------------------


@pytest.fixture(scope="module")
def faithful_em():
    x = load_old_faithful()
    return x, fit_em(x, 2, covariance_type="full", tol=1e-10, max_iter=2000)


@pytest.mark.parametrize("optimizer, options", [
    ("adam", {"learning_rate": 0.03, "steps": 300}),
    ("lbfgs", {"steps": 60}),
])
def test_old_faithful_reaches_em(faithful_em, optimizer, options):
    x, em = faithful_em
    assert bool(em.converged)
    target = float(em.curve[em.n_iter])
    res = fit_gradient(x, 2, covariance_type="full", optimizer=optimizer, **options)
    assert float(res.curve[0]) == float(em.curve[0])
    assert abs(float(res.final_log_likelihood) - target) < 1e-3
    assert int(res.n_rejected) == 0
    # the same optimum, not merely the same height: same start, no label switch
    np.testing.assert_allclose(res.params.means, em.params.means, atol=1e-2)


# --- options ---------------------------------------------------------------------------------


def test_mini_batches_improve_full_data_likelihood(blobs):
    x = blobs[0]
    kwargs = dict(covariance_type="diag", init="random", learning_rate=0.05, steps=150,
                  batch_size=32)
    res = fit_gradient(x, 3, **kwargs)
    curve = np.asarray(res.curve)
    assert np.all(np.isfinite(curve))
    assert curve[-1] > curve[0] + 0.5
    again = fit_gradient(x, 3, **kwargs)
    np.testing.assert_array_equal(again.curve, res.curve)  # explicit keys: reproducible
    other = fit_gradient(x, 3, **kwargs, seed=1)
    assert not np.array_equal(np.asarray(other.curve), curve)


@pytest.mark.parametrize("optimizer, options", [
    ("adamw", {"weight_decay": 1e-4, "schedule": "cosine", "schedule_kwargs": {"alpha": 0.1}}),
    ("sgd", {"momentum": 0.9, "schedule": "exponential", "learning_rate": 0.01}),
    ("rmsprop", {"learning_rate": 0.01, "clip_norm": 1.0}),
    ("adagrad", {"learning_rate": 0.1}),
    (optax.adam(1e-2), {}),
])
def test_optimizers_and_schedules_climb(blobs, optimizer, options):
    x = blobs[0]
    res = fit_gradient(x, 3, covariance_type="spherical", init="random", optimizer=optimizer,
                       steps=50, **options)
    curve = np.asarray(res.curve)
    assert int(res.n_iter) == 50 and int(res.n_rejected) == 0
    assert curve[-1] > curve[0]


def test_tol_stops_and_reports_convergence(blobs):
    x = blobs[0]
    res = fit_gradient(x, 3, covariance_type="spherical", init="random", optimizer="lbfgs",
                       steps=50, tol=1e-6)
    n = int(res.n_iter)
    assert bool(res.converged) and n < 50
    assert abs(float(res.curve[n] - res.curve[n - 1])) < 1e-6
    assert np.all(np.isnan(np.asarray(res.curve[n + 1:])))
    assert float(res.final_log_likelihood) == float(res.curve[n])


def test_huge_learning_rate_rejects_steps_without_nan(blobs):
    x = blobs[0]
    res = fit_gradient(x, 3, covariance_type="full", learning_rate=1e4, steps=STEPS)
    assert int(res.n_rejected) > 0 and bool(res.degenerate)
    assert int(res.n_iter) == STEPS
    assert np.all(np.isfinite(np.asarray(res.curve)))
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(res.params))
    start = fit_em(x, 3, covariance_type="full", max_iter=0).params
    if int(res.n_rejected) == STEPS:  # nothing accepted: exactly the start
        assert all(bool(jnp.all(a == b)) for a, b in zip(jax.tree.leaves(res.params),
                                                         jax.tree.leaves(start)))


def test_result_is_fitresult_compatible_and_timed(blobs):
    assert GradientResult._fields[: len(FitResult._fields)] == FitResult._fields
    x = blobs[0]
    res = fit_gradient(x, 3, covariance_type="full", learning_rate=1e-3, steps=STEPS)
    assert np.isfinite(res.seconds_per_step) and res.seconds_per_step > 0
    assert res.compile_seconds == 0.0  # this program was compiled by an earlier call


def test_new_traced_values_do_not_recompile(blobs, caplog):
    x = blobs[0]
    kwargs = dict(covariance_type="full", steps=STEPS)
    fit_gradient(x, 3, learning_rate=1e-3, **kwargs)  # warm (compiled before, or now)
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        caplog.clear()
        res = fit_gradient(x, 3, learning_rate=3e-3, reg_covar=1e-5, tol=1e-9, seed=4,
                           **kwargs)
    compiles = [r for r in caplog.records if "Finished XLA compilation" in r.getMessage()]
    assert compiles == [] and res.compile_seconds == 0.0


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"optimizer": "adamax"}, "optimizer"),
    ({"optimizer": 3}, "optimizer"),
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"learning_rate": -1.0}, "learning_rate"),
    ({"learning_rate": float("nan")}, "learning_rate"),
    ({"steps": 0}, "steps"),
    ({"steps": -5}, "steps"),
    ({"k": 0}, "k"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 301}, "batch_size"),
    ({"optimizer": "lbfgs", "batch_size": 10}, "lbfgs"),
    ({"schedule": "linear"}, "schedule"),
    ({"schedule_kwargs": {"alpha": 0.1}}, "schedule_kwargs"),
    ({"schedule": "cosine", "schedule_kwargs": {"gamma": 1}}, "gamma"),
    ({"momentum": 0.9}, "momentum"),  # adam has no momentum argument
    ({"clip_norm": 0.0}, "clip_norm"),
    ({"tol": -1.0}, "tol"),
    ({"reg_covar": -1e-6}, "reg_covar"),
    ({"covariance_type": "banded"}, "covariance_type"),
    ({"init": "nearest"}, "init"),
    ({"optimizer": optax.sgd(0.1), "learning_rate": 0.1}, "GradientTransformation"),
])
def test_bad_input_is_named(blobs, kwargs, match):
    kwargs = {"k": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        fit_gradient(blobs[0], **kwargs)


def test_nan_data_is_named(blobs):
    x = np.array(blobs[0])
    x[5, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_gradient(x, 3)
