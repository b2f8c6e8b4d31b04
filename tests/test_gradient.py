"""Gradient ascent (mogjax.gradient, mogjax.unconstrained, mogjax.optimizers):
parametrisation, gradients, EM agreement, stopping, robustness.

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

from mogjax.datasets import load_iris, load_old_faithful, make_mixture, make_mixture_params
from mogjax.em import FitResult, fit_em
from mogjax.gradient import GradientResult, fit_gradient, objective
from mogjax.mixture import MixtureParams, mean_log_likelihood
from mogjax.unconstrained import UnconstrainedParams, from_unconstrained, to_unconstrained

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
def test_gradient_equals_autodiff_of_mean_log_likelihood(covariance_type, blobs):
    """The E-step gradient (custom_jvp) is JAX's plain autodiff of the objective."""
    x = jnp.asarray(blobs[0])
    reg = 1e-3
    raw = random_raw(4, covariance_type, 3, 2)
    plain = lambda r: mean_log_likelihood(from_unconstrained(r, reg), x)
    value, grad = jax.jit(jax.value_and_grad(lambda r: objective(r, x, reg)))(raw)
    ref_value, ref_grad = jax.jit(jax.value_and_grad(plain))(raw)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(ravel_pytree(grad)[0], ravel_pytree(ref_grad)[0], rtol=1e-10,
                               atol=1e-10)


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


def standardized(x):
    x = np.asarray(x, np.float64)
    return (x - x.mean(axis=0)) / x.std(axis=0)


@pytest.fixture(scope="module")
def faithful_em():
    x = standardized(load_old_faithful())
    return x, fit_em(x, 2, covariance_type="full", tol=1e-12, max_iter=2000)


@pytest.mark.parametrize("steps", [30, 300, 3000])
def test_lbfgs_never_walks_away_from_the_optimum(faithful_em, steps):
    """Given more steps L-BFGS used to leave the optimum (down to -19 at 300 steps):
    steps down are rejected and the best point is returned, for every seed."""
    x, em = faithful_em
    target = float(em.final_log_likelihood)
    for seed in range(6):
        res = fit_gradient(x, 2, optimizer="lbfgs", steps=steps, seed=seed)
        assert abs(float(res.final_log_likelihood) - target) < 1e-6, (seed, res.stop_reason)
        curve = np.asarray(res.curve[: int(res.n_iter) + 1])
        assert curve[-1] == curve.max()  # a full-batch curve ends at its maximum
        np.testing.assert_allclose(mean_log_likelihood(res.params, x), curve[-1], atol=1e-12)


def reach_em(x, k, covariance_type, optimizer, options):
    """Fit EM (to 1e-10) and the optimiser from EM's start; return both results."""
    em = fit_em(x, k, covariance_type=covariance_type, tol=1e-10, max_iter=3000)
    res = fit_gradient(x, k, covariance_type=covariance_type, optimizer=optimizer, tol=1e-10,
                       **options)
    assert float(res.curve[0]) == float(em.curve[0])  # EM's start, bit for bit
    assert abs(float(res.final_log_likelihood) - float(em.final_log_likelihood)) < 1e-3
    # never below where it started, measured on the returned parameters themselves
    assert float(mean_log_likelihood(res.params, x)) >= float(res.curve[0]) - 1e-12
    assert int(res.n_rejected) == 0 or optimizer == "lbfgs"
    assert res.stop_reason in ("tol", "grad_norm")
    return em, res


OPTIMIZERS = [("adam", {"learning_rate": 0.05, "steps": 3000}), ("lbfgs", {"steps": 300})]


@pytest.mark.parametrize("optimizer, options", OPTIMIZERS)
def test_old_faithful_reaches_em(faithful_em, optimizer, options):
    x, _ = faithful_em
    em, res = reach_em(x, 2, "full", optimizer, options)
    # the same optimum, not merely the same height: same start, no label switch
    np.testing.assert_allclose(res.params.means, em.params.means, atol=1e-3)


@pytest.mark.parametrize("covariance_type", ALL_TYPES)
@pytest.mark.parametrize("optimizer, options", OPTIMIZERS)
def test_iris_reaches_em(covariance_type, optimizer, options):
    reach_em(load_iris()[0], 3, covariance_type, optimizer, options)


@pytest.mark.parametrize("optimizer, options", OPTIMIZERS)
def test_synthetic_8d_reaches_em(optimizer, options):
    x, _, _ = make_mixture(0, 1000, 4, 8, separation=3.0)
    reach_em(x, 4, "full", optimizer, options)


# --- stopping and options ----------------------------------------------------------------


def test_tol_and_patience_stop_by_the_shared_rule(blobs):
    """Stopped by tol: the `patience` steps before the last each gained < tol, and the
    one before those did not (the rule of mogjax.results, as EM's)."""
    x = blobs[0]
    for patience in (1, 3):
        res = fit_gradient(x, 3, covariance_type="spherical", init="random",
                           learning_rate=0.05, steps=STEPS * 30, tol=1e-4, patience=patience)
        n = int(res.n_iter)
        assert res.stop_reason == "tol" and bool(res.converged) and n < STEPS * 30
        gains = np.abs(np.diff(np.asarray(res.curve[:n])))  # steps 1 .. n-1
        assert np.all(gains[-patience:] < 1e-4) and gains[-patience - 1] >= 1e-4
        assert np.all(np.isnan(np.asarray(res.curve[n + 1:])))


def test_em_stops_by_the_same_rule(blobs):
    x = blobs[0]
    for patience in (1, 4):
        em = fit_em(x, 3, covariance_type="spherical", init="random", tol=1e-4,
                    patience=patience)
        n = int(em.n_iter)
        gains = np.abs(np.diff(np.asarray(em.curve[:n])))
        assert bool(em.converged) and np.all(gains[-patience:] < 1e-4)
        assert gains[-patience - 1] >= 1e-4


def test_gradient_norm_stops(faithful_em):
    x, _ = faithful_em
    res = fit_gradient(x, 2, optimizer="lbfgs", steps=300, grad_tol=1e-6)
    assert res.stop_reason == "grad_norm" and bool(res.converged) and int(res.n_iter) < 300


def test_mini_batches_improve_full_data_likelihood(blobs):
    x = blobs[0]
    kwargs = dict(covariance_type="diag", init="random", learning_rate=0.05, steps=150,
                  batch_size=32)
    res = fit_gradient(x, 3, **kwargs)
    curve = np.asarray(res.curve)
    assert np.all(np.isfinite(curve))
    assert curve[-1] > curve[0] + 0.5
    # the full objective is evaluated once an epoch (300 // 32 = 9 steps) and held between
    assert curve[1] == curve[0] and curve[9] != curve[8] and curve[10] == curve[9]
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
    (optax.inject_hyperparams(optax.adam)(learning_rate=1.0), {"learning_rate": 1e-2}),
])
def test_optimizers_and_schedules_climb(blobs, optimizer, options):
    x = blobs[0]
    res = fit_gradient(x, 3, covariance_type="spherical", init="random", optimizer=optimizer,
                       steps=50, **options)
    curve = np.asarray(res.curve)
    assert int(res.n_iter) == 50 and int(res.n_rejected) == 0
    assert curve[-1] > curve[0]


def test_huge_learning_rate_rejects_steps_without_nan(blobs):
    x = blobs[0]
    res = fit_gradient(x, 3, covariance_type="full", learning_rate=1e4, steps=STEPS)
    assert int(res.n_rejected) > 0 and bool(res.degenerate)
    assert int(res.n_iter) == STEPS
    assert np.all(np.isfinite(np.asarray(res.curve)))
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(res.params))
    start = fit_em(x, 3, covariance_type="full", max_iter=0).params
    if int(res.best_iter) == 0:  # nothing better accepted: exactly the start
        assert all(bool(jnp.all(a == b)) for a, b in zip(jax.tree.leaves(res.params),
                                                         jax.tree.leaves(start)))


def test_result_is_fitresult_compatible(blobs):
    assert GradientResult._fields[: len(FitResult._fields)] == FitResult._fields
    x = blobs[0]
    res = fit_gradient(x, 3, covariance_type="full", learning_rate=1e-3, steps=STEPS)
    assert res.stop_reason == "steps" and not bool(res.converged)
    assert 0 <= int(res.best_iter) <= int(res.n_iter)


def test_new_traced_values_do_not_recompile(blobs, caplog):
    x = blobs[0]
    kwargs = dict(covariance_type="full", steps=STEPS)
    fit_gradient(x, 3, learning_rate=1e-3, b1=0.8, **kwargs)  # warm (compiled now)
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        caplog.clear()
        fit_gradient(x, 3, learning_rate=3e-3, b1=0.7, reg_covar=1e-5, tol=1e-9, patience=2,
                     grad_tol=1e-9, seed=4, **kwargs)
    compiles = [r for r in caplog.records if "Finished XLA compilation" in r.getMessage()]
    assert compiles == []


def test_progress_is_reported(blobs, caplog):
    with caplog.at_level(logging.INFO, logger="mogjax.progress"):
        fit_gradient(blobs[0], 3, covariance_type="spherical", steps=STEPS, verbose=5)
    lines = [r.getMessage() for r in caplog.records if r.name == "mogjax.progress"]
    assert [line.split(":")[0] for line in lines] == ["gradient step 5", "gradient step 10"]


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"optimizer": "adamx"}, "optimizer"),
    ({"optimizer": "chain"}, "optimizer"),
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
    ({"optimizer": optax.sgd(0.1), "momentum": 0.1}, "GradientTransformation"),
    ({"patience": 0}, "patience"),
    ({"grad_tol": -1.0}, "grad_tol"),
    ({"eval_every": 0}, "eval_every"),
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


@pytest.mark.parametrize("optimizer, options", OPTIMIZERS)
def test_float32_same_start_and_optimum(faithful_em, optimizer, options):
    x = faithful_em[0].astype(np.float32)
    em = fit_em(x, 2, tol=1e-6, max_iter=1000)
    res = fit_gradient(x, 2, optimizer=optimizer, tol=1e-6, **options)
    assert res.curve.dtype == np.float32
    assert float(res.curve[0]) == float(em.curve[0])
    assert abs(float(res.final_log_likelihood) - float(em.final_log_likelihood)) < 1e-3
    assert float(mean_log_likelihood(res.params, x)) >= float(res.curve[0]) - 1e-5
