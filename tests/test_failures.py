"""Runs that fail lose nothing (issue 6), with real components: a failing job in a
sweep, SIGTERM mid-fit, an unreachable or crashing tracking server, bit-for-bit
re-runs and bad data files. (Concurrent writers on a fresh store, kill -9, Ctrl-C, a
server dying while the fallback folder is bad, broken stores: tests/test_hostile.py.)"""

import json
import signal

import numpy as np
import pytest

import mogjax as mg
from tests.mlflow_helpers import (LONG_FIT, client_for, free_port, mlflow_server, run_script,
                                  runs_of, start_script, study_runs, wait_for_line)

# A cloud and 8 copies of one point: without reg_covar, EM (float32, seed 0) collapses
# a component onto the copies after ~20 iterations: a real failure, mid-fit.
def collapsing_data(path):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (60, 2)), np.tile([[3.0, 3.0]], (8, 1))])
    np.savetxt(path, x, delimiter=",")
    return path



# ------------------------------------------------------------ failing jobs


def test_a_failing_job_is_a_failed_run_and_the_sweep_goes_on(store):
    data = collapsing_data(store["cwd"] / "collapse.csv")
    proc = run_script("fit.py", "-m", "data=file", f"data.path={data}",
                      "model.reg_covar=0.0,1e-3,1e-2,0.1", "tags=[failsweep]",
                      "tracking.summary_param=model.reg_covar", store=store, check=False)
    assert proc.returncode != 0  # the sweep reports the failure
    runs = study_runs(store, "failsweep")
    status = {r.data.params["model.reg_covar"]: r.info.status for r in runs}
    assert status == {"0.0": "FAILED", "0.001": "FINISHED", "0.01": "FINISHED", "0.1": "FINISHED"}
    (failed,) = [r for r in runs if r.info.status == "FAILED"]
    client = client_for(store)
    history = client.get_metric_history(failed.info.run_id, "log_likelihood")
    assert len(history) > 5  # the curve up to the failure
    assert sorted(m.step for m in history) == list(range(len(history)))
    assert failed.data.tags["degenerate"] == "true"
    assert failed.data.tags["error_type"] == "DegenerateCovarianceError"
    artifacts = {a.path for a in client.list_artifacts(failed.info.run_id)}
    assert {"error.txt", "config.yaml", "params.npz"} <= artifacts
    text = client.download_artifacts(failed.info.run_id, "error.txt", str(store["cwd"]))
    assert "Traceback" in open(text).read()
    parent = client.get_run(failed.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FAILED" and parent.data.tags["sweep_parent"] == "true"
    assert "bic_vs_model.reg_covar.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_sigterm_mid_fit_marks_the_run_killed(store):
    proc = start_script("fit.py", *LONG_FIT, "tracking.run_name=killed", store=store)
    try:
        wait_for_line(proc, "EM iteration")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        proc.kill()
    (run,) = runs_of(store, "attributes.run_name = 'killed'")
    assert run.info.status == "KILLED" and run.data.tags["killed_by"] == "SIGTERM"
    assert run.data.params["model.k"] == "3"  # what was logged before stays


# ---------------------------------------------------------- tracking server


def test_an_unreachable_tracking_uri_fails_before_any_compute(cfg_factory, tmp_path):
    from experiments import fit
    from experiments.tracking import TrackingUnavailable

    uri = f"http://127.0.0.1:{free_port()}"
    missing = tmp_path / "nope.csv"  # loading it would fail: the URI is checked first
    cfg = cfg_factory(f"tracking.uri={uri}", "data=file", f"data.path={missing}")
    with pytest.raises(TrackingUnavailable, match=uri.replace(".", r"\.")):
        fit.run(cfg)


def test_runs_nested_in_a_run_whose_store_died_are_kept_locally(cfg_factory, tmp_path, monkeypatch):
    from experiments import fallback, tracking

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with mlflow_server(tmp_path) as server:
        cfg = cfg_factory(f"tracking.uri={server.url}", f"tracking.fallback_dir={tmp_path / 'kept'}")
        with pytest.raises(tracking.TrackingUnavailable) as info:
            with tracking.start_run(cfg, "parent", {}) as parent:
                parent_id = parent.info.run_id
                with tracking.start_run(cfg, "child-0", {}, parent=parent) as child:
                    child.log_curve("log_likelihood", [1.0, 2.0])
                server.stop()
                for i in (1, 2):  # computed after the store died: kept, not lost
                    with tracking.start_run(cfg, f"child-{i}", {}, parent=parent) as child:
                        child.log_curve("log_likelihood", [1.0, 2.0, 3.0])
    kept = sorted((tmp_path / "kept").iterdir())
    assert len(kept) == 3 and parent_id in {k.name for k in kept}  # child-0 was logged
    for folder in kept:
        assert str(folder) in str(info.value)
        record = json.loads((folder / "run.json").read_text())
        assert record["status"] == "FINISHED"
        if record["run_name"] != "parent":
            assert record["tags"]["mlflow.parentRunId"] == parent_id
            assert len((folder / "metrics.jsonl").read_text().splitlines()) == 3
    # the store is still down: the upload command says so in one line
    assert fallback.main([str(kept[0])]) == 1


# ---------------------------------------------------------- reproducibility


def _mixture(result):
    return result.params, result.curve


@pytest.mark.parametrize("fit", [
    lambda x: _mixture(mg.fit_em(x, 3, n_init=3, seed=5)),
    lambda x: _mixture(mg.fit_gradient(x, 3, optimizer="adam", steps=30, batch_size=64, seed=5)),
    lambda x: (lambda r: (r.centers, r.labels, r.curve))(mg.mean_shift(x, 1.0, max_iter=50)),
], ids=["em-restarts", "gradient-minibatch", "meanshift"])
def test_same_config_and_seed_give_identical_results(blobs, fit):
    import jax

    x = blobs[0]
    first, second = jax.tree.leaves(fit(x)), jax.tree.leaves(fit(x))
    assert len(first) == len(second) >= 3
    for a, b in zip(first, second):
        assert np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)


def test_rerun_confirms_a_logged_run_and_notices_changed_data(cfg_factory, store, tmp_path,
                                                              capsys):
    from experiments import fit, rerun

    data = tmp_path / "x.csv"
    np.savetxt(data, mg.load_old_faithful(), delimiter=",")
    cfg = cfg_factory(f"tracking.uri={store['uri']}", "data=file", f"data.path={data}",
                      "model.n_init=2", "seed=4")
    run_id = fit.run(cfg).run_id
    args = [run_id, "--tracking-uri", store["uri"]]  # experiments/rerun.py's arguments
    capsys.readouterr()
    assert rerun.main(args) == 0
    assert "identical, bit for bit" in capsys.readouterr().out

    np.savetxt(data, mg.load_old_faithful()[:-1], delimiter=",")
    assert rerun.main(args) == 1 and "the data changed" in capsys.readouterr().out


def test_a_run_records_what_a_rerun_needs(cfg_factory, store):
    from experiments import fit

    run_id = fit.run(cfg_factory(f"tracking.uri={store['uri']}", "model.k=1")).run_id
    client = client_for(store)
    run = client.get_run(run_id)
    assert {"git_commit", "git_dirty", "data_hash", "seed"} <= set(run.data.tags)
    path = client.download_artifacts(run_id, "environment.json", str(store["cwd"]))
    env = json.loads(open(path).read())
    assert env["packages"]["jax"] and env["packages"]["mlflow"] and env["python"]


# --------------------------------------------------------------- bad inputs


BAD_FILES = {
    "missing.csv": (None, "does not exist"),
    "empty.csv": ("", "is empty"),
    "words.csv": ("a,b\n1,2\n3,x\n", "line 3, column 2: 'x' is not a number"),
    "nan.csv": ("1,2\nnan,4\n", "NaN or infinity (row 2, column 1)"),
    "ragged.csv": ("1,2\n3,4,5\n", "line 2: 3 columns, expected 2"),
    "object.npy": (np.array([{"a": 1}], dtype=object), "not a plain numeric .npy"),
    "wide.csv": ("1,2,3\n4,5,6\n", "has 3 columns, expected 2"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_data_file_gets_one_error_line(cfg_factory, tmp_path, capsys, name):
    from experiments import common, fit

    content, message = BAD_FILES[name]
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        np.save(path, content, allow_pickle=True)
    cfg = cfg_factory("data=file", f"data.path={path}", "data.columns=2", "tracking.enabled=false")
    with pytest.raises(SystemExit) as exit_info:
        common.one_line_errors(fit.run)(cfg)
    assert exit_info.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert str(path) in lines[0]


def test_a_bad_data_file_from_the_command_line(store):
    proc = run_script("fit.py", "data=file", "data.path=nowhere.npy", store=store, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: data file 'nowhere.npy' does not exist"
