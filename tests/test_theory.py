"""EM's theory (mogjax.theory) against the identities and numbers of the papers it cites.

Three small problems, each built once per module so every program compiles once:
a 3-component 2-D mixture (n = 300, full covariances) at a start away from the
optimum and at the optimum; the 1-D two-Gaussian cases of the rate study (n = 10,000,
the draws that gave the issue's rates); and one Gaussian in 2-D for the closed forms.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mogjax as mg
from mogjax import theory as th
from mogjax.estep import e_step

# Spectral radius of EM's Jacobian at the MLE, 1-D, two unit Gaussians DELTA apart,
# n = 10,000 drawn as in `one_d_data(delta)` (measured with jax.jacfwd through
# mg.em_step and confirmed by the ratio of successive EM steps).
KNOWN_RATES = {2.0: 0.9955, 3.0: 0.9332, 4.0: 0.7159, 6.0: 0.2182}


def one_d_data(delta, n=10_000, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(2, size=n)
    return jnp.asarray((rng.normal(size=n) + (labels - 0.5) * delta)[:, None])


@jax.jit
def loglik_gradient(params, x):
    """Gradient of the total log-likelihood over the flat vector (the E-step's value)."""
    f = lambda vec: e_step(th.unflatten_params(vec, params), x).log_likelihood
    return jax.grad(f)(th.flatten_params(params))


@jax.jit
def em_iterates(params, x):
    """The flat parameters after each of 60 EM steps (reg_covar = 0), (60, p)."""
    def body(p, _):
        p = mg.em_step(p, x, reg_covar=0.0)
        return p, th.flatten_params(p)

    return jax.lax.scan(body, params, length=60)[1]


def newton(params, x, steps=10):
    """Polish a nearby maximum with Newton's method on the flat vector."""
    for _ in range(steps):
        step = np.linalg.solve(np.asarray(th.observed_information(params, x)),
                               np.asarray(loglik_gradient(params, x)))
        params = th.unflatten_params(th.flatten_params(params) + step, params)
        if np.max(np.abs(step)) < 1e-12:
            break
    return params


@jax.jit
def round_trip(params):
    vec = th.flatten_params(params)
    return vec, th.unflatten_params(vec, params)


@pytest.fixture(scope="module")
def three():
    """3 components in 2-D, full: (x, start away from the optimum, EM's optimum, fit)."""
    x, _, start = mg.make_mixture(0, 300, 3, 2, separation=3.0)
    x = jnp.asarray(x)
    fit = mg.fit_em(x, init_params=start, tol=0.0, max_iter=400, reg_covar=0.0)
    return x, start, fit.params, fit


@pytest.fixture(scope="module")
def rates():
    """{delta: (em_rate at the MLE, ratio of successive EM steps, iterates)}."""
    out = {}
    for delta in KNOWN_RATES:
        x = one_d_data(delta)
        start = mg.MixtureParams.from_covariances(
            jnp.array([0.5, 0.5]), jnp.array([[-delta / 2], [delta / 2]]), jnp.ones((2, 1, 1)))
        iterates = np.asarray(em_iterates(start, x))
        optimum = newton(th.unflatten_params(iterates[-1], start), x)
        assert np.max(np.abs(loglik_gradient(optimum, x))) < 1e-7
        steps = np.linalg.norm(np.diff(iterates, axis=0), axis=1)
        t = np.flatnonzero(steps > 1e-8)[-1]  # the last step well above rounding
        out[delta] = (th.em_rate(optimum, x), steps[t] / steps[t - 1], iterates[: t + 2])
    return out


def test_flat_order_and_round_trip():
    for cov_type in ("full", "tied", "diag", "spherical", "identity"):
        params = mg.MixtureParams.from_covariances(
            jnp.array([0.2, 0.3, 0.5]), jnp.arange(6.0).reshape(3, 2),
            {"full": jnp.array([[[2.0, 0.5], [0.5, 1.0]]] * 3), "tied": jnp.eye(2) * 3.0,
             "diag": jnp.ones((3, 2)) * 2.0, "spherical": jnp.array([1.0, 2.0, 3.0]),
             "identity": jnp.ones(3)}[cov_type], cov_type)
        vec, back = round_trip(params)
        assert vec.shape == (mg.n_parameters(params),)
        np.testing.assert_allclose(vec[:2], [0.2, 0.3])
        np.testing.assert_allclose(vec[2:8], np.arange(6.0))
        np.testing.assert_allclose(back.weights, params.weights, rtol=1e-12)
        np.testing.assert_allclose(back.covariances, params.covariances, rtol=1e-12)
        if cov_type == "full":  # each component's upper triangle, row by row
            np.testing.assert_allclose(vec[8:11], [2.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="shape"):
        th.unflatten_params(vec[:-1], params)


def test_information_identity_at_the_optimum(three):
    """Dempster, Laird & Rubin (1977); Meng & Rubin (1991): DM = I - Ic^-1 Io."""
    x, _, optimum, _ = three
    jac = np.asarray(th.em_map_jacobian(optimum, x))
    i_o = np.asarray(th.observed_information(optimum, x))
    i_c = np.asarray(th.complete_information(optimum, x))
    np.testing.assert_allclose(jac, np.eye(len(jac)) - np.linalg.solve(i_c, i_o), atol=1e-6)
    fractions = th.missing_information_fraction(optimum, x)
    rate = th.em_rate(optimum, x)
    assert 0.5 < rate < 1.0
    np.testing.assert_allclose(fractions[0], rate, rtol=1e-8)
    assert np.all(fractions[:-1] >= fractions[1:]) and fractions[-1] > -1e-10
    diagnostics = th.fit_diagnostics(optimum, x, three[3])
    np.testing.assert_allclose(diagnostics["missing_information_max"], rate, rtol=1e-8)
    assert set(diagnostics) == {"em_rate", "missing_information_max", "em_rate_empirical",
                                "responsibility_entropy"}
    assert 0.0 < diagnostics["responsibility_entropy"] < 1.0
    assert set(th.fit_diagnostics(optimum, x, max_dense=1)) == {"responsibility_entropy"}


def test_em_step_is_preconditioned_gradient(three):
    """Xu & Jordan (1996): EM's step = P grad; exact for weights and means, and for
    the covariances of the step centred on the old means."""
    x, start, _, _ = three
    k = start.n_components
    new = mg.em_step(start, x, reg_covar=0.0)
    step = np.asarray(th.flatten_params(new) - th.flatten_params(start))
    precond = th.em_preconditioner(start, x)
    predicted = precond @ np.asarray(loglik_gradient(start, x))
    head = k - 1 + k * 2
    assert np.max(np.abs(step[:head])) > 1e-3  # away from the optimum
    np.testing.assert_allclose(predicted[:head], step[:head], rtol=1e-8, atol=0)
    shift = np.asarray(new.means - start.means)
    centred_on_old = np.asarray(new.covariances) + shift[:, :, None] * shift[:, None, :]
    rows, cols = np.triu_indices(2)
    cov_step = (centred_on_old - np.asarray(start.covariances))[:, rows, cols].ravel()
    np.testing.assert_allclose(predicted[head:], cov_step, rtol=1e-8)
    np.testing.assert_allclose(precond, precond.T, atol=1e-15)
    assert np.linalg.eigvalsh(precond)[0] > 0
    e_ll = float(e_step(start, x).log_likelihood)
    np.testing.assert_allclose(e_ll, float(mg.log_likelihood(start, x)), rtol=1e-12)


def test_jacobian_matches_finite_differences(three):
    x, start, _, _ = three
    vec = th.flatten_params(start)
    em = lambda v: np.asarray(th.flatten_params(
        mg.em_step(th.unflatten_params(v, start), x, reg_covar=0.0)))
    h = 1e-6
    columns = [(em(vec.at[j].add(h)) - em(vec.at[j].add(-h))) / (2 * h) for j in range(len(vec))]
    jac = np.asarray(th.em_map_jacobian(start, x))
    np.testing.assert_allclose(np.stack(columns, axis=1), jac, atol=1e-6 * np.max(np.abs(jac)))


def test_matrix_free_rate_agrees_with_dense(three):
    x, _, optimum, _ = three
    dense = th.em_rate(optimum, x)
    rate, residual = th.krylov_rate(optimum, x, dim=10)  # p = 17
    assert rate <= dense + 1e-12  # Lanczos in the Ic inner product: from below
    assert abs(rate - dense) <= max(residual, 1e-12) and abs(rate - dense) < 1e-8
    np.testing.assert_allclose(th.em_rate(optimum, x, max_dense=0, krylov_dim=10), rate,
                               rtol=1e-12)


def test_rate_matches_successive_steps_and_falls_with_separation(rates):
    for delta, (rate, ratio, iterates) in rates.items():
        assert abs(ratio - rate) <= 0.02 * rate, (delta, rate, ratio)
        assert abs(rate - KNOWN_RATES[delta]) < 1e-4, (delta, rate)
        np.testing.assert_allclose(th.empirical_rate(iterates=iterates, window=1), ratio,
                                   rtol=1e-12)
    ordered = [rates[d][0] for d in sorted(rates)]
    assert all(a > b for a, b in zip(ordered, ordered[1:]))


def test_empirical_rate_from_the_curve(three):
    x, _, optimum, fit = three
    assert abs(th.empirical_rate(fit) - th.em_rate(optimum, x)) < 0.02 * th.em_rate(optimum, x)
    short = fit._replace(n_iter=jnp.int32(1))
    assert np.isnan(th.empirical_rate(short))


def test_standard_errors_one_component_closed_forms():
    rng = np.random.default_rng(1)
    x = rng.multivariate_normal([1.0, -2.0], [[2.0, 0.6], [0.6, 1.0]], size=400)
    n = len(x)
    mean, cov = x.mean(axis=0), np.cov(x.T, bias=True)
    params = mg.MixtureParams.from_covariances(jnp.ones(1), mean[None], cov[None])
    se = th.standard_errors(params, x)
    np.testing.assert_allclose(se["means"][0], np.sqrt(np.diag(cov) / n), rtol=1e-8)
    expected = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    np.testing.assert_allclose(se["covariances"][0], expected, rtol=1e-8)
    np.testing.assert_allclose(se["weights"], [0.0], atol=1e-12)


def test_standard_errors_well_separated_weights_and_singular_information():
    x = one_d_data(14.0)  # the rate cases' shapes: the same compiled programs
    start = mg.MixtureParams.from_covariances(
        jnp.array([0.5, 0.5]), jnp.array([[-7.0], [7.0]]), jnp.ones((2, 1, 1)))
    optimum = th.unflatten_params(em_iterates(start, x)[-1], start)
    se = th.standard_errors(optimum, x)
    a, n = np.asarray(optimum.weights), x.shape[0]
    np.testing.assert_allclose(se["weights"], np.sqrt(a * (1 - a) / n), rtol=1e-6)
    var = np.asarray(optimum.covariances)[:, 0, 0]
    np.testing.assert_allclose(se["means"][:, 0], np.sqrt(var / (n * a)), rtol=1e-6)
    assert se["covariances"].shape == (2, 1, 1)
    same = mg.MixtureParams.from_covariances(  # two identical components
        jnp.array([0.5, 0.5]), jnp.full((2, 1), float(jnp.mean(x))),
        jnp.full((2, 1, 1), float(jnp.var(x))))
    with pytest.raises(ValueError, match="observed information is (singular|not positive)"):
        th.standard_errors(same, x)


def test_bad_input_is_named(three):
    x, start, _, _ = three
    with pytest.raises(ValueError, match="1 features"):
        th.em_rate(start, x[:, :1])
    with pytest.raises(ValueError, match="NaN"):
        th.observed_information(start, x.at[0, 0].set(jnp.nan))
    with pytest.raises(ValueError, match="give a FitResult"):
        th.empirical_rate()


def test_estimator_standard_errors(three):
    from sklearn.base import clone

    x = np.asarray(three[0])
    gm = mg.GaussianMixture(3, compute_standard_errors=True, reg_covar=0.0, tol=1e-10,
                            max_iter=400, random_state=0)
    assert clone(gm).get_params()["compute_standard_errors"] is True
    gm.fit(x)
    expected = th.standard_errors(gm.params_, x)
    for key in ("weights", "means", "covariances"):
        np.testing.assert_allclose(gm.standard_errors_[key], expected[key], rtol=1e-10)
    assert not hasattr(mg.GaussianMixture(3, random_state=0).fit(x), "standard_errors_")
