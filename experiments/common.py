"""What fit.py and compare.py share: data from config, timing, fitting, logging a fit."""

import functools
import logging
import sys
import time
from contextlib import contextmanager

import jax
import numpy as np

import mogjax as mg
from experiments import tracking
from experiments.configs import DataName, GradientConfig
from experiments.interrupt import (
    RunInterrupted, exit_code, hard_exit, interruptible, signals_raise,
)

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
        x = mg.datasets.load_file(data_cfg.path, n_features=data_cfg.columns)
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
    """EM or gradient ascent (``method`` = "em" or an optimiser name), timed, in a
    worker thread so that Ctrl-C and SIGTERM stop it at once.

    Returns ``(result, timing)``.
    """
    return interruptible(_fit_mixture, cfg, x, method)


def _fit_mixture(cfg, x, method: str):
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


def fit_mixture_seeds(cfg, x, seeds):
    """EM for every seed in one compiled program (``mogjax.fit_em_seeds``), timed;
    returns ``(batched FitResult, timing)``."""
    return interruptible(_fit_mixture_seeds, cfg, x, seeds)


def _fit_mixture_seeds(cfg, x, seeds):
    kwargs = model_kwargs(cfg)
    del kwargs["seed"]
    with stopwatch() as timing:
        result = mg.fit_em_seeds(
            x, cfg.model.k, seeds, max_iter=cfg.algorithm.max_iter, tol=cfg.algorithm.tol,
            n_init=cfg.model.n_init, equal_weights=cfg.model.equal_weights, **kwargs)
        jax.block_until_ready(result.curve)
    timing["fit_seconds"] = max(timing["seconds"] - timing["compile_seconds"], 0.0)
    return result, timing


def mixture_summary(result, x, timing) -> dict[str, float]:
    n_iter = int(result.n_iter)
    extra = {"n_rejected": int(result.n_rejected)} if hasattr(result, "n_rejected") else {}
    return {
        **extra,
        "final_log_likelihood": float(result.curve[n_iter]),
        "n_iter": n_iter,
        "converged": float(bool(result.converged)),
        "fit_seconds": timing["fit_seconds"],
        "compile_seconds": timing["compile_seconds"],
        "seconds_per_iteration": timing["fit_seconds"] / max(n_iter, 1),
        "bic": float(mg.bic(result.params, x)),
        "aic": float(mg.aic(result.params, x)),
    }


def numerical_warnings(summary: dict) -> str:
    """What went wrong numerically but did not stop the fit ("" when nothing)."""
    n = summary.get("n_rejected", 0)
    return f"{n} gradient steps were not finite and were rejected" if n else ""


def log_mixture_fit(cfg, result, x, summary, curve_key="log_likelihood") -> None:
    """Curve, scalars, parameters and plots of a mixture fit into the active run."""
    n_iter = int(result.n_iter)
    tracking.log_curve(curve_key, np.asarray(result.curve[: n_iter + 1]))
    tracking.log_scalars(summary)
    tracking.set_tags({"degenerate": "false", "numerical_warnings": numerical_warnings(summary)
                       or "none"})
    tracking.log_params_artifact(result.params)
    if not cfg.tracking.log_plots:
        return
    from mogjax.plotting import plot_clusters, plot_curves

    tracking.log_figure(plot_curves({curve_key: result.curve}), "curve.png")
    if x.shape[1] == 2:
        labels = np.asarray(mg.predict(result.params, x))
        tracking.log_figure(plot_clusters(x, labels, params=result.params), "clusters.png")


def log_degenerate_fit(err: mg.DegenerateCovarianceError, curve_key="log_likelihood") -> None:
    """What a fit that met a singular covariance computed before it stopped: the curve
    up to the failure and the last finite parameters, tagged ``degenerate``."""
    partial = err.result
    tracking.set_tags({"degenerate": "true", "numerical_warnings": str(err)})
    tracking.log_curve(curve_key, np.asarray(partial.curve[: int(partial.n_iter) + 1]))
    tracking.log_params_artifact(partial.params)


def fit_mean_shift(cfg, x):
    """``mean_shift_fit`` in a worker thread (see ``fit_mixture``)."""
    return interruptible(_fit_mean_shift, cfg, x)


def _fit_mean_shift(cfg, x):
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


def log_mean_shift_fit(cfg, result, x, summary) -> None:
    """Largest shift per iteration, scalars, modes and a plot into the active run."""
    tracking.log_curve("max_shift", np.asarray(result.curve[1 : int(result.n_iter) + 1]))
    tracking.log_scalars(summary)
    tracking.log_dict({"centers": np.asarray(result.centers).tolist()}, "modes.json")
    if x.shape[1] == 2 and cfg.tracking.log_plots:
        from mogjax.plotting import plot_clusters

        fig = plot_clusters(x, np.asarray(result.labels), modes=result.centers)
        tracking.log_figure(fig, "clusters.png")


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def one_line_errors(main):
    """For a ``@hydra.main`` function: a bad input, a degenerate fit or an unreachable
    store prints one ``error:`` line and exits 1 (in a multirun the exception
    propagates instead, so Hydra records the job as failed, runs the other jobs and
    reports the failure in the sweep's exit status). Ctrl-C/SIGTERM, once the run is
    marked KILLED, exits 130/143 at once, a sweep included."""

    @functools.wraps(main)
    def wrapper(cfg):
        try:
            with signals_raise():  # SIGTERM outside a run (loading, a batched fit) too
                return main(cfg)
        except (ValueError, tracking.TrackingUnavailable) as err:
            if _in_multirun():
                raise
            print(" ".join(["error:", str(err), *getattr(err, "__notes__", [])]), file=sys.stderr)
            sys.exit(1)
        except (KeyboardInterrupt, RunInterrupted) as err:
            print(f"stopped: {err or 'interrupted by SIGINT'}", file=sys.stderr)
            hard_exit(exit_code(err))  # a sweep stops too; its parent is closed

    return wrapper
