"""Variational Bayesian mixtures in the experiments: ``algorithm=variational``.

A run fits ``mogjax.fit_variational`` with ``model.k`` as the most components the
posterior may use, stops by the one rule of ``cfg.stop`` (``tol`` on the gain of the
lower bound per sample: the fit's own tolerance is on the total, so it gets
``tol * n``), and logs the lower bound per sample as the curve ``lower_bound``, the
effective number of components (weights above ``algorithm.threshold``), the weights
as a bar plot and the plug-in mixture as the run's parameters and model.
"""

import numpy as np

import mogjax as mg
from experiments import common, configs, model
from experiments.interrupt import interruptible
from experiments.summary import VariationalSummary
from experiments.timing import per_iteration, timed


def effective_components(weights, threshold: float) -> int:
    """Components whose posterior weight exceeds ``threshold``."""
    return int(np.sum(np.asarray(weights) > threshold))


def fit(cfg, x) -> tuple:
    """``fit_variational`` as configured, compiled then timed warm, interruptible.
    Returns ``(result, VariationalSummary)``."""
    result, timing = interruptible(_fit, cfg, x)
    n_iter, n = int(result.n_iter), x.shape[0]
    return result, VariationalSummary(
        final_lower_bound=float(result.curve[n_iter]) / n,
        final_log_likelihood=float(mg.mean_log_likelihood(result.params, x)),
        effective_components=effective_components(result.posterior.weights,
                                                  cfg.algorithm.threshold),
        n_iter=n_iter, converged=bool(result.converged), fit_seconds=timing["fit_seconds"],
        compile_seconds=timing["compile_seconds"],
        seconds_per_iteration=per_iteration(timing, n_iter),
        bic=float(mg.bic(result.params, x)))


def _fit(cfg, x):
    alg, stop = cfg.algorithm, cfg.stop
    kwargs = dict(
        common.model_kwargs(cfg), weight_prior=configs.plain(alg.weight_prior),
        weight_concentration_prior=alg.weight_concentration_prior, max_iter=stop.max_iter,
        tol=stop.tol * x.shape[0], patience=stop.patience, n_init=cfg.model.n_init)
    return timed(lambda: mg.fit_variational(x, cfg.model.k, **kwargs))


def log_fit(run, cfg, result, x, summary: VariationalSummary, columns, data_name: str) -> None:
    """Lower bound per sample, scalars, weights, parameters, model and plots into ``run``."""
    n_iter = int(result.n_iter)
    run.log_curve("lower_bound", np.asarray(result.curve[: n_iter + 1]) / x.shape[0])
    run.log_scalars(summary.metrics())
    weights = np.asarray(result.posterior.weights)
    run.log_dict({"weights": weights.tolist(), "threshold": cfg.algorithm.threshold,
                  "effective_components": summary.effective_components}, "weights.json")
    run.set_tags({"degenerate": "false",
                  "stop_reason": "tol" if bool(result.converged) else "steps"})
    run.log_params_artifact(result.params)
    run.log_model(model.mixture(result.params, **common.model_inputs(cfg, x, data_name)), x)
    if not cfg.tracking.log_plots:
        return
    from mogjax.plotting import plot_clusters, plot_curves, plot_weights

    prior = configs.plain(cfg.algorithm.weight_prior)
    threshold = cfg.algorithm.threshold
    what = (f"variational ({prior}) on {data_name}, k <= {cfg.model.k}, "
            f"{configs.plain(cfg.model.covariance_type)} covariances")
    kept = f"{summary.effective_components} components above weight {threshold:g}"
    run.log_figure(plot_curves(
        {"variational": np.asarray(result.curve) / x.shape[0]}, units={"variational": "iteration"},
        title=f"{what}: lower bound {summary.final_lower_bound:.6f} per sample",
        ylabel="evidence lower bound (nats per sample)"), "curve.png")
    # one number and one colour per component in both plots (component j: colour j)
    run.log_figure(plot_weights(weights, threshold, title=f"{what}: {kept}"), "weights.png")
    if x.shape[1] == 2:
        labels = np.asarray(mg.predict(result.params, x))
        fig = plot_clusters(x, labels, params=result.params, xlabel=columns[0],
                            ylabel=columns[1], title=f"{what}: {kept}", min_weight=threshold)
        run.log_figure(fig, "clusters.png")
