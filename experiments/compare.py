"""EM against gradient ascent from one shared start, on the same data: one comparison.

Every method in ``compare`` starts from the same initial parameters, stops by the one
rule of ``stop`` (``configs.stop_rule``) and is timed warm (``experiments.timing``).
One parent MLflow run with a child run per method; each child carries its own
settings (method, optimiser, learning rate, budget, ``tol``, stopping rule, the data
set's own settings), curve, parameters and plots. The parent carries, per method:

- the curve against iterations (``log_likelihood/<method>``, ``step`` = iteration or
  step) and against warm microseconds (``log_likelihood_by_us/<method>``);
- ``seconds_per_iteration``, ``compile_seconds``, ``fit_seconds`` (warm),
  ``final_log_likelihood``, ``n_iter``; time to target and parameter gaps after
  aligning components to EM's (``experiments.comparison``), in ``alignment.json``;
- ``curves.png``: the curves against iterations and against warm milliseconds.

The run page's "Model metrics" tab draws one chart per metric and can't be set up from
here (see ``experiments/ui_layout.py``). So the script prints the address of the UI's
metric page with all curves in one chart, and the parent run's description (Overview
tab) links to it and says how the methods stopped and were timed.

    python experiments/compare.py                            # EM vs Adam on Old Faithful
    python experiments/compare.py experiment=em_vs_gradient  # EM vs Adam vs L-BFGS
    python experiments/compare.py 'compare=[em,adam,sgd]' optimizer.learning_rate=0.02
    python experiments/compare.py -m seed=0,1,2,3,4 data=faithful,iris   # a study
"""

import hydra
import numpy as np
from omegaconf import DictConfig

import mogjax as mg

from experiments import common, comparison, configs, provenance, tracking, ui_layout

configs.register()


def fit_all(cfg, x) -> dict:
    """``{method: (result, summary)}`` for every method, no tracking."""
    fits = {}
    for method in cfg.compare:
        result, timing = common.fit_mixture(cfg, x, method)
        fits[method] = result, common.mixture_summary(result, x, timing)
    return fits


def measure(cfg, fits: dict) -> dict:
    """Time to target and aligned parameter gaps of ``fits`` (``experiments.comparison``)."""
    curves = {m: np.asarray(r.curve[: int(r.n_iter) + 1]) for m, (r, _) in fits.items()}
    spi = {m: s["seconds_per_iteration"] for m, (_, s) in fits.items()}
    to_target, target = comparison.time_to_target(curves, spi, cfg.target_gap)
    aligned = comparison.alignment({m: r.params for m, (r, _) in fits.items()})
    return {"curves": curves, "seconds_per_iteration": spi, "to_target": to_target,
            "target": target, "alignment": aligned,
            "metrics": comparison.per_method_metrics({m: s for m, (_, s) in fits.items()},
                                                     to_target, aligned)}


def run(cfg: DictConfig) -> dict:
    """Fit every method in ``cfg.compare`` from the same start; log and return a summary."""
    configs.validate_compare(cfg)
    if cfg.tracking.enabled:
        tracking.check_reachable(tracking.tracking_uri(cfg))
    x, data_name = common.load_data(cfg.data)
    if not cfg.tracking.enabled:
        fits = fit_all(cfg, x)
        return {"methods": {m: s for m, (_, s) in fits.items()}, "comparison": measure(cfg, fits)}
    base_tags = {"data": data_name, "data_hash": provenance.data_hash(x), "seed": str(cfg.seed)}
    name = cfg.tracking.run_name or f"compare-{data_name}-k{cfg.model.k}-seed{cfg.seed}"
    with tracking.start_run(cfg, name, {**base_tags, "algorithm": "compare"}) as parent:
        tracking.log_config(cfg, configs.run_params(cfg, "compare"))
        parent_id = parent.info.run_id
        fits = {m: fit_child(cfg, x, data_name, m, base_tags, parent_id) for m in cfg.compare}
        result = measure(cfg, fits)
        charts = log_comparison(cfg, data_name, fits, result, parent.info)
    summaries = {m: s for m, (_, s) in fits.items()}
    return {"methods": summaries, "comparison": result, "run_id": parent_id,
            "experiment_id": parent.info.experiment_id,
            "tracking_uri": tracking.tracking_uri(cfg), "charts": charts}


def fit_child(cfg, x, data_name: str, method: str, base_tags: dict, parent_id: str):
    """One method in a child run of its own, with its own config; ``(result, summary)``."""
    method_cfg = configs.method_config(cfg, method)
    algorithm = configs.kind_of(cfg, method)
    tags = {**base_tags, "algorithm": algorithm, "method": method}
    with tracking.start_run(cfg, method, tags, parent_run_id=parent_id) as child:
        tracking.log_config(method_cfg, configs.run_params(method_cfg, method))
        try:
            result, timing = common.fit_mixture(method_cfg, x, method)
        except mg.DegenerateCovarianceError as err:
            common.log_degenerate_fit(err)
            raise
        summary = common.mixture_summary(result, x, timing)
        common.log_mixture_fit(method_cfg, result, x, summary, method, data_name)
        summary["run_id"] = child.info.run_id
    return result, summary


def log_comparison(cfg, data_name: str, fits: dict, result: dict, info) -> dict:
    """Curves, per-method metrics, ``alignment.json``, ``curves.png`` and the
    description on the parent run; returns the chart addresses."""
    parent_id = info.run_id
    for method, curve in result["curves"].items():
        tracking.log_curve(f"log_likelihood/{method}", curve, parent_id)
        tracking.log_curve(f"log_likelihood_by_us/{method}", curve, parent_id,
                           step_scale=1e6 * result["seconds_per_iteration"][method])
    best = max(s["final_log_likelihood"] for _, s in fits.values())
    tracking.log_scalars({**result["metrics"], "target_log_likelihood": result["target"],
                          "best_final_log_likelihood": best}, parent_id)
    tracking.log_dict(result["alignment"], "alignment.json", parent_id)
    if cfg.tracking.log_plots:
        from mogjax.plotting import plot_curves

        methods = " vs ".join(cfg.compare)
        fig = plot_curves(result["curves"], seconds=result["seconds_per_iteration"],
                          units={m: common.unit(m) for m in cfg.compare},
                          title=f"{methods} on {data_name}, k={cfg.model.k}, one shared start",
                          subtitle=f"Stopping rule: {configs.stop_rule(cfg.stop)}",
                          target=result["target"])
        tracking.log_figure(fig, "curves.png", parent_id)
    charts = overlay_charts(parent_id, info.experiment_id, list(cfg.compare))
    tracking.set_tags({"mlflow.note.content": describe(cfg, data_name, fits, result, charts)},
                      parent_id)
    return charts


def describe(cfg, data_name: str, fits: dict, result: dict, charts: dict) -> str:
    """The parent run's description: what ran, how it stopped and was timed, a table."""
    methods = list(cfg.compare)
    head = (
        f"**{' vs '.join(methods)}** from one shared start on {data_name} (k={cfg.model.k}, "
        f"{common.model_kwargs(cfg)['covariance_type']} covariances, seed {cfg.seed}).\n\n"
        f"- Stopping rule: {configs.stop_rule(cfg.stop)}.\n"
        "- Time: each method is compiled first (`compile_seconds/<method>`, not counted), "
        "then timed on a warm call of the same compiled program (`fit_seconds/<method>`); "
        "iteration t is drawn at t x warm total / iterations (`seconds_per_iteration`), "
        "so initialisation and dispatch are spread over the iterations.\n"
        f"- Target: within {cfg.target_gap:g} nats per sample of the best final value "
        f"({result['target'] + cfg.target_gap:.6f}).\n"
        f"- Components aligned to {result['alignment']['reference']}'s (Hungarian "
        "assignment, Bhattacharyya distance): `alignment.json`.\n\n"
        "| method | final | iterations/steps | ms per iteration | ms to target | "
        "max mean gap |\n|---|---|---|---|---|---|\n")
    rows = []
    for m in methods:
        s, t = fits[m][1], result["to_target"][m]
        to_target = f"{1e3 * t['seconds_to_target']:.3g}" if t["reached_target"] else "not reached"
        gap = result["alignment"]["methods"][m]["max_mean_gap"]
        rows.append(f"| {m} | {s['final_log_likelihood']:.6f} | {s['n_iter']} "
                    f"{common.unit(m)}s | {1e3 * s['seconds_per_iteration']:.3g} | {to_target} "
                    f"| {gap:.3g} |")
    return ui_layout.run_description(head + "\n".join(rows) + "\n", charts)


def overlay_charts(run_id: str, experiment_id: str, methods: list[str]) -> dict[str, str]:
    """``{label: address from "#"}`` of the metric page drawing every method's curve
    of the parent run in one chart: against iterations, and against warm microseconds."""
    return {
        "Log-likelihood per iteration or step, all methods in one chart":
            ui_layout.overlay_fragment(
                [run_id], experiment_id, [f"log_likelihood/{m}" for m in methods]),
        "Log-likelihood against warm microseconds, all methods in one chart":
            ui_layout.overlay_fragment(
                [run_id], experiment_id, [f"log_likelihood_by_us/{m}" for m in methods]),
    }


def print_how_to_look(summary: dict, links: bool = True) -> None:
    """The table of methods; with ``links``, the run, the UI command and addresses."""
    comp = summary["comparison"]
    print(f"\n{'method':8s} {'final mean log-lik':>18s}  {'iterations/steps':16s} "
          f"{'s/iter (warm)':>13s} {'compile s':>9s}  to target")
    for method, s in summary["methods"].items():
        t = comp["to_target"][method]
        to_target = (f"{t['iterations_to_target']} in {1e3 * t['seconds_to_target']:.3g} ms"
                     if t["reached_target"] else "not reached")
        count = f"{s['n_iter']} {common.unit(method)}s"
        print(f"{method:8s} {s['final_log_likelihood']:18.6f}  {count:16s} "
              f"{s['seconds_per_iteration']:13.2e} {s['compile_seconds']:9.2f}  {to_target}")
    print(f"(target: {comp['target']:.6f}; the methods are aligned to "
          f"{comp['alignment']['reference']} in alignment.json)")
    if not links:
        return
    base = ui_layout.print_ui_command(summary["tracking_uri"], summary["run_id"])
    by_iteration, by_time = summary["charts"].values()
    print(f"All curves in one chart:  {base}/{by_iteration}")
    print(f"  against warm microseconds: {base}/{by_time}")
    print(f"Run page (one chart per metric; its description links to the above):\n"
          f"  {ui_layout.run_page(base, summary['experiment_id'], summary['run_id'])}")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@common.one_line_errors
def main(cfg: DictConfig) -> float:
    summary = run(cfg)
    if "run_id" in summary:  # a sweep prints its own addresses at the end
        print_how_to_look(summary, links=not common.in_multirun())
    return summary["methods"][cfg.compare[0]]["final_log_likelihood"]


if __name__ == "__main__":
    main()
