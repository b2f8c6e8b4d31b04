"""The experiment layer with real components: Hydra composition and multirun, a real
MLflow sqlite store, a real ``mlflow server`` on 127.0.0.1."""

import json
import urllib.request

import numpy as np
import pytest

import mogjax as mg

from tests.mlflow_helpers import ROOT, client_for, mlflow_server, run_script, runs_of


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
    assert runs_of(store, "params.`model.k` = '3'") == [] or "kk" not in message


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


def test_fit_against_a_real_mlflow_server(tmp_path):
    with mlflow_server(tmp_path) as server:
        url = server.url
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


def test_seeds_in_one_program_are_one_run_each(cfg_factory, store):
    from experiments import fit

    cfg = cfg_factory(f"tracking.uri={store['uri']}", "n_seeds=3", "seed=5", "tags=[batched]",
                      "tracking.log_plots=false")
    out = fit.run(cfg)
    assert out["seeds"] == [5, 6, 7] and not out["failed_seeds"]
    children = runs_of(store, f"tags.mlflow.parentRunId = '{out['run_id']}'")
    assert sorted(r.data.params["seed"] for r in children) == ["5", "6", "7"]
    assert {r.data.params["n_seeds"] for r in children} == {"1"}
    assert len({r.data.tags["sweep_id"] for r in children}) == 1
    client = client_for(store)
    for run, summary in zip(sorted(children, key=lambda r: r.data.params["seed"]), out["fits"]):
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "log_likelihood")
        assert len(history) == summary["n_iter"] + 1
        one = fit.run(cfg_factory("tracking.enabled=false", f"seed={run.data.params['seed']}"))
        np.testing.assert_allclose(summary["final_log_likelihood"],
                                   one["final_log_likelihood"], rtol=1e-6)


def test_seeds_batch_only_em(cfg_factory):
    from experiments import fit

    with pytest.raises(ValueError, match="n_seeds=4 batches EM"):
        fit.run(cfg_factory("n_seeds=4", "algorithm=meanshift", "tracking.enabled=false"))
