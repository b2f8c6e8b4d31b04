"""One data set, one algorithm, one MLflow run.

    python experiments/fit.py                                   # EM on Old Faithful
    python experiments/fit.py algorithm=gradient optimizer=lbfgs
    python experiments/fit.py -m data=faithful model.k=1,2,3,4,5 seed=0,1,2
    python experiments/fit.py n_seeds=32    # seeds 0..31 in one compiled EM, 32 runs
"""

import uuid

import hydra
import jax
from omegaconf import DictConfig, OmegaConf

import mogjax as mg

from experiments import common, configs, provenance, tracking

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


def run_name(cfg, data_name: str) -> str:
    """``<method>-<data>-k<k>-seed<seed>``; mean shift, which has no k, by bandwidth."""
    if cfg.tracking.run_name:
        return cfg.tracking.run_name
    if cfg.algorithm.name == "meanshift":
        return f"meanshift-{data_name}-bw{cfg.algorithm.bandwidth:.3g}"
    return f"{method_of(cfg)}-{data_name}-k{cfg.model.k}-seed{cfg.seed}"


def run(cfg: DictConfig) -> dict[str, float]:
    """Load data, fit, log; returns the summary metrics (tests call this directly).

    Everything that can be checked is checked before any compute: the config, the
    tracking store (reachable) and the data file. Mean shift's estimated bandwidth is
    resolved into the config first, so the run logs (and a re-run uses) its value.
    """
    configs.validate(cfg)
    if cfg.tracking.enabled:
        tracking.check_reachable(tracking.tracking_uri(cfg))
    x, data_name = common.load_data(cfg.data)
    if cfg.algorithm.name == "meanshift":
        cfg = OmegaConf.merge(cfg, {"algorithm": {"bandwidth": common.mean_shift_bandwidth(cfg, x)}})
    if cfg.n_seeds > 1:
        return run_seeds(cfg, x, data_name)
    if not cfg.tracking.enabled:
        return compute(cfg, x)[1]
    algorithm, method = cfg.algorithm.name, method_of(cfg)
    tags = {"data": data_name, "data_hash": provenance.data_hash(x), "algorithm": algorithm,
            "method": method, "seed": str(cfg.seed)}
    with tracking.start_run(cfg, run_name(cfg, data_name), tags) as run:
        tracking.log_config(cfg, configs.run_params(cfg, method))
        try:
            result, summary = compute(cfg, x)
        except mg.DegenerateCovarianceError as err:
            common.log_degenerate_fit(err)
            raise
        if algorithm == "meanshift":
            common.log_mean_shift_fit(cfg, result, x, summary, data_name)
        else:
            common.log_mixture_fit(cfg, result, x, summary, method, data_name)
        summary["run_id"] = run.info.run_id
    return summary


def run_seeds(cfg: DictConfig, x, data_name: str) -> dict:
    """Seeds ``seed .. seed + n_seeds - 1`` in one compiled EM program; each seed is
    its own MLflow run (config with its ``seed``), all children of one parent run
    tagged with one ``sweep_id``. A seed that met a singular covariance is a FAILED
    run, and the job raises after logging every seed."""
    seeds = list(range(cfg.seed, cfg.seed + cfg.n_seeds))
    result, timing = common.fit_mixture_seeds(cfg, x, seeds)
    # One program fits every seed: each seed's run gets its share of the warm time.
    share = {"fit_seconds": timing["fit_seconds"] / len(seeds),
             "compile_seconds": timing["compile_seconds"] / len(seeds)}
    fits = [jax.tree.map(lambda a, i=i: a[i], result) for i in range(len(seeds))]
    summaries = [common.mixture_summary(f, x, share) for f in fits]
    failed = [s for s, f in zip(seeds, fits) if bool(f.degenerate)]
    out = {"seeds": seeds, "fits": summaries, "batch_fit_seconds": timing["fit_seconds"],
           "batch_compile_seconds": timing["compile_seconds"], "failed_seeds": failed}
    if cfg.tracking.enabled:
        out["run_id"] = log_seeds(cfg, x, data_name, seeds, fits, summaries, timing)
    if failed:
        raise ValueError(f"{len(failed)} of {len(seeds)} seeds met a singular covariance "
                         f"(seeds {failed}); their runs are marked FAILED")
    return out


def log_seeds(cfg, x, data_name, seeds, fits, summaries, timing) -> str:
    sweep_id = uuid.uuid4().hex[:12]
    tags = {"data": data_name, "data_hash": provenance.data_hash(x), "algorithm": "em",
            "method": "em", "sweep_id": sweep_id, "batched": "true"}
    name = cfg.tracking.run_name or f"seeds-{data_name}-k{cfg.model.k}-{seeds[0]}..{seeds[-1]}"
    with tracking.start_run(cfg, name, {**tags, "sweep_parent": "true"}) as parent:
        tracking.log_config(cfg, configs.run_params(cfg, "em"))
        tracking.log_scalars({"batch_fit_seconds": timing["fit_seconds"],
                              "batch_compile_seconds": timing["compile_seconds"],
                              "n_seeds": len(seeds)})
        for seed, fit, summary in zip(seeds, fits, summaries):
            seed_cfg = OmegaConf.merge(cfg, {"seed": seed, "n_seeds": 1})
            run_name = f"em-{data_name}-k{cfg.model.k}-seed{seed}"
            try:
                with tracking.start_run(seed_cfg, run_name, {**tags, "seed": str(seed)},
                                        parent_run_id=parent.info.run_id):
                    tracking.log_config(seed_cfg, configs.run_params(seed_cfg, "em"))
                    if bool(fit.degenerate):
                        err = mg.DegenerateCovarianceError(mg.results.FAILURE_ADVICE.format(extra=""), fit)
                        common.log_degenerate_fit(err)
                        raise err
                    common.log_mixture_fit(seed_cfg, fit, x, summary, "em", data_name)
            except mg.DegenerateCovarianceError:
                pass  # recorded as a FAILED run; run_seeds raises once all are logged
        finals = [s["final_log_likelihood"] for s in summaries]  # step: seed - first seed
        tracking.log_curve("final_log_likelihood_by_seed", finals)
        tracking.log_scalars({"best_final_log_likelihood": max(finals)})
        return parent.info.run_id


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@common.one_line_errors
def main(cfg: DictConfig) -> float:
    summary = run(cfg)
    if "seeds" in summary:
        best = max(summary["fits"], key=lambda f: f["final_log_likelihood"])
        print(f"{len(summary['seeds'])} seeds in {summary['batch_fit_seconds']:.3f} s "
              f"(+{summary['batch_compile_seconds']:.1f} s compile); best final mean "
              f"log-likelihood {best['final_log_likelihood']:.6f}"
              + (f"; MLflow parent run {summary['run_id']}" if "run_id" in summary else ""))
        return best["final_log_likelihood"]
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
