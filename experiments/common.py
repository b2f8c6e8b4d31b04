"""What fit.py and compare.py share: data from config, fitting, logging a fit, errors."""

import contextlib
import functools
import logging
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import mogjax as mg
from mogjax.init import canonical_init
from experiments import configs, model, provenance
from experiments.configs import DataSource, Missing
from experiments.interrupt import (
    RunInterrupted, exit_code, hard_exit, interruptible, interruption, signals_raise,
)
from experiments.store import TrackingUnavailable
from experiments.summary import MeanShiftSummary, MixtureSummary, unit
from experiments.timing import per_iteration, timed, use_compilation_cache

for _noisy in ("jax._src.xla_bridge", "matplotlib"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


class Data(NamedTuple):
    """The data a run fits."""

    x: np.ndarray  # (n, d) float64; NaN where an entry is missing (model.missing)
    weights: np.ndarray | None  # (n,) each row's weight (data.weights_column), or None
    name: str
    # what generated data achieve (data=separated): smallest distance between two
    # true means, the true mixture's Bayes error
    truth: dict | None = None
    # the columns' names (a file's header or data.column_names, a shipped data set's,
    # else x1, x2, ...) and, with data.standardize, the (mean, scale) that standardised
    # the raw columns: what the logged model takes and applies (experiments/model.py)
    columns: tuple[str, ...] = ()
    scaler: tuple[np.ndarray, np.ndarray] | None = None
    weights_column: int | None = None

    def hash(self) -> str:
        """The data's hash (``provenance.data_hash``), the weights as a last column."""
        table = self.x if self.weights is None else np.column_stack([self.x, self.weights])
        return provenance.data_hash(table)

    def metrics(self) -> dict[str, float]:
        """What a run logs of the data beyond its config: the fraction of missing
        entries and of rows with one, and the total and effective number of weights."""
        out = {}
        missing = np.isnan(self.x)
        if missing.any():
            out.update(missing_fraction=float(missing.mean()),
                       rows_with_missing_fraction=float(missing.any(axis=1).mean()))
        if self.weights is not None:
            w = self.weights
            out.update(total_weight=float(w.sum()),
                       effective_sample_size=float(w.sum() ** 2 / (w**2).sum()))
        return {**out, **(self.truth or {}), "data_rows": float(self.x.shape[0])}

    def record(self) -> dict:
        """What a logged model records of its training data (``experiments.model``)."""
        return {"name": self.name, "hash": self.hash(), "rows": int(self.x.shape[0]),
                "columns": list(self.columns), "weights_column": self.weights_column,
                "standardized": self.scaler is not None}


def load_data(cfg) -> Data:
    """The configured data set: float64 (n, d) (NaN allowed with
    ``model.missing=marginalize``), the weights column split off, and its name."""
    data_cfg = cfg.data
    source, name = DataSource(data_cfg.source).value, configs.data_label(cfg)
    weights = truth = None
    columns = COLUMNS.get(source)
    if source == "faithful":
        x = mg.load_old_faithful()
    elif source == "iris":
        x = mg.load_iris()[0]
    elif source == "synthetic":
        x, _, _ = mg.make_mixture(data_cfg.seed, data_cfg.n_samples, data_cfg.n_components,
                                  data_cfg.n_features, separation=data_cfg.separation)
    elif source == "separated":
        x, _, true_params = mg.make_separated_mixture(
            data_cfg.seed, data_cfg.n_samples, data_cfg.n_components, data_cfg.n_features,
            separation=data_cfg.separation, covariance=configs.plain(data_cfg.covariance),
            weights=configs.plain(data_cfg.weights))
        truth = {"true_smallest_mean_distance":
                 mg.datasets.smallest_distance(true_params.means),
                 "true_bayes_error": mg.bayes_error(true_params)}
    else:
        x = mg.datasets.load_file(data_cfg.path, n_features=data_cfg.columns,
                                  header=data_cfg.header,
                                  missing=cfg.model.missing == Missing.marginalize)
        columns = file_columns(data_cfg, x.shape[1])
        if data_cfg.weights_column is not None:
            x, weights = split_weights(x, data_cfg.weights_column, f"file {data_cfg.path}")
            if columns is not None:
                j = data_cfg.weights_column
                columns = columns[:j - 1] + columns[j:] if j > 0 else (
                    columns[:len(columns) + j] + columns[len(columns) + j + 1:])
    columns = given_columns(data_cfg, columns, x.shape[1])
    scaler = None
    if data_cfg.standardize:
        sd = np.nanstd(x, axis=0)
        scaler = (np.nanmean(x, axis=0), np.where(sd > 0, sd, 1.0))
        x = (x - scaler[0]) / scaler[1]
    return _loaded(Data(np.asarray(x, dtype=np.float64), weights, name, truth, columns,
                        scaler, data_cfg.weights_column))


_LAST_LOADED: list = []


def _loaded(data: Data) -> Data:
    _LAST_LOADED[:] = [data]
    return data


def loaded_data(x) -> Data | None:
    """The ``Data`` that ``load_data`` returned last, when ``x`` is its very array
    (what the logging functions, given ``x``, learn of its columns and scaler)."""
    return _LAST_LOADED[0] if _LAST_LOADED and _LAST_LOADED[0].x is x else None


def file_columns(data_cfg, n_columns: int) -> tuple[str, ...] | None:
    """A data file's column names from its header (a ``.csv`` with one), else None."""
    from pathlib import Path

    from experiments.predict import csv_header

    path = Path(data_cfg.path)
    if path.suffix.lower() not in (".csv", ".txt") or data_cfg.header is False:
        return None
    names = csv_header(path, forced=data_cfg.header is True)
    if names is not None and len(names) != n_columns:
        return None  # a header that does not fit the table names nothing
    return names


def given_columns(data_cfg, found, d: int) -> tuple[str, ...]:
    """The data's column names: ``data.column_names`` (the data's columns, the weights
    column left out), else ``found`` (a header's or a shipped data set's), else
    ``x1 .. xd``; every name distinct and non-empty."""
    given = data_cfg.column_names
    if given is not None:
        names = tuple(str(c) for c in given)
        if len(names) != d:
            raise ValueError(f"data.column_names names {len(names)} columns, the data have "
                             f"{d}")
    else:
        names = tuple(found) if found is not None else tuple(f"x{i + 1}" for i in range(d))
    blank = [i + 1 for i, c in enumerate(names) if not c]
    if blank:
        raise ValueError(f"data column {blank[0]} has an empty name; name it in the file's "
                         "header or in data.column_names")
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:
        raise ValueError(f"data column names must differ: {twice} appear more than once")
    return names


def split_weights(table, column: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(data, weights)``: column ``column`` (1 = the first, -1 = the last) of
    ``table`` as the weights, checked as ``sample_weight`` is, the rest as the data."""
    d = table.shape[1]
    if not (1 <= column <= d or -d <= column <= -1) or d < 2:
        raise ValueError(f"data.weights_column={column}: the {name} has {d} columns, and "
                         "the weights need one besides the data")
    j = column - 1 if column > 0 else d + column
    w = table[:, j]
    where = f"data.weights_column={column} of the {name}"
    if (bad := np.flatnonzero(~(w >= 0))).size:  # NaN or negative
        raise ValueError(f"{where}: a weight must be a number >= 0, got {w[bad[0]]} "
                         f"(row {bad[0] + 1})")
    if not np.any(w > 0):
        raise ValueError(f"{where}: every weight is zero")
    return np.delete(table, j, axis=1), w


# Axis labels of the data sets shipped with mogjax (a file's or synthetic data's: x1, x2, ...).
COLUMNS = {
    "faithful": ("eruption duration (min)", "waiting time (min)"),
    "iris": ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"),
}


def column_names(cfg, data_name: str, d: int, x=None) -> tuple[str, ...]:
    """Axis labels for the data's columns (``data.standardize``: the names, standardised):
    the names ``load_data`` found for ``x`` (a file's header, ``data.column_names``),
    else the data set's."""
    data = None if x is None else loaded_data(x)
    names = data.columns[:d] if data is not None else COLUMNS.get(
        configs.plain(cfg.data.source), tuple(f"x{i + 1}" for i in range(d)))
    if cfg.data.standardize:
        names = tuple(f"{name.split(' (')[0]} (standardised)" for name in names)
    return names


def model_inputs(cfg, x, data_name: str) -> dict:
    """What ``experiments.model.mixture``/``modes`` need beyond the fit: the columns by
    their names, the scaler and the training data's record, from the ``Data`` that
    ``load_data`` gave ``x`` (``loaded_data``)."""
    data = loaded_data(x)
    if data is None:  # data not from load_data: the names only
        return {"columns": column_names(cfg, data_name, x.shape[1])}
    return {"columns": data.columns, "scaler": data.scaler, "training": data.record()}


def model_kwargs(cfg) -> dict:
    m = cfg.model
    return dict(covariance_type=configs.plain(m.covariance_type),
                init=m.init, reg_covar=m.reg_covar, seed=cfg.seed)


def fit_kwargs(cfg, method: str) -> dict:
    """The keyword arguments of ``fit_em`` (``method`` "em") or ``fit_gradient`` (an
    optimiser's name) that ``cfg`` configures; the stopping rule is ``cfg.stop`` for
    both (``max_iter`` is EM's iterations and the optimiser's steps)."""
    stop = cfg.stop
    kwargs = dict(tol=stop.tol, patience=stop.patience, verbose=cfg.progress_every,
                  **model_kwargs(cfg))
    if method in configs.EM_METHODS:
        return dict(kwargs, max_iter=stop.max_iter, n_init=cfg.model.n_init,
                    equal_weights=cfg.model.equal_weights,
                    missing=configs.plain(cfg.model.missing),
                    **({} if method == "em" else {"acceleration": method}))
    opt = configs.optimizer_config(cfg, method)
    batch_size = cfg.algorithm.batch_size if cfg.algorithm.name == "gradient" else None
    return dict(kwargs, optimizer=method, steps=stop.max_iter, learning_rate=opt.learning_rate,
                schedule=opt.schedule, clip_norm=opt.clip_norm, batch_size=batch_size,
                **dict(opt.options))


def fit_mixture(cfg, x, method: str, weights=None, init_seconds: float | None = None
                ) -> tuple:
    """EM or gradient ascent (``method`` = "em", an acceleration of it or an optimiser's
    name), compiled and
    then timed warm (``experiments.timing``), in a worker thread so that Ctrl-C and
    SIGTERM stop it at once; ``weights``: each row's (n,), or None;
    ``init_seconds``: the warm start (``time_start``; timed here when None). Returns
    ``(result, MixtureSummary)``."""
    if init_seconds is None:
        init_seconds = time_start(cfg, x, weights)
    result, timing = interruptible(_fit_mixture, cfg, x, method, weights)
    return result, MixtureSummary.of(method, result, x, timing, weights, init_seconds)


@functools.partial(jax.jit, static_argnames=("k", "covariance_type", "init"))
def _start(x, key, weight, reg_covar, *, k, covariance_type, init):
    params = mg.initialize(key, x, k, covariance_type, init, reg_covar, sample_weight=weight)
    return mg.e_step(params, x, sample_weight=weight).log_likelihood


def time_start(cfg, x, weights=None) -> float:
    """Warm seconds of the start every method of a run shares: the initialisation
    (``model.init``) and the E-step of its parameters (curve point 0), compiled
    apart and timed as ``experiments.timing.timed`` times a fit."""
    m = cfg.model
    x = np.asarray(x)
    x = jnp.asarray(np.where(np.isnan(x), np.nanmean(x, axis=0), x))  # missing entries
    weight = None if weights is None else jnp.asarray(weights, x.dtype)
    key = jax.random.split(jax.random.key(int(cfg.seed) & 0xFFFFFFFF), 1)[0]  # fit_em's first
    call = lambda: _start(x, key, weight, jnp.asarray(m.reg_covar, x.dtype), k=int(m.k),
                          covariance_type=configs.plain(m.covariance_type),
                          init=canonical_init(m.init))
    return interruptible(timed, call)[1]["fit_seconds"]


@contextlib.contextmanager
def precision(cfg):
    """Inside, arrays have the run's ``precision`` (``jax.enable_x64``); no change when
    it is null."""
    if cfg.get("precision") is None:
        yield
        return
    with jax.enable_x64(configs.plain(cfg.precision) == "float64"):
        yield


# Long fits report progress unasked: a line about every PROGRESS_SECONDS when a fit is
# expected to take more than LONG_FIT_SECONDS (at the matrix throughput measured on a
# 2-core machine; a faster one just prints fewer lines).
LONG_FIT_SECONDS, PROGRESS_SECONDS, FLOPS_PER_SECOND = 10.0, 5.0, {"float32": 5e10,
                                                                   "float64": 2.5e10}


def auto_progress(cfg, x, max_iter: int) -> int:
    """``progress_every`` when set, else 0 for a short fit and, for one expected to take
    more than ``LONG_FIT_SECONDS`` (two matrix products of rows x components x quadratic
    features per iteration), the stride of about one line per ``PROGRESS_SECONDS``."""
    if cfg.progress_every:
        return int(cfg.progress_every)
    n, d = x.shape
    width = mg.gaussian.n_quadratic_features(d, configs.plain(cfg.model.covariance_type))
    seconds = 4.0 * n * int(cfg.model.k) * (width + 1) / FLOPS_PER_SECOND[
        configs.precision_of(cfg)]
    if seconds * max_iter <= LONG_FIT_SECONDS:
        return 0
    every = max(1, int(PROGRESS_SECONDS / seconds))
    logging.getLogger(__name__).warning(
        "a fit of %d rows x %d components is expected to take about %.0f s (%d iterations "
        "at most): progress every %d iterations (set progress_every to choose)",
        n, int(cfg.model.k), seconds * max_iter, max_iter, every)
    return every


def _fit_mixture(cfg, x, method: str, weights):
    em = method in configs.EM_METHODS
    fit = mg.fit_em if em else mg.fit_gradient
    budget_key = "max_iter" if em else "steps"
    kwargs = dict(fit_kwargs(cfg, method), sample_weight=weights)
    kwargs["verbose"] = auto_progress(cfg, x, cfg.stop.max_iter)
    if cfg.stop.seconds is None:
        return timed(lambda: fit(x, cfg.model.k, **kwargs))
    # A budget of seconds: time the whole budget of iterations warm, then refit with
    # as many as fit in the seconds (a new program: its compile time is logged apart).
    kwargs["tol"] = 0.0
    result, timing = timed(lambda: fit(x, cfg.model.k, **kwargs))
    n = int(cfg.stop.seconds * max(int(result.n_iter), 1) / timing["fit_seconds"])
    if n >= cfg.stop.max_iter:
        return result, timing
    kwargs[budget_key] = max(n, 1)
    return timed(lambda: fit(x, cfg.model.k, **kwargs))


def fit_mixture_seeds(cfg, x, seeds, weights=None):
    """EM for every seed in one compiled program (``mogjax.fit_em_seeds``), timed
    warm; returns ``(batched FitResult, timing)``."""
    kwargs = model_kwargs(cfg)
    del kwargs["seed"]
    return interruptible(timed, lambda: mg.fit_em_seeds(
        x, cfg.model.k, seeds, max_iter=cfg.stop.max_iter, tol=cfg.stop.tol,
        patience=cfg.stop.patience, n_init=cfg.model.n_init,
        equal_weights=cfg.model.equal_weights, sample_weight=weights, **kwargs))


def em_theory(cfg, result, x, weights=None) -> dict[str, float]:
    """EM's theory at ``result``'s parameters (``mogjax.theory``), as ``theory``
    configures it: ``em_rate`` (the spectral radius of the EM map's Jacobian, dense up
    to ``theory.max_parameters`` parameters), ``em_rate_empirical`` (from the curve)
    and ``responsibility_entropy``; ``{}`` when off or for weighted rows. (At an
    optimum the rate is also the largest fraction of missing information,
    ``mogjax.theory.missing_information_fraction``, whose Hessian is not computed
    here: see ``THEORY_SECONDS``.)"""
    if not cfg.theory.enabled or weights is not None:
        return {}
    from mogjax import theory

    def compute():
        out = {"em_rate_empirical": theory.empirical_rate(result),
               "responsibility_entropy": theory.mean_normalized_entropy(result.params, x)}
        if mg.n_parameters(result.params) <= cfg.theory.max_parameters and np.all(
                np.isfinite(x)):
            try:  # the MLE map (reg_covar 0) has no derivative at a collapsed component
                out["em_rate"] = theory.em_rate(result.params, x,
                                                max_dense=int(cfg.theory.max_parameters))
            except (ValueError, np.linalg.LinAlgError):
                pass
        return {k: float(v) for k, v in out.items() if np.isfinite(v)}

    try:
        return interruptible(compute, timeout=THEORY_SECONDS)
    except TimeoutError:
        logging.getLogger(__name__).warning(
            "EM's theory took over %d s and was left out of the run", THEORY_SECONDS)
        return {}


# The longest the diagnostics may take. On this machine XLA's CPU runtime was seen to
# stall for good (every thread idle) on the observed information's Hessian program of
# a k=5, d=10 mixture: twice in an overlap study of forty jobs, and reproducibly on the
# second call in a worker thread under jax.enable_x64 with the persistent compilation
# cache on (never without the cache, nor in the main thread). A run is not held
# hostage to that.
THEORY_SECONDS = 120


def esteps_of(result) -> np.ndarray | None:
    """E-steps made by each curve point, ``(n_iter + 1,)`` (``FitResult.esteps``), or
    None where the fit did not count them."""
    counts = getattr(result, "esteps", None)
    if counts is None:
        return None
    counts = np.asarray(counts[: int(result.n_iter) + 1])
    return counts if counts.size and np.all(counts >= 0) else None


def log_mixture_fit(run, cfg, result, x, summary: MixtureSummary, data_name: str) -> None:
    """Curve, scalars, parameters and plots of one fit into ``run``."""
    method, n_iter = summary.method, int(result.n_iter)
    run.log_curve("log_likelihood", np.asarray(result.curve[: n_iter + 1]))
    if (counts := esteps_of(result)) is not None:  # E-steps made by each curve point
        run.log_curve("esteps", counts)
    run.log_scalars(summary.metrics())
    run.set_tags({"degenerate": "false", "stop_reason": result.stop_reason,
                  "numerical_warnings": summary.warning or "none"})
    run.log_params_artifact(result.params)
    if cfg.tracking.log_models:
        run.log_model(model.mixture(result.params, **model_inputs(cfg, x, data_name)), x)
    if not cfg.tracking.log_plots:
        return
    from mogjax.plotting import plot_clusters, plot_curves

    what = (f"{method} on {data_name}, k={cfg.model.k}, "
            f"{configs.plain(cfg.model.covariance_type)} covariances")
    title = (f"{what}: final mean log-likelihood {summary.final_log_likelihood:.6f} after "
             f"{n_iter} {unit(method)}s")
    run.log_figure(plot_curves({method: result.curve}, units={method: unit(method)},
                               title=title, subtitle=configs.stop_rule(cfg.stop)), "curve.png")
    if x.shape[1] == 2:
        labels = np.asarray(mg.predict(result.params, x))
        xlabel, ylabel = column_names(cfg, data_name, 2, x)
        fig = plot_clusters(x, labels, params=result.params, xlabel=xlabel, ylabel=ylabel,
                            title=f"{what}: final mean log-likelihood "
                                  f"{summary.final_log_likelihood:.4f}")
        run.log_figure(fig, "clusters.png")


@contextlib.contextmanager
def degenerate_logged(run):
    """Inside the block, a fit that met a singular covariance
    (``DegenerateCovarianceError``, raised by the library or by
    ``mogjax.results.raise_if_degenerate``) logs what it computed before it stopped
    (the curve up to the failure, the last finite parameters, tag ``degenerate``),
    then propagates: its run ends FAILED."""
    try:
        yield
    except mg.DegenerateCovarianceError as err:
        partial = err.result
        run.set_tags({"degenerate": "true", "numerical_warnings": str(err)})
        run.log_curve("log_likelihood", np.asarray(partial.curve[: int(partial.n_iter) + 1]))
        run.log_params_artifact(partial.params)
        raise


def mean_shift_bandwidth(cfg, x) -> float:
    """``algorithm.bandwidth``, or when null the estimate: scikit-learn's flat radius
    (``estimate_bandwidth`` at ``algorithm.quantile``) divided by ``sqrt(d + 2)``, the
    Gaussian sigma of the same spread."""
    alg = cfg.algorithm
    if alg.bandwidth is not None:
        return float(alg.bandwidth)
    return float(mg.estimate_bandwidth(x, alg.quantile) / np.sqrt(x.shape[1] + 2))


def fit_mean_shift(cfg, x, weights=None):
    """Gaussian mean shift (of the weighted density when ``weights`` are given),
    compiled then timed warm, in a worker thread (see ``fit_mixture``). Returns
    ``(result, MeanShiftSummary)``."""
    return interruptible(_fit_mean_shift, cfg, x, weights)


def _fit_mean_shift(cfg, x, weights):
    alg, bandwidth = cfg.algorithm, mean_shift_bandwidth(cfg, x)
    result, timing = timed(lambda: mg.mean_shift(
        x, bandwidth, max_iter=alg.max_iter, tol=alg.tol, bin_seeding=alg.bin_seeding,
        cluster_all=alg.cluster_all, sample_weight=weights))
    n_iter = int(result.n_iter)
    return result, MeanShiftSummary(
        n_clusters=int(result.centers.shape[0]), n_iter=n_iter,
        converged=bool(result.converged), bandwidth=bandwidth,
        fit_seconds=timing["fit_seconds"], compile_seconds=timing["compile_seconds"],
        seconds_per_iteration=per_iteration(timing, n_iter))


def log_mean_shift_fit(run, cfg, result, x, summary: MeanShiftSummary, data_name: str) -> None:
    """Largest shift per iteration, scalars, modes and a plot into ``run``."""
    run.log_curve("max_shift", np.asarray(result.curve[1 : int(result.n_iter) + 1]))
    run.log_scalars(summary.metrics())
    run.log_dict({"centers": np.asarray(result.centers).tolist()}, "modes.json")
    run.log_model(model.modes(result.centers, bandwidth=summary.bandwidth,
                              **model_inputs(cfg, x, data_name)), x)
    if x.shape[1] == 2 and cfg.tracking.log_plots:
        from mogjax.plotting import plot_clusters

        xlabel, ylabel = column_names(cfg, data_name, 2, x)
        title = (f"mean shift on {data_name}, bandwidth {summary.bandwidth:.4g}: "
                 f"{summary.n_clusters} clusters")
        fig = plot_clusters(x, np.asarray(result.labels), modes=result.centers, title=title,
                            xlabel=xlabel, ylabel=ylabel)
        run.log_figure(fig, "clusters.png")


def compilation_cache(cfg) -> None:
    """JAX's persistent compilation cache as ``compilation_cache`` configures it (on by
    default, in ``.cache/jax`` of the project), so that a program compiled by one
    process on this machine is read back by the next (``experiments.timing``)."""
    cache = cfg.get("compilation_cache")
    if cache is not None and cache.enabled:
        use_compilation_cache(cache.dir)


def job_tags() -> dict[str, str]:
    """In a multirun, ``{"job_overrides": json list}``: the job's own overrides, from
    which a study reads each job's setting (``experiments.study``); else ``{}``."""
    if not in_multirun():
        return {}
    import json

    from hydra.core.hydra_config import HydraConfig

    return {"job_overrides": json.dumps(list(HydraConfig.get().overrides.task))[:5000]}


def in_multirun() -> bool:
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
    marked KILLED, exits 130/143 at once, a sweep included. A key the configs lack
    (``algorithm.max_iter`` under EM) is one line too (``experiments.config_errors``)."""
    from experiments import config_errors

    config_errors.install()

    @functools.wraps(main)
    def wrapper(cfg):
        compilation_cache(cfg)
        try:
            with signals_raise():  # SIGTERM outside a run (loading, a batched fit) too
                return main(cfg)
        except (ValueError, TrackingUnavailable) as err:
            if in_multirun():
                raise
            print(" ".join(["error:", str(err), *getattr(err, "__notes__", [])]), file=sys.stderr)
            sys.exit(1)
        except (KeyboardInterrupt, RunInterrupted) as err:
            print(f"stopped: {interruption(err)}", file=sys.stderr)
            hard_exit(exit_code(err))  # a sweep stops too; its parent is closed

    return wrapper
