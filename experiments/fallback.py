"""A run's record on local disk, kept when the tracking store cannot take it.

Every run writes what it logs to a local folder as well (``tracking.start_run``):
``run.json`` (ids, names, tags, params, status), ``metrics.jsonl`` (one metric point
per line) and ``artifacts/``. When the run ends with the store healthy the folder is
deleted; when the store failed mid-run it is moved to the fallback folder and the
run exits non-zero with the command that uploads it later::

    python -m experiments.fallback mlflow-fallback/<run_id> [--tracking-uri URI]

The upload continues the same run when the store still has it (adding only the
points it lacks), otherwise it creates a new run with the recorded tags.
"""

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

UPLOAD_COMMAND = "python -m experiments.fallback {folder} --tracking-uri {uri}"


class RunRecord:
    """The local copy of one run: a folder that grows as the run logs."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @classmethod
    def create(cls, meta: dict) -> "RunRecord":
        """A new record in a temporary folder; ``meta`` has run_id, run_name,
        experiment_name, tracking_uri and tags."""
        folder = Path(tempfile.mkdtemp(prefix=f"mogjax-run-{meta['run_id'][:8]}-"))
        (folder / "artifacts").mkdir()
        record = cls(folder)
        record._write_meta({**meta, "params": {}, "status": "RUNNING"})
        return record

    @property
    def meta(self) -> dict:
        return json.loads((self.folder / "run.json").read_text())

    def _write_meta(self, meta: dict) -> None:
        (self.folder / "run.json").write_text(json.dumps(meta, indent=2))

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

    def keep(self, root: Path) -> Path:
        """Move the record to ``root/<run_id>`` and return that folder."""
        target = Path(root).resolve() / self.meta["run_id"]
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(self.folder), target)
        self.folder = target
        return target

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def upload(folder, tracking_uri: str | None = None) -> str:
    """Log a kept record to a tracking store; returns the run id it landed in."""
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from experiments.tracking import EXPERIMENT_KIND, check_reachable

    record = RunRecord(Path(folder))
    meta = record.meta
    uri = tracking_uri or meta["tracking_uri"]
    check_reachable(uri)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(meta["experiment_name"])
    exp_id = exp.experiment_id if exp else client.create_experiment(
        meta["experiment_name"], tags=EXPERIMENT_KIND)
    try:
        run = client.get_run(meta["run_id"])
        run_id, have_params = run.info.run_id, run.data.params
        have = {key: {h.step for h in client.get_metric_history(run_id, key)}
                for key in {m["key"] for m in record.metrics()}}
    except MlflowException:  # the store lost the run (or it is another store)
        run = client.create_run(exp_id, run_name=meta["run_name"], tags=meta["tags"])
        run_id, have_params, have = run.info.run_id, {}, {}
    metrics = [Metric(m["key"], m["value"], m["timestamp"], m["step"]) for m in record.metrics()
               if m["step"] not in have.get(m["key"], ())]
    params = [Param(k, v) for k, v in meta["params"].items() if k not in have_params]
    client.log_batch(run_id, metrics=metrics, params=params)
    for key, value in meta["tags"].items():
        client.set_tag(run_id, key, value)
    client.log_artifacts(run_id, str(record.folder / "artifacts"))
    status = meta["status"] if meta["status"] != "RUNNING" else "FAILED"
    client.set_terminated(run_id, status)
    return run_id


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
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    print(f"uploaded {args.folder} as MLflow run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
