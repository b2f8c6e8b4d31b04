"""The experiment layer with real components: Hydra composition and multirun, a real
MLflow sqlite store, a real ``mlflow server`` on 127.0.0.1."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import mogjax as mg

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")


@pytest.fixture(scope="module")
def cfg_factory():
    from experiments import configs

    configs.register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        yield lambda *overrides: compose("config", overrides=list(overrides))
    GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module (creating one costs seconds)."""
    path = tmp_path_factory.mktemp("mlflow")
    return {"uri": f"sqlite:///{path / 'mlflow.db'}", "cwd": path}


def run_script(script, *overrides, store=None, check=True):
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore"}
    env.pop("MLFLOW_TRACKING_URI", None)
    args = [sys.executable, str(ROOT / "experiments" / script), *overrides]
    if store:
        args.append(f"tracking.uri={store['uri']}")
    proc = subprocess.run(args, cwd=store["cwd"] if store else ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    return proc


def client_for(store):
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(store["uri"])
    return MlflowClient(store["uri"])


def runs_of(store, filter_string=""):
    client = client_for(store)
    exp = client.get_experiment_by_name("mogjax")
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=filter_string)


# ----------------------------------------------------------------- composition


GROUP_OPTIONS = [
    ("data=faithful",), ("data=iris", "model.k=3"), ("data=synthetic", "data.n_samples=120"),
    ("model.covariance_type=diag",), ("model.covariance_type=identity",),
    ("model.init=random_from_data",), ("optimizer=sgd",), ("tracking=none",),
    ("experiment=lecture_soft_kmeans", "data.n_samples=90"),
    ("experiment=k_selection",),
    ("algorithm=gradient", "algorithm.steps=20"),
    ("algorithm=meanshift",),
    ("algorithm=meanshift", "algorithm.bandwidth=0.5", "data=synthetic", "data.n_samples=150"),
    ("algorithm=gradient", "optimizer=lbfgs", "algorithm.steps=5"),
    ("experiment=em_vs_gradient", "data.n_samples=150", "algorithm.max_iter=5"),
]


@pytest.mark.parametrize("overrides", GROUP_OPTIONS)
def test_every_option_composes_and_runs(cfg_factory, overrides):
    from experiments import fit

    cfg = cfg_factory(*overrides, "tracking.enabled=false")
    summary = fit.run(cfg)
    assert summary["n_iter"] >= 1
    assert np.isfinite(summary.get("final_log_likelihood", summary.get("n_clusters")))


def test_every_yaml_file_composes(cfg_factory):
    for group in ("data", "model", "algorithm", "optimizer", "tracking", "experiment"):
        for path in sorted((ROOT / "conf" / group).glob("*.yaml")):
            cfg = cfg_factory(f"{group}={path.stem}")
            assert cfg.seed == 0


def test_data_file_option(cfg_factory, tmp_path):
    from experiments import fit

    x = mg.load_old_faithful()
    np.save(tmp_path / "x.npy", x)
    cfg = cfg_factory("data=file", f"data.path={tmp_path / 'x.npy'}", "tracking.enabled=false")
    summary = fit.run(cfg)
    np.testing.assert_allclose(summary["final_log_likelihood"], -4.1554, atol=1e-3)


@pytest.mark.parametrize("overrides, message", [
    (["model.kk=3"], "kk"),
    (["model.covariance_type=fulll"], "fulll"),
    (["algorithm=gradiant"], "gradiant"),
])
def test_bad_overrides_fail_before_any_run(store, overrides, message):
    proc = run_script("fit.py", *overrides, store=store, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert runs_of(store, f"params.`model.k` = '3'") == [] or "kk" not in message


def test_bad_init_name_fails_before_data(cfg_factory):
    from experiments import fit

    with pytest.raises(ValueError, match="'init'"):
        fit.run(cfg_factory("model.init=kmeans+", "tracking.enabled=false"))


# ------------------------------------------------------------- logged runs


def test_fit_script_logs_a_complete_run(store):
    proc = run_script("fit.py", "seed=3", "tracking.run_name=fit-test", store=store)
    assert "MLflow run" in proc.stdout
    (run,) = runs_of(store, "attributes.run_name = 'fit-test'")
    client = client_for(store)
    tags = run.data.tags
    assert tags["data"] == "faithful" and tags["algorithm"] == "em" and tags["seed"] == "3"
    assert len(tags["data_hash"]) == 16 and "git_commit" in tags
    assert run.data.params["model.k"] == "2"
    n_iter = int(run.data.metrics["n_iter"])
    history = client.get_metric_history(run.info.run_id, "log_likelihood")
    assert sorted(m.step for m in history) == list(range(n_iter + 1))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"params.npz", "params.json", "config.yaml", "curve.png", "clusters.png",
            ".hydra"} <= artifacts
    from experiments.tracking import load_run_params

    params = load_run_params(run.info.run_id, store["uri"])
    x = mg.load_old_faithful()
    np.testing.assert_allclose(float(mg.mean_log_likelihood(params, x)),
                               run.data.metrics["final_log_likelihood"], rtol=1e-5)
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


def test_joblib_multirun_is_one_sweep(store):
    run_script("fit.py", "-m", "model.k=1,2,3", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "tracking.experiment_name=mogjax",
               "tags=[sweeptest]", "tracking.summary_param=model.k", store=store)
    children = runs_of(store, "tags.study = 'sweeptest'")
    assert len(children) == 3
    sweep_ids = {r.data.tags["sweep_id"] for r in children}
    parents = {r.data.tags["mlflow.parentRunId"] for r in children}
    assert len(sweep_ids) == 1 and len(parents) == 1
    client = client_for(store)
    parent = client.get_run(parents.pop())
    assert parent.data.tags["sweep_id"] == sweep_ids.pop()
    assert "bic_vs_model.k.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_compare_script_shares_the_start(store):
    proc = run_script("compare.py", "tracking.run_name=compare-test", "algorithm.max_iter=30",
                      store=store)
    assert "mlflow ui --backend-store-uri" in proc.stdout and "model-metrics" in proc.stdout
    (parent,) = runs_of(store, "attributes.run_name = 'compare-test'")
    client = client_for(store)
    em_curve = client.get_metric_history(parent.info.run_id, "log_likelihood/em")
    adam_curve = client.get_metric_history(parent.info.run_id, "log_likelihood/adam")
    assert em_curve and adam_curve
    first = lambda h: next(m.value for m in h if m.step == 0)
    assert first(em_curve) == first(adam_curve)
    children = runs_of(store, f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert {c.data.tags["method"] for c in children} == {"em", "adam"}
    assert "curves.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}


# ------------------------------------------------------------- tracking server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fit_against_a_real_mlflow_server(tmp_path):
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start")
        run_script("fit.py", f"tracking.uri={url}", "tracking.run_name=server-test",
                   store={"uri": url, "cwd": tmp_path})
        request = urllib.request.Request(
            f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=mogjax")
        exp_id = json.load(urllib.request.urlopen(request))["experiment"]["experiment_id"]
        body = json.dumps({"experiment_ids": [exp_id]}).encode()
        request = urllib.request.Request(f"{url}/api/2.0/mlflow/runs/search", data=body,
                                         headers={"Content-Type": "application/json"})
        (run,) = json.load(urllib.request.urlopen(request))["runs"]
        run_id = run["info"]["run_id"]
        history = json.load(urllib.request.urlopen(
            f"{url}/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=log_likelihood"))
        assert len(history["metrics"]) >= 2
        assert run["info"]["status"] == "FINISHED"
    finally:
        server.terminate()
        server.wait(timeout=30)
