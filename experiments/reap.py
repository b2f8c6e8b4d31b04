"""Find the runs whose process died without a word (kill -9, a crash, a lost session).

A process that ends normally, fails or is interrupted closes its run. One killed
with SIGKILL cannot: its run stays ``RUNNING`` and its local record stays in the
fallback folder. Every run records its host and process (``host``, ``process_id``,
``process_start``), so::

    python -m experiments.reap [--tracking-uri URI] [--fallback-dir mlflow-fallback]

(and the start of every run and sweep on that store) marks each ``RUNNING`` run of
this host whose process is gone as ``KILLED``, with an end time and the tags
``killed_by=process gone`` and ``found_by`` (how it was found), after uploading
what its local record holds that the store lacks; the record is then removed.
Runs of other hosts are left alone: their processes cannot be seen from here.
"""

import argparse
import logging
import os
import socket
import sys
import time
from pathlib import Path

from experiments import fallback, store
from experiments.provenance import process_gone

KILLED_TAGS = {"killed_by": "process gone"}

log = logging.getLogger(__name__)


def reap(uri: str, fallback_dir: Path | None, found_by: str) -> list[str]:
    """Mark the dead runs of this host on ``uri`` KILLED (see module), uploading their
    records in ``fallback_dir`` first; returns the run ids marked."""
    from mlflow.tracking import MlflowClient

    tags = {**KILLED_TAGS, "found_by": found_by}
    done = _upload_records(uri, fallback_dir, tags) if fallback_dir else []
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    host = socket.gethostname().replace("'", "")
    query = f"attributes.status = 'RUNNING' and tags.host = '{host}'"
    for run in client.search_runs(experiments, query, max_results=50000) if experiments else []:
        if run.info.run_id in done or not process_gone(run.data.tags):
            continue
        for key, value in tags.items():
            client.set_tag(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id, "KILLED", end_time=int(time.time() * 1000))
        done.append(run.info.run_id)
    return done


def reap_at_start(uri: str, folder: Path) -> None:
    """``reap`` at the start of a run or sweep on ``uri``; a failure there is reported
    and does not stop the new run."""
    try:
        marked = reap(uri, folder, f"the start of a run by process {os.getpid()}")
    except Exception as err:  # noqa: BLE001 - reported, the run goes on
        log.warning("could not look for runs of dead processes on %s: %s", uri,
                    store.first_line(err))
        return
    if marked:
        log.warning("marked %d run(s) of dead processes KILLED: %s", len(marked),
                    ", ".join(marked))


def _upload_records(uri: str, root: Path, tags: dict) -> list[str]:
    """Upload (as KILLED) and remove the records in ``root`` of dead processes whose
    runs belong to ``uri``. A record is claimed by renaming it first, so two reapers
    never upload one twice."""
    done = []
    for record in fallback.records(root):
        meta = record.meta
        if meta.get("status") != "RUNNING" or meta.get("tracking_uri") != uri:
            continue
        if not process_gone(meta.get("process", {})):
            continue
        claimed = record.folder.with_name(f".{record.folder.name}.reaping-{os.getpid()}")
        try:
            record.folder.rename(claimed)
        except OSError:  # another reaper took it
            continue
        try:
            done.append(fallback.upload(claimed, uri, status="KILLED", tags=tags))
        except Exception:
            claimed.rename(record.folder)  # keep it for the next try
            raise
        fallback.RunRecord(claimed).discard()
    return done


SHOWN = 10  # run ids named in reap's one line; the rest counted


def summary_line(marked: list[str], uri: str) -> str:
    """What reap prints: the count, and the first ``SHOWN`` run ids (500 ids used to
    make one line of 17,000 characters)."""
    shown = ", ".join(marked[:SHOWN]) + (
        f" and {len(marked) - SHOWN} more" if len(marked) > SHOWN else "")
    return (f"{len(marked)} run(s) of dead processes marked KILLED on {uri}"
            + (f": {shown}" if marked else ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.reap",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--tracking-uri", default=None,
                        help="the store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    parser.add_argument("--fallback-dir", default=fallback.DEFAULT_DIR,
                        help="where the runs' local records are (default: mlflow-fallback)")
    args = parser.parse_args(argv)
    uri = store.resolve_uri(args.tracking_uri)
    try:
        store.check(uri)
        store.mlflow_defaults()
        marked = reap(uri, Path(args.fallback_dir).resolve(), "python -m experiments.reap")
    except Exception as err:  # a store that fails: one line
        print(f"error: tracking store {uri}: {store.first_line(err)}", file=sys.stderr)
        return 1
    print(summary_line(marked, uri))
    return 0


if __name__ == "__main__":
    sys.exit(main())
