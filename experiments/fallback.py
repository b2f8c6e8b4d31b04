"""A run's record on local disk: everything it logs, kept when the store cannot take it.

Every run writes what it logs to a folder of its own as well (``tracking.start_run``),
``<fallback folder>/<run_id>``: ``run.json`` (ids, names, tags, params, status, the
process running it), ``metrics.jsonl`` (one metric point per line), ``artifacts/``
and ``model/`` (the fitted model's files, ``experiments.model``, and its input
example: the upload logs it as the run's model, ``runs:/<id>/model``). The fallback folder is ``tracking.fallback_dir`` (default
``mlflow-fallback`` in the working directory); when that is not a usable folder, the
project's ``mlflow-fallback`` in the working directory (never a temporary folder).

- The run ends with the store healthy: the record is deleted.
- The store failed mid-run: the record stays, the run exits non-zero with the
  command that uploads it later::

      python -m experiments.fallback mlflow-fallback/<run_id> [--tracking-uri URI]

- The process died without a word (kill -9, a crash): the record stays ``RUNNING``;
  ``python -m experiments.reap`` (and the start of the next run on that store)
  uploads it as ``KILLED``.

The upload continues the same run when the store still has it (adding only the
points it lacks, and the model when the run has none), otherwise it creates a new run
with the recorded tags.
"""

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from experiments import store

UPLOAD_COMMAND = "python -m experiments.fallback {folder} --tracking-uri {uri}"
DEFAULT_DIR = "mlflow-fallback"
MODEL_DIR, MODEL_EXAMPLE = "model", "example.npy"

log = logging.getLogger(__name__)


def usable_folder(configured: str | Path) -> Path:
    """``configured`` when it is (or can be made) a writable folder, else the
    project's ``mlflow-fallback`` in the working directory (a warning says why);
    ``TrackingUnavailable`` when neither is."""
    problems = []
    for folder in dict.fromkeys([Path(configured), Path(DEFAULT_DIR)]):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".probe-{time.monotonic_ns()}"
            probe.mkdir()
            probe.rmdir()
        except OSError as err:
            problems.append(f"{folder} ({err.strerror or err})")
            continue
        if problems:
            log.warning("tracking.fallback_dir %s is not a usable folder; local records "
                        "are kept in %s", problems[0], folder.resolve())
        return folder.resolve()
    raise store.TrackingUnavailable("no folder for the runs' local records: " + "; ".join(problems)
                           + "; set tracking.fallback_dir to a writable folder")


class RunRecord:
    """The local copy of one run: a folder that grows as the run logs."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @classmethod
    def create(cls, root: Path, meta: dict) -> "RunRecord":
        """A new record ``root/<run_id>``; ``meta`` has run_id, run_name,
        experiment_name, tracking_uri, tags and the process (``process_identity``)."""
        folder = Path(root) / meta["run_id"]
        (folder / "artifacts").mkdir(parents=True)
        record = cls(folder)
        record._write_meta({**meta, "params": {}, "status": "RUNNING"})
        return record

    @property
    def meta(self) -> dict:
        return json.loads((self.folder / "run.json").read_text())

    def _write_meta(self, meta: dict) -> None:
        tmp = self.folder / "run.json.tmp"  # never a half-written run.json
        tmp.write_text(json.dumps(meta, indent=2))
        tmp.replace(self.folder / "run.json")

    def update(self, *, params=None, tags=None, status=None) -> None:
        meta = self.meta
        meta["params"].update(params or {})
        meta["tags"].update(tags or {})
        meta["status"] = status or meta["status"]
        self._write_meta(meta)

    def add_metrics(self, metrics) -> None:
        """``metrics``: MLflow ``Metric`` entities."""
        with open(self.folder / "metrics.jsonl", "a") as f:
            for m in metrics:
                f.write(json.dumps({"key": m.key, "value": m.value, "timestamp": m.timestamp,
                                    "step": m.step}) + "\n")

    def metrics(self) -> list[dict]:
        path = self.folder / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def artifact_path(self, relative: str) -> Path:
        path = self.folder / "artifacts" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def keep_model(self, fitted, example) -> None:
        """The run's model (``experiments.model.Fitted``) as its files, and the first
        rows of ``example`` (its input example), in ``model/``."""
        import numpy as np

        from experiments import model

        folder = self.folder / MODEL_DIR
        model.write_fitted(fitted, folder)
        np.save(folder / MODEL_EXAMPLE, np.asarray(example[: model.EXAMPLE_ROWS], np.float64),
                allow_pickle=False)

    def kept_model(self):
        """``(Fitted, example rows)`` kept by ``keep_model``, or None."""
        folder = self.folder / MODEL_DIR
        if not (folder / MODEL_EXAMPLE).is_file():
            return None
        import numpy as np

        from experiments import model

        fitted = model.read_fitted(folder / model.ARRAYS, folder / model.DESCRIPTION)
        return fitted, np.load(folder / MODEL_EXAMPLE, allow_pickle=False)

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def records(root: Path) -> list[RunRecord]:
    """The records in a fallback folder."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [RunRecord(p) for p in sorted(root.iterdir()) if (p / "run.json").is_file()]


def upload(folder, tracking_uri: str | None = None, *, status: str | None = None,
           tags: dict | None = None) -> str:
    """Log a kept record to a tracking store; returns the run id it landed in. The run
    ends ``status`` (default: the record's; a record still ``RUNNING`` ends FAILED),
    with ``tags`` added."""
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    record = RunRecord(Path(folder))
    meta = record.meta
    uri = tracking_uri or meta["tracking_uri"]
    exp_id = store.prepare(uri, meta["experiment_name"])
    client = MlflowClient(uri)
    try:  # the run, or the one an earlier upload of this record created
        run = client.get_run(meta.get("uploaded_run_id") or meta["run_id"])
        run_id, have_params = run.info.run_id, run.data.params
        have = {key: {h.step for h in client.get_metric_history(run_id, key)}
                for key in {m["key"] for m in record.metrics()}}
    except MlflowException:  # the store lost the run (or it is another store)
        run = client.create_run(exp_id, run_name=meta["run_name"], tags=meta["tags"])
        run_id, have_params, have = run.info.run_id, {}, {}
        record._write_meta({**meta, "uploaded_run_id": run_id})  # a retry continues it
    metrics = [Metric(m["key"], m["value"], m["timestamp"], m["step"]) for m in record.metrics()
               if m["step"] not in have.get(m["key"], ())]
    params = [Param(k, v) for k, v in meta["params"].items() if k not in have_params]
    client.log_batch(run_id, metrics=metrics, params=params)
    for key, value in {**meta["tags"], **(tags or {})}.items():
        client.set_tag(run_id, key, value)
    client.log_artifacts(run_id, str(record.folder / "artifacts"))
    _upload_model(record, client, uri, exp_id, run_id)
    status = status or (meta["status"] if meta["status"] != "RUNNING" else "FAILED")
    client.set_terminated(run_id, status)
    return run_id


def _upload_model(record: RunRecord, client, uri: str, exp_id: str, run_id: str) -> None:
    """Log the record's model as the run's, unless the run already has one."""
    kept = record.kept_model()
    if kept is None:
        return
    if any(m.source_run_id == run_id for m in client.search_logged_models([exp_id])):
        return
    import mlflow

    from experiments import model

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        model.log_model(*kept, run_id)
    finally:
        mlflow.set_tracking_uri(previous)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.fallback",
        description="Upload a run kept in the fallback folder to a tracking store.")
    parser.add_argument("folder", help="the kept run's folder, mlflow-fallback/<run_id>")
    parser.add_argument("--tracking-uri", default=None,
                        help="where to upload (default: the URI the run was started with)")
    args = parser.parse_args(argv)
    from mlflow.exceptions import MlflowException

    try:
        run_id = upload(args.folder, args.tracking_uri)
    except (OSError, ValueError, RuntimeError, MlflowException) as err:
        print(f"error: {store.first_line(err)}", file=sys.stderr)
        return 1
    print(f"uploaded {args.folder} as MLflow run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
