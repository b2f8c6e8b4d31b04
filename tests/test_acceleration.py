"""Accelerated EM (mogjax.accelerated): the same start and the same rule as EM, an
optimum at least EM's, honest curves and honest E-step counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import mogjax as mg
from mogjax.accelerated import ECG, Daarem, OverRelaxed, Squarem
from mogjax.em import em_loop
from mogjax.em_map import EMMap, accelerated_loop, coordinates_of
from mogjax.estep import e_step_data, stats_of

METHODS = ("squarem", "daarem", "overrelaxed", "ecg")
SETTINGS = {"squarem": Squarem(), "daarem": Daarem(), "overrelaxed": OverRelaxed(),
            "ecg": ECG()}
TOL, MAX_ITER, REG = 1e-10, 3000, 1e-6


def _slow_data(n=2000):
    """Two unit Gaussians 2 apart in 1-D: heavy overlap, EM's rate above 0.99."""
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(-1.0, 1.0, n // 2), rng.normal(1.0, 1.0, n // 2)])[:, None]


def _counted(x, covariance_type):
    """The fit's E-step, and a wrapper that counts its executions on the host."""
    data, center, cached = e_step_data(jnp.asarray(x), covariance_type)
    calls = []

    def e_step_fn(p):
        stats = stats_of(p, data, center, None, cached)
        jax.debug.callback(lambda n: calls.append(1), stats.n)
        return stats

    return e_step_fn, calls


@pytest.fixture(scope="module")
def runs():
    """EM and every method from EM's start on the slow data, each E-step counted by
    its own wrapper, all in one compiled program: {name: (result, counted E-steps)}."""
    x = _slow_data()
    start = mg.fit_em(x, 2, max_iter=0, seed=0).params
    counters = {name: _counted(x, "full") for name in (None, *METHODS)}

    def all_runs(p):
        out = {"em": em_loop(counters[None][0], p, TOL, REG, MAX_ITER, False)}
        for name in METHODS:
            out[name] = accelerated_loop(SETTINGS[name], counters[name][0], p, TOL, REG,
                                         MAX_ITER)
        return out

    results = jax.block_until_ready(jax.jit(all_runs)(start))
    out = {name: (results[name or "em"], len(counters[name][1])) for name in counters}
    out["x"] = x
    return out


@pytest.mark.parametrize("name", METHODS)
def test_ends_at_em_optimum_or_higher_from_the_same_start(runs, name):
    em, _ = runs[None]
    res, _ = runs[name]
    assert bool(res.converged) and not bool(res.degenerate)
    assert float(res.curve[0]) == float(em.curve[0])
    assert float(res.final_log_likelihood) >= float(em.final_log_likelihood) - 1e-9
    assert int(res.n_esteps) < int(em.n_esteps)  # the slow case: every method gains


@pytest.mark.parametrize("name", [None, *METHODS])
def test_final_curve_value_is_that_of_the_returned_params(runs, name):
    res, _ = runs[name]
    value = mg.mean_log_likelihood(res.params, runs["x"])
    np.testing.assert_allclose(float(res.final_log_likelihood), float(value), rtol=1e-12)
    curve = np.asarray(res.curve)
    n = int(res.n_iter)
    assert np.all(np.isfinite(curve[: n + 1])) and np.all(np.isnan(curve[n + 1:]))
    assert float(res.final_log_likelihood) == np.max(curve[: n + 1])  # the best visited


@pytest.mark.parametrize("name", [None, *METHODS])
def test_n_esteps_counts_every_e_step(runs, name):
    res, counted = runs[name]
    assert int(res.n_esteps) == counted
    if name is None:
        assert counted == int(res.n_iter) + 1


def test_a_bad_extrapolation_is_rejected_and_counted():
    """Every proposal 1e8 steps out (in the unconstrained coordinates, where it stays
    a mixture) empties a component and is worse than the current point: SQUAREM falls
    back to the double EM step each time, so its iterate t is EM's iterate 2t, and the
    two wasted E-steps of every proposal are counted. (From the k-means++ start itself
    such a proposal can be accepted: the one-Gaussian fit it stabilises to is better
    than that start by more than ``objfn_inc``; one EM step later it is not.)"""
    x = _slow_data()
    start = mg.fit_em(x, 2, max_iter=1, seed=0).params
    e_step_fn, calls = _counted(x, "full")
    bad = Squarem(step_min0=1e8, coordinates="unconstrained")
    res = jax.jit(lambda p: accelerated_loop(bad, e_step_fn, p, 0.0, REG, 10))(start)
    em = mg.fit_em(x, 2, init_params=start, max_iter=20, tol=0.0)
    np.testing.assert_allclose(res.curve, em.curve[::2], rtol=1e-12)
    assert int(res.n_iter) == 10
    assert int(res.n_esteps) == len(calls) == 1 + 4 * 10


def test_an_infeasible_proposal_steps_back_toward_the_em_point():
    """Natural coordinates: a proposal with a negative weight or a variance under the
    floor is pulled back along the segment to the EM point, without an E-step."""
    x = _slow_data(40)
    start = mg.fit_em(x, 2, max_iter=0, seed=0).params
    e_step_fn, calls = _counted(x, "full")
    em_map = EMMap(e_step_fn, jnp.asarray(0.5), False, None, jnp.asarray(0.0))
    em_map = em_map._replace(unravel=ravel_pytree(coordinates_of(start, "natural", 0.5))[1])
    anchor = em_map.flatten(start)
    far = anchor.at[0].set(-3.0).at[1].set(5.0)  # weights -3 and 5: sum 2, not on the simplex
    far = far.at[-1].set(0.1)  # a variance under the floor 0.5
    params, u = jax.jit(em_map.toward)(anchor, far, start)
    assert bool(mg.mixture.is_finite(params)) and len(calls) == 0
    t = (u - anchor) / (far - anchor)
    np.testing.assert_allclose(t[0], t[-1])
    assert 0 < float(t[0]) < 1
    assert float(params.weights.min()) > 0 and float(params.covariances.min()) >= 0.5


def test_fit_em_dispatch_same_start_and_rule():
    x = _slow_data()
    res = mg.fit_em(x, 2, acceleration="squarem", tol=1e-6, max_iter=50, seed=0)
    em = mg.fit_em(x, 2, tol=1e-6, max_iter=50, seed=0)
    assert float(res.curve[0]) == float(em.curve[0])
    assert res.curve.shape == (51,) and bool(res.converged)
    assert int(em.n_esteps) == int(em.n_iter) + 1
    assert float(res.final_log_likelihood) >= float(em.final_log_likelihood) - 1e-6


def test_float32_runs_end_finite():
    x = _slow_data().astype(np.float32)
    with jax.enable_x64(False):
        start = mg.fit_em(x, 2, max_iter=0, seed=0).params
        e_step_fn, _ = _counted(x, "full")
        fn = lambda p: {name: accelerated_loop(SETTINGS[name], e_step_fn, p, 1e-6, REG, 300)
                        for name in METHODS}
        results = jax.jit(fn)(start)
    for name, res in results.items():
        assert res.curve.dtype == np.float32
        n = int(res.n_iter)
        assert np.all(np.isfinite(np.asarray(res.curve[: n + 1]))), name
        assert float(res.final_log_likelihood) >= float(res.curve[0]), name
        assert not bool(res.degenerate) and n > 1, name


def test_refuses_what_it_cannot_do():
    x = _slow_data(20)
    with pytest.raises(ValueError, match="'acceleration'"):
        mg.fit_em(x, 2, acceleration="anderson")
    with pytest.raises(ValueError, match="in-memory"):
        mg.fit_em([x[:10], x[10:]], 2, acceleration="squarem")
    with pytest.raises(ValueError, match="in-memory"):
        mg.fit_em(x, 2, acceleration="squarem", missing="marginalize")
    with pytest.raises(ValueError, match="scheme"):
        mg.fit_em(x, 2, acceleration=Squarem(scheme=4))


def test_fit_gradient_counts_its_e_steps(monkeypatch):
    """Every pass over the data in fit_gradient (the start's statistics, each value
    and gradient, every evaluation of L-BFGS's line search) is counted in
    ``n_esteps``."""
    import mogjax.gradient as gradient

    calls = []

    def counting(fn):
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            jax.debug.callback(lambda *_: calls.append(1), jax.tree.leaves(out)[0])
            return out
        return wrapped

    monkeypatch.setattr(gradient, "terms_moments", counting(gradient.terms_moments))
    monkeypatch.setattr(gradient, "stats_of", counting(gradient.stats_of))
    x = _slow_data(246)  # a size of its own: a fresh trace sees the wrappers
    res = mg.fit_gradient(x, 2, optimizer="lbfgs", steps=30, tol=None)
    assert int(res.n_esteps) == len(calls) >= int(res.n_iter) + 2
    assert int(res.esteps[0]) == 2 and int(res.esteps[int(res.n_iter)]) == len(calls)


def test_gaussian_mixture_takes_an_acceleration():
    x = _slow_data(300)
    gm = mg.GaussianMixture(2, tol=1e-8, max_iter=500, random_state=0,
                            acceleration="squarem").fit(x)
    assert gm.converged_ and gm.n_esteps_ > gm.n_iter_ + 1  # extrapolations cost E-steps
    np.testing.assert_allclose(gm.curve_[-1], gm.score(x), rtol=1e-12)
    assert gm.get_params()["acceleration"] == "squarem"


def test_esteps_is_the_curve_against_e_steps(runs):
    for name in (None, *METHODS):
        res, counted = runs[name]
        n = int(res.n_iter)
        esteps = np.asarray(res.esteps)
        assert esteps.shape == res.curve.shape and esteps[0] == 1
        assert esteps[n] == int(res.n_esteps) == counted and np.all(esteps[n + 1:] == -1)
        assert np.all(np.diff(esteps[: n + 1]) >= 1)
