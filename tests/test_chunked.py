"""Chunked exact EM (equal to in-memory EM, one compile, named errors) and online EM."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mogjax as mg
from mogjax import chunked, chunks, online
from mogjax.datasets import make_mixture

K = 3


MAX_ITER, TOL = 60, 1e-6
e_step = jax.jit(mg.e_step)  # eager, it would run op by op


@pytest.fixture(scope="module")
def start():
    """Initial parameters near the three groups of ``offset_data`` (no compile)."""
    means = 100.0 + np.array([[0.5, -0.5, 0.0], [2.0, 3.5, 3.0], [6.5, 6.0, 5.0]])
    return mg.MixtureParams.from_covariances(np.ones(K) / K, means, np.stack([2 * np.eye(3)] * K))


@pytest.fixture(scope="module")
def ref(offset_data, start):
    """The in-memory fit every chunked one is compared with."""
    return mg.fit_em(offset_data, K, init_params=start, tol=TOL, max_iter=MAX_ITER)


def assert_same_fit(a, b, rtol=1e-6):
    """Same parameters, curve (NaN padding included), n_iter and converged."""
    assert int(a.n_iter) == int(b.n_iter) and bool(a.converged) == bool(b.converged)
    np.testing.assert_allclose(a.curve, b.curve, rtol=rtol)  # NaN where NaN
    for name in ("log_weights", "means", "prec_chol"):
        np.testing.assert_allclose(getattr(a.params, name), getattr(b.params, name), rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [50, 77, 240, 1000])  # 77 does not divide n = 240
def test_chunked_equals_in_memory(offset_data, start, ref, chunk_size):
    res = mg.fit_em(offset_data, K, init_params=start, tol=TOL, max_iter=MAX_ITER, chunk_size=chunk_size)
    assert 3 < int(ref.n_iter) < MAX_ITER and bool(ref.converged)  # stopped by the rule
    assert isinstance(res, mg.FitResult) and res.curve.shape == ref.curve.shape
    assert_same_fit(res, ref)


def test_restarts_pick_the_in_memory_winner(offset_data):
    kw = dict(n_init=3, seed=2, init="random", tol=TOL, max_iter=MAX_ITER)
    assert_same_fit(mg.fit_em(offset_data, K, chunk_size=100, **kw), mg.fit_em(offset_data, K, **kw))


@pytest.mark.parametrize("cov", ["spherical"])  # full above, diag in the doctest
def test_chunked_equals_in_memory_other_types(offset_data, cov):
    start = mg.fit_em(offset_data, K, covariance_type=cov, max_iter=0, seed=2).params
    ref = mg.fit_em(offset_data, K, covariance_type=cov, init_params=start, tol=0, max_iter=8)
    res = chunked.fit_em_chunked(
        offset_data, covariance_type=cov, init_params=start, tol=0, max_iter=8, chunk_size=64
    )
    assert_same_fit(res, ref)


def test_memmap_file_path_and_view(tmp_path, offset_data, start, ref):
    kw = dict(init_params=start, tol=TOL, max_iter=MAX_ITER)
    path = tmp_path / "x.npy"
    np.save(path, offset_data)
    mm = np.load(path, mmap_mode="r")
    assert isinstance(mm, np.memmap) and chunks._file_region(mm) is not None  # plain reads
    assert_same_fit(mg.fit_em(mm, K, **kw), ref)  # fit_em dispatches on a memmap
    assert_same_fit(chunked.fit_em_chunked(str(path), K, **kw), ref)
    view = mm[13:]  # a slice of the map: read from its own offset in the file
    assert chunks._file_region(view)[1] == chunks._file_region(mm)[1] + 13 * 3 * 8
    in_memory = np.array(offset_data[13:])
    assert_same_fit(mg.fit_em(view, K, chunk_size=50, **kw), mg.fit_em(in_memory, K, chunk_size=50, **kw))


def test_callable_and_list_sources(offset_data, start, ref):
    kw = dict(init_params=start, tol=TOL, max_iter=MAX_ITER)
    x = offset_data
    parts = [x[:100], x[100:101], x[101:190], x[190:]]  # uneven, re-cut into chunk_size rows
    assert_same_fit(mg.fit_em(parts, K, **kw), ref)
    assert_same_fit(mg.fit_em(lambda: iter(parts), K, chunk_size=64, **kw), ref)


def test_same_start_as_fit_em_without_init_params(offset_data):
    # n <= init_sample: the init sample is all rows, so the whole fit is fit_em's.
    expected = mg.fit_em(offset_data, K, seed=3)
    assert_same_fit(mg.fit_em(offset_data, K, seed=3, chunk_size=80), expected)


def test_init_sample_is_strided_over_all_rows():
    x = np.arange(1000.0)[:, None] * np.ones((1, 2))
    info = chunks.summarize(chunks.as_source(x, 64), sample_size=100)
    rows = info.sample[:, 0].astype(int)
    stride = rows[1] - rows[0]
    assert len(rows) <= 100 and stride > 1
    np.testing.assert_array_equal(rows, np.arange(0, 1000, stride))  # whole range, evenly
    assert info.n == 1000 and info.longest == 64
    np.testing.assert_allclose(info.mean, x.mean(axis=0))


def test_fit_on_sample_init_when_data_exceed_init_sample(offset_data):
    res = chunked.fit_em_chunked(offset_data, K, init_sample=40, chunk_size=64)
    assert bool(res.converged)
    assert float(res.final_log_likelihood) > float(res.curve[0])


def test_padding_rows_weigh_nothing(offset_data, start):
    x = jnp.asarray(offset_data[:50])
    center = jnp.mean(x, axis=0)
    expected = e_step(start, x, center=center)
    pad = jnp.concatenate([x, jnp.full((30, 3), 1e3)])  # far-away junk after row 50
    got = chunked.chunk_statistics(start, pad, 50, center)
    for name in ("n", "log_likelihood", "counts", "sum_x", "sum_xx"):
        np.testing.assert_allclose(getattr(got, name), getattr(expected, name), rtol=1e-10)


def test_one_compile_per_chunk_shape(offset_data, start, caplog):
    def compiles(**kw):
        with jax.log_compiles(), caplog.at_level(logging.WARNING):
            caplog.clear()
            mg.fit_em(offset_data, K, init_params=start, tol=0, max_iter=4, **kw)  # 5 passes
            return [r.getMessage() for r in caplog.records
                    if "Finished XLA compilation" in r.getMessage() and "chunk_statistics" in r.getMessage()]

    assert len(compiles(chunk_size=71)) == 1  # 4 chunks x 5 passes, last padded: one program
    assert compiles(chunk_size=71, reg_covar=1e-5) == []  # nothing new for a new value


def test_bad_chunked_input_is_named(offset_data, start):
    x = offset_data
    with pytest.raises(ValueError, match="no rows"):
        mg.fit_em(lambda: iter([]), 2)
    with pytest.raises(ValueError, match="chunk 2 has 2 columns, but the first chunk has 3"):
        mg.fit_em([x[:50], x[50:100], x[100:, :2]], 2)
    bad = x.copy()
    bad[130, 1] = np.nan
    with pytest.raises(ValueError, match=r"chunk 2 contains NaN \(row 30 of the chunk, row 130"):
        mg.fit_em(bad, 2, chunk_size=50)
    with pytest.raises(ValueError, match="chunk 1 must be 2-D"):
        mg.fit_em([x[:50], x[50:, 0]], 2)
    with pytest.raises(ValueError, match="one-shot iterator"):
        mg.fit_em(iter([x[:100], x[100:]]), 2)
    with pytest.raises(ValueError, match="chunk_size"):
        mg.fit_em(x, 2, chunk_size=0)
    with pytest.raises(ValueError, match="cannot be read"):
        chunked.fit_em_chunked("/nonexistent/x.npy", 2)
    with pytest.raises(TypeError, match="chunked data must be"):
        chunked.fit_em_chunked(42, 2)
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        mg.fit_em([x[:2]], 3)
    passes = iter([[x], [x[:100]]])  # a callable that gives other data on its second pass
    with pytest.raises(ValueError, match="100 rows on this pass but 240"):
        mg.fit_em(lambda: iter(next(passes)), K, chunk_size=50, init_params=start)


# ---------------------------------------------------------------- online EM


@pytest.fixture(scope="module")
def stream_data():
    """20,000 points of 3 components in 2-D, and EM's fit."""
    x, _, true = make_mixture(5, 20_000, 3, 2, separation=5.0)
    return x, true, mg.fit_em(x, 3, tol=TOL, seed=0)


def _matched_errors(means, true_means):
    """Distance of every true mean to its nearest fitted mean."""
    dist = np.linalg.norm(np.asarray(true_means)[:, None] - np.asarray(means)[None], axis=-1)
    assert len(set(np.argmin(dist, axis=1))) == len(true_means)  # a one-to-one match
    return dist.min(axis=1)


def test_online_em_recovers_the_mixture(stream_data):
    x, true, em = stream_data
    res = mg.fit_online_em(x, 3, batch_size=100, init_sample=1000, eval_data=x, eval_every=50)
    assert int(res.n_steps) == 200 and int(res.n_seen) == 20_000 and int(res.n_rejected) == 0
    np.testing.assert_array_equal(res.curve_steps, np.arange(0, 201, 50))
    assert np.max(_matched_errors(res.params.means, em.params.means)) < 0.15
    assert np.max(_matched_errors(res.params.means, true.means)) < 0.2
    final = float(res.curve[-1])
    assert final == pytest.approx(float(mg.mean_log_likelihood(res.params, x)))
    assert abs(final - float(em.final_log_likelihood)) < 5e-3
    assert float(res.curve[-1]) > float(res.curve[0])
    np.testing.assert_allclose(jnp.sum(res.params.weights), 1.0, rtol=1e-12)
    resp = mg.responsibilities(res.params, x[:500])
    assert bool(jnp.all(resp >= 0)) and np.allclose(jnp.sum(resp, axis=1), 1.0)


def test_online_em_one_shot_stream_progressive_curve(stream_data):
    x, _, em = stream_data
    gen = (x[i : i + 730] for i in range(0, len(x), 730))  # 730-row chunks, re-cut to 100
    res = mg.fit_online_em(gen, 3, batch_size=100, init_sample=1000, eval_every=30, step_size_power=0.7)
    assert int(res.n_steps) == 200 and int(res.n_seen) == 20_000
    assert res.curve.shape == res.curve_steps.shape and int(res.curve_steps[-1]) == int(res.n_steps)
    assert np.max(_matched_errors(res.params.means, em.params.means)) < 0.15
    # the progressive score of the last window is close to the full-data score
    assert abs(float(res.curve[-1]) - float(mg.mean_log_likelihood(res.params, x))) < 0.05


def test_one_online_step_with_eta_one_is_an_em_step(offset_data, start):
    x = jnp.asarray(offset_data[:90])
    center = jnp.mean(x, axis=0)
    zeros = jax.tree.map(jnp.zeros_like, e_step(start, x, center=center)).replace(center=center)
    pad = jnp.concatenate([x, jnp.zeros((10, 3))])
    params, running, score, ok = online.online_step(start, zeros, pad, 90, 1.0, 1e-6)
    ref = mg.em_step(start, x, reg_covar=1e-6)
    assert bool(ok) and float(running.n) == pytest.approx(1.0)
    np.testing.assert_allclose(jnp.sum(running.counts), 1.0, rtol=1e-12)  # per point
    np.testing.assert_allclose(params.means, ref.means, rtol=1e-10)
    np.testing.assert_allclose(params.prec_chol, ref.prec_chol, rtol=1e-8)
    assert float(score) == pytest.approx(float(mg.mean_log_likelihood(start, x)), rel=1e-12)


def test_online_batches_of_different_sizes_mix_per_point(offset_data, start):
    # Two steps with eta = 1/2 on batches of 30 and 150 rows: per-point statistics
    # give each batch half the say, whatever its size.
    x = jnp.asarray(offset_data)
    a, b = x[:30], x[30:180]
    center = jnp.mean(x, axis=0)
    s = [e_step(start, part, center=center) for part in (a, b)]
    zeros = jax.tree.map(jnp.zeros_like, s[0]).replace(center=center)
    pad = lambda part: jnp.concatenate([part, jnp.zeros((150 - part.shape[0], 3))])
    _, r1, _, _ = online.online_step(start, zeros, pad(a), 30, 1.0, 1e-6)
    _, r2, _, _ = online.online_step(start, r1, pad(b), 150, 0.5, 1e-6)
    np.testing.assert_allclose(r2.counts, 0.5 * s[0].counts / 30 + 0.5 * s[1].counts / 150, rtol=1e-10)
    np.testing.assert_allclose(r2.sum_x, 0.5 * s[0].sum_x / 30 + 0.5 * s[1].sum_x / 150, rtol=1e-10)


def test_step_sizes():
    assert online.step_size(0, 0.6, 2.0) == 1.0
    assert online.step_size(3, 0.6, 2.0) == pytest.approx(5.0**-0.6)


def test_online_bad_input(offset_data):
    x = offset_data
    with pytest.raises(ValueError, match="step_size_power"):
        mg.fit_online_em(x, 2, step_size_power=0.5)
    with pytest.raises(ValueError, match="step_offset"):
        mg.fit_online_em(x, 2, step_offset=-1.0)
    with pytest.raises(ValueError, match="re-readable"):
        mg.fit_online_em(iter([x]), 2, n_epochs=2)
    with pytest.raises(ValueError, match="no rows"):
        mg.fit_online_em(iter([]), 2)
    with pytest.raises(ValueError, match="eval_data has 2 features"):
        mg.fit_online_em(x, 2, eval_data=x[:, :2])
    bad = x.copy()
    bad[100, 0] = np.inf
    with pytest.raises(ValueError, match="chunk 1 contains infinity"):
        mg.fit_online_em([bad[:10], bad[10:]], 2, batch_size=32)


def test_a_copy_on_write_memmap_is_fitted_as_changed(tmp_path, offset_data, start):
    path = tmp_path / "x.npy"
    np.save(path, offset_data)
    x = np.load(path, mmap_mode="c")
    x[:, 0] += 3.0  # in this process only, not in the file
    kw = dict(init_params=start, tol=TOL, max_iter=MAX_ITER)
    assert_same_fit(mg.fit_em(x, K, **kw), mg.fit_em(np.array(x), K, **kw))
