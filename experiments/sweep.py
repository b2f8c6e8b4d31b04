"""A Hydra multirun is one sweep: one MLflow parent run, every job its child.

Registered in ``conf/config.yaml`` (``hydra.callbacks``); works with the basic,
joblib, Ray and Submitit launchers. The parent carries the sweep's overrides as
params (``seed: 0,1,2``), the preset's tags (``study``), a description, and at the
end a summary: a metric against a swept value (``tracking.summary_param``), and for
a sweep of comparisons the study summary (``experiments.study``). The sweep prints
its id, the parent run and where to see it in the UI.
"""

import atexit
import logging
import os
import sys
import uuid

import mlflow
from hydra.experimental.callback import Callback
from mlflow.entities import Param
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from experiments import configs, dp_vs_bic, registry, store, study, tracking, ui_layout
from experiments.configs import sweep_overrides, swept_keys
from experiments.fallback import usable_folder
from experiments.interrupt import EXIT_HOOKS
from experiments.reap import reap_at_start
from experiments.store import TrackingUnavailable, tracking_uri
from experiments.tracking import PARENT_ENV, SWEEP_ENV

log = logging.getLogger(__name__)


class SweepCallback(Callback):
    """Hydra callback: a multirun is one sweep, grouped under one MLflow parent run.

    ``on_multirun_start`` opens the parent and hands its id and the sweep id to the
    jobs through environment variables (inherited by joblib/Ray workers); each job's
    run is its child. ``on_multirun_end`` logs the summary plot (e.g. BIC against
    k) to the parent when ``tracking.summary_param`` is set, the study summary when
    the jobs are comparisons (``experiments.study``), and closes it. A sweep
    that stops early (a failed job, Ctrl-C) never reaches ``on_multirun_end``: the
    parent is then closed at exit as ``FAILED``, with the summary of the jobs that
    finished.

    Workers that do not inherit this process's environment (a Ray cluster joined by
    address, Slurm) get the ids, and the tracking URI, from ``on_job_start``: it runs
    on the copy of this callback that every launcher ships with the job.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        """Check the config's fixed values and the store (created and migrated here,
        once, under a lock, before any job starts), then open the sweep's parent. A
        bad value or store is one ``error:`` line and exit status 1, before any job."""
        try:
            self._open_parent(config)
        except (ValueError, TrackingUnavailable) as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)

    def _open_parent(self, config: DictConfig) -> None:
        task = config.hydra.job.name
        overrides = sweep_overrides(config)
        swept = swept_keys(overrides)
        (configs.validate_compare if task == "compare" else configs.validate)(config, swept)
        if not config.tracking.enabled:
            return
        uri = tracking_uri(config)
        exp_id = store.prepare(uri, config.tracking.experiment_name)
        reap_at_start(uri, usable_folder(config.tracking.fallback_dir))
        sweep_id = uuid.uuid4().hex[:12]
        self.description = describe_sweep(task, overrides)
        tags = tracking.run_tags(config, {"sweep_id": sweep_id, "sweep_parent": "true",
                                          "sweep_task": task,
                                          "mlflow.note.content": self.description}, None)
        client = MlflowClient(uri)
        name = f"{'-'.join(config.tags) or task} sweep {sweep_id}"
        run = client.create_run(exp_id, run_name=name, tags=tags)
        client.log_batch(run.info.run_id,
                         params=[Param(k, v[:6000]) for k, v in overrides.items()])
        os.environ[PARENT_ENV] = run.info.run_id
        os.environ[SWEEP_ENV] = sweep_id
        self.sweep_env = {PARENT_ENV: run.info.run_id, SWEEP_ENV: sweep_id,
                          "MLFLOW_TRACKING_URI": uri}
        print(f"Sweep {sweep_id}: MLflow parent run {run.info.run_id}")
        atexit.register(self._close, config, "FAILED")
        EXIT_HOOKS.append(lambda: self._close(config, "KILLED"))

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        env = getattr(self, "sweep_env", None)
        if env and os.environ.get(PARENT_ENV) != env[PARENT_ENV]:  # a worker elsewhere
            self.saved_env = {key: os.environ.get(key) for key in env}
            os.environ.update(env)

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        for key, value in getattr(self, "saved_env", {}).items():  # a reused worker
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self.saved_env = {}

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        atexit.unregister(self._close)
        EXIT_HOOKS.clear()
        self._close(config, "FINISHED")

    def _close(self, config: DictConfig, status: str) -> None:
        parent = os.environ.pop(PARENT_ENV, None)
        sweep_id = os.environ.pop(SWEEP_ENV, None)
        if not parent:
            return
        try:
            if status != "KILLED":  # tracking.register_best: the best run's model
                registry.register_sweep(config, parent, sweep_id)
            if config.tracking.summary_param:
                _log_summary_plot(config, parent)
            if "dp_vs_bic" in config.tags:
                dp_vs_bic.log_summary(config, parent)
            if study.log_study(config, parent, sweep_id, self.description):
                print("Study summary: study_summary.json, study_summary.csv and "
                      "study_curves.png on the parent run")
        except Exception as err:  # a summary must not leave the parent RUNNING
            log.warning("no summary for sweep %s: %s", parent, err)
        finally:
            MlflowClient(tracking_uri(config)).set_terminated(parent, status)
            print_sweep(config, parent, sweep_id, status)


def describe_sweep(task: str, overrides: dict) -> str:
    swept = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "the config's defaults"
    return (f"A sweep of `{task}.py` over {swept}. Every job is a child run of this one "
            "(the runs table folds them under it); they all carry this sweep's `sweep_id`.")


def print_sweep(config: DictConfig, parent: str, sweep_id: str, status: str) -> None:
    """The sweep's id, its parent run, the UI command (local store) and the run's page."""
    uri = tracking_uri(config)
    base = ui_layout.print_ui_command(uri, parent, f"Sweep {sweep_id} {status}, MLflow parent run")
    exp_id = MlflowClient(uri).get_run(parent).info.experiment_id
    print(f"Parent run in the UI: {ui_layout.run_page(base, exp_id, parent, 'artifacts')}")


# Axis labels in words for the keys a sweep's summary plot may show.
_WORDS = {"model.k": "k (number of components)", "bic": "BIC (lower is better)",
          "aic": "AIC (lower is better)", "seed": "seed",
          "final_log_likelihood": "final mean log-likelihood (nats per sample)",
          "model.reg_covar": "reg_covar (added to every covariance's diagonal)"}


def _log_summary_plot(config: DictConfig, parent: str) -> None:
    """``summary_metric`` against ``summary_param`` over the finished children, the
    best value marked (lowest BIC or AIC, highest log-likelihood)."""
    param, metric = config.tracking.summary_param, config.tracking.summary_metric
    uri = tracking_uri(config)
    exp_id = MlflowClient(uri).get_run(parent).info.experiment_id
    mlflow.set_tracking_uri(uri)
    children = mlflow.search_runs([exp_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    pcol, mcol = f"params.{param}", f"metrics.{metric}"
    if len(children) and pcol in children and mcol in children:
        from mogjax.plotting import plot_metric_against

        done = children[children[mcol].notna()]
        xs = done[pcol].astype(float).to_numpy()
        best = "min" if metric in ("bic", "aic") else "max" if "log_likelihood" in metric else None
        xlabel, ylabel = _WORDS.get(param, param), _WORDS.get(metric, metric)
        data = configs.data_label(config) + (" (standardised)" if config.data.standardize
                                             else "")
        fig = plot_metric_against(
            xs, done[mcol].astype(float).to_numpy(), xlabel=xlabel, ylabel=ylabel,
            title=f"{ylabel} against {xlabel} on {data}, "
                  f"{configs.plain(config.model.covariance_type)} covariances "
                  f"({len(done)} runs)",
            integer_x=bool(len(xs)) and bool((xs == xs.round()).all()), best=best)
        tracking.attach(parent, uri).log_figure(fig, f"{metric}_vs_{param}.png")
