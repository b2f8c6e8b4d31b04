"""EM against gradient ascent from one shared start, on the same data: one comparison.

Every method in ``compare`` starts from the same initial parameters, stops by the one
rule of ``stop`` (``configs.stop_rule``) and is timed warm (``experiments.timing``).
One parent MLflow run with a child run per method; each child carries its own
settings (method, optimiser, learning rate, budget, ``tol``, stopping rule, the data
set's own settings), curve, parameters and plots. The parent carries, per method:

- the curve against iterations (``log_likelihood/<method>``, ``step`` = iteration or
  step), against warm microseconds (``log_likelihood_by_us/<method>``: point t at the
  shared start plus t x the loop's time per iteration) and against E-steps
  (``log_likelihood_by_esteps/<method>``);
- ``ms_per_iteration``, ``compile_ms``, ``fit_ms`` (warm), ``final_log_likelihood``,
  ``n_iter``, ``n_esteps``, ``capped``; ``init_ms`` (the start, once); time to target
  (iterations, ms, E-steps) and parameter gaps after aligning components to EM's
  (``experiments.comparison``), in ``alignment.json``;
- ``curves.png``: the curves against iterations and against warm milliseconds.

Methods are ``em``, its accelerations (``squarem``, ``daarem``, ``overrelaxed``,
``ecg``: ``mogjax.accelerated``) and any optax optimiser's name.

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

from experiments import common, comparison, configs, store, tracking, ui_layout
from experiments.summary import ComparisonSummary, unit


def fit_all(cfg, data: common.Data, init_seconds: float) -> dict:
    """``{method: (result, summary)}`` for every method, no tracking."""
    return {method: common.fit_mixture(cfg, data.x, method, data.weights, init_seconds)
            for method in cfg.compare}


def measure(cfg, fits: dict, init_seconds: float) -> dict:
    """Time to target and aligned parameter gaps of ``fits`` (``experiments.comparison``)."""
    curves = {m: np.asarray(r.curve[: int(r.n_iter) + 1]) for m, (r, _) in fits.items()}
    spi = {m: s.seconds_per_iteration for m, (_, s) in fits.items()}
    per = {m: comparison.esteps_per_iteration(s.n_esteps, s.n_iter) for m, (_, s) in fits.items()}
    esteps = {m: common.esteps_of(r) for m, (r, _) in fits.items()}
    to_target, target = comparison.time_to_target(curves, spi, cfg.target_gap, init_seconds,
                                                  per, esteps)
    aligned = comparison.alignment({m: r.params for m, (r, _) in fits.items()})
    return {"curves": curves, "seconds_per_iteration": spi, "init_seconds": init_seconds,
            "esteps_per_iteration": per, "esteps": esteps,
            "to_target": to_target, "target": target, "alignment": aligned,
            "metrics": comparison.per_method_metrics(
                {m: s.metrics() for m, (_, s) in fits.items()}, to_target, aligned)}


def run(cfg: DictConfig) -> ComparisonSummary:
    """Fit every method in ``cfg.compare`` from the same start; log and return a summary."""
    configs.validate_compare(cfg)
    if cfg.tracking.enabled:
        store.check(store.tracking_uri(cfg))
    with common.precision(cfg):
        return _run(cfg)


def run_name(cfg, data_name: str) -> str:
    """``<data> k<k> seed<s>: em vs adam``: what tells comparisons apart first."""
    return cfg.tracking.run_name or (f"{data_name} k{cfg.model.k} seed{cfg.seed}: "
                                     f"{' vs '.join(cfg.compare)}")


def _run(cfg: DictConfig) -> ComparisonSummary:
    data = common.load_data(cfg)
    data_name = data.name
    configs.validate_data(cfg, data.x)
    init_seconds = common.time_start(cfg, data.x, data.weights)
    if not cfg.tracking.enabled:
        fits = fit_all(cfg, data, init_seconds)
        return ComparisonSummary({m: s for m, (_, s) in fits.items()},
                                 measure(cfg, fits, init_seconds))
    base_tags = {"data": data_name, "data_hash": data.hash(), "seed": str(cfg.seed),
                 **common.job_tags()}
    with tracking.start_run(cfg, run_name(cfg, data_name),
                            {**base_tags, "algorithm": "compare"}) as parent:
        parent.log_config(cfg, configs.run_params(cfg, "compare"))
        parent.log_scalars({**data.metrics(), "init_ms": 1e3 * init_seconds})
        fits = {m: fit_child(cfg, data, m, base_tags, parent, init_seconds)
                for m in cfg.compare}
        result = measure(cfg, fits, init_seconds)
        if "em" in fits:  # EM's theory at its optimum: what its speed is read against
            result["theory"] = common.em_theory(cfg, fits["em"][0], data.x, data.weights)
            parent.log_scalars(result["theory"])
        charts = log_comparison(cfg, data_name, fits, result, parent)
    return ComparisonSummary({m: s for m, (_, s) in fits.items()}, result, parent.run_id,
                             parent.experiment_id, parent.uri, charts,
                             run_name(cfg, data_name))


def fit_child(cfg, data: common.Data, method: str, base_tags: dict, parent,
              init_seconds: float):
    """One method in a child run of its own, with its own config; ``(result, summary)``."""
    method_cfg = configs.method_config(cfg, method)
    tags = {**base_tags, "algorithm": configs.kind_of(cfg, method), "method": method,
            "mlflow.note.content": describe_method(cfg, method, data.name)}
    name = f"{method} {data.name} k{cfg.model.k} seed{cfg.seed}"
    with tracking.start_run(cfg, name, tags, parent=parent) as child:
        child.log_config(method_cfg, configs.run_params(method_cfg, method))
        with common.degenerate_logged(child):
            result, summary = common.fit_mixture(method_cfg, data.x, method, data.weights,
                                                 init_seconds)
        common.log_mixture_fit(child, method_cfg, result, data.x, summary, data.name)
        summary.run_id = child.run_id
    return result, summary


def describe_method(cfg, method: str, data_name: str) -> str:
    """A method child's description: what it is and where its comparison is."""
    what = {"em": "EM (expectation-maximisation)",
            "squarem": "SQUAREM-accelerated EM (Varadhan & Roland 2008)",
            "daarem": "DAAREM, damped Anderson-accelerated EM (Henderson & Varadhan 2019)",
            "overrelaxed": "adaptive over-relaxed EM (Salakhutdinov & Roweis 2003)",
            "ecg": "expectation-conjugate-gradient (Salakhutdinov, Roweis & Ghahramani "
                   "2003)"}.get(method, f"gradient ascent with optax's {method}")
    return (f"{what} on {data_name} (k={cfg.model.k}, seed {cfg.seed}), one of the methods "
            f"of the comparison in the parent run ({', '.join(cfg.compare)}), from the "
            f"same start. Stopping rule: {configs.stop_rule(cfg.stop)}.")


def log_comparison(cfg, data_name: str, fits: dict, result: dict, parent) -> dict:
    """Curves, per-method metrics, ``alignment.json``, ``curves.png`` and the
    description on the parent run; returns the chart addresses."""
    start_us = 1e6 * result["init_seconds"]
    for method, curve in result["curves"].items():
        parent.log_curve(f"log_likelihood/{method}", curve)
        parent.log_curve(f"log_likelihood_by_us/{method}", curve,
                         step_scale=1e6 * result["seconds_per_iteration"][method],
                         step_offset=start_us)
        counts = result["esteps"][method]
        if counts is not None:  # the fit's own count at every point
            parent.log_steps([(f"log_likelihood_by_esteps/{method}", v, s)
                              for v, s in zip(curve, counts) if np.isfinite(v)])
        else:
            parent.log_curve(f"log_likelihood_by_esteps/{method}", curve,
                             step_scale=result["esteps_per_iteration"][method], step_offset=1)
    best = max(s.final_log_likelihood for _, s in fits.values())
    parent.log_scalars({**result["metrics"], "target_log_likelihood": result["target"],
                        "best_final_log_likelihood": best})
    parent.log_dict(result["alignment"], "alignment.json")
    if cfg.tracking.log_plots:
        from mogjax.plotting import plot_curves

        methods = " vs ".join(cfg.compare)
        cov = common.model_kwargs(cfg)["covariance_type"]
        fig = plot_curves(result["curves"], seconds=result["seconds_per_iteration"],
                          start_seconds=result["init_seconds"],
                          units={m: unit(m) for m in cfg.compare},
                          title=f"{methods} on {data_name}, k={cfg.model.k}, {cov} "
                                "covariances, one shared start",
                          subtitle=f"Stopping rule: {configs.stop_rule(cfg.stop)}",
                          target=result["target"])
        parent.log_figure(fig, "curves.png")
    charts = overlay_charts(parent.run_id, parent.experiment_id, list(cfg.compare))
    parent.set_tags({"mlflow.note.content": describe(cfg, data_name, fits, result, charts)})
    return charts


def describe(cfg, data_name: str, fits: dict, result: dict, charts: dict) -> str:
    """The parent run's description: the table first, then what ran, how it stopped
    and how it was timed."""
    methods = list(cfg.compare)
    rows = ["| method | final | iterations/steps | E-steps | ms per iteration | "
            "ms to target | max mean gap |", "|---|---|---|---|---|---|---|"]
    for m in methods:
        s, t = fits[m][1], result["to_target"][m]
        to_target = f"{t['ms_to_target']:.3g}" if t["reached_target"] else "not reached"
        gap = result["alignment"]["methods"][m]["max_mean_gap"]
        capped = " (budget)" if s.capped else ""
        rows.append(f"| {m} | {s.final_log_likelihood:.6f} | {s.n_iter}{capped} "
                    f"| {'-' if s.n_esteps is None else s.n_esteps} "
                    f"| {1e3 * s.seconds_per_iteration:.3g} | {to_target} | {gap:.3g} |")
    head = (
        f"**{' vs '.join(methods)}** from one shared start on {data_name} (k={cfg.model.k}, "
        f"{common.model_kwargs(cfg)['covariance_type']} covariances, seed {cfg.seed}, "
        f"{configs.precision_of(cfg)}).\n\n" + "\n".join(rows) + "\n\n"
        f"- Target: within {cfg.target_gap:g} nats per sample of the best final value of "
        f"any method ({result['target']:.6f}); a method reaches it at the first "
        "iteration or step whose value is at or above it.\n"
        f"- Stopping rule: {configs.stop_rule(cfg.stop)}; \"(budget)\" marks a method "
        "stopped by the budget, not the rule.\n"
        "- Time: each method is compiled first (`compile_ms/<method>`, not counted; 0 when "
        "this process had compiled the same program for an earlier job, small when the "
        "persistent compilation cache held it), "
        "then timed on a warm call of the same compiled program (`fit_ms/<method>`). "
        f"The shared start (initialisation and its E-step) is timed apart, warm: "
        f"{1e3 * result['init_seconds']:.3g} ms (`init_ms`). ms per iteration is "
        "(warm total - start) / iterations; ms to target = start + iterations x "
        "ms per iteration, and curve point t sits there on the time axis.\n"
        f"- Components aligned to {result['alignment']['reference']}'s (Hungarian "
        "assignment, Bhattacharyya distance): `alignment.json`. Plot: `curves.png`.\n"
        + theory_line(result.get("theory", {})))
    return ui_layout.run_description(head, charts)


def theory_line(theory: dict) -> str:
    """The description's line on EM's theory at its optimum ("" when none)."""
    if "em_rate" not in theory and "em_rate_empirical" not in theory:
        return ""
    parts = [f"rate {theory['em_rate']:.4g} (spectral radius of the EM map's Jacobian)"
             if "em_rate" in theory else "",
             f"measured from the curve {theory['em_rate_empirical']:.4g}"
             if "em_rate_empirical" in theory else "",
             f"largest fraction of missing information {theory['missing_information_max']:.4g}"
             if "missing_information_max" in theory else ""]
    return ("- EM's theory at its optimum (`mogjax.theory`): "
            + "; ".join(p for p in parts if p) + ". Near 1, EM is slow here.\n")


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


def print_how_to_look(summary: ComparisonSummary, links: bool = True) -> None:
    """The table of methods; with ``links``, the run, the UI command and addresses."""
    print(summary.report())
    if not links or summary.run_id is None:
        return
    base = ui_layout.print_ui_command(summary.tracking_uri, summary.run_id)
    by_iteration, by_time = summary.charts.values()
    print(f"All curves in one chart:  {base}/{by_iteration}")
    print(f"  against warm microseconds: {base}/{by_time}")
    print(f"Run page (one chart per metric; its description links to the above):\n"
          f"  {ui_layout.run_page(base, summary.experiment_id, summary.run_id)}")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@common.one_line_errors
def main(cfg: DictConfig) -> float:
    summary = run(cfg)
    print_how_to_look(summary, links=not common.in_multirun())
    return summary.objective


if __name__ == "__main__":
    configs.register()
    main()
