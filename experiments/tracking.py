"""MLflow tracking for the experiments: one place that knows how runs are logged.

Conventions (DESIGN.md, "Experiments and tracking"): the resolved config flattened as
params; tags for git commit, data set and hash, algorithm, seed and sweep; the curve
as metric ``log_likelihood`` with ``step`` = iteration, written in one ``log_batch``;
the final parameters as ``params.npz`` + ``params.json`` (no pickle); the resolved
config; plots.
"""

import hashlib
import json
import os
import subprocess
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
from hydra.experimental.callback import Callback  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from mogjax.mixture import MixtureParams  # noqa: E402

PARENT_ENV = "MOGJAX_PARENT_RUN_ID"
SWEEP_ENV = "MOGJAX_SWEEP_ID"
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def tracking_uri(cfg) -> str:
    """``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``."""
    uri = cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def experiment_id(cfg) -> str:
    """Point MLflow at the configured store; get or create the experiment."""
    mlflow.set_tracking_uri(tracking_uri(cfg))
    client = MlflowClient()
    name = cfg.tracking.experiment_name
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name, tags=EXPERIMENT_KIND)
    if exp.tags.get("mlflow.experimentKind") != EXPERIMENT_KIND["mlflow.experimentKind"]:
        client.set_experiment_tag(exp.experiment_id, *next(iter(EXPERIMENT_KIND.items())))
    return exp.experiment_id


def git_info() -> dict[str, str]:
    """The commit and dirty flag of this project's checkout, when it is a git repository."""
    git = ["git", "-C", str(Path(__file__).resolve().parents[1])]
    try:
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True,
                               check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit, "git_dirty": str(bool(dirty)).lower()}


def data_hash(x) -> str:
    """SHA-256 (first 16 hex digits) of the data's float64 bytes and shape."""
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    return hashlib.sha256(str(arr.shape).encode() + arr.tobytes()).hexdigest()[:16]


def flatten(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as ``{"model.k": "2", ...}``."""
    out = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = str(node)

    walk(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), "")
    return out


@contextmanager
def start_run(cfg, run_name: str, tags: dict[str, str], parent_run_id: str | None = None):
    """An MLflow run (child of ``parent_run_id`` or of the sweep's parent, if any).

    Marked FAILED by MLflow if the body raises; everything logged before stays.
    """
    parent = parent_run_id or os.environ.get(PARENT_ENV)
    all_tags = {**git_info(), **tags}
    if os.environ.get(SWEEP_ENV):
        all_tags["sweep_id"] = os.environ[SWEEP_ENV]
    if cfg.tags:
        all_tags["study"] = ",".join(cfg.tags)
    with mlflow.start_run(
        experiment_id=experiment_id(cfg), run_name=run_name, parent_run_id=parent,
        nested=mlflow.active_run() is not None, tags=all_tags,
    ) as run:
        yield run


def log_config(cfg) -> None:
    """The resolved config as params (one batch) and as ``config.yaml``; Hydra's
    ``.hydra`` folder too when running under ``@hydra.main``."""
    run_id = mlflow.active_run().info.run_id
    params = [Param(k, v[:6000]) for k, v in flatten(cfg).items()]
    MlflowClient().log_batch(run_id, params=params)
    mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_dir = Path(HydraConfig.get().runtime.output_dir) / ".hydra"
    except ValueError:  # not under @hydra.main (tests call run(cfg) directly)
        return
    if hydra_dir.is_dir():
        mlflow.log_artifacts(str(hydra_dir), ".hydra")


def log_curve(key: str, curve, run_id: str | None = None, *, step_scale: float = 1.0) -> None:
    """A curve as metric ``key`` with ``step`` = index (times ``step_scale``), one batch.

    NaN entries (past the end of a fit) are skipped.
    """
    run_id = run_id or mlflow.active_run().info.run_id
    now = int(time.time() * 1000)
    values = np.asarray(curve, dtype=np.float64)
    metrics = [
        Metric(key, float(v), now, int(round(t * step_scale)))
        for t, v in enumerate(values) if np.isfinite(v)
    ]
    MlflowClient().log_batch(run_id, metrics=metrics)


def log_scalars(values: dict, run_id: str | None = None) -> None:
    run_id = run_id or mlflow.active_run().info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, 0) for k, v in values.items()]
    MlflowClient().log_batch(run_id, metrics=metrics)


def log_params_artifact(params: MixtureParams) -> None:
    """``params.npz`` (loads with ``allow_pickle=False``) and a readable ``params.json``."""
    arrays = {
        "log_weights": np.asarray(params.log_weights),
        "means": np.asarray(params.means),
        "prec_chol": np.asarray(params.prec_chol),
        "covariance_type": np.array(params.covariance_type),
    }
    readable = {
        "covariance_type": params.covariance_type,
        "weights": np.asarray(params.weights).tolist(),
        "means": np.asarray(params.means).tolist(),
        "covariances": np.asarray(params.covariances).tolist(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "params.npz", **arrays)
        (Path(tmp) / "params.json").write_text(json.dumps(readable, indent=2))
        mlflow.log_artifact(str(Path(tmp) / "params.npz"))
        mlflow.log_artifact(str(Path(tmp) / "params.json"))


def load_run_params(run_id: str, tracking_uri: str | None = None) -> MixtureParams:
    """Rebuild the fitted ``MixtureParams`` of a logged run (no pickle).

    Examples (with a store at hand)::

        params = load_run_params("0123abcd...", "sqlite:///mlflow.db")
        mogjax.mean_log_likelihood(params, x)
    """
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="params.npz",
                                                   dst_path=tmp)
        with np.load(path, allow_pickle=False) as data:
            return MixtureParams(
                data["log_weights"], data["means"], data["prec_chol"],
                str(data["covariance_type"]),
            )


def log_figure(fig, name: str) -> None:
    import matplotlib.pyplot as plt

    mlflow.log_figure(fig, name)
    plt.close(fig)


class SweepCallback(Callback):
    """Hydra callback: a multirun is one sweep, grouped under one MLflow parent run.

    ``on_multirun_start`` opens the parent and hands its id and the sweep id to the
    jobs through environment variables (inherited by joblib/Ray workers); each job's
    run is its child. ``on_multirun_end`` logs the summary plot (e.g. BIC against
    k) to the parent when ``tracking.summary_param`` is set, and closes it.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if not config.tracking.enabled:
            return
        exp_id = experiment_id(config)
        sweep_id = uuid.uuid4().hex[:12]
        run = MlflowClient().create_run(
            exp_id, run_name=f"sweep-{sweep_id}",
            tags={"sweep_id": sweep_id, "sweep_parent": "true", **git_info()},
        )
        os.environ[PARENT_ENV] = run.info.run_id
        os.environ[SWEEP_ENV] = sweep_id

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        parent = os.environ.pop(PARENT_ENV, None)
        os.environ.pop(SWEEP_ENV, None)
        if not parent:
            return
        client = MlflowClient()
        param, metric = config.tracking.summary_param, config.tracking.summary_metric
        if param:
            children = mlflow.search_runs(
                [experiment_id(config)], filter_string=f"tags.mlflow.parentRunId = '{parent}'",
            )
            pcol, mcol = f"params.{param}", f"metrics.{metric}"
            if len(children) and pcol in children and mcol in children:
                from mogjax.plotting import plot_metric_against

                xs = children[pcol].astype(float).to_numpy()
                ys = children[mcol].astype(float).to_numpy()
                fig = plot_metric_against(xs, ys, xlabel=param, ylabel=metric,
                                          title=f"{metric} against {param}")
                import matplotlib.pyplot as plt

                client.log_figure(parent, fig, f"{metric}_vs_{param}.png")
                plt.close(fig)
        client.set_terminated(parent)
