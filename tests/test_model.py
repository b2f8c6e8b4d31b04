"""A fitted mixture is an MLflow model (issue 16, ``experiments/model.py``): every fit
run logs one; it loads in a clean process and predicts as the library; ``mlflow
models serve`` answers over HTTP on 127.0.0.1 (bad input: 400 naming the problem);
a sweep registers its best run as ``models:/<name>@champion``; ``predict.py`` labels
new data into one table.

One sqlite store and one model server for the module; subprocesses only for the
clean-process load, the server and the 4-job sweep. The registry on PostgreSQL is in
``tests/test_cluster.py`` (its team-server test).
"""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import mogjax as mg

from tests.mlflow_helpers import (ROOT, free_port, kill_server, run_script, script_env,
                                  study_runs)

COLUMNS = ["eruption duration (min)", "waiting time (min)"]
SWEEP = "study-model-test"  # the sweep id the comparison below runs under


def compose(config_dir: Path, *overrides):
    """A config composed with Hydra's compose API (no context left open)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from experiments import configs

    configs.register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


@pytest.fixture(scope="module")
def runs(store):
    """Runs of every kind of fit in the module's store, in-process: a comparison (an EM
    and an Adam child) run as a job of sweep ``SWEEP``, and a mean-shift fit.
    ``{"em": id, "adam": id, "meanshift": id}``."""
    from experiments import compare, fit
    from experiments.tracking import SWEEP_ENV

    base = [f"tracking.uri={store['uri']}", "tracking.log_plots=false", "stop.max_iter=60"]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(store["cwd"])  # the store's artifacts go under its folder
        mp.setenv(SWEEP_ENV, SWEEP)
        summary = compare.run(compose(ROOT / "conf", *base))
        mp.delenv(SWEEP_ENV)
        shift = fit.run(compose(ROOT / "conf", *base, "algorithm=meanshift"))
    mlflow.set_tracking_uri(store["uri"])
    return {**{m: s.run_id for m, s in summary.methods.items()}, "meanshift": shift.run_id}


def model_folder(run_id: str, tmp_path: Path) -> Path:
    return Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model",
                                                    dst_path=str(tmp_path)))


def library(params, x):
    """The library's outputs for ``x`` in the parameters' precision."""
    from experiments.model import precision

    with precision(params.means.dtype):
        x = np.asarray(x, params.means.dtype)
        return {"label": np.asarray(mg.predict(params, x)),
                "proba": np.asarray(mg.responsibilities(params, x)),
                "log_density": np.asarray(mg.score_samples(params, x))}


def assert_same_as_library(out: dict, expected: dict) -> None:
    """Labels and probabilities exactly (the same compiled programs on the same data)."""
    np.testing.assert_array_equal(np.asarray(out["label"]), expected["label"])
    k = expected["proba"].shape[1]
    proba = np.stack([np.asarray(out[f"proba_{j}"], np.float64) for j in range(k)], axis=1)
    np.testing.assert_array_equal(proba, expected["proba"].astype(np.float64))
    np.testing.assert_array_equal(np.asarray(out["log_density"], np.float64),
                                  expected["log_density"].astype(np.float64))


# ------------------------------------------------------------- what a run logs


def test_every_fit_run_logs_its_model(runs, tmp_path):
    from experiments import model

    for method, run_id in runs.items():
        folder = model_folder(run_id, tmp_path / method)
        meta = mlflow.models.Model.load(folder)
        assert "python_function" in meta.flavors, method
        assert meta.run_id == run_id
        assert meta.signature.inputs.input_names() == COLUMNS
        assert {c.type.name for c in meta.signature.inputs.inputs} == {"double"}
        assert meta.signature.params.params[0].name == "output"
        assert (folder / "input_example.json").exists()
        # nothing pickled: the model's code is a file, its parameters npz and json
        assert not [p for p in folder.rglob("*") if p.suffix in (".pkl", ".pickle")]
        with np.load(folder / "artifacts" / model.ARRAYS, allow_pickle=False) as arrays:
            assert set(arrays) == ({"centers"} if method == "meanshift"
                                   else {"log_weights", "means", "prec_chol"})
        info = json.loads((folder / "artifacts" / model.DESCRIPTION).read_text())
        assert info["kind"] == ("meanshift" if method == "meanshift" else "mixture")
        # what predicting needs, pinned; no test, cluster or experiment packages
        reqs = (folder / "requirements.txt").read_text().split()
        assert {r.split("==")[0] for r in reqs} == set(model.REQUIREMENTS), reqs
        assert all("==" in r for r in reqs)
    logged = [m for m in MlflowClient().search_logged_models(
        [MlflowClient().get_run(runs["em"]).info.experiment_id])
        if m.source_run_id in runs.values()]  # the store is the session's
    assert sorted(m.source_run_id for m in logged) == sorted(runs.values())
    assert {m.status.name for m in logged} == {"READY"}


def test_the_model_loads_in_a_clean_process_and_predicts_as_the_library(
        runs, store, tmp_path):
    """Fresh process, clean working directory, the repository not on sys.path: only
    the installed packages. Same labels and probabilities as the library, bit for bit
    (NaN coordinates marginalised the same way)."""
    from experiments.model import load_params

    x = mg.load_old_faithful()
    x = np.concatenate([x, [[np.nan, 80.0], [2.0, np.nan]]])
    np.save(tmp_path / "x.npy", x)
    code = """if True:
        import sys
        from pathlib import Path
        root = Path(sys.argv[1]).resolve()
        assert all(Path(p or ".").resolve() != root for p in sys.path), sys.path
        import jax, mlflow, numpy as np, pandas as pd
        model = mlflow.pyfunc.load_model(sys.argv[2])
        frame = pd.DataFrame(np.load("x.npy"), columns=model.metadata.get_input_schema().input_names())
        out = model.predict(frame)
        labels = model.predict(frame, params={"output": "label"})
        assert list(labels.columns) == ["label"] and labels["label"].equals(out["label"])
        assert "experiments" not in sys.modules, "the model needs the experiment package"
        np.savez("out.npz", x64=jax.config.jax_enable_x64, **{c: out[c].to_numpy() for c in out})
    """
    env = {**script_env(), "MLFLOW_TRACKING_URI": store["uri"]}
    env.pop("PYTHONPATH", None)
    uri = f"runs:/{runs['em']}/model"
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT), uri], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = dict(np.load(tmp_path / "out.npz"))
    assert not out.pop("x64")  # the process computes float64 parameters all the same
    params = load_params(uri)
    assert params.means.dtype == np.float64
    assert_same_as_library(out, library(params, x))


def test_native_loaders_give_the_fitted_mixture_and_estimator(runs):
    from experiments.model import load_estimator, load_fitted, load_params
    from experiments.tracking import load_run_params

    x = mg.load_old_faithful()
    uri = f"runs:/{runs['adam']}/model"
    params = load_params(uri)
    logged = load_run_params(runs["adam"])
    for name in ("log_weights", "means", "prec_chol"):
        np.testing.assert_array_equal(getattr(params, name), getattr(logged, name))
    assert params.covariance_type == logged.covariance_type
    gm = load_estimator(uri)
    assert isinstance(gm, mg.GaussianMixture)
    assert list(gm.feature_names_in_) == COLUMNS
    frame = pd.DataFrame(x, columns=COLUMNS)
    expected = library(params, x)
    np.testing.assert_array_equal(gm.predict_proba(frame), expected["proba"])
    np.testing.assert_array_equal(gm.score_samples(frame), expected["log_density"])
    np.testing.assert_array_equal(gm.predict(frame), np.argmax(expected["proba"], axis=1))
    # mean shift: the modes, and an estimator predicting the nearest one
    shift = load_fitted(f"runs:/{runs['meanshift']}/model")
    assert shift.kind == "meanshift" and shift.centers.shape[1] == 2
    ms = load_estimator(f"runs:/{runs['meanshift']}/model")
    assert isinstance(ms, mg.MeanShift)
    with pytest.raises(ValueError, match="modes, not mixture parameters"):
        load_params(f"runs:/{runs['meanshift']}/model")


def test_mean_shift_predicts_the_nearest_mode(runs):
    """Mean shift's model labels a point by its nearest mode (``MeanShift.predict``);
    it has no probabilities, and a missing coordinate is refused."""
    from experiments.model import load_estimator

    uri = f"runs:/{runs['meanshift']}/model"
    model = mlflow.pyfunc.load_model(uri)
    x = mg.load_old_faithful()
    out = model.predict(pd.DataFrame(x, columns=COLUMNS))
    assert list(out.columns) == ["label"]
    np.testing.assert_array_equal(out["label"],
                                  load_estimator(uri).predict(pd.DataFrame(x, columns=COLUMNS)))
    with pytest.raises(MlflowException, match="row 1 is NaN") as err:
        model.predict(pd.DataFrame([[3.6, 79.0], [np.nan, 54.0]], columns=COLUMNS))
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"


# ------------------------------------------------------------------- serving


@pytest.fixture(scope="module")
def server(runs, store, tmp_path_factory):
    """``mlflow models serve`` for the EM run's model on a free loopback port; waits
    (bounded) for ``/ping``; stopped (its whole process group) at the end."""
    folder = tmp_path_factory.mktemp("serve")
    port, bin_dir = free_port(), Path(sys.executable).parent
    env = {**script_env(), "MLFLOW_TRACKING_URI": store["uri"],
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}  # its uvicorn
    log = folder / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(bin_dir / "mlflow"), "models", "serve", "-m", f"runs:/{runs['em']}/model",
             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
            cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):  # at most about two minutes
            if proc.poll() is not None:
                pytest.fail(f"mlflow models serve exited {proc.returncode}:\n"
                            f"{log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"mlflow models serve did not answer:\n{log.read_text()[-3000:]}")
        yield url
    finally:
        kill_server(proc)


def invoke(url: str, payload) -> tuple[int, dict]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(f"{url}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def split(rows, columns=COLUMNS, **params) -> dict:
    payload = {"dataframe_split": {"columns": columns, "data": rows}}
    return {**payload, "params": params} if params else payload


def test_the_served_model_answers_as_the_library(server, runs, tmp_path):
    from experiments.model import load_params

    x = mg.load_old_faithful()
    status, body = invoke(server, split(x.tolist()))
    assert status == 200, body
    out = pd.DataFrame(body["predictions"])
    assert list(out.columns) == ["label", "proba_0", "proba_1", "log_density"]
    assert_same_as_library(out, library(load_params(f"runs:/{runs['em']}/model"), x))
    status, body = invoke(server, split(x[:3].tolist(), output="label"))
    assert status == 200 and body["predictions"] == [{"label": int(v)} for v in out["label"][:3]]
    # the model's own serving example
    folder = model_folder(runs["em"], tmp_path)
    status, _ = invoke(server, (folder / "serving_input_example.json").read_bytes())
    assert status == 200


BAD_INPUT = [
    (split([[3.6]], columns=COLUMNS[:1]), ["missing", "waiting time (min)"]),
    (split([[3.6, "abc"]]), ["waiting time (min)", "abc"]),
    (split([[float("nan"), float("nan")]]), ["row 0", "no value"]),
    (split([[float("inf"), 79.0]]), ["eruption duration (min)", "not finite"]),
    (split([[3.6, 79.0]], output="probs"), ["output", "probs"]),
    (b"eruptions,waiting", ["Invalid input"]),
]


@pytest.mark.parametrize("payload, words", BAD_INPUT,
                         ids=["missing-column", "text", "nan-row", "infinity", "bad-param",
                              "not-json"])
def test_bad_input_gets_400_naming_the_problem(server, payload, words):
    status, body = invoke(server, payload)
    assert status == 400, (status, body)
    for word in words:
        assert word in body["message"], (word, body["message"][-500:])


# ------------------------------------------------------------------ registry


def test_a_sweep_registers_its_best_run_as_champion(store):
    """A 4-job sweep with ``tracking.register_best=bic``: the version under
    ``tracking.model_name`` is the child of lowest BIC, alias ``champion``, tagged
    with the sweep; ``models:/<name>@champion`` loads its parameters."""
    from experiments.model import load_params
    from experiments.tracking import load_run_params

    # reg_covar is traced: the four jobs share one compiled program
    proc = run_script("fit.py", "-m", "model.reg_covar=1e-6,1e-3,1e-2,1e-1", "stop.max_iter=30",
                      "tracking.log_plots=false", "tracking.register_best=bic",
                      "tracking.model_name=faithful-reg", "tags=[registry4]", store=store)
    children = study_runs(store, "registry4")
    assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
    best = min(children, key=lambda r: r.data.metrics["bic"])
    client = MlflowClient(store["uri"])
    version = client.get_model_version_by_alias("faithful-reg", "champion")
    assert version.run_id == best.info.run_id
    assert version.tags["sweep_id"] == best.data.tags["sweep_id"]
    assert version.tags["metric"] == "bic"
    assert float(version.tags["bic"]) == best.data.metrics["bic"]
    parent = client.get_run(best.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["registered_model"] == f"faithful-reg/{version.version}"
    assert f"Registered faithful-reg version {version.version} (@champion)" in proc.stdout
    params = load_params("models:/faithful-reg@champion")
    logged = load_run_params(best.info.run_id, store["uri"])
    np.testing.assert_array_equal(params.means, logged.means)
    assert params.means.dtype == np.float32  # the script fits in float32


def test_a_study_registers_its_best_method_run(runs):
    """The comparison above ran as a job of a study: its best method run by
    ``final_log_likelihood`` is the champion (a comparison's parent, without the
    metric, is no candidate)."""
    from experiments import registry

    client = MlflowClient()
    finals = {m: client.get_run(runs[m]).data.metrics["final_log_likelihood"]
              for m in ("em", "adam")}
    version = registry.register_best(SWEEP, "final_log_likelihood", "faithful-study")
    assert version.run_id == runs[max(finals, key=finals.get)]
    assert version.aliases == ["champion"]
    assert registry.register_best("no-such-sweep", "bic", "faithful-study") is None


def predict_config(*overrides):
    """predict.py's config with command-line overrides. (Not through Hydra's compose in
    this process: the experiments' schemas registered here make ``model`` and ``data``
    config groups; predict.py's own process registers none.)"""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "conf" / "predict" / "config.yaml")
    OmegaConf.set_struct(cfg, True)
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))


def test_predict_labels_new_data_into_one_table(runs, store, tmp_path):
    """``predict.py model=models:/<name>@champion data=<csv>``: the table of the data
    and the model's outputs is the run's only artifact; no params, no metrics. A CSV
    header names the columns in any order."""
    from experiments import predict, registry
    from experiments.model import load_params

    registry.register_best(SWEEP, "bic", "faithful-predict")
    x = mg.load_old_faithful()[:40]
    data = tmp_path / "new.csv"
    data.write_text("waiting time (min),eruption duration (min)\n"
                    + "\n".join(f"{w},{e}" for e, w in x))
    uri = "models:/faithful-predict@champion"
    cfg = predict_config(f"model={uri}", f"data={data}", f"tracking.uri={store['uri']}")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(store["cwd"])
        out = predict.run(cfg)
    client = MlflowClient(store["uri"])
    run = client.get_run(out["run_id"])
    assert run.info.status == "FINISHED"
    assert not run.data.params and not run.data.metrics
    assert [a.path for a in client.list_artifacts(out["run_id"])] == [predict.TABLE]
    assert run.data.tags["model_uri"] == uri and run.data.tags["model_run_id"] in runs.values()
    table = client.load_table(out["experiment_id"], predict.TABLE, run_ids=[out["run_id"]])
    assert list(table.columns[:2]) == COLUMNS
    # MLflow's JSON tables keep 10 decimal places
    np.testing.assert_allclose(table[COLUMNS].to_numpy(), x, rtol=0, atol=5e-11)
    expected = library(load_params(uri), x)
    np.testing.assert_array_equal(table["label"], expected["label"])
    np.testing.assert_allclose(table[["proba_0", "proba_1"]].to_numpy(), expected["proba"],
                               rtol=0, atol=5e-11)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="has the columns"):
        predict.run(predict_config(f"model={uri}", f"data={bad}",
                                   f"tracking.uri={store['uri']}"))


# ------------------------------------------- the model carries its data (issue 26)


def test_the_model_carries_its_columns_scaler_and_data(store, tmp_path):
    """``fit.py data=file`` on a CSV with a header logged a model of columns ``x1,x2``,
    and with ``data.standardize=true`` a model without its scaler, so ``predict.py``
    refused the training file or labelled it all 0. Now the signature names the
    header's columns, the model standardises raw input itself, records the training
    data's hash and rows, and ``predict.py`` on the training file (with or without its
    header; the weights column left out) gives the training labels."""
    from experiments import common, fit, predict
    from experiments.model import ARRAYS, DESCRIPTION, load_estimator, load_params

    x = mg.load_old_faithful()
    w = np.where(np.arange(len(x)) % 3 == 0, 2.0, 1.0)
    path = tmp_path / "geyser.csv"
    np.savetxt(path, np.column_stack([x, w]), delimiter=",", header="eruptions,waiting,w",
               comments="")
    cfg = compose(ROOT / "conf", "data=file", f"data.path={path}", "data.weights_column=-1",
                  "data.standardize=true", "model.k=3", "stop.max_iter=50",
                  f"tracking.uri={store['uri']}", "tracking.log_plots=false")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(store["cwd"])
        summary = fit.run(cfg)
    data = common.load_data(cfg)
    uri = f"runs:/{summary.run_id}/model"
    folder = model_folder(summary.run_id, tmp_path / "model")
    meta = mlflow.models.Model.load(folder)
    assert meta.signature.inputs.input_names() == ["eruptions", "waiting"]
    training = meta.metadata["training_data"]
    assert training["hash"] == data.hash() and training["rows"] == len(x)
    assert training["weights_column"] == -1 and meta.metadata["standardizes_input"]
    run = MlflowClient(store["uri"]).get_run(summary.run_id)
    assert run.data.metrics["data_rows"] == len(x)
    with np.load(folder / "artifacts" / ARRAYS, allow_pickle=False) as arrays:
        np.testing.assert_allclose(arrays["scaler_mean"], x.mean(axis=0))
        np.testing.assert_allclose(arrays["scaler_scale"], x.std(axis=0))
    assert "scaler" in json.loads((folder / "artifacts" / DESCRIPTION).read_text())
    trained = library(load_params(uri), data.x)["label"]
    assert len(set(trained.tolist())) == 3
    bare = tmp_path / "bare.csv"  # the same rows without a header: the model's order
    np.savetxt(bare, np.column_stack([x, w]), delimiter=",")
    for file in (path, bare):
        cfg = predict_config(f"model={uri}", f"data={file}", f"tracking.uri={store['uri']}",
                             "output=label")
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(store["cwd"])
            out = predict.run(cfg)
        np.testing.assert_array_equal(out["table"]["label"].to_numpy(), trained)
    estimator = load_estimator(uri)  # a Pipeline: the scaler, then the mixture
    np.testing.assert_array_equal(estimator.predict(pd.DataFrame(x, columns=["eruptions",
                                                                             "waiting"])),
                                  trained)
