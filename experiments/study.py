"""A study: a ``compare.py`` multirun across settings, summarised on the sweep's parent
run once its jobs are done.

    python experiments/compare.py -m experiment=overlap_study        # the preset
    python experiments/compare.py -m data=file data.path=a.csv,b.csv seed=0,1,2
    python experiments/compare.py -m data=separated data.separation=0.5,1,2,4 seed=0,1,2

Every job is a comparison run (tag ``algorithm=compare``) with a child per method.
**A setting** is one combination of the values of the swept keys, the seed aside
(any Hydra key: data files, generator settings, model settings, precision, the
methods); its name is ``key=value, ...`` (``separation=0.5, n_features=2``), or the
data set's name when only seeds are swept.

**One target per setting**: the best final mean log-likelihood of any method and seed
of the setting, minus ``target_gap``. Per setting and method, ``study_summary.json``
(and ``.csv``, one row each, a column per swept key) holds:

- ``runs`` (jobs of the setting), ``failures`` (jobs where the method has no
  finished run), ``reached_target`` (a count), ``capped`` (runs stopped by their
  budget, not by the rule), ``target_met_at_start`` (a count);
- medians (and quartiles) of ``iterations_to_target``, ``ms_to_target`` and
  ``esteps_to_target`` **over all runs**, a run that failed or never reached the
  target counting as never reaching it: the median is ``null`` in the JSON (empty in
  the CSV, "never" in the description) when fewer than half reached it, never a
  number taken from the runs that did;
- ``final_log_likelihood`` (median, quartiles), median ``ms_per_iteration``,
  ``init_ms``, ``compile_ms`` (what each run paid: 0 where its process or the
  persistent compilation cache already held the programs) and ``compile_cache_hits``.

Time to target is the shared start plus iterations x the loop's per-iteration time
(``experiments.timing``); E-steps to target is the fit's own count at that point
(its ``esteps`` curve, logged per run), or where a fit did not count them the start's
plus iterations x its average E-steps per iteration. ``study_settings.png`` draws iterations and milliseconds to
target against the swept setting, ``study_curves.png`` the gap to each setting's best
value (``experiments.study_plots``).
"""

import ast
import csv
import io
import json
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from experiments import tracking
from experiments.comparison import esteps_per_iteration, quartiles
from experiments.store import tracking_uri

# Metrics of a method run that the summary reads (``experiments.summary.scalars``).
RUN_METRICS = ("final_log_likelihood", "n_iter", "n_esteps", "ms_per_iteration", "init_ms",
               "fit_ms", "compile_ms", "compile_cache_hits", "capped")
# What a setting's jobs may log of EM's theory (``mogjax.theory``), summarised as medians.
THEORY_METRICS = ("em_rate", "em_rate_empirical", "missing_information_max",
                  "responsibility_entropy")


def short_key(key: str) -> str:
    """``data.separation`` -> ``separation``; a group (``data``) stays itself."""
    return key.rsplit(".", 1)[-1]


def setting_of(job, swept: list[str]) -> dict[str, str]:
    """``{key: value}`` of the swept keys (seed aside) in one job's own overrides."""
    overrides = json.loads(job.data.tags.get("job_overrides", "[]"))
    values = {}
    for item in overrides:
        key, _, value = item.partition("=")
        values[key.lstrip("+~")] = value
    return {key: values.get(key, "?") for key in swept}


def setting_name(values: dict[str, str], data_name: str) -> str:
    """``separation=0.5, n_features=2`` (a file by its name, not its folder); the data
    set's name when only seeds are swept."""
    shown = lambda k, v: Path(v).name if k.endswith("path") else v
    return ", ".join(f"{short_key(k)}={shown(k, v)}" for k, v in values.items()) or data_name


def collect(client: MlflowClient, experiment_id: str, sweep_id: str, parent_id: str):
    """The study's runs, grouped: ``(settings, swept)`` where ``settings`` is
    ``{name: {"values": {key: value}, "jobs": n, "methods": {method: [record]},
    "theory": [metrics of each job]}}`` in the order first met, and ``swept`` the
    swept keys (seed aside)."""
    from experiments.configs import swept_keys

    parent = client.get_run(parent_id)
    swept = [k for k in swept_keys(parent.data.params) if k != "seed"]
    runs = client.search_runs([experiment_id], f"tags.sweep_id = '{sweep_id}'",
                              max_results=50000, order_by=["attributes.start_time ASC"])
    jobs = {r.info.run_id: r for r in runs if r.data.tags.get("algorithm") == "compare"
            and r.data.tags.get("mlflow.parentRunId") == parent_id}
    settings, name_of = {}, {}
    for job_id, job in jobs.items():
        values = setting_of(job, swept)
        name = setting_name(values, job.data.tags.get("data", "?"))
        name_of[job_id] = name
        entry = settings.setdefault(name, {"values": values, "jobs": 0, "methods": {},
                                           "theory": []})
        entry["jobs"] += 1
        entry["theory"].append({k: job.data.metrics.get(k) for k in THEORY_METRICS})
        for m in ast.literal_eval(job.data.params.get("compare", "[]")):
            entry["methods"].setdefault(m, [])
    for run in runs:
        job_id = run.data.tags.get("mlflow.parentRunId")
        if job_id not in jobs or run.info.status != "FINISHED":
            continue
        history = client.get_metric_history(run.info.run_id, "log_likelihood")
        counts = client.get_metric_history(run.info.run_id, "esteps")
        record = {"run_id": run.info.run_id, "seed": jobs[job_id].data.tags.get("seed"),
                  "curve": np.array([m.value for m in sorted(history, key=lambda m: m.step)]),
                  "esteps": np.array([m.value for m in sorted(counts, key=lambda m: m.step)])
                  if counts else None,
                  **{q: run.data.metrics.get(q) for q in RUN_METRICS},
                  # against the comparison's own target (its methods' best, one start)
                  "own": {q: jobs[job_id].data.metrics.get(f"{q}/{run.data.tags['method']}")
                          for q in ("reached_target", "iterations_to_target",
                                    "ms_to_target", "esteps_to_target")}}
        settings[name_of[job_id]]["methods"].setdefault(run.data.tags["method"], []).append(
            record)
    return settings, swept


def _to_target(record: dict, target: float) -> dict:
    """One run's iterations, milliseconds and E-steps to ``target`` (inf: never)."""
    hits = np.flatnonzero(record["curve"] >= target)
    if not hits.size:
        return {"iterations": np.inf, "ms": np.inf, "esteps": np.inf, "at_start": False}
    t = int(hits[0])
    per_iter = esteps_per_iteration(record["n_esteps"] and int(record["n_esteps"]),
                                    int(record["n_iter"] or 0))
    counts = record.get("esteps")
    esteps = float(counts[t]) if counts is not None and t < len(counts) else 1 + t * per_iter
    ms = (record["init_ms"] or 0.0) + t * (record["ms_per_iteration"] or 0.0)
    return {"iterations": t, "ms": ms, "esteps": esteps, "at_start": t == 0}


def _quartiles(values) -> dict:
    """Median and quartiles of ``values`` (inf = never); a quartile that is inf is None."""
    if not len(values):
        return {"median": None, "q25": None, "q75": None}
    q25, q50, q75 = quartiles(values)
    as_value = lambda v: float(v) if np.isfinite(v) else None
    return {"median": as_value(q50), "q25": as_value(q25), "q75": as_value(q75)}


def _own(records: list, jobs: int) -> dict:
    """Reached count and quartiles of the cost to each comparison's own target (runs
    that failed or never reached it: never)."""
    inf = float("inf")
    value = lambda r, q: (r["own"][q] if r["own"].get("reached_target") and
                          r["own"].get(q) is not None else inf)
    missing = [inf] * (jobs - len(records))
    return {"reached_target": int(sum(bool(r["own"].get("reached_target")) for r in records)),
            **{q: _quartiles([value(r, q) for r in records] + missing)
               for q in ("iterations_to_target", "ms_to_target", "esteps_to_target")}}


def _median(values) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.median(values)) if values else None


def summarize(settings: dict, target_gap: float) -> dict:
    """The summary (see module) from ``collect``'s settings."""
    out = {}
    for name, entry in settings.items():
        records = [r for rs in entry["methods"].values() for r in rs]
        best = max((r["final_log_likelihood"] for r in records), default=None)
        target = None if best is None else best - target_gap
        methods = {}
        for method, rs in entry["methods"].items():
            never = {"iterations": np.inf, "ms": np.inf, "esteps": np.inf, "at_start": False}
            reach = [_to_target(r, target) for r in rs] + [never] * (entry["jobs"] - len(rs))
            finals = [r["final_log_likelihood"] for r in rs]
            methods[method] = {
                "runs": entry["jobs"], "failures": entry["jobs"] - len(rs),
                "reached_target": int(sum(np.isfinite(x["iterations"]) for x in reach)),
                "capped": int(sum(bool(r["capped"]) for r in rs)),
                "target_met_at_start": int(sum(x["at_start"] for x in reach)),
                "iterations_to_target": _quartiles([x["iterations"] for x in reach]),
                "ms_to_target": _quartiles([x["ms"] for x in reach]),
                "esteps_to_target": _quartiles([x["esteps"] for x in reach]),
                "final_log_likelihood": _quartiles(finals),
                **{f"median_{q}": _median(r[q] for r in rs) for q in
                   ("ms_per_iteration", "init_ms", "compile_ms", "n_iter", "n_esteps")},
                "compile_cache_hits": int(sum(r["compile_cache_hits"] or 0 for r in rs)),
                # the same against each comparison's own target (its methods' best from
                # one start, minus target_gap): how fast each climbs its own hill
                "comparison_target": _own(rs, entry["jobs"]),
                "per_run": [{"seed": r["seed"], "run_id": r["run_id"],
                             **{k: (float(v) if np.isfinite(v) else None)
                                for k, v in x.items() if k != "at_start"}}
                            for r, x in zip(rs, reach)],
            }
        theory = {f"median_{k}": _median(t[k] for t in entry["theory"]) for k in THEORY_METRICS}
        out[name] = {"values": entry["values"], "best_final_log_likelihood": best,
                     "target": target, "methods": methods,
                     **{k: v for k, v in theory.items() if v is not None}}
    return out


def to_csv(summary: dict) -> str:
    """One row per setting and method, a column per swept key; nested values as
    ``ms_to_target_median``...; a median that is never reached is empty."""
    rows = []
    for name, entry in summary["settings"].items():
        for method, values in entry["methods"].items():
            row = {"setting": name, **entry["values"], "method": method,
                   "target": entry["target"],
                   "best_final_log_likelihood": entry["best_final_log_likelihood"]}
            for key, value in values.items():
                if key == "per_run":
                    continue
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


# The parent's headline metrics: ``<name>/<method>`` with step = the setting's index in
# the description's table, so one chart holds a method across every setting.
HEADLINES = {"median_ms_to_target": ("ms_to_target", "median"),
             "median_iterations_to_target": ("iterations_to_target", "median"),
             "median_esteps_to_target": ("esteps_to_target", "median"),
             "reached_target": ("reached_target", None)}


def headline_metrics(summary: dict) -> list[tuple[str, float, int]]:
    """``[(key, value, step)]`` of the headline numbers (``HEADLINES``); a median that
    is never reached is left out (the description says "never")."""
    out = []
    for step, entry in enumerate(summary["settings"].values()):
        for method, v in entry["methods"].items():
            for name, (field, part) in HEADLINES.items():
                value = v[field] if part is None else v[field][part]
                if value is not None:
                    out.append((f"{name}/{method}", float(value), step))
    return out


def _cell(quartiles: dict, fmt: str = ".3g") -> str:
    return "never" if quartiles["median"] is None else f"{quartiles['median']:{fmt}}"


def describe(summary: dict, stop_rule: str = "") -> str:
    """The parent run's description: the table first, then how to read it."""
    lines = ["| # | setting | EM rate | method | reached/runs | median ms to target | "
             "median E-steps to target | reached own best | median E-steps to own best | "
             "capped | failures |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for step, (name, entry) in enumerate(summary["settings"].items()):
        rate = entry.get("median_em_rate", entry.get("median_em_rate_empirical"))
        for i, (method, v) in enumerate(entry["methods"].items()):
            shown = ("-" if rate is None else f"{rate:.4g}") if i == 0 else ""
            lines.append(
                f"| {step} | {name if i == 0 else ''} | {shown} | {method} | "
                f"{v['reached_target']}/{v['runs']} | {_cell(v['ms_to_target'])} | "
                f"{_cell(v['esteps_to_target'], '.0f')} | "
                f"{v['comparison_target']['reached_target']}/{v['runs']} | "
                f"{_cell(v['comparison_target']['esteps_to_target'], '.0f')} | "
                f"{v['capped']} | {v['failures']} |")
    gap = summary["target_gap"]
    return "\n".join(lines) + (
        f"\n\n**How to read it.** One target per setting: the best final mean "
        f"log-likelihood any method and seed of the setting reached, minus {gap:g} nats "
        "per sample; a run reaches it at its first iteration or step at or above it. "
        "Medians are over all runs of the setting: a run that failed or never reached the "
        "target counts as never reaching it, so a median reads \"never\" when fewer than "
        "half reached it. Milliseconds to target = the shared start (initialisation and "
        "its E-step, timed warm) + iterations x the loop's warm time per iteration; "
        "E-steps count every likelihood-and-statistics evaluation. \"Own best\": the "
        "same against each comparison's own target (the best final value of its methods, "
        "all from one start, minus the same gap): the speed of the climb where runs end "
        "on different local maxima. \"capped\": runs "
        "stopped by the budget, not the stopping rule; \"EM rate\": the median over "
        "seeds of EM's rate at its optimum (the spectral radius of the EM map's Jacobian, "
        "`mogjax.theory`; where the parameters were too many, the rate measured from "
        "EM's curve), near 1 where EM is slow"
        + (f" ({stop_rule})" if stop_rule else "") + ". The headline metrics "
        "(`median_ms_to_target/<method>`...) have the setting's # as their step.\n\n"
        "Iterations to each target and milliseconds to each comparison's own best are in "
        "`study_summary.csv` / `.json` (per run too). Artifacts: `study_settings.png` "
        "(cost to target against the swept setting), `study_curves.png` (gap to each "
        "setting's best value).")


def log_study(config, parent_id: str, sweep_id: str, description: str) -> dict | None:
    """Summarise the study under ``parent_id`` into its artifacts and description;
    returns the summary (None when the sweep holds no comparison)."""
    from experiments import study_plots
    from experiments.configs import stop_rule

    uri = tracking_uri(config)
    client = MlflowClient(uri)
    exp_id = client.get_run(parent_id).info.experiment_id
    settings, swept = collect(client, exp_id, sweep_id, parent_id)
    if not settings:
        return None
    summary = {"sweep_id": sweep_id, "parent_run_id": parent_id,
               "target_gap": config.target_gap, "swept": swept,
               "settings": summarize(settings, config.target_gap)}
    parent = tracking.attach(parent_id, uri)
    parent.log_steps(headline_metrics(summary))
    parent.log_dict(summary, "study_summary.json")
    parent.log_text(to_csv(summary), "study_summary.csv")
    rule = stop_rule(config.stop)
    title = f"Study {sweep_id}: {study_plots.what_was_fitted(config)}"
    parent.log_figure(study_plots.plot_settings(summary, title=title), "study_settings.png")
    parent.log_figure(study_plots.plot_curves(summary, settings, title=title,
                                              subtitle=f"Stopping rule: {rule}"),
                      "study_curves.png")
    parent.set_tags({"mlflow.note.content": f"{describe(summary, rule)}\n\n{description}"})
    return summary
