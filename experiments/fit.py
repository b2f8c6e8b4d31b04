"""One data set, one algorithm, one MLflow run.

    python experiments/fit.py                                   # EM on Old Faithful
    python experiments/fit.py algorithm=gradient optimizer=lbfgs
    python experiments/fit.py -m data=faithful model.k=1,2,3,4,5 seed=0,1,2
"""

import hydra
from omegaconf import DictConfig

import mogjax as mg

from experiments import common, configs, tracking

configs.register()


def method_of(cfg) -> str:
    """"em", "meanshift" or the optimiser's name."""
    return {"em": "em", "meanshift": "meanshift"}.get(cfg.algorithm.name, cfg.optimizer.name)


def compute(cfg, x) -> tuple:
    """Fit the configured algorithm on ``x``: ``(result, summary)``; no tracking."""
    if cfg.algorithm.name == "meanshift":
        return common.fit_mean_shift(cfg, x)
    result, timing = common.fit_mixture(cfg, x, method_of(cfg))
    return result, common.mixture_summary(result, x, timing)


def run(cfg: DictConfig) -> dict[str, float]:
    """Load data, fit, log; returns the summary metrics (tests call this directly).

    Everything that can be checked is checked before any compute: the config, the
    tracking store (reachable) and the data file.
    """
    configs.validate(cfg)
    if cfg.tracking.enabled:
        tracking.check_reachable(tracking.tracking_uri(cfg))
    x, data_name = common.load_data(cfg.data)
    if not cfg.tracking.enabled:
        return compute(cfg, x)[1]
    algorithm, method = cfg.algorithm.name, method_of(cfg)
    tags = {"data": data_name, "data_hash": tracking.data_hash(x), "algorithm": algorithm,
            "method": method, "seed": str(cfg.seed)}
    name = cfg.tracking.run_name or f"{algorithm}-{data_name}-k{cfg.model.k}-seed{cfg.seed}"
    with tracking.start_run(cfg, name, tags) as run:
        tracking.log_config(cfg)
        try:
            result, summary = compute(cfg, x)
        except mg.DegenerateCovarianceError as err:
            common.log_degenerate_fit(err)
            raise
        if algorithm == "meanshift":
            common.log_mean_shift_fit(cfg, result, x, summary)
        else:
            common.log_mixture_fit(cfg, result, x, summary)
        summary["run_id"] = run.info.run_id
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@common.one_line_errors
def main(cfg: DictConfig) -> float:
    summary = run(cfg)
    if "final_log_likelihood" in summary:
        print(f"final mean log-likelihood {summary['final_log_likelihood']:.6f}", end="")
    else:
        print(f"{summary['n_clusters']} clusters (bandwidth {summary['bandwidth']:.4g})", end="")
    print(f" after {summary['n_iter']} iterations" +
          (f"; MLflow run {summary['run_id']}" if "run_id" in summary else ""))
    if warning := common.numerical_warnings(summary):
        print(f"warning: {warning}")
    return summary.get("final_log_likelihood", summary.get("n_clusters"))


if __name__ == "__main__":
    main()
