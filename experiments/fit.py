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

from experiments import common, configs, store, tracking, variational
from experiments.summary import MeanShiftSummary, MixtureSummary, SeedsSummary, VariationalSummary


def method_of(cfg) -> str:
    """"em" (or its acceleration's name), "meanshift", "variational" or the optimiser's
    name."""
    name = cfg.algorithm.name
    if name == "em" and cfg.algorithm.get("acceleration") is not None:
        return configs.plain(cfg.algorithm.acceleration)
    return name if name in ("em", "meanshift", "variational") else cfg.optimizer.name


def compute(cfg, data: common.Data) -> tuple:
    """Fit the configured algorithm on the data: ``(result, summary)``; no tracking."""
    if cfg.algorithm.name == "meanshift":
        return common.fit_mean_shift(cfg, data.x, data.weights)
    if cfg.algorithm.name == "variational":
        return variational.fit(cfg, data.x)
    return common.fit_mixture(cfg, data.x, method_of(cfg), data.weights)


def run_name(cfg, data_name: str) -> str:
    """``<method> <data> k<k> seed<seed>``; mean shift, which has no k, by bandwidth."""
    if cfg.tracking.run_name:
        return cfg.tracking.run_name
    if cfg.algorithm.name == "meanshift":
        return f"meanshift {data_name} bw{cfg.algorithm.bandwidth:.3g}"
    return f"{method_of(cfg)} {data_name} k{cfg.model.k} seed{cfg.seed}"


def run(cfg: DictConfig) -> MixtureSummary | MeanShiftSummary | SeedsSummary | VariationalSummary:
    """Load data, fit, log; returns the run's summary (tests call this directly).

    Everything that can be checked is checked before any run is created or any
    compute: every config value, the tracking store and the data. Mean shift's
    estimated bandwidth is resolved into the config first, so the run logs (and a
    re-run uses) its value.
    """
    configs.validate(cfg)
    if cfg.tracking.enabled:
        store.check(store.tracking_uri(cfg))
    with common.precision(cfg):
        return _run(cfg)


def _run(cfg: DictConfig):
    data = common.load_data(cfg)
    x, data_name = data.x, data.name
    configs.validate_data(cfg, x)
    if cfg.algorithm.name == "meanshift":
        cfg = OmegaConf.merge(cfg, {"algorithm": {"bandwidth": common.mean_shift_bandwidth(cfg, x)}})
    if cfg.n_seeds > 1:
        return run_seeds(cfg, data)
    if not cfg.tracking.enabled:
        return compute(cfg, data)[1]
    algorithm, method = cfg.algorithm.name, method_of(cfg)
    tags = {"data": data_name, "data_hash": data.hash(), "algorithm": algorithm,
            "method": method, "seed": str(cfg.seed), **common.job_tags()}
    with tracking.start_run(cfg, run_name(cfg, data_name), tags) as run:
        run.log_config(cfg, configs.run_params(cfg, method))
        run.log_scalars(data.metrics())
        with common.degenerate_logged(run):
            result, summary = compute(cfg, data)
        if algorithm == "meanshift":
            common.log_mean_shift_fit(run, cfg, result, x, summary, data_name)
        elif algorithm == "variational":
            columns = common.column_names(cfg, data_name, x.shape[1], x)
            variational.log_fit(run, cfg, result, x, summary, columns, data_name)
        else:
            common.log_mixture_fit(run, cfg, result, x, summary, data_name)
            if method == "em":
                run.log_scalars(common.em_theory(cfg, result, x, data.weights))
        summary.run_id = run.run_id
    return summary


def run_seeds(cfg: DictConfig, data: common.Data) -> SeedsSummary:
    """Seeds ``seed .. seed + n_seeds - 1`` in one compiled EM program; each seed is
    its own MLflow run (config with its ``seed``), all children of one parent run
    tagged with one ``sweep_id``. A seed that met a singular covariance is a FAILED
    run, and the job raises after logging every seed."""
    seeds = list(range(cfg.seed, cfg.seed + cfg.n_seeds))
    x = data.x
    result, timing = common.fit_mixture_seeds(cfg, x, seeds, data.weights)
    # One program fits every seed: each seed's run gets its share of the warm time.
    share = {"fit_seconds": timing["fit_seconds"] / len(seeds),
             "compile_seconds": timing["compile_seconds"] / len(seeds)}
    fits = [jax.tree.map(lambda a, i=i: a[i], result) for i in range(len(seeds))]
    out = SeedsSummary(seeds, [MixtureSummary.of("em", f, x, share, data.weights) for f in fits],
                       timing["fit_seconds"], timing["compile_seconds"],
                       [s for s, f in zip(seeds, fits) if bool(f.degenerate)])
    if cfg.tracking.enabled:
        out.run_id = log_seeds(cfg, data, fits, out)
    if out.failed_seeds:
        raise ValueError(f"{len(out.failed_seeds)} of {len(seeds)} seeds met a singular "
                         f"covariance (seeds {out.failed_seeds}); their runs are marked FAILED")
    return out


def log_seeds(cfg, data: common.Data, fits, out: SeedsSummary) -> str:
    seeds, x, data_name = out.seeds, data.x, data.name
    tags = {"data": data_name, "data_hash": data.hash(), "algorithm": "em",
            "method": "em", "sweep_id": uuid.uuid4().hex[:12], "batched": "true"}
    name = cfg.tracking.run_name or f"em {data_name} k{cfg.model.k} seeds {seeds[0]}..{seeds[-1]}"
    with tracking.start_run(cfg, name, {**tags, "sweep_parent": "true"}) as parent:
        parent.log_config(cfg, configs.run_params(cfg, "em"))
        parent.log_scalars({"batch_fit_ms": 1e3 * out.batch_fit_seconds,
                            "batch_compile_ms": 1e3 * out.batch_compile_seconds,
                            "n_seeds": len(seeds)})
        for seed, fit, summary in zip(seeds, fits, out.fits):
            seed_cfg = OmegaConf.merge(cfg, {"seed": seed, "n_seeds": 1})
            try:
                with tracking.start_run(seed_cfg, f"em {data_name} k{cfg.model.k} seed{seed}",
                                        {**tags, "seed": str(seed)}, parent=parent) as child:
                    child.log_config(seed_cfg, configs.run_params(seed_cfg, "em"))
                    with common.degenerate_logged(child):
                        mg.results.raise_if_degenerate(fit, fit.curve.dtype)
                    common.log_mixture_fit(child, seed_cfg, fit, x, summary, data_name)
                    summary.run_id = child.run_id
            except mg.DegenerateCovarianceError:
                pass  # recorded as a FAILED run; run_seeds raises once all are logged
        finals = [s.final_log_likelihood for s in out.fits]  # step: seed - first seed
        parent.log_curve("final_log_likelihood_by_seed", finals)
        parent.log_scalars({"best_final_log_likelihood": max(finals)})
        return parent.run_id


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@common.one_line_errors
def main(cfg: DictConfig) -> float:
    summary = run(cfg)
    print(summary.report())
    return summary.objective


if __name__ == "__main__":
    configs.register()
    main()
