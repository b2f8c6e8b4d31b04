"""MLflow tracking for the experiments: one place that knows how runs are logged.

Conventions (DESIGN.md, "Experiments and tracking"): the resolved config flattened as
params; tags for git commit, data set and hash, algorithm, seed and sweep; the curve
as metric ``log_likelihood`` with ``step`` = iteration, written in one ``log_batch``;
the final parameters as ``params.npz`` + ``params.json`` (no pickle); the resolved
config and the package versions; plots.

A multirun is one sweep under one parent run: ``experiments.sweep.SweepCallback``.

Runs that fail lose nothing (``start_run``):

- an exception in the body marks the run ``FAILED``, with ``error.txt`` (the
  traceback) and the tags ``error_type``/``error_message``; Ctrl-C and SIGTERM mark
  it ``KILLED``. Everything logged before stays.
- an unreachable store stops the run before any compute (``check_reachable``); a
  store that fails mid-run does not lose the results: every run also writes what it
  logs to a local record (``experiments.fallback``), which is moved to
  ``tracking.fallback_dir`` with the command that uploads it later, and the run
  exits non-zero (``TrackingUnavailable``).
"""

import json
import logging
import os
import shutil
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from types import SimpleNamespace
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# A tracking server that went away: give up after ~7 s of retries (defaults: minutes),
# then keep the results locally. Set these variables yourself for a flakier network.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")  # a server that hangs: 10 s

import mlflow  # noqa: E402
import requests  # noqa: E402
import sqlalchemy.exc  # noqa: E402
from mlflow.entities import Metric, Param  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.tracking.context.registry import resolve_tags  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from experiments.fallback import UPLOAD_COMMAND, RunRecord  # noqa: E402
from experiments.provenance import environment, flatten, git_info  # noqa: E402
from experiments.interrupt import RunInterrupted, signals_raise  # noqa: E402
from mogjax.mixture import MixtureParams  # noqa: E402

PARENT_ENV = "MOGJAX_PARENT_RUN_ID"
SWEEP_ENV = "MOGJAX_SWEEP_ID"
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# What a store that failed raises (a REST call out of retries, a database error).
TRACKING_ERRORS = (MlflowException, OSError, requests.RequestException,
                   sqlalchemy.exc.SQLAlchemyError)

log = logging.getLogger(__name__)


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached (at start) or failed during a run."""


def tracking_uri(cfg) -> str:
    """``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``."""
    return resolve_uri(cfg.tracking.uri)


def resolve_uri(uri: str | None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Raise ``TrackingUnavailable`` naming ``uri`` when it cannot take a run: an
    HTTP server that does not answer ``/health``, or a sqlite file whose folder is
    missing. Other stores are left to MLflow."""
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout).close()
        except (OSError, urllib.error.URLError) as err:
            reason = getattr(err, "reason", err)
            raise TrackingUnavailable(
                f"tracking server {uri} is unreachable ({reason}); start it, point "
                "tracking.uri (or MLFLOW_TRACKING_URI) at a reachable store, or use tracking=none"
            ) from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise TrackingUnavailable(f"tracking store {uri}: folder {folder} does not exist")


def experiment_id(cfg) -> str:
    """Point MLflow at the configured store; get or create the experiment."""
    uri = tracking_uri(cfg)
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    name = cfg.tracking.experiment_name
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name, tags=EXPERIMENT_KIND)
    if exp.tags.get("mlflow.experimentKind") != EXPERIMENT_KIND["mlflow.experimentKind"]:
        client.set_experiment_tag(exp.experiment_id, *next(iter(EXPERIMENT_KIND.items())))
    return exp.experiment_id


# ------------------------------------------------------------------- open runs


@dataclass
class _OpenRun:
    run_id: str
    uri: str
    record: RunRecord
    broken: Exception | None = None  # the store's first failure in this run
    kept: list = field(default_factory=list)  # records of children kept locally
    experiment: tuple = ()  # (uri, experiment name, id): nested runs reuse it


_OPEN: dict[str, _OpenRun] = {}
_LOCAL = threading.local()  # .stack: this thread's open run ids, innermost last


def _stack() -> list[str]:
    if not hasattr(_LOCAL, "stack"):
        _LOCAL.stack = []
    return _LOCAL.stack


def active_run_id() -> str:
    if not _stack():
        raise RuntimeError("no run is open: use `with tracking.start_run(...)`")
    return _stack()[-1]


def _send(run_id: str, call) -> None:
    """Make one store call for ``run_id``; a store failure marks the run's store as
    broken (later calls are skipped, the local record keeps everything)."""
    state = _OPEN.get(run_id)
    if state is None:  # not a run of ours (e.g. the sweep parent): plain call
        call(MlflowClient())
        return
    if state.broken is not None:
        return
    try:
        call(MlflowClient(state.uri))
    except TRACKING_ERRORS as err:
        state.broken = err
        log.error("tracking store %s failed (%s); this run's results are kept locally",
                  state.uri, str(err).splitlines()[0][:300])


def _record(run_id: str) -> RunRecord | None:
    state = _OPEN.get(run_id)
    return state.record if state else None


def _describe_failure(run_id: str, err: BaseException) -> None:
    """Traceback as ``error.txt`` and the error as tags."""
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    log_text(text, "error.txt", run_id)
    set_tags({"error_type": type(err).__name__, "error_message": str(err)[:5000]}, run_id)


def _create_run(cfg, uri: str, run_name: str, tags: dict, enclosing: "_OpenRun | None"):
    """Create the run in the store; for a run inside one of ours whose store failed,
    a local-only run (its record is uploaded later). ``(run, broken)``."""
    try:
        if enclosing is not None and enclosing.broken is not None:
            raise enclosing.broken
        key = (uri, cfg.tracking.experiment_name)
        if enclosing is not None and enclosing.experiment[:2] == key:
            exp_id = enclosing.experiment[2]  # checked and created by the enclosing run
        else:
            exp_id = experiment_id(cfg)
        run = MlflowClient(uri).create_run(exp_id, run_name=run_name, tags=resolve_tags(tags))
        return run, None
    except (TrackingUnavailable, *TRACKING_ERRORS) as err:
        if enclosing is None:
            raise
        offline = SimpleNamespace(run_id=uuid.uuid4().hex, experiment_id=None)
        return SimpleNamespace(info=offline), err


@contextmanager
def start_run(cfg, run_name: str, tags: dict[str, str], parent_run_id: str | None = None):
    """Open an MLflow run (a child of ``parent_run_id`` or of the sweep's parent, if
    any) for the body; yields the ``mlflow.entities.Run``.

    Ends ``FINISHED``; ``FAILED`` (traceback in ``error.txt``) if the body raises;
    ``KILLED`` on Ctrl-C or SIGTERM. If the store failed during the run, the local
    record is kept under ``tracking.fallback_dir``; the outermost run then raises
    ``TrackingUnavailable`` naming every kept record (unless the body's own
    exception is already on its way). Runs nested in one of ours go on when the
    store fails (the later ones locally only), so nothing computed is lost.
    """
    uri = tracking_uri(cfg)
    enclosing = _OPEN.get(_stack()[-1]) if _stack() else None
    parent = parent_run_id or os.environ.get(PARENT_ENV)
    all_tags = {**git_info(), **tags}
    if parent:
        all_tags["mlflow.parentRunId"] = parent
    if os.environ.get(SWEEP_ENV):
        all_tags.setdefault("sweep_id", os.environ[SWEEP_ENV])
    if cfg.tags:
        all_tags["study"] = ",".join(cfg.tags)
    run, broken = _create_run(cfg, uri, run_name, all_tags, enclosing)
    run_id = run.info.run_id
    record = RunRecord.create({"run_id": run_id, "run_name": run_name, "tracking_uri": uri,
                               "experiment_name": cfg.tracking.experiment_name,
                               "tags": all_tags})
    _OPEN[run_id] = state = _OpenRun(run_id, uri, record, broken, experiment=(
        uri, cfg.tracking.experiment_name, run.info.experiment_id))
    _stack().append(run_id)
    status, in_flight = "FINISHED", None
    try:
        with signals_raise():
            yield run
    except (KeyboardInterrupt, RunInterrupted) as err:
        status, in_flight = "KILLED", err
        set_tags({"killed_by": "SIGINT" if isinstance(err, KeyboardInterrupt) else
                  str(err).rsplit(" ", 1)[-1]}, run_id)
        raise
    except BaseException as err:
        status, in_flight = "FAILED", err
        _describe_failure(run_id, err)
        if isinstance(err, Exception):
            err.add_note(f"(MLflow run {run_id} marked FAILED; traceback in its error.txt)")
        raise
    finally:
        _stack().remove(run_id)
        record.update(status=status)
        try:
            _send(run_id, lambda c: c.set_terminated(run_id, status))
        finally:
            del _OPEN[run_id]
            if state.broken is None and not state.kept:
                record.discard()
            else:
                _keep_records(cfg, state, enclosing, in_flight)


def _keep_records(cfg, state: _OpenRun, enclosing, in_flight) -> None:
    """Keep this run's record (if its store failed) and hand it, with its children's,
    to the enclosing run; the outermost run reports them all."""
    kept = list(state.kept)
    if state.broken is not None:
        kept.insert(0, state.record.keep(Path(cfg.tracking.fallback_dir)))
    else:
        state.record.discard()
    if enclosing is not None:
        enclosing.kept.extend(kept)
        enclosing.broken = enclosing.broken or state.broken
        return
    commands = "; ".join(UPLOAD_COMMAND.format(folder=f, uri=state.uri) for f in kept)
    reason = state.broken or "a nested run's store call failed"
    message = (
        f"tracking store {state.uri} failed during run {state.run_id} "
        f"({str(reason).splitlines()[0][:200]}); the results are kept in "
        f"{', '.join(map(str, kept))}. Upload them later with: {commands}"
    )
    if in_flight is None:
        raise TrackingUnavailable(message)
    log.error(message)


# -------------------------------------------------------------------- logging


def set_tags(tags: dict[str, str], run_id: str | None = None) -> None:
    run_id = run_id or active_run_id()
    tags = {k: str(v) for k, v in tags.items()}
    if (record := _record(run_id)) is not None:
        record.update(tags=tags)
    _send(run_id, lambda c: [c.set_tag(run_id, k, v) for k, v in tags.items()])


def _log_metrics(run_id: str, metrics: list[Metric]) -> None:
    if (record := _record(run_id)) is not None:
        record.add_metrics(metrics)
    _send(run_id, lambda c: c.log_batch(run_id, metrics=metrics))


def _log_file(run_id: str, name: str, write) -> None:
    """``write(path)`` makes the artifact ``name`` (a path inside the run's artifacts)."""
    folder = str(Path(name).parent) if Path(name).parent != Path(".") else None
    record = _record(run_id)
    with tempfile.TemporaryDirectory() as tmp:  # used only for a run that is not ours
        path = record.artifact_path(name) if record else Path(tmp) / Path(name).name
        write(path)
        _send(run_id, lambda c: c.log_artifact(run_id, str(path), folder))


def log_text(text: str, name: str, run_id: str | None = None) -> None:
    _log_file(run_id or active_run_id(), name, lambda p: p.write_text(text))


def log_dict(obj, name: str, run_id: str | None = None) -> None:
    log_text(json.dumps(obj, indent=2), name, run_id)


def log_config(cfg, params: dict | None = None) -> None:
    """``params`` (a nested dict; default: the resolved config) as params in one batch,
    the whole resolved config as ``config.yaml``, the package versions as
    ``environment.json``; Hydra's ``.hydra`` folder too when running under
    ``@hydra.main``."""
    run_id = active_run_id()
    flat = {k: v[:6000] for k, v in flatten(cfg if params is None else params).items()}
    if (record := _record(run_id)) is not None:
        record.update(params=flat)
    params = [Param(k, v) for k, v in flat.items()]
    _send(run_id, lambda c: c.log_batch(run_id, params=params))
    log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    log_dict(environment(), "environment.json")
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_dir = Path(HydraConfig.get().runtime.output_dir) / ".hydra"
    except ValueError:  # not under @hydra.main (tests call run(cfg) directly)
        return
    for path in sorted(hydra_dir.glob("*.yaml")):
        _log_file(run_id, f".hydra/{path.name}", lambda p, src=path: shutil.copy(src, p))


def log_curve(key: str, curve, run_id: str | None = None, *, step_scale: float = 1.0) -> None:
    """A curve as metric ``key`` with ``step`` = index (times ``step_scale``), one batch.

    NaN entries (past the end of a fit) are skipped.
    """
    now = int(time.time() * 1000)
    values = np.asarray(curve, dtype=np.float64)
    metrics = [
        Metric(key, float(v), now, int(round(t * step_scale)))
        for t, v in enumerate(values) if np.isfinite(v)
    ]
    _log_metrics(run_id or active_run_id(), metrics)


def log_scalars(values: dict, run_id: str | None = None) -> None:
    now = int(time.time() * 1000)
    _log_metrics(run_id or active_run_id(), [Metric(k, float(v), now, 0) for k, v in values.items()])


def log_params_artifact(params: MixtureParams, run_id: str | None = None) -> None:
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
    run_id = run_id or active_run_id()
    _log_file(run_id, "params.npz", lambda p: np.savez(p, **arrays))
    log_dict(readable, "params.json", run_id)


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


def log_figure(fig, name: str, run_id: str | None = None) -> None:
    import matplotlib.pyplot as plt

    _log_file(run_id or active_run_id(), name, lambda p: fig.savefig(p))
    plt.close(fig)
