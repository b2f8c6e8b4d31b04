"""A Hydra multirun is one sweep: one MLflow parent run, every job its child.

Registered in ``conf/config.yaml`` (``hydra.callbacks``); works with the basic,
joblib, Ray and Submitit launchers.
"""

import atexit
import logging
import os
import uuid

import mlflow
from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from experiments.interrupt import EXIT_HOOKS
from experiments.provenance import git_info
from experiments.tracking import PARENT_ENV, SWEEP_ENV, experiment_id, log_figure, tracking_uri

log = logging.getLogger(__name__)


class SweepCallback(Callback):
    """Hydra callback: a multirun is one sweep, grouped under one MLflow parent run.

    ``on_multirun_start`` opens the parent and hands its id and the sweep id to the
    jobs through environment variables (inherited by joblib/Ray workers); each job's
    run is its child. ``on_multirun_end`` logs the summary plot (e.g. BIC against
    k) to the parent when ``tracking.summary_param`` is set, and closes it. A sweep
    that stops early (a failed job, Ctrl-C) never reaches ``on_multirun_end``: the
    parent is then closed at exit as ``FAILED``, with the summary of the jobs that
    finished.

    Workers that do not inherit this process's environment (a Ray cluster joined by
    address, Slurm) get the ids, and the tracking URI, from ``on_job_start``: it runs
    on the copy of this callback that every launcher ships with the job.
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
        self.sweep_env = {PARENT_ENV: run.info.run_id, SWEEP_ENV: sweep_id,
                          "MLFLOW_TRACKING_URI": tracking_uri(config)}
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

    @staticmethod
    def _close(config: DictConfig, status: str) -> None:
        parent = os.environ.pop(PARENT_ENV, None)
        os.environ.pop(SWEEP_ENV, None)
        if not parent:
            return
        try:
            if config.tracking.summary_param:
                _log_summary_plot(config, parent)
        except Exception as err:  # a summary must not leave the parent RUNNING
            log.warning("no summary plot for sweep %s: %s", parent, err)
        finally:
            MlflowClient().set_terminated(parent, status)


def _log_summary_plot(config: DictConfig, parent: str) -> None:
    """``summary_metric`` against ``summary_param`` over the finished children."""
    param, metric = config.tracking.summary_param, config.tracking.summary_metric
    children = mlflow.search_runs(
        [experiment_id(config)], filter_string=f"tags.mlflow.parentRunId = '{parent}'",
    )
    pcol, mcol = f"params.{param}", f"metrics.{metric}"
    if len(children) and pcol in children and mcol in children:
        from mogjax.plotting import plot_metric_against

        done = children[children[mcol].notna()]
        fig = plot_metric_against(
            done[pcol].astype(float).to_numpy(), done[mcol].astype(float).to_numpy(),
            xlabel=param, ylabel=metric, title=f"{metric} against {param}")
        log_figure(fig, f"{metric}_vs_{param}.png", parent)
