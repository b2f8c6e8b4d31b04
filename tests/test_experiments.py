"""The experiment layer with real components: Hydra composition and multirun, a real
MLflow sqlite store, a real ``mlflow server`` on 127.0.0.1."""

import json
import os
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
    ("algorithm=gradient", "stop.max_iter=20"),
    ("algorithm=meanshift", "algorithm.bandwidth=0.5", "data=synthetic", "data.n_samples=150"),
    ("algorithm=gradient", "optimizer=lbfgs", "stop.max_iter=5"),
    ("algorithm.acceleration=squarem", "stop.max_iter=30"),
    ("experiment=em_vs_gradient", "data.n_samples=150", "stop.max_iter=5"),
    ("algorithm=variational", "model.k=4", "model.covariance_type=diag"),
]


@pytest.mark.parametrize("overrides", GROUP_OPTIONS)
def test_every_option_composes_and_runs(cfg_factory, overrides):
    from experiments import fit

    cfg = cfg_factory(*overrides, "tracking.enabled=false")
    summary = fit.run(cfg)
    assert summary.n_iter >= 1
    assert np.isfinite(summary.objective)


def test_every_yaml_file_composes(cfg_factory):
    for group in ("data", "model", "algorithm", "optimizer", "tracking", "experiment"):
        for path in sorted((ROOT / "conf" / group).glob("*.yaml")):
            cfg = cfg_factory(f"{group}={path.stem}")
            assert cfg.seed == 0


# Every preset's distinctive values: each must win over the root's defaults.
PRESETS = {
    "em_vs_gradient": {"compare": ["em", "adam", "lbfgs"], "tags": ["em_vs_gradient"],
                       "data.name": "synthetic", "data.n_samples": 2000,
                       "data.separation": 3.0, "model.k": 3},
    "k_selection": {"tags": ["k_selection"], "data.name": "faithful",
                    "tracking.summary_param": "model.k", "tracking.summary_metric": "bic",
                    "hydra.sweeper.params": {"model.k": "1,2,3,4,5"}},
    "dp_vs_bic": {"tags": ["dp_vs_bic"], "data.name": "faithful", "data.standardize": True,
                  "hydra.sweeper.params": {"algorithm": "em,variational",
                                           "model.k": "1,2,3,4,5,6"}},
    "overlap_study": {"tags": ["overlap_study"], "data.source": "separated", "model.k": 5,
                      "data.n_components": 5, "precision": "float64", "target_gap": 1e-6,
                      "compare": ["em", "squarem", "daarem", "overrelaxed", "ecg", "adam",
                                  "lbfgs"], "tracking.log_models": False,
                      "hydra.sweeper.params": {"data.n_features": "2,10",
                                               "data.separation": "0.5,1,2,4",
                                               "seed": "range(5)"}},
    "lecture_soft_kmeans": {"tags": ["lecture_soft_kmeans"], "data.name": "synthetic",
                            "model.k": 3, "model.covariance_type": "identity",
                            "model.init": "random_from_data", "model.equal_weights": True,
                            "model.reg_covar": 0.0},
}


def test_every_preset_overrides_the_root(cfg_factory):
    from omegaconf import OmegaConf

    presets = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
    assert presets == sorted(PRESETS), "a new preset needs its distinctive values here"
    root = cfg_factory()
    assert root.compare == ["em", "adam"] and root.tags == []
    for name, expected in PRESETS.items():
        cfg = cfg_factory(f"experiment={name}", hydra=True)
        for key, value in expected.items():
            got = OmegaConf.select(cfg, key)
            got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
            assert got == value, (name, key, got)
    # the command line still wins over a preset's choice of data set
    assert cfg_factory("experiment=em_vs_gradient", "data=faithful").data.name == "faithful"


def test_precision_sets_every_array_of_the_run(cfg_factory):
    """``precision=float32|float64`` around the run (the tests' process has x64 on):
    the curves have that dtype, the float64 value is fit_em's in float64, and the
    separated data log their achieved overlap."""
    from experiments import common, compare

    base = ("data=separated", "data.n_samples=200", "data.n_components=3", "model.k=3",
            "compare=[em]", "tracking.enabled=false")
    curves = {}
    for precision in ("float32", "float64"):
        summary = compare.run(cfg_factory(*base, f"precision={precision}"))
        curves[precision] = summary.comparison["curves"]["em"]
        assert curves[precision].dtype == np.dtype(precision)
    x, _, truth = mg.make_separated_mixture(0, 200, 3, 2, separation=2.0)
    direct = mg.fit_em(x, 3, tol=1e-5, max_iter=1000, seed=0)
    assert curves["float64"][-1] == float(direct.final_log_likelihood)
    assert np.isfinite(curves["float32"][-1])  # float32 rounding may take another path
    data = common.load_data(cfg_factory(*base))
    assert data.metrics()["true_smallest_mean_distance"] == pytest.approx(2.0 * np.sqrt(2))
    assert data.metrics()["true_bayes_error"] == pytest.approx(mg.bayes_error(truth))


def test_a_budget_of_seconds_stops_by_warm_time(cfg_factory):
    from experiments import fit

    cfg = cfg_factory("stop.seconds=0.0005", "tracking.enabled=false")  # max_iter 1000
    summary = fit.run(cfg)
    assert 1 <= summary.n_iter < 1000  # 1000 EM iterations take well over 0.5 ms
    assert summary.fit_seconds < 0.05


def test_data_file_option(cfg_factory, tmp_path):
    from experiments import fit

    x = mg.load_old_faithful()
    np.save(tmp_path / "x.npy", x)
    cfg = cfg_factory("data=file", f"data.path={tmp_path / 'x.npy'}", "tracking.enabled=false")
    summary = fit.run(cfg)
    np.testing.assert_allclose(summary.final_log_likelihood, -4.1554, atol=1e-3)


@pytest.mark.parametrize("overrides, message", [
    (["model.kk=3"], "kk"),
    (["model.covariance_type=fulll"], "fulll"),
    (["algorithm=gradiant"], "gradiant"),
])
def test_bad_overrides_fail_before_any_run(cfg_factory, overrides, message):
    """Hydra refuses them while composing the config, before ``run`` (a script prints
    Hydra's message and exits 1): no data loaded, no run created."""
    with pytest.raises(Exception, match=message):
        cfg_factory(*overrides)


def test_bad_init_name_fails_before_data(cfg_factory):
    from experiments import fit

    with pytest.raises(ValueError, match="'init'"):
        fit.run(cfg_factory("model.init=kmeans+", "tracking.enabled=false"))


def test_importing_the_experiments_changes_nothing():
    """No MLflow environment variable set and no JAX listener registered at import
    (they are set when a run first needs the store, and by the first timed fit)."""
    import subprocess
    import sys

    code = ("import os, pkgutil, importlib, experiments\n"
            "for m in pkgutil.iter_modules(experiments.__path__):\n"
            "    importlib.import_module('experiments.' + m.name)\n"
            "from experiments import timing\n"
            "print(sorted(k for k in os.environ if k.startswith('MLFLOW_')), "
            "timing._COMPILE['listening'])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[] False"


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


@pytest.fixture(scope="module")
def faithful_comparison(cfg_factory, store, tmp_path_factory):
    """``compare.run`` of the root config (EM vs Adam on Old Faithful) into ``store``,
    and what it printed (``make run``'s output)."""
    import contextlib
    import io
    import os

    from experiments import compare

    cwd = os.getcwd()
    os.chdir(store["cwd"])  # the sqlite store's artifacts go under ./mlruns
    try:
        cfg = cfg_factory(f"tracking.uri={store['uri']}", "tracking.run_name=compare-test")
        summary = compare.run(cfg)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            compare.print_how_to_look(summary)
    finally:
        os.chdir(cwd)
    return cfg, summary, out.getvalue()


def test_compare_shares_the_start_and_describes_every_child(faithful_comparison, store):
    cfg, summary, _ = faithful_comparison
    client = client_for(store)
    parent = client.get_run(summary.run_id)
    children = runs_of(store, f"tags.mlflow.parentRunId = '{summary.run_id}'")
    by_method = {c.data.tags["method"]: c for c in children}
    assert set(by_method) == {"em", "adam"}
    starts = {next(m.value for m in client.get_metric_history(summary.run_id, key)
                   if m.step == 0) for key in ("log_likelihood/em", "log_likelihood/adam")}
    assert len(starts) == 1  # one shared start
    em, adam = by_method["em"].data.params, by_method["adam"].data.params
    for params in (em, adam):  # the stopping rule and the data set actually used
        assert params["stop.tol"] == "1e-05" and params["stop.max_iter"] == "1000"
        assert "gain in mean log-likelihood below 1e-05" in params["stop_rule"]
        assert params["data.name"] == "faithful" and "data.n_samples" not in params
        assert params["model.k"] == "2" and "compare" not in params
    assert em["method"] == "em" and not any(k.startswith("optimizer.") for k in em)
    assert adam["method"] == "adam" and adam["optimizer.name"] == "adam"
    assert adam["optimizer.learning_rate"] == "0.05"
    assert "data.n_samples" not in parent.data.params and "optimizer.name" not in parent.data.params
    for child in children:
        assert {"ms_per_iteration", "compile_ms", "fit_ms", "init_ms"} <= set(child.data.metrics)
        assert child.data.tags["stop_reason"] == "tol"
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"config.yaml", "params.npz", "curve.png", "clusters.png"} <= artifacts
    metrics = parent.data.metrics
    for method, child in by_method.items():
        for name in ("ms_per_iteration", "compile_ms", "fit_ms", "final_log_likelihood"):
            assert metrics[f"{name}/{method}"] == child.data.metrics[name]
    artifacts = {a.path for a in client.list_artifacts(summary.run_id)}
    assert {"curves.png", "alignment.json"} <= artifacts
    note = parent.data.tags["mlflow.note.content"]
    assert "Stopping rule: every method stops" in note and "warm call" in note
    assert note.startswith("**em vs adam**") and note.splitlines()[2].startswith("| method |")
    assert children and all(c.data.tags["mlflow.note.content"] for c in children)
    assert metrics["init_ms"] == children[0].data.metrics["init_ms"] > 0
    # EM's theory at its optimum: the rate of the EM map (mogjax.theory), and the rate
    # the curve shows (tol 1e-5 stops EM before its tail settles: the same order)
    assert 0.1 < metrics["em_rate"] < 0.5 and 0 < metrics["em_rate_empirical"] < 1
    # E-steps to target: EM makes one per iteration after the start's
    assert metrics["esteps_to_target/em"] == metrics["iterations_to_target/em"] + 1
    esteps = client.get_metric_history(by_method["em"].info.run_id, "esteps")
    assert sorted(m.value for m in esteps) == list(range(1, int(metrics["n_iter/em"]) + 2))
    assert "EM's theory at its optimum" in note


def test_em_time_is_warm_and_ahead_on_old_faithful(faithful_comparison, store):
    """The logged EM milliseconds per iteration (start left out) is within 3x of
    fit_em timed warm here (a consistency check, not a speed test); on the warm time
    axis EM reaches the target first; curve point t sits at start + t x per-iteration."""
    import time

    import jax

    from experiments import common

    cfg, summary, printed = faithful_comparison
    metrics = client_for(store).get_run(summary.run_id).data.metrics
    x = mg.load_old_faithful()
    kwargs = common.fit_kwargs(cfg, "em")
    result = jax.block_until_ready(mg.fit_em(x, 2, **kwargs))
    warm = []
    for _ in range(5):
        start = time.perf_counter()
        jax.block_until_ready(mg.fit_em(x, 2, **kwargs))
        warm.append(time.perf_counter() - start)
    here = 1e3 * (min(warm) - 1e-3 * metrics["init_ms"]) / int(result.n_iter)
    logged = metrics["ms_per_iteration/em"]
    assert here / 3 < logged < 3 * here, (logged, here)
    assert metrics["n_iter/em"] == int(result.n_iter)
    assert metrics["reached_target/em"] == metrics["reached_target/adam"] == 1
    assert metrics["ms_to_target/em"] < metrics["ms_to_target/adam"]
    for method in ("em", "adam"):  # point t of the time axis: start + t x per-iteration
        history = client_for(store).get_metric_history(summary.run_id,
                                                       f"log_likelihood_by_us/{method}")
        first, last = min(m.step for m in history), max(m.step for m in history)
        n = metrics[f"n_iter/{method}"]
        assert abs(first - 1e3 * metrics["init_ms"]) <= 1
        assert abs(last - 1e3 * (metrics["init_ms"] + n * metrics[f"ms_per_iteration/{method}"])) <= 1
        hit = metrics[f"iterations_to_target/{method}"]
        assert metrics[f"ms_to_target/{method}"] == pytest.approx(
            metrics["init_ms"] + hit * metrics[f"ms_per_iteration/{method}"])
        assert metrics[f"final_gap/{method}"] < cfg.target_gap
    assert metrics["max_mean_gap/adam"] < 0.05 and metrics["max_mean_gap/em"] == 0
    em_row = next(line for line in printed.splitlines() if line.startswith("em "))
    assert f"{metrics['ms_per_iteration/em']:.3g}" in em_row


def test_compare_links_one_chart_of_every_curve(faithful_comparison, store):
    """The printed and linked metric-page addresses draw every method's curve of the
    parent in one chart (the page itself was checked in headless Chromium)."""
    import re

    from experiments import ui_layout

    _, summary, printed = faithful_comparison
    parent, client = summary.run_id, client_for(store)
    states = [ui_layout.parse_overlay(f) for f in summary.charts.values()]
    assert [s["plot_metric_keys"] for s in states] == [
        ["log_likelihood/em", "log_likelihood/adam"],
        ["log_likelihood_by_us/em", "log_likelihood_by_us/adam"]]
    for state in states:
        assert state["runs"] == [parent] and state["experiments"] == [summary.experiment_id]
        for key in state["plot_metric_keys"]:  # every curve named is on the run
            assert len(client.get_metric_history(parent, key)) >= 2, key
    description = client.get_run(parent).data.tags["mlflow.note.content"]
    links = dict(re.findall(r"\[([^\]]+)\]\(([^)]+)\)", description))
    assert list(links.values()) == list(summary.charts.values())
    assert all(re.match(r"^#/metric/\?[A-Za-z0-9_%.=&~-]+$", t) for t in links.values())
    assert len(description) < 8000  # MLflow's limit on a tag's value
    for fragment in summary.charts.values():
        assert f"http://127.0.0.1:5000/{fragment}" in printed
    assert "mlflow ui --backend-store-uri" in printed and "model-metrics" in printed


# ------------------------------------------------------------- tracking server


def test_fit_against_a_real_mlflow_server(cfg_factory, tmp_path):
    from experiments import fit

    with mlflow_server(tmp_path) as server:
        url = server.url
        fit.run(cfg_factory(f"tracking.uri={url}", "tracking.run_name=server-test",
                            f"tracking.fallback_dir={tmp_path / 'kept'}"))
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
    assert out.seeds == [5, 6, 7] and not out.failed_seeds
    children = runs_of(store, f"tags.mlflow.parentRunId = '{out.run_id}'")
    assert sorted(r.data.params["seed"] for r in children) == ["5", "6", "7"]
    assert {r.data.params["n_seeds"] for r in children} == {"1"}
    assert len({r.data.tags["sweep_id"] for r in children}) == 1
    client = client_for(store)
    for run, summary in zip(sorted(children, key=lambda r: r.data.params["seed"]), out.fits):
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "log_likelihood")
        assert len(history) == summary.n_iter + 1
        one = fit.run(cfg_factory("tracking.enabled=false", f"seed={run.data.params['seed']}"))
        np.testing.assert_allclose(summary.final_log_likelihood,
                                   one.final_log_likelihood, rtol=1e-6)


def test_seeds_batch_only_em(cfg_factory):
    from experiments import fit

    with pytest.raises(ValueError, match="n_seeds=4 batches EM"):
        fit.run(cfg_factory("n_seeds=4", "algorithm=meanshift", "tracking.enabled=false"))


# ------------------------------------------------- weighted and incomplete data


@pytest.fixture(scope="module")
def weighted_and_missing_files(tmp_path_factory):
    """Old Faithful with a weights column (last), and with 10% of entries missing
    (empty cells): the paths and the arrays."""
    folder = tmp_path_factory.mktemp("data")
    x = mg.load_old_faithful()
    rng = np.random.default_rng(0)
    w = rng.integers(0, 4, len(x)).astype(float)
    np.savetxt(folder / "weighted.csv", np.column_stack([x, w]), delimiter=",",
               header="duration,waiting,weight", comments="")
    holes = rng.random(x.shape) < 0.1
    holes[holes.all(axis=1), 0] = False
    xm = np.where(holes, np.nan, x)
    lines = [",".join("" if np.isnan(v) else repr(float(v)) for v in row) for row in xm]
    (folder / "holes.csv").write_text("duration,waiting\n" + "\n".join(lines) + "\n")
    return {"weighted": folder / "weighted.csv", "holes": folder / "holes.csv",
            "x": x, "w": w, "xm": xm}


def test_a_weights_column_weighs_the_fit_and_is_logged(cfg_factory, store,
                                                       weighted_and_missing_files):
    from experiments import fit
    from experiments.tracking import load_run_params

    f = weighted_and_missing_files
    summary = fit.run(cfg_factory("data=file", f"data.path={f['weighted']}",
                                  "data.weights_column=-1", f"tracking.uri={store['uri']}",
                                  "tracking.log_plots=false"))
    run = client_for(store).get_run(summary.run_id)
    assert run.data.params["data.weights_column"] == "-1"
    assert run.data.metrics["total_weight"] == f["w"].sum()
    params = load_run_params(summary.run_id, store["uri"])
    assert params.means.shape == (2, 2)  # the weights are not a feature
    x, w = f["x"], f["w"]
    np.testing.assert_allclose(summary.final_log_likelihood, float(
        mg.mean_log_likelihood(params, x, sample_weight=w)), rtol=1e-9)
    np.testing.assert_allclose(summary.bic, float(mg.bic(params, x, sample_weight=w)),
                               rtol=1e-9)
    # the same fit as the library's, with those weights (rows of weight 0 drop out)
    expected = mg.fit_em(x, 2, sample_weight=w, tol=1e-5)
    np.testing.assert_allclose(summary.final_log_likelihood,
                               float(expected.curve[int(expected.n_iter)]), rtol=1e-9)


def test_missing_entries_are_marginalised_and_counted(cfg_factory, store,
                                                      weighted_and_missing_files):
    from experiments import fit
    from experiments.tracking import load_run_params

    f = weighted_and_missing_files
    with pytest.raises(ValueError, match=r"line \d+, column \d: '' is not a number: a missing "
                                         "entry; .*model.missing=marginalize"):
        fit.run(cfg_factory("data=file", f"data.path={f['holes']}", "tracking.enabled=false"))
    summary = fit.run(cfg_factory("data=file", f"data.path={f['holes']}",
                                  "model.missing=marginalize", f"tracking.uri={store['uri']}",
                                  "tracking.log_plots=false"))
    run = client_for(store).get_run(summary.run_id)
    holes = np.isnan(f["xm"])
    assert run.data.metrics["missing_fraction"] == pytest.approx(holes.mean())
    assert run.data.metrics["rows_with_missing_fraction"] == pytest.approx(
        holes.any(axis=1).mean())
    params = load_run_params(summary.run_id, store["uri"])
    np.testing.assert_allclose(summary.final_log_likelihood,
                               float(mg.mean_log_likelihood(params, f["xm"])), rtol=1e-9)


@pytest.mark.parametrize("overrides, message", [
    (["data.weights_column=1"], "data.weights_column names a column of a file"),
    (["model.missing=marginalize", "algorithm=gradient"], "model.missing=marginalize is EM's"),
    (["data=file", "data.path=x.csv", "data.weights_column=0"], "data.weights_column must be"),
])
def test_weights_and_missing_settings_are_checked_first(cfg_factory, overrides, message):
    from experiments import fit

    with pytest.raises(ValueError, match=message):
        fit.run(cfg_factory(*overrides, "tracking.enabled=false"))


def test_a_bad_weight_names_its_row(cfg_factory, tmp_path):
    from experiments import fit

    (tmp_path / "w.csv").write_text("1,2,1\n3,4,-2\n5,6,1\n")
    with pytest.raises(ValueError, match=r"weights_column=3 .*>= 0, got -2.0 \(row 2\)"):
        fit.run(cfg_factory("data=file", f"data.path={tmp_path / 'w.csv'}",
                            "data.weights_column=3", "tracking.enabled=false"))


# ------------------------------------------------------------------- a study


def test_a_three_seed_study_of_the_em_vs_gradient_preset(store):
    """``compare.py -m experiment=em_vs_gradient seed=0,1,2``: three children per job
    (em, adam, lbfgs) tagged with the preset; the sweep's parent holds the overrides,
    the preset's tag and a study summary whose values are the children's."""
    proc = run_script("compare.py", "-m", "experiment=em_vs_gradient", "data.n_samples=200",
                      "seed=0,1,2", "tracking.log_plots=false", store=store)
    client = client_for(store)
    (parent,) = [r for r in runs_of(store, "tags.study = 'em_vs_gradient'")
                 if r.data.tags.get("sweep_parent") == "true"]
    parent_id, sweep_id = parent.info.run_id, parent.data.tags["sweep_id"]
    assert f"Sweep {sweep_id}" in proc.stdout and parent_id in proc.stdout
    assert "http://127.0.0.1:5000/#/experiments/" in proc.stdout
    assert parent.data.params["seed"] == "0,1,2"
    assert parent.data.params["experiment"] == "em_vs_gradient"
    assert "sweep of `compare.py`" in parent.data.tags["mlflow.note.content"]
    jobs = runs_of(store, f"tags.mlflow.parentRunId = '{parent_id}'")
    assert sorted(j.data.tags["seed"] for j in jobs) == ["0", "1", "2"]
    finals = {"em": [], "adam": [], "lbfgs": []}
    for job in jobs:
        children = runs_of(store, f"tags.mlflow.parentRunId = '{job.info.run_id}'")
        assert sorted(c.data.tags["method"] for c in children) == ["adam", "em", "lbfgs"]
        for child in children:
            assert child.data.tags["study"] == "em_vs_gradient"
            assert child.data.params["data.n_samples"] == "200"
            method = child.data.tags["method"]
            finals[method].append(child.data.metrics["final_log_likelihood"])
            assert job.data.metrics[f"final_log_likelihood/{method}"] == finals[method][-1]
            rate = {"em": None, "adam": "0.05", "lbfgs": "None"}[method]  # lbfgs: line search
            assert child.data.params.get("optimizer.learning_rate") == rate
    path = client.download_artifacts(parent_id, "study_summary.json", str(store["cwd"]))
    summary = json.loads(open(path).read())
    assert summary["sweep_id"] == sweep_id and summary["swept"] == []
    ((name, setting),) = summary["settings"].items()
    assert name == "synthetic" and list(setting["methods"]) == ["em", "adam", "lbfgs"]
    best = max(max(v) for v in finals.values())
    assert setting["best_final_log_likelihood"] == best
    assert setting["target"] == pytest.approx(best - 1e-3)  # one target for the setting
    for method, entry in setting["methods"].items():
        assert entry["runs"] == 3 and entry["failures"] == 0
        q25, q50, q75 = np.percentile(finals[method], [25, 50, 75])
        np.testing.assert_allclose([entry["final_log_likelihood"][k] for k in
                                    ("q25", "median", "q75")], [q25, q50, q75], rtol=1e-12)
        # iterations to the setting's target, from each run's own curve; never = inf
        its = []
        for run in entry["per_run"]:
            curve = [m.value for m in sorted(client.get_metric_history(
                run["run_id"], "log_likelihood"), key=lambda m: m.step)]
            hits = [t for t, v in enumerate(curve) if v >= setting["target"]]
            its.append(hits[0] if hits else np.inf)
            assert run["iterations"] == (hits[0] if hits else None)
        assert entry["reached_target"] == sum(np.isfinite(its))
        median = np.median(its)
        assert entry["iterations_to_target"]["median"] == (median if np.isfinite(median) else None)
    artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"study_summary.json", "study_summary.csv", "study_curves.png",
            "study_settings.png"} <= artifacts
    assert parent.info.run_name.startswith("em_vs_gradient sweep ")
    assert client.get_run(parent_id).data.tags["mlflow.note.content"].startswith("| # | setting")
    assert 0 < setting["median_em_rate"] < 1  # EM's theory, per setting


def test_a_study_over_two_files_is_one_sweep_with_a_row_per_file(store, tmp_path):
    """``data=file data.path=a.csv,b.csv``: the data.path check waits for each job, the
    settings are the files (labelled by their stems), one parent, a row per file and
    method; a float64 comparison; the jobs' second process reads its programs from
    the persistent compilation cache."""
    x = mg.load_old_faithful()
    np.savetxt(tmp_path / "geyser.csv", x, delimiter=",", header="eruptions,waiting",
               comments="")
    np.savetxt(tmp_path / "shifted.csv", x + 10.0, delimiter=",")  # same shapes: no recompile
    cache = tmp_path / "cache"
    paths = f"{tmp_path / 'geyser.csv'},{tmp_path / 'shifted.csv'}"
    common = ("data=file", "compare=[em,squarem]", "tracking.log_plots=false", "precision=float64",
              f"compilation_cache.dir={cache}", "theory.enabled=false", "tags=[two_files]")
    run_script("compare.py", "-m", f"data.path={paths}", *common, store=store)
    (parent,) = [r for r in runs_of(store, "tags.study = 'two_files'")
                 if r.data.tags.get("sweep_parent") == "true"]
    client = client_for(store)
    path = client.download_artifacts(parent.info.run_id, "study_summary.json",
                                     str(tmp_path))
    summary = json.loads(open(path).read())
    assert summary["swept"] == ["data.path"]
    assert list(summary["settings"]) == ["path=geyser.csv", "path=shifted.csv"]
    csv_rows = client.download_artifacts(parent.info.run_id, "study_summary.csv", str(tmp_path))
    rows = open(csv_rows).read().splitlines()
    assert rows[0].startswith("setting,data.path,method,") and len(rows) == 1 + 2 * 2
    jobs = runs_of(store, f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(j.data.tags["data"] for j in jobs) == ["geyser", "shifted"]
    for job in jobs:
        assert job.data.params["precision"] == "float64"
        assert job.info.run_name.startswith(f"{job.data.tags['data']} k2 seed0: em vs squarem")
        assert job.data.metrics["n_esteps/em"] == job.data.metrics["n_iter/em"] + 1
    # A second process, the same comparison: its programs come from the cache.
    run_script("compare.py", f"data.path={tmp_path / 'shifted.csv'}", *common[:-1],
               "tracking.run_name=cached", store=store)
    (again,) = runs_of(store, "attributes.run_name = 'cached'")
    first = next(j for j in jobs if j.data.tags["data"] == "geyser")  # compiled them
    for method in ("em", "squarem"):
        assert again.data.metrics[f"compile_ms/{method}"] < 0.5 * max(
            first.data.metrics[f"compile_ms/{method}"], 1.0) or first.data.metrics[
            f"compile_ms/{method}"] == 0.0
    children = runs_of(store, f"tags.mlflow.parentRunId = '{again.info.run_id}'")
    assert sum(c.data.metrics["compile_cache_hits"] for c in children) > 0


# --------------------------------------------------------- variational mixtures


def test_a_variational_run_logs_its_lower_bound_and_weights(store):
    proc = run_script("fit.py", "algorithm=variational", "model.k=5", "data.standardize=true",
                      "tracking.run_name=variational-test", store=store)
    assert "components with weight above the threshold" in proc.stdout
    (run,) = runs_of(store, "attributes.run_name = 'variational-test'")
    client = client_for(store)
    assert run.data.tags["algorithm"] == "variational"
    n_iter = int(run.data.metrics["n_iter"])
    bound = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "lower_bound"),
                                     key=lambda m: m.step)]
    assert len(bound) == n_iter + 1 and np.all(np.diff(bound) >= -1e-6)  # a bound never falls
    assert bound[-1] == pytest.approx(run.data.metrics["final_lower_bound"])
    path = client.download_artifacts(run.info.run_id, "weights.json", str(store["cwd"]))
    weights = json.loads(open(path).read())
    assert sum(weights["weights"]) == pytest.approx(1.0)
    kept = sum(w > weights["threshold"] for w in weights["weights"])
    assert kept == run.data.metrics["effective_components"] == 3  # Old Faithful: 3 of 5
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"weights.png", "curve.png", "clusters.png", "params.npz"} <= artifacts
    from experiments.tracking import load_run_params

    params = load_run_params(run.info.run_id, store["uri"])  # the plug-in mixture
    np.testing.assert_allclose(np.asarray(params.weights), weights["weights"], rtol=1e-6)


def test_dp_vs_bic_summarises_both_choices_on_the_parent(store):
    """The preset on a two-k sweep: the parent's choices are its children's numbers."""
    run_script("fit.py", "-m", "experiment=dp_vs_bic", "model.k=2,3", "tracking.log_plots=false",
               "tracking.run_name=dp-test", store=store)
    (parent,) = [r for r in runs_of(store, "tags.study = 'dp_vs_bic'")
                 if r.data.tags.get("sweep_parent") == "true"]
    children = runs_of(store, f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted((c.data.tags["algorithm"], c.data.params["model.k"]) for c in children) == [
        ("em", "2"), ("em", "3"), ("variational", "2"), ("variational", "3")]
    bic = {int(c.data.params["model.k"]): c.data.metrics["bic"] for c in children
           if c.data.tags["algorithm"] == "em"}
    kept = {int(c.data.params["model.k"]): c.data.metrics["effective_components"]
            for c in children if c.data.tags["algorithm"] == "variational"}
    assert parent.data.metrics["bic_choice_k"] == min(bic, key=bic.get)
    assert parent.data.metrics["dp_choice_k"] == kept[3]
    path = client_for(store).download_artifacts(parent.info.run_id, "dp_vs_bic.json",
                                                str(store["cwd"]))
    assert json.loads(open(path).read())["bic_by_k"] == {str(k): v for k, v in bic.items()}
    note = parent.data.tags["mlflow.note.content"]
    assert "BIC's choice" in note and "standardised" in note
    assert f"| 2 | {bic[2]:.1f} | {int(kept[2])} |" in note  # the table of BIC and kept per k
    assert parent.data.tags["bic_choice_k"] == str(min(bic, key=bic.get))  # an integer


# ---------------------------------------------------------------------- plots


def test_plots_a_reviewer_accepts():
    """One colour per component for points, ellipses and centre; axis labels; integer
    k ticks with the chosen k marked; steps and iterations named per method."""
    from matplotlib.colors import to_rgba

    from mogjax.mixture import MixtureParams
    from mogjax.plotting import plot_clusters, plot_curves, plot_metric_against

    params = MixtureParams.from_covariances(np.array([0.4, 0.6]), np.array([[0., 0.], [5., 5.]]),
                                            np.array([1.0, 2.0]), "spherical")
    x = np.array([[0.1, 0.2], [5.2, 4.9], [4.8, 5.1]])
    labels = np.array([0, 1, 1])
    fig = plot_clusters(x, labels, params=params, xlabel="eruption duration (min)",
                        ylabel="waiting time (min)", title="em on faithful, k=2")
    ax = fig.axes[0]
    points = ax.collections[0].get_facecolors()[:, :3]
    ellipses = [p.get_edgecolor()[:3] for p in ax.patches]
    centres = [to_rgba(line.get_color())[:3] for line in ax.lines]
    for j in range(2):
        assert np.allclose(points[labels == j], centres[j])
        assert np.allclose(ellipses[2 * j], centres[j]) and np.allclose(ellipses[2 * j + 1], centres[j])
    assert not np.allclose(centres[0], centres[1])
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("eruption duration (min)", "waiting time (min)")
    assert ax.get_title() == "em on faithful, k=2"

    fig = plot_metric_against([1, 2, 3, 1, 2, 3], [10., 7., 8., 11., 6., 9.], xlabel="model.k",
                              ylabel="bic", integer_x=True, best="min")
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == [1, 2, 3]
    assert "chosen model.k = 2" in " ".join(t.get_text() for t in ax.get_legend().get_texts())

    fig = plot_curves({"em": np.linspace(-5, -4, 9), "adam": np.linspace(-5, -4, 301)},
                      units={"em": "iteration", "adam": "step"},
                      seconds={"em": 1e-4, "adam": 2e-5}, title="t", subtitle="rule")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "iteration (em) / step (adam)"
    assert ax.get_xscale() == "symlog"  # 8 iterations against 300 steps
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert "em: 8 iterations" in legend and "adam: 300 steps" in legend


def test_mean_shift_runs_are_named_by_bandwidth(cfg_factory, store):
    from experiments import fit

    cfg = cfg_factory(f"tracking.uri={store['uri']}", "algorithm=meanshift",
                      "tracking.log_plots=false")
    summary = fit.run(cfg)
    run = client_for(store).get_run(summary.run_id)
    assert run.info.run_name == f"meanshift faithful bw{summary.bandwidth:.3g}"
    assert run.data.metrics["n_clusters"] == summary.n_clusters >= 1
    assert float(run.data.params["algorithm.bandwidth"]) == pytest.approx(summary.bandwidth)
    assert not any(k.startswith(("model.", "stop.", "optimizer.")) for k in run.data.params)


def test_a_method_that_never_reaches_the_target_has_no_median():
    """``study.summarize`` on made-up records: a run that failed or never reached
    counts as never in every median (no number from the runs that did)."""
    from experiments import study

    def record(curve, seed):
        return {"run_id": f"r{seed}", "seed": str(seed), "curve": np.array(curve),
                "esteps": None, "final_log_likelihood": curve[-1], "n_iter": len(curve) - 1,
                "n_esteps": len(curve), "ms_per_iteration": 1.0, "init_ms": 0.5, "fit_ms": 9.0,
                "compile_ms": 0.0, "compile_cache_hits": 0, "capped": float(seed == 0),
                "own": {"reached_target": 1.0, "iterations_to_target": 1,
                        "ms_to_target": 1.5, "esteps_to_target": 2}}

    fast = [record([-2.0, -1.0], s) for s in range(5)]  # reaches -1 at iteration 1
    slow = [record([-2.0, -1.5, -1.0], s) for s in range(3)] + [record([-2.0, -1.5], 3)]
    never = [record([-2.0, -1.5], s) for s in range(5)]
    settings = {"s": {"values": {}, "jobs": 5, "theory": [],
                      "methods": {"fast": fast, "slow": slow, "never": never}}}
    out = study.summarize(settings, target_gap=1e-3)["s"]
    assert out["target"] == pytest.approx(-1.0 - 1e-3)
    fast, slow, never = (out["methods"][m] for m in ("fast", "slow", "never"))
    assert fast["reached_target"] == 5 and fast["iterations_to_target"]["median"] == 1
    assert fast["ms_to_target"]["median"] == pytest.approx(1.5) and fast["capped"] == 1
    # 3 of 5 reached (the fifth job failed: no record): the median is the third
    assert slow["reached_target"] == 3 and slow["failures"] == 1
    assert slow["iterations_to_target"] == {"median": 2.0, "q25": 2.0, "q75": None}
    assert never["reached_target"] == 0 and never["iterations_to_target"]["median"] is None
    assert "never" in study.describe({"target_gap": 1e-3, "settings": {"s": out}})
