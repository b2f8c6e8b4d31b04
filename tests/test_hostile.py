"""Hostile conditions: extreme values and odd input end cleanly (issue 18).

Each case states what used to go wrong and asserts the clean outcome.
"""

import threading

import jax
import numpy as np
import pytest

import mogjax as mg
from mogjax import _validation as v

FAITHFUL32 = mg.load_old_faithful().astype(np.float32)
N_DISTINCT = len(np.unique(FAITHFUL32, axis=0))


def finishes(fn, seconds: float):
    """``fn()``'s value, or a test failure if it runs longer than ``seconds``."""
    out = {}
    worker = threading.Thread(target=lambda: out.update(value=fn()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    return out["value"]


def all_finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(a)))) for a in jax.tree.leaves(tree))


# --- mean shift at bandwidths far below the data's spacing -------------------------------


@pytest.mark.parametrize("scale, bandwidth", [
    (1.0, 1e-6 * 50),  # 1e-6 of Old Faithful's spread: used to hang (NaN seeds never merged)
    (1.0, 1e-20),
    (1e3, 1e-2),  # used to merge distinct points 100 bandwidths apart (255 of 256)
])
def test_mean_shift_keeps_every_distinct_point_at_tiny_bandwidths(scale, bandwidth):
    x = FAITHFUL32 * np.float32(scale)
    res = finishes(lambda: mg.mean_shift(x, bandwidth), 120)
    centers = np.asarray(res.centers)
    assert np.all(np.isfinite(centers)) and len(centers) == N_DISTINCT
    # every point is labelled with the mode it sits on: nothing a bandwidth away joined it
    gap = np.linalg.norm(x - centers[np.asarray(res.labels)], axis=1)
    assert np.all(gap <= bandwidth)


# --- densities of points far from the data -------------------------------------------------


@pytest.fixture(scope="module")
def faithful_fit():
    return mg.fit_em(FAITHFUL32, 2).params


@pytest.mark.parametrize("far", [1e20, 1e30, -1e30])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_far_points_never_give_nan(faithful_fit, far, dtype):
    """The squared features of 1e20 overflow float32: densities used to be NaN."""
    params = jax.tree.map(lambda a: a.astype(dtype), faithful_fit)
    z = np.array([[far, far], [3.0, 70.0]], dtype)
    score = np.asarray(mg.score_samples(params, z))
    resp = np.asarray(mg.responsibilities(params, z))
    assert not np.any(np.isnan(score)) and score[0] < score[1] and np.isfinite(score[1])
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=1e-6)
    assert np.all(np.isfinite(resp)) and np.all(resp >= 0)
    assert set(np.asarray(mg.predict(params, z)).tolist()) <= {0, 1}
    gm = mg.GaussianMixture(2, random_state=0).fit(FAITHFUL32)
    assert not np.any(np.isnan(gm.score_samples(z))) and np.all(np.isfinite(gm.predict_proba(z)))


# --- degenerate fits keep finite parameters ------------------------------------------------


@pytest.mark.parametrize("case", ["constant column", "collapsed duplicates", "outlier at 1e20"])
def test_degenerate_error_carries_finite_parameters(case):
    x = {
        "constant column": np.c_[FAITHFUL32[:, :1], np.ones(len(FAITHFUL32), np.float32)],
        "collapsed duplicates": np.repeat(FAITHFUL32[:3], 50, axis=0),
        "outlier at 1e20": np.r_[FAITHFUL32, np.float32([[1e20, 1e20]])],
    }[case]
    with pytest.raises(mg.DegenerateCovarianceError, match="reg_covar") as err:
        mg.fit_em(x, 3, reg_covar=0.0)
    assert all_finite(err.value.result.params)


# Old Faithful's shape on a line: gradient ascent shares its compiled program with the
# far-from-the-origin test below (same shapes, dtype, k and steps)
LINE = np.c_[FAITHFUL32[:, 0], 2 * FAITHFUL32[:, 0]]


@pytest.mark.parametrize("kind", ["variational", "bayesian", "chunked", "sharded", "online",
                                  "gradient"])
def test_every_fit_kind_fails_degenerate_data_the_same_way(kind):
    """Points on a line, ``reg_covar=0``: ``fit_variational`` and the Bayesian
    estimator (on a line in 3-D) used to raise "Got unexpected field names:
    ['params']" from inside the library, online EM returned NaN covariances silently.
    Every kind now raises ``DegenerateCovarianceError`` carrying finite parameters."""
    from mogjax.bayesian_mixture import BayesianGaussianMixture

    x = LINE
    fit = {
        "variational": lambda: mg.fit_variational(x, 2, reg_covar=0.0, max_iter=5),
        "bayesian": lambda: BayesianGaussianMixture(n_components=2, reg_covar=0.0,
                                                    max_iter=5).fit(x),
        "chunked": lambda: mg.fit_em_chunked(x, 2, reg_covar=0.0, chunk_size=136, max_iter=5),
        "sharded": lambda: mg.fit_em_sharded(x, 2, reg_covar=0.0, max_iter=5),
        "online": lambda: mg.fit_online_em(x, 2, reg_covar=0.0, batch_size=136),
        "gradient": lambda: mg.fit_gradient(x, 2, reg_covar=0.0, steps=500),
    }[kind]
    with pytest.raises(mg.DegenerateCovarianceError, match="reg_covar") as err:
        fit()
    assert all_finite(err.value.result.params)
    if kind in ("variational", "bayesian"):
        assert all_finite(err.value.result.posterior)


# --- precision at the boundaries ------------------------------------------------------------


def test_gradient_ascent_far_from_the_origin_is_as_good_as_centred():
    """Old Faithful + 1e6 in float32: Adam ended at -4.363 against -4.159 for the same
    data centred (its steps fell under ulp(1e6) = 0.0625 and vanished). It now steps in
    the centred frame EM's statistics use. A run that never improved on its start
    (Adam at learning_rate=1e6) says so: a warning and stop_reason ``no_progress``.
    The three fits share one compiled program (same shapes, learning rate traced)."""
    far = FAITHFUL32 + np.float32(1e6)
    centred = (far.astype(np.float64) - far.astype(np.float64).mean(axis=0)).astype(np.float32)
    ends = [float(mg.fit_gradient(x, 2, steps=500).final_log_likelihood) for x in (far, centred)]
    assert abs(ends[0] - ends[1]) < 1e-2, ends
    with pytest.warns(RuntimeWarning, match="never improved on its start"):
        stuck = mg.fit_gradient(far, 2, steps=500, learning_rate=1e6)
    assert stuck.stop_reason == "no_progress"


def test_a_pickled_float64_estimator_keeps_its_precision():
    """Pickled with JAX arrays, a ``dtype="float64"`` fit loaded where x64 is off came
    back float32 and scored 1.8e-6 off while reporting float64."""
    import pickle

    x = mg.load_old_faithful()
    gm = mg.GaussianMixture(2, dtype="float64", random_state=0, max_iter=20).fit(x)
    expected = gm.score(x)
    with jax.enable_x64(False):
        back = pickle.loads(pickle.dumps(gm))
        assert np.asarray(back.params_.means).dtype == np.float64
        assert back.score(x) == expected


def test_a_float32_model_refuses_what_float32_cannot_hold(faithful_fit):
    """The served model answered [[1e308, 1e308]] with HTTP 200, log_density NaN and
    made-up probabilities: checked in float64, computed in float32. Now a 400 naming
    the value (``MlflowException`` INVALID_PARAMETER_VALUE)."""
    from mlflow.exceptions import MlflowException

    from experiments import model

    fitted = model.mixture(jax.tree.map(lambda a: np.asarray(a, np.float32), faithful_fit),
                           ["a", "b"])
    with pytest.raises(MlflowException, match=r"column 'a' row 0: 1e\+308 overflows the "
                                              r"model's float32") as err:
        model.predict_frame(fitted, {"a": [1e308], "b": [1e308]})
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException, match=r"row 0 .*3e\+38.*cannot score it"):
        model.predict_frame(fitted, {"a": [3e38], "b": [70.0]})  # held, but not scored
    fine = model.predict_frame(fitted, {"a": [3.6, 1e20], "b": [70.0, 70.0]}, "label")
    assert fine["label"].tolist()[0] in (0, 1)


# --- seeds, sample sizes, data that change between passes -------------------------------


def test_seeds_of_any_size():
    big = 2**70
    res = mg.fit_em(FAITHFUL32, 2, seed=big)
    assert bool(res.converged)
    keys = [np.asarray(jax.random.key_data(v.split_keys(s, 1)[0])) for s in (big, big + 2**32, 0)]
    assert not np.array_equal(keys[0], keys[1]) and not np.array_equal(keys[0], keys[2])
    np.testing.assert_array_equal(  # small seeds keep their keys
        keys[2], np.asarray(jax.random.key_data(jax.random.split(jax.random.key(0), 1)[0])))
    with pytest.raises(ValueError, match="seed"):
        mg.fit_em(FAITHFUL32, 2, seed=-1)


def test_negative_sample_size_is_named(faithful_fit):
    with pytest.raises(ValueError, match="n_samples"):
        mg.sample(jax.random.key(0), faithful_fit, -1)


def test_nan_appearing_on_a_later_pass_is_named():
    """Chunked EM reads the data once per iteration; NaN met after the first pass
    used to be blamed on a covariance."""
    passes = [0]

    def source():
        passes[0] += 1
        y = FAITHFUL32.copy()
        if passes[0] > 2:
            y[100, 1] = np.nan
        return iter([y[:150], y[150:]])

    with pytest.raises(ValueError, match=r"chunk 0 contains NaN \(row 100 .*column 1"):
        mg.fit_em(source, 2, chunk_size=100)


# =========================================================================================
# The experiments: concurrent first runs, kill -9, Ctrl-C, broken stores, odd data files.
# Real components: sqlite stores, `mlflow server` on 127.0.0.1, Hydra, signals.
# =========================================================================================

import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from tests.mlflow_helpers import (  # noqa: E402
    LONG_FIT, ROOT, client_for, free_port, mlflow_server, runs_of, script_env, start_script,
    study_runs, wait_for_line,
)


def one_line_error(run, cfg, capsys) -> str:
    """``run(cfg)`` as a script runs it: the one ``error:`` line it prints (exit 1)."""
    from experiments import common

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        common.one_line_errors(run)(cfg)
    assert exit_info.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def finished_with_every_point(client, run) -> None:
    assert run.info.status == "FINISHED", (run.info.run_name, run.info.status)
    n_iter = int(run.data.metrics["n_iter"])
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "log_likelihood"))
    assert steps == list(range(n_iter + 1)), run.info.run_name


# --- concurrent first runs and sweeps on a fresh sqlite store -------------------------------


@pytest.mark.slow
def test_first_runs_and_sweeps_started_together_on_a_fresh_store_lose_nothing(tmp_path):
    """Four processes on a store that does not exist yet: two single runs, a sweep with
    the basic launcher and a 16-job sweep on two joblib workers (six writers at once).
    MLflow's schema creation used to race (``table ... already exists``, ``duplicate
    column``): the store is now created and migrated once, under a lock."""
    store = {"uri": f"sqlite:///{tmp_path / 'fresh.db'}", "cwd": tmp_path}
    quiet = "tracking.log_plots=false"
    procs = [
        start_script("fit.py", "seed=1", "tracking.run_name=single-em", quiet, store=store),
        start_script("fit.py", "algorithm=gradient", "stop.max_iter=40",
                     "tracking.run_name=single-adam", quiet, store=store),
        start_script("fit.py", "-m", "seed=0,1", "tags=[basic2]", quiet, store=store),
        start_script("fit.py", "-m", "model.k=1,2,3,4", "seed=0,1,2,3", "hydra/launcher=joblib",
                     "hydra.launcher.n_jobs=2", "tags=[sweep16]",
                     "tracking.summary_param=model.k", quiet, store=store),
    ]
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]
    finally:
        for proc in procs:
            proc.kill()
    client = client_for(store)
    for name in ("single-em", "single-adam"):
        (run,) = runs_of(store, f"attributes.run_name = '{name}'")
        finished_with_every_point(client, run)
    for study, n in (("basic2", 2), ("sweep16", 16)):
        children = study_runs(store, study)
        assert len(children) == n
        for run in children:
            finished_with_every_point(client, run)
        (parent_id,) = {r.data.tags["mlflow.parentRunId"] for r in children}
        parent = client.get_run(parent_id)
        assert parent.info.status == "FINISHED"
        assert {r.data.tags["sweep_id"] for r in children} == {parent.data.tags["sweep_id"]}
    sweep16 = study_runs(store, "sweep16")
    assert {(r.data.params["model.k"], r.data.params["seed"]) for r in sweep16} == {
        (str(k), str(s)) for k in range(1, 5) for s in range(4)}
    parent_id = sweep16[0].data.tags["mlflow.parentRunId"]
    assert "bic_vs_model.k.png" in {a.path for a in client.list_artifacts(parent_id)}
    assert len(runs_of(store)) == 2 + 3 + 17  # nothing else, nothing lost


# --- runs whose process died without a word -------------------------------------------------


ENDLESS_FIT = (*LONG_FIT[:-2], "stop.max_iter=1000000", "progress_every=500")


@pytest.mark.slow
def test_runs_killed_with_sigkill_are_found_and_marked_killed(cfg_factory, store):
    """kill -9 used to leave the run RUNNING forever and its record orphaned in a
    temporary folder. Now the record waits in the project's fallback folder, and the
    start of the next run on the store (or ``python -m experiments.reap``) marks the
    run KILLED, with an end time and how it was found, after uploading the record.
    A run whose process is alive is left alone."""
    from experiments import fit, reap

    fallback = store["cwd"] / "mlflow-fallback"
    procs = [start_script("fit.py", *ENDLESS_FIT, f"tracking.run_name=sigkill-{i}",
                          store=store) for i in (1, 2)]
    try:
        for proc in procs:
            wait_for_line(proc, "EM iteration")
        ids = [runs_of(store, f"attributes.run_name = 'sigkill-{i}'")[0].info.run_id
               for i in (1, 2)]
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(timeout=30)
        record = json.loads((fallback / ids[0] / "run.json").read_text())
        assert record["status"] == "RUNNING" and record["params"]["model.k"] == "3"

        fit.run(cfg_factory(f"tracking.uri={store['uri']}", f"tracking.fallback_dir={fallback}",
                            "model.k=1", "tracking.log_plots=false"))
        client = client_for(store)
        first, second = client.get_run(ids[0]), client.get_run(ids[1])
        assert first.info.status == "KILLED" and first.info.end_time is not None
        assert first.data.tags["killed_by"] == "process gone"
        assert first.data.tags["found_by"].startswith("the start of a run by process")
        assert first.data.params["model.k"] == "3"  # what was logged stays
        assert not (fallback / ids[0]).exists()  # the record was uploaded, then removed
        assert second.info.status == "RUNNING"  # alive: left alone

        procs[1].send_signal(signal.SIGKILL)
        procs[1].wait(timeout=30)
        assert reap.main(["--tracking-uri", store["uri"], "--fallback-dir", str(fallback)]) == 0
        second = client.get_run(ids[1])
        assert second.info.status == "KILLED" and second.info.end_time is not None
        assert second.data.tags["found_by"] == "python -m experiments.reap"
        assert not (fallback / ids[1]).exists()
        assert reap.main(["--tracking-uri", store["uri"], "--fallback-dir", str(fallback)]) == 0
        assert client.get_run(ids[1]).info.end_time == second.info.end_time  # nothing new
    finally:
        for proc in procs:
            proc.kill()


@pytest.mark.slow
def test_ctrl_c_names_the_interruption(store):
    """Ctrl-C used to print ``stopped: `` with no reason."""
    proc = start_script("fit.py", *LONG_FIT, "tracking.run_name=ctrl-c", store=store)
    try:
        wait_for_line(proc, "EM iteration")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    (run,) = runs_of(store, "attributes.run_name = 'ctrl-c'")
    (line,) = [line for line in err.splitlines() if line.startswith("stopped:")]
    assert line == (f"stopped: interrupted by SIGINT (Ctrl-C) (MLflow run {run.info.run_id} "
                    "marked KILLED)")
    assert run.info.status == "KILLED" and run.data.tags["killed_by"] == "SIGINT"


# --- a store that dies mid-run while the fallback folder is bad ------------------------------


@pytest.mark.slow
def test_a_bad_fallback_folder_still_keeps_the_results(tmp_path):
    """``tracking.fallback_dir`` an existing file while the server dies mid-run used to
    end in a FileExistsError traceback, the results left in a temporary folder. Now
    they are kept in the project's ``mlflow-fallback`` (the working directory's), the
    message says how to upload them, and the upload completes the run."""
    port, not_a_folder = free_port(), tmp_path / "a-file"
    not_a_folder.write_text("")
    with mlflow_server(tmp_path, port) as server:
        store = {"uri": server.url, "cwd": tmp_path}
        proc = start_script("fit.py", *LONG_FIT, "tracking.run_name=orphan",
                            f"tracking.fallback_dir={not_a_folder}", store=store,
                            env={**script_env(), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
        try:
            wait_for_line(proc, "EM iteration")
            server.stop()
            _, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
    assert proc.returncode == 1 and "Traceback" not in err and "FileExistsError" not in err
    (folder,) = (tmp_path / "mlflow-fallback").iterdir()
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert server.url in line and str(folder) in line
    assert f"python -m experiments.fallback {folder} --tracking-uri {server.url}" in line
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "FINISHED" and record["params"]["model.k"] == "3"
    points = [json.loads(p) for p in (folder / "metrics.jsonl").read_text().splitlines()]
    assert len([p for p in points if p["key"] == "log_likelihood"]) == 4001
    assert {"params.npz", "params.json", "config.yaml"} <= {
        p.name for p in (folder / "artifacts").iterdir()}

    with mlflow_server(tmp_path, port) as server:  # the same server comes back
        from experiments.fallback import upload

        run_id = upload(folder)
        assert run_id == folder.name
        client = client_for({"uri": server.url})
        assert client.get_run(run_id).info.status == "FINISHED"
        assert len(client.get_metric_history(run_id, "log_likelihood")) == 4001
        assert "params.npz" in {a.path for a in client.list_artifacts(run_id)}


# --- every config value checked before a run is created ------------------------------------


@pytest.mark.parametrize("overrides, message", [
    (["algorithm=meanshift", "algorithm.max_iter=-5"], "algorithm.max_iter must be an integer >= 1, got -5"),
    (["model.reg_covar=nan"], "model.reg_covar must be a finite number >= 0, got nan"),
    (["data=synthetic", "data.n_samples=0"], "data.n_samples must be an integer >= 1, got 0"),
    (["data=synthetic", "data.n_features=0"], "data.n_features must be an integer >= 1, got 0"),
    (["data=synthetic", "data.n_components=0"], "data.n_components must be an integer >= 1"),
    (["stop.tol=-1"], "stop.tol must be a finite number >= 0"),
    (["algorithm=gradient", "optimizer.name=adamm"], "optimizer 'adamm': Invalid value for 'optimizer'"),
    (["compare=[em,nosuch]"], "optimizer 'nosuch'"),
    (["algorithm=gradient", "+optimizer.options.foo=1"], "Unknown arguments for optimizer 'adam'"),
    (["data=synthetic", "data.n_samples=2", "model.k=3"], "the data have 2 rows, fewer than model.k=3"),
])
def test_every_config_value_is_checked_before_a_run_is_created(cfg_factory, store, capsys,
                                                               overrides, message):
    from experiments import fit

    before = len(runs_of(store))
    line = one_line_error(fit.run, cfg_factory(f"tracking.uri={store['uri']}", *overrides), capsys)
    assert message in line
    assert len(runs_of(store)) == before  # no FAILED run left behind


def test_the_synthetic_generator_refuses_empty_sizes():
    """``make_mixture(..., n_features=0)`` used to raise an IndexError."""
    for k, d in ((3, 0), (0, 2)):
        with pytest.raises(ValueError, match="n_features|n_components"):
            mg.make_mixture(0, 10, k, d)


def test_any_optax_optimiser_runs_without_a_preset(cfg_factory):
    from experiments import compare, fit

    summary = fit.run(cfg_factory("algorithm=gradient", "optimizer.name=lion",
                                  "optimizer.learning_rate=0.01", "stop.max_iter=5",
                                  "tracking.enabled=false"))
    assert summary.method == "lion" and summary.n_iter == 5
    summary = compare.run(cfg_factory("compare=[em,lion]", "stop.max_iter=5",
                                      "tracking.enabled=false"))
    assert list(summary.methods) == ["em", "lion"]


# --- broken stores: one line naming the store and what to do, within 10 s ---------------------


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody may write in (root too: the immutable flag)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = os.geteuid() == 0
    if immutable and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("running as root without chattr +i: cannot make a folder read-only")
    try:
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


@pytest.mark.parametrize("case", ["not writable", "corrupt", "unknown scheme",
                                  "deleted experiment"])
def test_a_broken_store_is_one_line_within_ten_seconds(cfg_factory, store, tmp_path, capsys,
                                                       request, case):
    """They used to give tracebacks of 32 to 192 lines, one after 107 s."""
    from experiments import fit

    name = "mogjax"
    if case == "not writable":
        uri = f"sqlite:///{request.getfixturevalue('read_only_folder') / 'mlflow.db'}"
        advice = "cannot write in"
    elif case == "corrupt":
        (tmp_path / "mlflow.db").write_bytes(b"not a database\n" * 1000)
        uri, advice = f"sqlite:///{tmp_path / 'mlflow.db'}", "is not an sqlite database"
    elif case == "unknown scheme":
        uri, advice = "sqlit:///mlflow.db", "unknown scheme 'sqlit'"
    else:
        client = client_for(store)
        name = f"deleted-{time.monotonic_ns()}"
        client.delete_experiment(client.create_experiment(name))
        uri, advice = store["uri"], "mlflow experiments restore --experiment-id"
    cfg = cfg_factory(f"tracking.uri={uri}", f"tracking.experiment_name={name}",
                      "tracking.log_plots=false")
    start = time.monotonic()
    line = one_line_error(fit.run, cfg, capsys)
    assert time.monotonic() - start < 10
    assert uri in line and advice in line
    assert "tracking.uri" in line or "tracking.experiment_name=NAME" in line


def test_a_sweep_on_a_broken_store_stops_before_any_job(cfg_factory, tmp_path, capsys):
    """Two sweeps on a fresh store used to fail in ``on_multirun_start`` with a
    traceback; a broken store there is one line too, before any job."""
    from experiments.sweep import SweepCallback

    (tmp_path / "mlflow.db").write_bytes(b"\x00garbage" * 100)
    config = cfg_factory(f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", hydra=True)
    with pytest.raises(SystemExit) as exit_info:
        SweepCallback().on_multirun_start(config)
    assert exit_info.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: tracking store") and "is not an sqlite database" in line


# --- data files ------------------------------------------------------------------------------


def load(path, **kwargs):
    return mg.datasets.load_file(path, **kwargs)


def test_a_typo_in_the_first_row_is_an_error_not_a_header(tmp_path):
    """``3.6,7x9`` used to be taken for a header and dropped: 5 of 6 rows fitted."""
    path = tmp_path / "typo.csv"
    path.write_text("3.6,7x9\n1,2\n3,4\n")
    with pytest.raises(ValueError, match=r"typo.csv'?, line 1, column 2: '7x9' is not a number "
                                         r"\(a header row holds no numbers"):
        load(path)
    assert load(path, header=True).tolist() == [[1, 2], [3, 4]]  # forced: skipped
    named = tmp_path / "named.csv"
    named.write_text("# comment\nduration,waiting\n1,2\n")
    assert load(named).tolist() == [[1, 2]]  # no number in it: a header
    with pytest.raises(ValueError, match="line 2, column 1: 'duration' is not a number"):
        load(named, header=False)
    numbers = tmp_path / "numbers.csv"
    numbers.write_text("1,2\n3,4\n")
    assert load(numbers, header=True).tolist() == [[3, 4]]


def test_data_header_from_the_config(cfg_factory, tmp_path, capsys):
    from experiments import fit

    path = tmp_path / "x.csv"
    np.savetxt(path, FAITHFUL32.astype(np.float64), delimiter=",", header="a,b", comments="")
    cfg = cfg_factory("data=file", f"data.path={path}", "data.header=false",
                      "tracking.enabled=false")
    assert "line 1, column 1: 'a' is not a number" in one_line_error(fit.run, cfg, capsys)
    cfg = cfg_factory("data=file", f"data.path={path}", "data.header=true", "tracking.enabled=false")
    assert fit.run(cfg).n_iter >= 1


def test_a_file_of_nul_bytes_is_refused_from_its_first_bytes(tmp_path):
    """A 2 GB file of NUL bytes named .csv used to take 89 s and 18 GB of memory."""
    path = tmp_path / "zeros.csv"
    with open(path, "wb") as f:
        f.truncate(2 * 1024**3)  # sparse: no disk used
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"zeros.csv'? is not a text file \(a NUL byte at byte 1\)"):
        load(path)
    assert time.monotonic() - start < 2


def test_a_binary_file_is_named(tmp_path):
    """``'utf-8' codec can't decode byte 0xdd`` used to come without the file's name."""
    path = tmp_path / "binary.csv"
    path.write_bytes(bytes(range(0xD0, 0xFF)) * 10)
    with pytest.raises(ValueError, match=r"binary.csv'? is not UTF-8 text \(byte 0xd0 at byte 1\)"):
        load(path)
    later = tmp_path / "later.csv"  # valid at first, then a bad byte in line 3
    later.write_bytes(b"1,2\n" * (70_000 // 4) + b"3,\xdd\n")
    with pytest.raises(ValueError, match=r"line 17501, byte 3: not UTF-8 text"):
        load(later)


def test_a_folder_and_an_endless_line_are_named(tmp_path):
    """A folder used to be reported as "does not exist"."""
    (tmp_path / "data.csv").mkdir()
    with pytest.raises(ValueError, match=r"data.csv'? is a folder, not a file"):
        load(tmp_path / "data.csv")
    line = tmp_path / "line.csv"
    line.write_text("1," * (1 << 20))
    with pytest.raises(ValueError, match="line 1: longer than 1048576 bytes"):
        load(line)


def test_parsing_streams_with_bounded_memory(tmp_path):
    """The rows are read line by line into blocks: memory at the peak is the result and
    a block, not the file's lines as strings and lists."""
    import tracemalloc

    rows = 200_000
    path = tmp_path / "big.csv"
    np.savetxt(path, np.random.default_rng(0).normal(size=(rows, 2)), delimiter=",", fmt="%.6f")
    tracemalloc.start()
    try:
        x = load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert x.shape == (rows, 2)
    assert peak < 3 * x.nbytes + 16e6, peak  # the old reader held ~30x the result


# --- rerun names the cause of a mismatch ----------------------------------------------------


@pytest.mark.slow
def test_rerun_names_the_files_changed_since_the_logged_run(store, tmp_path, capsys):
    """After a source edit rerun used to say "did not reproduce" and no more. A run
    logged from a copy of the project whose code differs (the fit ignores the logged
    tol) is re-run here: the message names the changed file."""
    from experiments import rerun

    copy = tmp_path / "project"
    for part in ("mogjax", "experiments", "conf"):
        shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    common = copy / "experiments" / "common.py"
    text = common.read_text()
    assert "kwargs = dict(tol=stop.tol," in text
    common.write_text(text.replace("kwargs = dict(tol=stop.tol,", "kwargs = dict(tol=1e-2,"))
    env = {**script_env(), "PYTHONPATH": str(copy)}
    args = [sys.executable, str(copy / "experiments" / "fit.py"), "tracking.run_name=edited",
            f"tracking.uri={store['uri']}", "tracking.log_plots=false"]
    proc = subprocess.run(args, cwd=store["cwd"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = runs_of(store, "attributes.run_name = 'edited'")
    capsys.readouterr()
    assert rerun.main([run.info.run_id, "--tracking-uri", store["uri"]]) == 1
    out = capsys.readouterr().out
    assert "did not reproduce" in out and "log_likelihood: " in out
    assert "the code changed since the logged run: experiments/common.py (modified)" in out


def test_rerun_names_package_versions():
    from experiments import rerun
    from experiments.provenance import environment, source_files

    logged = {"tags": {}, "sources": source_files(),
              "environment": {**environment(), "packages": {"jax": "0.0.1"}}}
    assert rerun.causes(logged) == [
        f"the environment differs: jax: 0.0.1 then, {environment()['packages']['jax']} now"]


# --- every logged setting is a used setting ---------------------------------------------


class _Reached(Exception):
    """Raised by a stand-in for a library fit: the config has been read by then."""


def recorded_reads(mp, seen: set) -> None:
    """Inside ``mp`` (a ``MonkeyPatch`` context): every full key read from a config by
    attribute, item or ``get`` access goes in ``seen`` (``validate`` reads through
    ``OmegaConf.select``, which is not counted), and the library's fits are stand-ins
    that stop the run once called (no compile)."""
    from omegaconf import DictConfig

    from experiments import common

    def recording(original):
        def read(self, key, *default):
            value = original(self, key, *default)
            try:
                seen.add(self._get_full_key(key))
            except Exception:  # noqa: BLE001 - a key outside the tree: not a setting
                pass
            return value
        return read

    for name in ("__getattr__", "__getitem__", "get"):
        mp.setattr(DictConfig, name, recording(getattr(DictConfig, name)))

    def reached(*args, **kwargs):
        raise _Reached

    for name in ("fit_em", "fit_gradient", "fit_variational", "mean_shift", "fit_em_seeds"):
        mp.setattr(mg, name, reached)
    mp.setattr(mg, "estimate_bandwidth", lambda *a, **k: 1.0)
    mp.setattr(common, "time_start", lambda *a, **k: 0.0)


# Logged, and read outside load_data and the fit: by design.
READ_ELSEWHERE = {
    "method", "stop_rule",  # what the run is, in words: written by run_params itself
    "precision",  # the precision context around the whole run (common.precision)
    "tags",  # the run's tags
    "data.name",  # the run's data label (configs.data_label)
    "algorithm.threshold",  # variational: counts the effective components after the fit
    "n_seeds",  # fit.run: one fit, or every seed in one program (fit_em_seeds)
}


def group_options() -> list[tuple[str, ...]]:
    """Compositions that together choose every option of every config group at least
    once (composing costs a quarter of a second: options of different groups share
    one): each optimizer with algorithm=gradient, each other algorithm, each
    experiment, the data, model and tracking options spread over them."""
    from tests.mlflow_helpers import CONF

    def options(group):
        return [f"{group}={n.removesuffix('.yaml')}"
                for n in sorted(os.listdir(os.path.join(CONF, group))) if n.endswith(".yaml")]

    groups = sorted(g for g in os.listdir(CONF) if os.path.isdir(os.path.join(CONF, g))
                    and g not in ("hydra", "predict"))
    known = {"optimizer", "algorithm", "experiment", "data", "model", "tracking"}
    assert set(groups) == known, f"a new config group: add it here {set(groups) - known}"
    runs = [("algorithm=gradient", o) for o in options("optimizer")]
    runs += [(o,) for o in options("algorithm") if o != "algorithm=gradient"]
    spread = [o for g in ("data", "model", "tracking") for o in options(g)]
    runs = [(*r, spread[i % len(spread)]) for i, r in enumerate(runs)]
    assert len(runs) >= len(spread)
    return runs + [(o,) for o in options("experiment")]


def _fake_data(seed, n, k, d, **kwargs):
    """Generated data without compiling the generator (the test reads settings)."""
    from types import SimpleNamespace

    x = np.random.default_rng(seed).normal(size=(n, d))
    return x, np.zeros(n, int), SimpleNamespace(means=x[:k])


def test_every_logged_setting_reaches_the_code_or_is_rejected(cfg_factory, tmp_path, capsys):
    """``+optimizer.bogus=1`` and ``+optimizer.b1=2.0`` used to run, be logged as params
    and change nothing. Every option of every group is composed; each setting a run
    logs is read by loading the data or fitting (or is listed in READ_ELSEWHERE), and
    a key no schema declares is one error line naming the nearest valid key."""
    from experiments import common, configs, fit
    from experiments.tracking import flatten

    path = tmp_path / "x.csv"
    np.savetxt(path, FAITHFUL32[:40].astype(np.float64), delimiter=",", header="a,b",
               comments="")
    unread = {}
    for options in group_options():
        cfg = cfg_factory(*options, f"data.path={path}", "tracking.enabled=false",
                          "data.n_samples=40")
        configs.validate(cfg)
        reads = set()
        with pytest.MonkeyPatch.context() as mp, pytest.raises(_Reached):
            recorded_reads(mp, reads)
            method = fit.method_of(cfg)
            for name in ("make_mixture", "make_separated_mixture"):
                mp.setattr(mg, name, _fake_data)
            mp.setattr(mg, "bayes_error", lambda params: 0.0)
            fit.compute(cfg, common.load_data(cfg))
        logged = set(flatten(configs.run_params(cfg, method)))
        # tracking.* is read by the tracking layer (store, run, registry), theory.* by
        # EM runs after the fit (common.em_theory at the fitted parameters)
        missed = sorted(k for k in logged - reads - READ_ELSEWHERE
                        if not k.startswith(("tracking.", "theory.")))
        if missed:
            unread[options] = missed
    assert not unread, unread
    for override, words in [
        ("+optimizer.bogus=1", "optimizer.bogus is not a setting"),
        ("+optimizer.b1=2.0", "goes in optimizer.options (+optimizer.options.b1=...)"),
        ("+model.kk=3", "the nearest valid one is model.k"),
        ("model.n_init=3", "model.n_init=3 does nothing with algorithm=gradient"),
    ]:
        line = one_line_error(fit.run, cfg_factory("algorithm=gradient", override,
                                                   "tracking.enabled=false"), capsys)
        assert words in line, line


# --- a run recovered from the fallback folder keeps its model --------------------------------


def test_a_run_recovered_from_the_fallback_folder_keeps_its_model(cfg_factory, store,
                                                                   tmp_path, monkeypatch):
    """Uploaded from its local record (``python -m experiments.fallback``), a run used to
    land FINISHED without ``runs:/<id>/model``. The record keeps the model's files and
    the upload logs them. (A healthy run's record, kept by hand, stands in for one kept
    by a store that froze mid-run; a new run id makes the upload create the run.)"""
    import uuid

    import mlflow

    from experiments import fallback, fit

    monkeypatch.chdir(store["cwd"])
    monkeypatch.setattr(fallback.RunRecord, "discard", lambda self: None)
    cfg = cfg_factory(f"tracking.uri={store['uri']}", f"tracking.fallback_dir={tmp_path}",
                      "tracking.log_plots=false", "stop.max_iter=20",
                      "tracking.experiment_name=recovered")
    summary = fit.run(cfg)
    record = fallback.RunRecord(tmp_path / summary.run_id)
    assert (record.folder / fallback.MODEL_DIR / fallback.MODEL_EXAMPLE).is_file()
    record._write_meta({**record.meta, "run_id": uuid.uuid4().hex})  # the store lost it
    run_id = fallback.upload(record.folder, store["uri"])
    assert run_id != summary.run_id
    mlflow.set_tracking_uri(store["uri"])
    loaded = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    import pandas as pd

    rows = pd.DataFrame(mg.load_old_faithful()[:5], columns=loaded.metadata.get_input_schema()
                        .input_names())
    labels = loaded.predict(rows, params={"output": "label"})
    assert len(labels) == 5
    assert fallback.upload(record.folder, store["uri"]) == run_id  # idempotent: no second model
    client = client_for(store)
    exp_id = client.get_run(run_id).info.experiment_id
    assert sum(m.source_run_id == run_id for m in client.search_logged_models([exp_id])) == 1


# --- rerun.py: every kind of run, and only finished ones -------------------------------------


def test_rerun_reproduces_a_variational_run_and_refuses_unfinished_ones(cfg_factory, store,
                                                                         capsys, monkeypatch):
    """A variational run used to fail with "Invalid value for 'optimizer':
    'variational'"; a KILLED run was silently re-fitted whole, with nothing to compare
    against. Now the first reproduces bit for bit and the second is one line naming
    its status."""
    from experiments import fit, rerun

    monkeypatch.chdir(store["cwd"])
    summary = fit.run(cfg_factory(f"tracking.uri={store['uri']}", "algorithm=variational",
                                  "model.k=3", "stop.max_iter=30", "tracking.log_plots=false"))
    capsys.readouterr()
    assert rerun.main([summary.run_id, "--tracking-uri", store["uri"]]) == 0
    assert "lower_bound" in capsys.readouterr().out
    client = client_for(store)
    killed = client.create_run(client.get_run(summary.run_id).info.experiment_id,
                               tags={"method": "em"})
    client.set_terminated(killed.info.run_id, "KILLED")
    assert rerun.main([killed.info.run_id, "--tracking-uri", store["uri"]]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and "ended KILLED" in line


# --- checks before compute -------------------------------------------------------------------


def test_what_cannot_run_stops_before_a_run_exists(cfg_factory, store, capsys, monkeypatch):
    """``model.k=100000`` on 200,000 rows ended in a 51-line RESOURCE_EXHAUSTED
    traceback (80 GB) on a FAILED run; ``compare=[]`` failed with "max() arg is an empty
    sequence" after creating its run; a batch larger than the data failed after the run
    existed. Each is now one line before any run."""
    from experiments import compare, configs, fit

    monkeypatch.setattr(configs, "available_memory", lambda: 8 * 2**30)
    uri = f"tracking.uri={store['uri']}"
    before = len(runs_of(store))
    cases = [
        (fit.run, ["model.k=100000", "data=synthetic", "data.n_samples=200000"],
         "the fit needs about 74.5 GB (200000 rows x 100000 components x 4 bytes"),
        (compare.run, ["compare=[]"], "compare=[] names no method"),
        (fit.run, ["algorithm=gradient", "algorithm.batch_size=1000", "data=iris"],
         "algorithm.batch_size=1000 is more than the data's 150 rows"),
    ]
    for run, overrides, words in cases:
        line = one_line_error(run, cfg_factory(uri, "precision=float32", *overrides), capsys)
        assert words in line, line
    assert len(runs_of(store)) == before


def test_a_long_fit_reports_progress_unasked(cfg_factory, caplog):
    """``model.k=20000`` at n=1e5 ran 300 s without a line; a fit expected to take
    more than a few seconds now reports about every 5 s (short ones stay quiet)."""
    from experiments import common

    cfg = cfg_factory("model.k=20000", "precision=float32")
    with caplog.at_level("WARNING", logger="experiments.common"):
        every = common.auto_progress(cfg, np.empty((100_000, 2)), 1000)
    assert every >= 1 and "progress every" in caplog.text
    assert common.auto_progress(cfg_factory(), FAITHFUL32, 1000) == 0
    assert common.auto_progress(cfg_factory("progress_every=7"), FAITHFUL32, 1000) == 7


# --- smaller ones ----------------------------------------------------------------------------


def test_the_smaller_records_tell_the_truth(cfg_factory, capsys, tmp_path):
    """Tags that could not be told apart once stored (``['a,b']`` and ``['a', 'b']``)
    are refused; a bare sqlite path as the store names the ``sqlite:///`` form (it
    showed MLflow's truncated deprecation notice); reap names ten run ids and counts the
    rest (500 ids made one line); a schema error keeps its reason, not the whole input."""
    from experiments import fit, predict, reap, store

    line = one_line_error(fit.run, cfg_factory("tags=['a,b']", "tracking.enabled=false"), capsys)
    assert "tags entry 'a,b'" in line
    with pytest.raises(store.TrackingUnavailable, match=r"write sqlite:///.*mlflow\.db"):
        store.check(str(tmp_path / "mlflow.db"))
    text = reap.summary_line([f"run{i}" for i in range(500)], "sqlite:///x.db")
    assert text.endswith("run9 and 490 more") and len(text) < 200
    err = ValueError("Failed to enforce schema of data '[[1, 2]\n [3, 4]]' with schema "
                     "'[...]'. Error: Model is missing inputs ['a'].")
    assert predict.one_line(err) == ("the data do not match the model's signature: Model is "
                                     "missing inputs ['a'].")
