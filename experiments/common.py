"""What fit.py and compare.py share: data from config, timing, fitting, logging a fit."""

import logging
import time
from contextlib import contextmanager

import jax
import numpy as np

import mogjax as mg
from experiments import tracking
from experiments.configs import DataName, GradientConfig

for _noisy in ("jax._src.xla_bridge", "matplotlib"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


def load_data(data_cfg) -> tuple[np.ndarray, str]:
    """The configured data set as float64 (n, d), and its name."""
    name = DataName(data_cfg.name).value
    if name == "faithful":
        x = mg.load_old_faithful()
    elif name == "iris":
        x = mg.load_iris()[0]
    elif name == "synthetic":
        x, _, _ = mg.make_mixture(data_cfg.seed, data_cfg.n_samples, data_cfg.n_components,
                                  data_cfg.n_features, separation=data_cfg.separation)
    else:
        x = mg.datasets.load_file(data_cfg.path)
        name = f"file:{data_cfg.path}"
    if data_cfg.standardize:
        x = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    return np.asarray(x, dtype=np.float64), name


_COMPILE_SECONDS = [0.0]


def _on_event(name: str, seconds: float, **kwargs) -> None:
    if name.startswith("/jax/core/compile/"):
        _COMPILE_SECONDS[0] += seconds


jax.monitoring.register_event_duration_secs_listener(_on_event)


@contextmanager
def stopwatch():
    """Yields a dict that gets ``seconds`` (wall) and ``compile_seconds`` (JAX
    tracing, lowering and compiling) of the body."""
    out = {}
    start_compile, start = _COMPILE_SECONDS[0], time.perf_counter()
    yield out
    out["seconds"] = time.perf_counter() - start
    out["compile_seconds"] = _COMPILE_SECONDS[0] - start_compile


def model_kwargs(cfg) -> dict:
    m = cfg.model
    return dict(covariance_type=str(getattr(m.covariance_type, "value", m.covariance_type)),
                init=m.init, reg_covar=m.reg_covar, seed=cfg.seed)


def fit_mixture(cfg, x, method: str):
    """EM or gradient ascent (``method`` = "em" or an optimiser name), timed.

    Returns ``(result, timing)``.
    """
    with stopwatch() as timing:
        if method == "em":
            result = mg.fit_em(x, cfg.model.k, max_iter=cfg.algorithm.get("max_iter", 100),
                               tol=cfg.algorithm.get("tol", 1e-3), n_init=cfg.model.n_init,
                               equal_weights=cfg.model.equal_weights, verbose=cfg.progress_every,
                               **model_kwargs(cfg))
        else:
            opt = cfg.optimizer
            # The optimizer group configures its own optimiser; another one named in
            # `compare` runs with the library's defaults for it.
            settings = (
                dict(learning_rate=opt.learning_rate, schedule=opt.schedule,
                     clip_norm=opt.clip_norm, **dict(opt.options))
                if method == opt.name else {}
            )
            # EM's algorithm group (in `compare`) leaves the gradient loop at its defaults.
            loop = cfg.algorithm if cfg.algorithm.name == "gradient" else GradientConfig()
            result = mg.fit_gradient(
                x, cfg.model.k, optimizer=method, steps=loop.steps, tol=loop.tol,
                batch_size=loop.batch_size, **settings, **model_kwargs(cfg),
            )
        jax.block_until_ready(result.curve)
    timing["fit_seconds"] = max(timing["seconds"] - timing["compile_seconds"], 0.0)
    return result, timing


def mixture_summary(result, x, timing) -> dict[str, float]:
    n_iter = int(result.n_iter)
    return {
        "final_log_likelihood": float(result.curve[n_iter]),
        "n_iter": n_iter,
        "converged": float(bool(result.converged)),
        "fit_seconds": timing["fit_seconds"],
        "compile_seconds": timing["compile_seconds"],
        "seconds_per_iteration": timing["fit_seconds"] / max(n_iter, 1),
        "bic": float(mg.bic(result.params, x)),
        "aic": float(mg.aic(result.params, x)),
    }


def log_mixture_fit(cfg, result, x, summary, curve_key="log_likelihood") -> None:
    """Curve, scalars, parameters and plots of a mixture fit into the active run."""
    n_iter = int(result.n_iter)
    tracking.log_curve(curve_key, np.asarray(result.curve[: n_iter + 1]))
    tracking.log_scalars(summary)
    tracking.log_params_artifact(result.params)
    from mogjax.plotting import plot_clusters, plot_curves

    tracking.log_figure(plot_curves({curve_key: result.curve}), "curve.png")
    if x.shape[1] == 2:
        labels = np.asarray(mg.predict(result.params, x))
        tracking.log_figure(plot_clusters(x, labels, params=result.params), "clusters.png")


def fit_mean_shift(cfg, x):
    """Gaussian mean shift with the configured (or estimated) bandwidth, timed.

    Returns ``(result, summary)``. An estimated bandwidth is scikit-learn's flat
    radius divided by ``sqrt(d + 2)``: the Gaussian sigma of the same spread.
    """
    alg = cfg.algorithm
    bandwidth = alg.bandwidth
    if bandwidth is None:
        bandwidth = mg.estimate_bandwidth(x, alg.quantile) / np.sqrt(x.shape[1] + 2)
    with stopwatch() as timing:
        result = mg.mean_shift(x, bandwidth, max_iter=alg.max_iter, tol=alg.tol,
                               bin_seeding=alg.bin_seeding, cluster_all=alg.cluster_all)
        jax.block_until_ready(result.centers)
    fit_seconds = max(timing["seconds"] - timing["compile_seconds"], 0.0)
    n_iter = int(result.n_iter)
    summary = {
        "n_clusters": int(result.centers.shape[0]),
        "n_iter": n_iter,
        "converged": float(bool(result.converged)),
        "bandwidth": float(bandwidth),
        "fit_seconds": fit_seconds,
        "compile_seconds": timing["compile_seconds"],
        "seconds_per_iteration": fit_seconds / max(n_iter, 1),
    }
    return result, summary


def log_mean_shift_fit(result, x, summary) -> None:
    """Largest shift per iteration, scalars, modes and a plot into the active run."""
    import mlflow

    tracking.log_curve("max_shift", np.asarray(result.curve[1 : int(result.n_iter) + 1]))
    tracking.log_scalars(summary)
    mlflow.log_dict({"centers": np.asarray(result.centers).tolist()}, "modes.json")
    if x.shape[1] == 2:
        from mogjax.plotting import plot_clusters

        fig = plot_clusters(x, np.asarray(result.labels), modes=result.centers)
        tracking.log_figure(fig, "clusters.png")
