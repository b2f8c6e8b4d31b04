"""EM against gradient ascent from one shared start, on the same data: one comparison.

One parent MLflow run with a child run per method. The parent carries every method's
curve as a metric of its own (``log_likelihood/em``, ``log_likelihood/adam``, ...,
``step`` = iteration; ``log_likelihood_by_ms/<method>`` with ``step`` = elapsed
milliseconds), and an overlay plot against iterations and seconds (``curves.png``).

The run page's "Model metrics" tab draws one chart per metric and can't be set up from
here (see ``experiments/ui_layout.py``). So the script prints the address of the UI's
metric page with all curves in one chart, and the parent run's description (Overview
tab) links to it.

    python experiments/compare.py                            # EM vs Adam on Old Faithful
    python experiments/compare.py experiment=em_vs_gradient  # EM vs Adam vs L-BFGS
    python experiments/compare.py 'compare=[em,adam,sgd]' optimizer.learning_rate=0.02
"""

import hydra
import numpy as np
from omegaconf import DictConfig

import mogjax as mg

from experiments import common, configs, provenance, tracking, ui_layout

configs.register()


def run(cfg: DictConfig) -> dict:
    """Fit every method in ``cfg.compare`` from the same start; log and return a summary."""
    configs.validate(cfg)
    if cfg.tracking.enabled:
        tracking.check_reachable(tracking.tracking_uri(cfg))
    x, data_name = common.load_data(cfg.data)
    fits = {}
    if not cfg.tracking.enabled:
        for method in cfg.compare:
            result, timing = common.fit_mixture(cfg, x, method)
            fits[method] = common.mixture_summary(result, x, timing)
        return {"methods": fits}
    base_tags = {"data": data_name, "data_hash": provenance.data_hash(x), "seed": str(cfg.seed)}
    name = cfg.tracking.run_name or f"compare-{data_name}-k{cfg.model.k}-seed{cfg.seed}"
    curves, seconds = {}, {}
    with tracking.start_run(cfg, name, {**base_tags, "algorithm": "compare"}) as parent:
        tracking.log_config(cfg)
        parent_id = parent.info.run_id
        for method in cfg.compare:
            algorithm = "em" if method == "em" else "gradient"
            tags = {**base_tags, "algorithm": algorithm, "method": method}
            with tracking.start_run(cfg, method, tags, parent_run_id=parent_id) as child:
                try:
                    result, timing = common.fit_mixture(cfg, x, method)
                except mg.DegenerateCovarianceError as err:
                    common.log_degenerate_fit(err)
                    raise
                summary = common.mixture_summary(result, x, timing)
                common.log_mixture_fit(cfg, result, x, summary)
                summary["run_id"] = child.info.run_id
            curve = np.asarray(result.curve[: int(result.n_iter) + 1])
            curves[method], seconds[method] = curve, summary["seconds_per_iteration"]
            tracking.log_curve(f"log_likelihood/{method}", curve, parent_id)
            tracking.log_curve(f"log_likelihood_by_ms/{method}", curve, parent_id,
                               step_scale=1000 * summary["seconds_per_iteration"])
            tracking.log_scalars({f"final_log_likelihood/{method}": summary["final_log_likelihood"],
                                  f"seconds_per_iteration/{method}": summary["seconds_per_iteration"]},
                                 parent_id)
            fits[method] = summary
        from mogjax.plotting import plot_curves

        fig = plot_curves(curves, seconds=seconds, title=f"{data_name}: EM and gradient ascent")
        tracking.log_figure(fig, "curves.png")
        exp_id = parent.info.experiment_id
        charts = overlay_charts(parent_id, exp_id, list(cfg.compare))
        tracking.set_tags({"mlflow.note.content": ui_layout.run_description(
            f"{' vs '.join(cfg.compare)} from one start on {data_name}.", charts)}, parent_id)
    return {"methods": fits, "run_id": parent_id, "experiment_id": exp_id,
            "tracking_uri": tracking.tracking_uri(cfg), "charts": charts}


def overlay_charts(run_id: str, experiment_id: str, methods: list[str]) -> dict[str, str]:
    """``{label: address from "#"}`` of the metric page drawing every method's curve
    of the parent run in one chart: against iterations, and against elapsed ms."""
    return {
        "Log-likelihood per iteration, all methods in one chart": ui_layout.overlay_fragment(
            [run_id], experiment_id, [f"log_likelihood/{m}" for m in methods]),
        "Log-likelihood per elapsed millisecond, all methods in one chart":
            ui_layout.overlay_fragment(
                [run_id], experiment_id, [f"log_likelihood_by_ms/{m}" for m in methods]),
    }


def print_how_to_look(summary: dict) -> None:
    uri = summary["tracking_uri"]
    print("\nmethod     final mean log-likelihood  iterations  s/iteration")
    for method, s in summary["methods"].items():
        print(f"{method:10s} {s['final_log_likelihood']:25.6f}  {s['n_iter']:10d}  "
              f"{s['seconds_per_iteration']:.2e}")
    print(f"\nMLflow run: {summary['run_id']}  (store: {uri})")
    if uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri:
        print(f"Open the UI:  .venv/bin/mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000")
        base = "http://127.0.0.1:5000"
    else:
        base = uri.rstrip("/")
    (by_iteration, by_ms) = summary["charts"].values()
    print(f"All curves in one chart:  {base}/{by_iteration}")
    print(f"  against elapsed ms:     {base}/{by_ms}")
    print(f"Run page (one chart per metric; its description links to the above):\n"
          f"  {base}/#/experiments/{summary['experiment_id']}/runs/"
          f"{summary['run_id']}/model-metrics?workflowType=machine_learning")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@common.one_line_errors
def main(cfg: DictConfig) -> float:
    summary = run(cfg)
    if "run_id" in summary:
        print_how_to_look(summary)
    return summary["methods"][cfg.compare[0]]["final_log_likelihood"]


if __name__ == "__main__":
    main()
