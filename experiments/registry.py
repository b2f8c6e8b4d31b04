"""The Model Registry: the best run of a sweep (or a study) as a registered model.

With ``tracking.register_best=bic`` (lowest wins) or ``final_log_likelihood``
(highest wins), a sweep that ends registers the model (``runs:/<id>/model``, see
``experiments.model``) of its best finished run under ``tracking.model_name``
(default ``mogjax``) and points the alias ``champion`` at that version::

    python experiments/fit.py -m model.k=1,2,3,4 tracking.register_best=bic
    python experiments/compare.py -m seed=0,1,2 tracking.register_best=final_log_likelihood
    mlflow.pyfunc.load_model("models:/mogjax@champion")

The candidates are the sweep's runs that fitted a mixture (in a study: the method
runs under each comparison) and logged the metric; mean-shift runs have neither
``bic`` nor ``final_log_likelihood``. The version carries tags ``sweep_id``,
``sweep_parent_run_id``, ``metric`` and the value (``bic``: ``...``), and the sweep's
parent run the tag ``registered_model`` (``<name>/<version>``). ``champion`` moves to
every newly registered best: it names the last sweep's winner, not the best of all
time (different sweeps fit different data).

A sweep already logged registers after the fact::

    python -m experiments.registry SWEEP_ID --metric bic --name mogjax --tracking-uri URI
"""

import argparse
import math
import sys

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from experiments.configs import plain
from experiments.model import MODEL_NAME
from experiments.store import first_line, resolve_uri, tracking_uri

ALIAS = "champion"
METRICS = {"bic": "ASC", "final_log_likelihood": "DESC"}  # the better end first


def candidates(client: MlflowClient, experiment_ids: list[str], sweep_id: str,
               metric: str) -> list:
    """The finished runs of sweep ``sweep_id`` that logged ``metric``, best first."""
    if metric not in METRICS:
        raise ValueError(f"register_best={metric!r}: must be one of {sorted(METRICS)}")
    runs = client.search_runs(
        experiment_ids,
        filter_string=f"tags.sweep_id = '{sweep_id}' and attributes.status = 'FINISHED'",
        order_by=[f"metrics.{metric} {METRICS[metric]}"], max_results=5000)
    return [r for r in runs if r.data.tags.get("sweep_parent") != "true"
            and math.isfinite(r.data.metrics.get(metric, math.nan))]


def register_best(sweep_id: str, metric: str, name: str, *, experiment_ids=None,
                  parent_run_id: str | None = None):
    """Register the model of the best run of sweep ``sweep_id`` by ``metric`` as a new
    version of ``name``, alias ``champion``; returns the ``ModelVersion`` (None when no
    run qualifies). Uses the current tracking URI (the registry lives in the same
    store: sqlite or a tracking server)."""
    client = MlflowClient()
    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    runs = candidates(client, experiment_ids, sweep_id, metric)
    if not runs:
        return None
    best = runs[0]
    value = best.data.metrics[metric]
    if parent_run_id is None:
        parents = client.search_runs(experiment_ids, filter_string=(
            f"tags.sweep_id = '{sweep_id}' and tags.sweep_parent = 'true'"), max_results=1)
        parent_run_id = parents[0].info.run_id if parents else None
    tags = {"sweep_id": sweep_id, "sweep_parent_run_id": parent_run_id or "", "metric": metric,
            metric: repr(value), "run_name": best.info.run_name or ""}
    version = register_run(best, name, tags, description=(
        f"Best of sweep {sweep_id} by {metric} ({value:.6g}) among {len(runs)} finished "
        f"runs: run {best.info.run_id} ({best.info.run_name})."))
    if parent_run_id:
        client.set_tag(parent_run_id, "registered_model", f"{name}/{version.version}")
    return version


def register_run(run, name: str, tags: dict | None = None, description: str = ""):
    """Register the model of ``run`` (a run id or an MLflow ``Run``) as a new version of
    ``name`` with ``tags``, alias ``champion``; returns the ``ModelVersion``."""
    client = MlflowClient()
    if isinstance(run, str):
        run = client.get_run(run)
    logged = [o.model_id for o in (run.outputs.model_outputs if run.outputs else [])]
    source = f"models:/{logged[-1]}" if logged else f"runs:/{run.info.run_id}/{MODEL_NAME}"
    version = mlflow.register_model(source, name, await_registration_for=0, tags=tags)
    if description:
        client.update_model_version(name, version.version, description=description)
    client.set_registered_model_alias(name, ALIAS, version.version)
    return client.get_model_version(name, version.version)


def register_sweep(config, parent_run_id: str, sweep_id: str) -> None:
    """After a sweep: register its best run when ``tracking.register_best`` is set, and
    say what was registered (``experiments.sweep.SweepCallback``)."""
    metric = config.tracking.register_best
    if not metric:
        return
    metric = plain(metric)
    mlflow.set_tracking_uri(tracking_uri(config))
    try:
        experiment = MlflowClient().get_run(parent_run_id).info.experiment_id
        version = register_best(sweep_id, metric, config.tracking.model_name,
                                experiment_ids=[experiment], parent_run_id=parent_run_id)
    except MlflowException as err:  # the sweep's runs stay as they are
        print(f"Sweep {sweep_id}: registering its best run failed: {first_line(err)}",
              file=sys.stderr)
        return
    if version is None:
        print(f"Sweep {sweep_id}: no finished run logged {metric}; nothing registered")
        return
    print(f"Registered {version.name} version {version.version} (@{ALIAS}): run "
          f"{version.run_id}, {metric} {float(version.tags[metric]):.6g}; load it with "
          f"mlflow.pyfunc.load_model('models:/{version.name}@{ALIAS}')")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Register the best run of a logged sweep.")
    parser.add_argument("sweep_id")
    parser.add_argument("--metric", choices=sorted(METRICS), default="bic")
    parser.add_argument("--name", default="mogjax", help="registered model name")
    parser.add_argument("--tracking-uri", default=None,
                        help="default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here")
    args = parser.parse_args(argv)
    mlflow.set_tracking_uri(resolve_uri(args.tracking_uri))
    version = register_best(args.sweep_id, args.metric, args.name)
    if version is None:
        print(f"error: no finished run of sweep {args.sweep_id} logged {args.metric}")
        return 1
    print(f"{version.name} version {version.version} (@{ALIAS}): run {version.run_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
