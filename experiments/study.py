"""A study: a ``compare.py`` multirun over seeds and data sets, summarised on the sweep's
parent run once its jobs are done.

    python experiments/compare.py -m seed=0,1,2,3,4,5,6,7,8,9 data=faithful,iris

Every job is a comparison run (tag ``algorithm=compare``) with a child per method; a
group is a data set (``faithful-k2`` when the study sweeps ``model.k``). Per group and
method, ``study_summary.json`` (and ``.csv``, one row each) holds, over the seeds:

- ``final_log_likelihood``: median, quartiles and interquartile range;
- ``fraction_reaching_best``: the share of seeds whose final value is within
  ``target_gap`` of the best value any run of the group found;
- ``fraction_reaching_target``, ``median_iterations_to_target``,
  ``median_seconds_to_target`` (over the seeds that reached their own comparison's
  target, ``experiments.comparison``);
- median warm ``seconds_per_iteration``, ``fit_seconds``, ``compile_seconds``;
- ``median_max_mean_gap_to_best``: components aligned (``mogjax.align``) to the
  group's best run before the largest distance between matched means is taken;
- ``runs`` and ``failures`` (jobs where this method has no finished run).

``study_curves.png`` draws, per group and method, the median curve with an
interquartile band against iterations/steps and against warm milliseconds. The
headline numbers are also metrics of the parent (``fraction_reaching_best/<group>/<method>``,
``median_seconds_to_target/...``, ...), so its metric charts compare them.
"""

import ast
import csv
import io

import numpy as np
from mlflow.tracking import MlflowClient

from experiments import tracking
from experiments.store import tracking_uri

QUANTITIES = ("final_log_likelihood", "seconds_per_iteration", "fit_seconds",
              "compile_seconds", "n_iter")


def _median(values) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.median(values)) if values else None


def collect(client: MlflowClient, experiment_id: str, sweep_id: str, parent_id: str) -> dict:
    """``{group: {method: [run record, ...]}}`` of the study's finished method runs,
    and per group the number of jobs: ``(groups, jobs_per_group, methods)``."""
    runs = client.search_runs([experiment_id], f"tags.sweep_id = '{sweep_id}'",
                              max_results=50000)
    jobs = {r.info.run_id: r for r in runs if r.data.tags.get("algorithm") == "compare"
            and r.data.tags.get("mlflow.parentRunId") == parent_id}
    ks = {r.data.params.get("model.k") for r in jobs.values()}

    def group(job) -> str:
        name = job.data.tags.get("data", "?")
        return name if len(ks) == 1 else f"{name}-k{job.data.params.get('model.k')}"

    methods, jobs_per_group, groups = [], {}, {}
    for job in jobs.values():
        jobs_per_group[group(job)] = jobs_per_group.get(group(job), 0) + 1
        for m in ast.literal_eval(job.data.params.get("compare", "[]")):
            methods += [m] if m not in methods else []
    for run in runs:
        job = jobs.get(run.data.tags.get("mlflow.parentRunId"))
        if job is None or run.info.status != "FINISHED":
            continue
        method = run.data.tags["method"]
        history = client.get_metric_history(run.info.run_id, "log_likelihood")
        record = {"run_id": run.info.run_id, "seed": job.data.tags.get("seed"),
                  "curve": np.array([m.value for m in sorted(history, key=lambda m: m.step)]),
                  **{q: run.data.metrics.get(q) for q in QUANTITIES},
                  **{q: job.data.metrics.get(f"{q}/{method}") for q in
                     ("reached_target", "iterations_to_target", "seconds_to_target")}}
        groups.setdefault(group(job), {}).setdefault(method, []).append(record)
    return groups, jobs_per_group, methods


def _gaps_to_best(records: list, uri: str) -> dict:
    """``{run_id: max_mean_gap}`` of every run's components, aligned to the best run's."""
    from mogjax.align import parameter_gaps

    best = max(records, key=lambda r: r["final_log_likelihood"])
    ref = tracking.load_run_params(best["run_id"], uri)
    out = {}
    for r in records:
        try:
            out[r["run_id"]] = parameter_gaps(ref, tracking.load_run_params(r["run_id"], uri))[
                "max_mean_gap"]
        except ValueError:  # another k or d
            out[r["run_id"]] = None
    return out


def summarize(groups: dict, jobs_per_group: dict, methods: list, target_gap: float,
              uri: str | None = None) -> dict:
    """The summary (see module) from ``collect``'s records."""
    out = {}
    for name in sorted(jobs_per_group):
        by_method = groups.get(name, {})
        records = [r for rs in by_method.values() for r in rs]
        best = max((r["final_log_likelihood"] for r in records), default=None)
        gaps = _gaps_to_best(records, uri) if records else {}
        entries = {}
        for method in methods:
            rs = by_method.get(method, [])
            finals = np.array([r["final_log_likelihood"] for r in rs])
            reached = [r for r in rs if r["reached_target"] == 1.0]
            q25, q50, q75 = np.percentile(finals, [25, 50, 75]) if rs else (None,) * 3
            entries[method] = {
                "runs": jobs_per_group[name], "failures": jobs_per_group[name] - len(rs),
                "final_log_likelihood": {"median": q50, "q25": q25, "q75": q75,
                                         "iqr": None if q50 is None else q75 - q25},
                "fraction_reaching_best": (float(np.mean(finals >= best - target_gap))
                                           if rs else None),
                "fraction_reaching_target": len(reached) / len(rs) if rs else None,
                "median_iterations_to_target": _median(r["iterations_to_target"] for r in reached),
                "median_seconds_to_target": _median(r["seconds_to_target"] for r in reached),
                **{f"median_{q}": _median(r[q] for r in rs) for q in QUANTITIES[1:]},
                "median_max_mean_gap_to_best": _median(gaps[r["run_id"]] for r in rs),
            }
        out[name] = {"best_final_log_likelihood": best, "methods": entries}
    return out


def to_csv(summary: dict) -> str:
    """One row per group and method; nested values as ``final_log_likelihood_median``..."""
    rows = []
    for group, entry in summary["groups"].items():
        for method, values in entry["methods"].items():
            row = {"group": group, "method": method,
                   "best_final_log_likelihood": entry["best_final_log_likelihood"]}
            for key, value in values.items():
                if isinstance(value, dict):
                    row.update({f"{key}_{k}": v for k, v in value.items()})
                else:
                    row[key] = value
            rows.append(row)
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def headline_metrics(summary: dict) -> dict:
    """``{"<quantity>/<group>/<method>": value}`` of the summary's headline numbers,
    for the parent's metric charts (one section per quantity)."""
    out = {}
    for group, entry in summary["groups"].items():
        for method, v in entry["methods"].items():
            values = {"median_final_log_likelihood": v["final_log_likelihood"]["median"],
                      **{k: v[k] for k in ("fraction_reaching_best", "fraction_reaching_target",
                                           "median_seconds_to_target", "failures")}}
            out.update({f"{k}/{group}/{method}": x for k, x in values.items() if x is not None})
    return out


def describe(summary: dict) -> str:
    """A markdown table of the summary for the parent run's description."""
    lines = ["| data | method | median final (IQR) | reaching best | median ms to target "
             "| failures |", "|---|---|---|---|---|---|"]
    for group, entry in summary["groups"].items():
        for method, v in entry["methods"].items():
            final = v["final_log_likelihood"]
            if final["median"] is None:
                lines.append(f"| {group} | {method} | - | - | - | {v['failures']} |")
                continue
            ms = v["median_seconds_to_target"]
            lines.append(
                f"| {group} | {method} | {final['median']:.6f} ({final['iqr']:.2g}) | "
                f"{v['fraction_reaching_best']:.0%} | "
                f"{'-' if ms is None else f'{1e3 * ms:.3g}'} | {v['failures']} |")
    return "\n".join(lines)


def log_study(config, parent_id: str, sweep_id: str, description: str) -> dict | None:
    """Summarise the study under ``parent_id`` into its artifacts and description;
    returns the summary (None when the sweep holds no comparison)."""
    uri = tracking_uri(config)
    client = MlflowClient(uri)
    exp_id = client.get_run(parent_id).info.experiment_id
    groups, jobs_per_group, methods = collect(client, exp_id, sweep_id, parent_id)
    if not jobs_per_group:
        return None
    summary = {"sweep_id": sweep_id, "parent_run_id": parent_id,
               "target_gap": config.target_gap,
               "groups": summarize(groups, jobs_per_group, methods, config.target_gap, uri)}
    parent = tracking.attach(parent_id, uri)
    parent.log_scalars(headline_metrics(summary))
    parent.log_dict(summary, "study_summary.json")
    parent.log_text(to_csv(summary), "study_summary.csv")
    curves = {g: {m: [(r["curve"], r["seconds_per_iteration"]) for r in groups[g][m]]
                  for m in methods if m in groups[g]} for g in sorted(groups)}
    if curves:  # one figure per study, drawn even when the runs' plots are off
        from mogjax.plotting import plot_study_curves

        from experiments.configs import stop_rule

        fig = plot_study_curves(curves, title=f"Study {sweep_id}: median and interquartile "
                                "range over seeds", subtitle=f"Stopping rule: {stop_rule(config.stop)}")
        parent.log_figure(fig, "study_curves.png")
    parent.set_tags({"mlflow.note.content": f"{description}\n\n{describe(summary)}"})
    return summary
