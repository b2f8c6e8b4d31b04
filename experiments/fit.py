"""One data set, one algorithm, one MLflow run.

    python experiments/fit.py                                   # EM on Old Faithful
    python experiments/fit.py algorithm=gradient optimizer=lbfgs
    python experiments/fit.py -m data=faithful model.k=1,2,3,4,5 seed=0,1,2
"""

import hydra
from omegaconf import DictConfig

from experiments import common, configs, tracking

configs.register()


def run(cfg: DictConfig) -> dict[str, float]:
    """Load data, fit, log; returns the summary metrics (tests call this directly)."""
    configs.validate(cfg)
    x, data_name = common.load_data(cfg.data)
    algorithm = cfg.algorithm.name
    method = {"em": "em", "meanshift": "meanshift"}.get(algorithm, cfg.optimizer.name)
    if not cfg.tracking.enabled:
        if algorithm == "meanshift":
            return common.fit_mean_shift(cfg, x)[1]
        result, timing = common.fit_mixture(cfg, x, method)
        return common.mixture_summary(result, x, timing)
    tags = {"data": data_name, "data_hash": tracking.data_hash(x), "algorithm": algorithm,
            "method": method, "seed": str(cfg.seed)}
    name = cfg.tracking.run_name or f"{algorithm}-{data_name}-k{cfg.model.k}-seed{cfg.seed}"
    with tracking.start_run(cfg, name, tags) as run:
        tracking.log_config(cfg)
        if algorithm == "meanshift":
            result, summary = common.fit_mean_shift(cfg, x)
            common.log_mean_shift_fit(result, x, summary)
        else:
            result, timing = common.fit_mixture(cfg, x, method)
            summary = common.mixture_summary(result, x, timing)
            common.log_mixture_fit(cfg, result, x, summary)
        summary["run_id"] = run.info.run_id
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    summary = run(cfg)
    if "final_log_likelihood" in summary:
        print(f"final mean log-likelihood {summary['final_log_likelihood']:.6f}", end="")
    else:
        print(f"{summary['n_clusters']} clusters (bandwidth {summary['bandwidth']:.4g})", end="")
    print(f" after {summary['n_iter']} iterations" +
          (f"; MLflow run {summary['run_id']}" if "run_id" in summary else ""))
    return summary.get("final_log_likelihood", summary.get("n_clusters"))


if __name__ == "__main__":
    main()
