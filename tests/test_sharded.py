"""Sharded EM (mogjax.sharded) against single-device fit_em.

The pytest process already holds JAX with one CPU device, so the multi-device and
multi-process fits run in subprocesses (tests/sharded_worker.py) that print their
results as JSON; the references are computed here, on one device.
"""

import io
import json
import logging
import os
import socket
import subprocess
import sys
import types
from pathlib import Path

import jax
import numpy as np
import pytest

import mogjax as mg
from mogjax import sharded, sharding

WORKER = Path(__file__).with_name("sharded_worker.py")
N, K = 301, 3  # n odd: the second of two shards carries a padding row


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    """Data, user-given initial values and the .npz the workers read."""
    x = np.asarray(mg.make_mixture(0, N, K, 2, separation=3.0)[0])
    start = mg.initialize(jax.random.key(1), jax.numpy.asarray(x), K, "full", "random_from_data")
    given = {
        "weights": np.asarray(start.weights),
        "means": np.asarray(start.means),
        "precisions": np.asarray(start.precisions),
    }
    path = tmp_path_factory.mktemp("sharded") / "data.npz"
    np.savez(path, x=x, **given)
    return x, given, path


def _env(devices: int) -> dict:
    env = dict(os.environ, JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _config(tmp_path, name: str, **cfg) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(cfg))
    return path


def _parse(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _assert_same_fit(got: dict, ref: mg.FitResult) -> None:
    assert got["n_iter"] == int(ref.n_iter)
    assert got["converged"] == bool(ref.converged)
    tol = {"rtol": 1e-10, "atol": 1e-12}
    np.testing.assert_allclose(got["curve"], np.asarray(ref.curve), **tol)
    np.testing.assert_allclose(got["log_weights"], np.asarray(ref.params.log_weights), **tol)
    np.testing.assert_allclose(got["means"], np.asarray(ref.params.means), **tol)
    np.testing.assert_allclose(got["prec_chol"], np.asarray(ref.params.prec_chol), **tol)


FITS = [  # run in the workers; the same keyword arguments give the references
    {"k": K, "covariance_type": "full", "tol": 1e-8, "max_iter": 60, "given": True},
    {"k": K, "covariance_type": "diag", "tol": 1e-6, "max_iter": 100, "seed": 0, "n_init": 2},
    # several row blocks per device: the block loop's carry varies over the mesh
    {"k": K, "covariance_type": "full", "tol": 1e-8, "max_iter": 20, "given": True, "block_size": 64},
]


def _reference(x, given, case) -> mg.FitResult:
    kwargs = dict(case)
    if kwargs.pop("given", False):
        kwargs["init_params"] = given
    return mg.fit_em(x, **kwargs)


def test_two_devices_match_one(problem, tmp_path):
    x, given, path = problem
    cfg = _config(tmp_path, "devices", mode="devices", data=str(path), fits=FITS)
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(cfg)], env=_env(2), capture_output=True,
        text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = _parse(proc.stdout)

    assert out["devices"] == 2
    shard = out["sharding"]
    assert shard["spec"] == ["data"]
    assert shard["n_devices"] == 2 and shard["addressable_devices"] == [0, 1]
    assert shard["addressable_shapes"] == [[151, 2], [151, 2]]
    assert shard["shard_counts"] == [151, 150]
    assert shard["all_reduce"], "the compiled E-step does not add the devices' statistics"

    start = mg.initialize(jax.random.key(0), jax.numpy.asarray(x), K, "full", **given)
    ref_step = mg.em_step(start, x)
    np.testing.assert_allclose(out["step"]["means"], np.asarray(ref_step.means), rtol=1e-12)
    np.testing.assert_allclose(
        out["step"]["prec_chol"], np.asarray(ref_step.prec_chol), rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(
        out["step"]["log_likelihood"], float(mg.log_likelihood(start, x)), rtol=1e-12
    )
    for got, case in zip(out["fits"], FITS, strict=True):
        _assert_same_fit(got, _reference(x, given, case))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(problem, tmp_path):
    x, given, path = problem
    case = {"k": K, "covariance_type": "full", "tol": 1e-6, "max_iter": 100, "seed": 0}
    common = dict(
        mode="process", data=str(path), fits=[case], num_processes=2,
        coordinator=f"127.0.0.1:{_free_port()}", split=[0, 160, N],  # uneven halves
    )
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(_config(tmp_path, f"p{i}", process_id=i, **common))],
            env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    outputs = []
    for proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, stderr[-3000:]
        outputs.append(_parse(stdout))
    ref = _reference(x, given, case)
    for out in outputs:
        assert out["processes"] == 2 and out["devices"] == 2
        _assert_same_fit(out["fits"][0], ref)


# ---- in this process (one device): layout, initial rows, errors ----


def _fake_mesh(process_of_device):
    devices = np.array([types.SimpleNamespace(process_index=p) for p in process_of_device])
    return types.SimpleNamespace(devices=devices)


def test_layout_pads_each_process_to_a_common_count():
    layout = sharding.make_layout(_fake_mesh([0, 0, 1, 1]), "data", [5, 2])
    assert layout.rows_per_shard == 3
    assert layout.shard_counts == (3, 2, 2, 0)
    assert layout.n_samples == 7
    with pytest.raises(ValueError, match="same number of devices"):
        sharding.make_layout(_fake_mesh([0, 0, 1]), "data", [5, 2])


def test_init_sample_all_rows_or_one_per_stratum():
    np.testing.assert_array_equal(sharded._init_sample_rows(jax.random.key(0), 5, 5), np.arange(5))
    rows = np.asarray(sharded._init_sample_rows(jax.random.key(0), 1000, 7))
    edges = np.arange(8) * 1000 // 7
    assert np.all((rows >= edges[:-1]) & (rows < edges[1:]))


def test_subsampled_init_runs_on_one_device_and_compiles_once(problem):
    x, _, _ = problem
    data = sharded.shard_rows(x)
    res = sharded.fit_em_sharded(data, K, covariance_type="spherical", init_sample=40, tol=1e-4)
    n = int(res.n_iter)
    assert bool(res.converged) and np.all(np.isfinite(res.curve[: n + 1]))
    assert np.all(np.diff(np.asarray(res.curve[: n + 1])) > -1e-9)

    records = io.StringIO()
    handler = logging.StreamHandler(records)
    logging.getLogger("jax").addHandler(handler)
    try:
        with jax.log_compiles():
            sharded.fit_em_sharded(
                data, K, covariance_type="spherical", init_sample=40, tol=1e-6, reg_covar=1e-3
            )
    finally:
        logging.getLogger("jax").removeHandler(handler)
    assert "_fit_sharded_compiled" not in records.getvalue()


def test_bad_input_is_named(problem):
    x, _, _ = problem
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("rows",))
    with pytest.raises(ValueError, match="single axis 'data'"):
        sharded.shard_rows(x, mesh)
    with pytest.raises(ValueError, match="init_sample"):
        sharded.fit_em_sharded(x, K, init_sample=2)
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        sharded.fit_em_sharded(x[:2], K)
    with pytest.raises(ValueError, match="NaN"):
        sharded.shard_rows(np.full((4, 2), np.nan))
    with pytest.raises(ValueError, match="mesh to shard_rows"):
        sharded.fit_em_sharded(sharded.shard_rows(x), K, mesh=mesh)
