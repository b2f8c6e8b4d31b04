"""MLflow tracking for the experiments: one place that knows how runs are logged.

Conventions (docs/design.md, "Experiments and tracking"): the resolved config
flattened as params; tags for git commit, data set and hash, algorithm, seed, sweep,
host and process; the curve as metric ``log_likelihood`` with ``step`` = iteration,
written in one ``log_batch``; the final parameters as ``params.npz`` +
``params.json`` (no pickle); the resolved config, the package versions and the
source files' hashes; plots.

``start_run`` opens an MLflow run (``mlflow.start_run(nested=True)``: MLflow's own
run stack, so ``mlflow.active_run()`` is the innermost run) and yields a ``Run``,
through which everything is logged. A run nested in another passes it as
``parent``; a sweep's jobs find their parent in ``MOGJAX_PARENT_RUN_ID``
(``experiments.sweep``).

Runs that fail lose nothing:

- an exception in the body marks the run ``FAILED``, with ``error.txt`` (the
  traceback) and the tags ``error_type``/``error_message``; Ctrl-C and SIGTERM mark
  it ``KILLED``. Everything logged before stays.
- a store that cannot take runs stops the run before any compute
  (``store.prepare``); a store that fails mid-run does not lose the results: every
  run also writes what it logs to a local record (``experiments.fallback``), kept in
  the fallback folder with the command that uploads it later, and the run exits
  non-zero (``TrackingUnavailable``). Runs nested in one whose store failed go on,
  locally only.
- a process killed without a word leaves its run ``RUNNING`` and its record behind:
  the next run on the store (or ``python -m experiments.reap``) marks it ``KILLED``.
"""

import json
import logging
import os
import shutil
import tempfile
import time
import traceback
import uuid
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import requests
import sqlalchemy.exc
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from experiments import model, store
from experiments.fallback import UPLOAD_COMMAND, RunRecord, usable_folder
from experiments.interrupt import RunInterrupted, signal_name, signals_raise
from experiments.provenance import (environment, flatten, git_info, process_identity,
                                    source_files)
from experiments.reap import reap_at_start
from experiments.store import TrackingUnavailable
from mogjax.mixture import MixtureParams

__all__ = ["PARENT_ENV", "SWEEP_ENV", "Run", "TrackingUnavailable", "attach", "start_run",
           "load_run_params"]

PARENT_ENV = "MOGJAX_PARENT_RUN_ID"
SWEEP_ENV = "MOGJAX_SWEEP_ID"
# What a store that failed raises (a REST call out of retries, a database error).
TRACKING_ERRORS = (MlflowException, OSError, requests.RequestException,
                   sqlalchemy.exc.SQLAlchemyError)

log = logging.getLogger(__name__)


class Run:
    """An open run: its ids, its store, its local record (None for a run opened
    elsewhere, such as a sweep's parent) and the store's first failure, if any.
    ``info`` carries ``run_id`` and ``experiment_id`` as MLflow's runs do."""

    def __init__(self, run_id: str, experiment_id: str | None, uri: str,
                 record: RunRecord | None = None, broken: Exception | None = None,
                 experiment_name: str | None = None):
        self.run_id, self.experiment_id, self.uri = run_id, experiment_id, uri
        self.experiment_name = experiment_name
        self.info = SimpleNamespace(run_id=run_id, experiment_id=experiment_id)
        self.record, self.broken = record, broken
        self.kept: list[Path] = []  # records of nested runs kept locally
        self.active = False  # on MLflow's run stack

    def _send(self, call) -> None:
        """One store call; for a run of ours, a failure marks the store broken (later
        calls are skipped, the local record keeps everything)."""
        if self.broken is not None:
            return
        try:
            call(MlflowClient(self.uri))
        except TRACKING_ERRORS as err:
            if self.record is None:
                raise
            self.broken = err
            log.error("tracking store %s failed (%s); this run's results are kept locally",
                      self.uri, store.first_line(err))

    def set_tags(self, tags: dict) -> None:
        tags = {k: str(v) for k, v in tags.items()}
        if self.record is not None:
            self.record.update(tags=tags)
        self._send(lambda c: [c.set_tag(self.run_id, k, v) for k, v in tags.items()])

    def log_metrics(self, metrics: list[Metric]) -> None:
        if self.record is not None:
            self.record.add_metrics(metrics)
        self._send(lambda c: c.log_batch(self.run_id, metrics=metrics))

    def log_curve(self, key: str, curve, *, step_scale: float = 1.0,
                  step_offset: float = 0.0) -> None:
        """A curve as metric ``key`` with ``step`` = ``step_offset`` + index x
        ``step_scale`` (rounded), one batch; NaN entries (past the end of a fit) are
        skipped."""
        now = int(time.time() * 1000)
        self.log_metrics([Metric(key, float(v), now, int(round(step_offset + t * step_scale)))
                          for t, v in enumerate(np.asarray(curve, np.float64)) if np.isfinite(v)])

    def log_steps(self, values: list) -> None:
        """``[(key, value, step)]`` in one batch."""
        now = int(time.time() * 1000)
        self.log_metrics([Metric(k, float(v), now, int(step)) for k, v, step in values])

    def log_scalars(self, values: dict) -> None:
        now = int(time.time() * 1000)
        self.log_metrics([Metric(k, float(v), now, 0) for k, v in values.items()])

    def log_file(self, name: str, write) -> None:
        """``write(path)`` makes the artifact ``name`` (a path inside the artifacts)."""
        folder = str(Path(name).parent) if Path(name).parent != Path(".") else None
        with tempfile.TemporaryDirectory() as tmp:  # only for a run without a record
            path = (self.record.artifact_path(name) if self.record is not None
                    else Path(tmp) / Path(name).name)
            write(path)
            self._send(lambda c: c.log_artifact(self.run_id, str(path), folder))

    def log_text(self, text: str, name: str) -> None:
        self.log_file(name, lambda p: p.write_text(text))

    def log_dict(self, obj, name: str) -> None:
        self.log_text(json.dumps(obj, indent=2), name)

    def log_figure(self, fig, name: str) -> None:
        import matplotlib.pyplot as plt

        self.log_file(name, lambda p: fig.savefig(p))
        plt.close(fig)

    def log_params_artifact(self, params: MixtureParams) -> None:
        """``params.npz`` (loads with ``allow_pickle=False``) and a readable ``params.json``."""
        arrays = {name: np.asarray(getattr(params, name))
                  for name in ("log_weights", "means", "prec_chol")}
        arrays["covariance_type"] = np.array(params.covariance_type)
        self.log_file("params.npz", lambda p: np.savez(p, **arrays))
        self.log_dict({"covariance_type": params.covariance_type,
                       "weights": np.asarray(params.weights).tolist(),
                       "means": np.asarray(params.means).tolist(),
                       "covariances": np.asarray(params.covariances).tolist()}, "params.json")

    def log_model(self, fitted, example) -> None:
        """``fitted`` (``experiments.model``) as the run's MLflow model,
        ``runs:/<id>/model``; ``example``: the data, whose first rows are its input
        example. The local record keeps its files (``RunRecord.keep_model``), so an
        upload of the record logs the model too."""
        if self.record is not None:
            self.record.keep_model(fitted, example)
        self._send(lambda c: model.log_model(fitted, example, self.run_id))

    def log_config(self, cfg, params: dict | None = None) -> None:
        """``params`` (a nested dict; default: the resolved config) as params in one
        batch; the resolved config as ``config.yaml``, the package versions as
        ``environment.json``, the source files' hashes as ``sources.json`` (what a
        re-run compares); Hydra's ``.hydra`` folder when under ``@hydra.main``."""
        flat = {k: v[:6000] for k, v in flatten(cfg if params is None else params).items()}
        if self.record is not None:
            self.record.update(params=flat)
        batch = [Param(k, v) for k, v in flat.items()]
        self._send(lambda c: c.log_batch(self.run_id, params=batch))
        self.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        self.log_dict(environment(), "environment.json")
        self.log_dict(source_files(), "sources.json")
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():  # tests call run(cfg) directly
            return
        hydra_dir = Path(HydraConfig.get().runtime.output_dir) / ".hydra"
        for path in sorted(hydra_dir.glob("*.yaml")):
            self.log_file(f".hydra/{path.name}", lambda p, src=path: shutil.copy(src, p))


def attach(run_id: str, uri: str | None = None) -> Run:
    """A run opened elsewhere (a sweep's parent): calls go straight to the store."""
    return Run(run_id, None, store.resolve_uri(uri))


def run_tags(cfg, tags: dict, parent_id: str | None) -> dict[str, str]:
    """A run's tags: git, host and process, ``tags``, parent, sweep and study."""
    out = {**git_info(), **process_identity(), **tags}
    if parent_id:
        out["mlflow.parentRunId"] = parent_id
    if os.environ.get(SWEEP_ENV):
        out.setdefault("sweep_id", os.environ[SWEEP_ENV])
    if cfg.tags:
        out["study"] = ",".join(cfg.tags)
    return {k: str(v) for k, v in out.items()}


@contextmanager
def start_run(cfg, run_name: str, tags: dict, parent: "Run | str | None" = None):
    """Open an MLflow run for the body (a child of ``parent``, else of the sweep's
    parent, if any); yields its ``Run``.

    Ends ``FINISHED``; ``FAILED`` (traceback in ``error.txt``) if the body raises;
    ``KILLED`` on Ctrl-C or SIGTERM. If the store failed during the run, the local
    record stays in the fallback folder; the outermost run then raises
    ``TrackingUnavailable`` naming every kept record (unless the body's own
    exception is already on its way).
    """
    enclosing = parent if isinstance(parent, Run) else None
    parent_id = enclosing.run_id if enclosing else parent or os.environ.get(PARENT_ENV)
    run = _open(cfg, run_name, run_tags(cfg, tags, parent_id), parent_id, enclosing)
    status, in_flight = "FINISHED", None
    try:
        with signals_raise():
            yield run
    except (KeyboardInterrupt, RunInterrupted) as err:
        status, in_flight = "KILLED", err
        run.set_tags({"killed_by": signal_name(err)})
        err.add_note(f"(MLflow run {run.run_id} marked KILLED)")
        raise
    except BaseException as err:
        status, in_flight = "FAILED", err
        text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        run.log_text(text, "error.txt")
        run.set_tags({"error_type": type(err).__name__, "error_message": str(err)[:5000]})
        if isinstance(err, Exception):
            err.add_note(f"(MLflow run {run.run_id} marked FAILED; traceback in its error.txt)")
        raise
    finally:
        _close(run, status, enclosing, in_flight)


def _open(cfg, run_name: str, tags: dict, parent_id, enclosing: Run | None) -> Run:
    """Create the run (store first, then its record). Inside a run of ours the store
    is already prepared; when it failed there, the run is local only."""
    uri, name = store.tracking_uri(cfg), cfg.tracking.experiment_name
    if enclosing is not None and (enclosing.uri, enclosing.experiment_name) == (uri, name):
        exp_id, folder = enclosing.experiment_id, enclosing.record.folder.parent
    else:
        exp_id = store.prepare(uri, name)
        folder = usable_folder(cfg.tracking.fallback_dir)
        reap_at_start(uri, folder)
    broken = enclosing.broken if enclosing is not None else None
    run_id = None
    if broken is None:
        try:
            mlflow.set_tracking_uri(uri)
            run_id = mlflow.start_run(experiment_id=exp_id, run_name=run_name, nested=True,
                                      parent_run_id=parent_id, tags=tags).info.run_id
        except TRACKING_ERRORS as err:
            if enclosing is None:
                raise TrackingUnavailable(f"tracking store {uri} failed to create a run "
                                          f"({store.first_line(err)})") from None
            broken = err
    run = Run(run_id or uuid.uuid4().hex, exp_id, uri, broken=broken, experiment_name=name)
    run.active = run_id is not None
    run.record = RunRecord.create(folder, {
        "run_id": run.run_id, "run_name": run_name, "tracking_uri": uri,
        "experiment_name": name, "tags": tags, "process": process_identity()})
    return run


def _close(run: Run, status: str, enclosing: Run | None, in_flight) -> None:
    run.record.update(status=status)
    try:
        if run.active:  # pops MLflow's run stack, then tells the store
            with store.retries(None if run.broken is None else 0):
                mlflow.end_run(status)
    except TRACKING_ERRORS as err:
        run.broken = run.broken or err
    finally:
        if run.broken is None and not run.kept:
            run.record.discard()
        else:
            _keep_records(run, enclosing, in_flight)


def _keep_records(run: Run, enclosing: Run | None, in_flight) -> None:
    """Keep this run's record (if its store failed) and hand it, with its children's,
    to the enclosing run; the outermost run reports them all."""
    kept = list(run.kept)
    if run.broken is not None:
        kept.insert(0, run.record.folder)
    else:
        run.record.discard()
    if enclosing is not None:
        enclosing.kept.extend(kept)
        enclosing.broken = enclosing.broken or run.broken
        return
    commands = "; ".join(UPLOAD_COMMAND.format(folder=f, uri=run.uri) for f in kept)
    reason = run.broken or "a nested run's store call failed"
    message = (f"tracking store {run.uri} failed during run {run.run_id} "
               f"({store.first_line(reason, 200)}); the results are kept in "
               f"{', '.join(map(str, kept))}. Upload them later with: {commands}")
    if in_flight is None:
        raise TrackingUnavailable(message)
    log.error(message)


def load_run_params(run_id: str, tracking_uri: str | None = None) -> MixtureParams:
    """Rebuild the fitted ``MixtureParams`` of a logged run (no pickle).

    Examples (with a store at hand)::

        params = load_run_params("0123abcd...", "sqlite:///mlflow.db")
        mogjax.mean_log_likelihood(params, x)
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="params.npz", dst_path=tmp, tracking_uri=tracking_uri)
        with np.load(path, allow_pickle=False) as data:
            return MixtureParams(data["log_weights"], data["means"], data["prec_chol"],
                                 str(data["covariance_type"]))
