"""What a run returns: one typed summary per kind of run, each able to say itself.

``fit.run`` returns a ``MixtureSummary`` (EM or gradient ascent), a
``MeanShiftSummary``, a ``VariationalSummary`` or a ``SeedsSummary``; ``compare.run`` a ``ComparisonSummary``.
Every one has ``report()`` (what the script prints), ``objective`` (what
``@hydra.main`` returns, for sweepers) and ``run_id`` (None when not tracked); the
fits' ``metrics()`` are the scalars their runs log.
"""

from dataclasses import asdict, dataclass, field

import mogjax as mg
from experiments.configs import EM_METHODS
from experiments.timing import per_iteration


def unit(method: str) -> str:
    """What one tick of ``method``'s curve is: (accelerated) EM's iterations, an
    optimiser's steps."""
    return "iteration" if method in EM_METHODS else "step"


def scalars(summary) -> dict[str, float]:
    """A summary's numbers as the run's metrics: every numeric field but ``run_id``,
    times in milliseconds with the unit in the name (``fit_seconds`` -> ``fit_ms``,
    ``seconds_per_iteration`` -> ``ms_per_iteration``): the MLflow UI shows two
    decimals, and a fit's milliseconds read there, its seconds do not."""
    out = {}
    for key, value in asdict(summary).items():
        if key == "run_id" or value is None or isinstance(value, (str, list, dict)):
            continue
        out[metric_name(key)] = float(value) * (1e3 if metric_name(key) != key else 1.0)
    return out


def metric_name(field_name: str) -> str:
    """A summary field's metric name: times in milliseconds (see ``scalars``)."""
    if field_name == "seconds_per_iteration":
        return "ms_per_iteration"
    if field_name.endswith("_seconds"):
        return field_name[: -len("_seconds")] + "_ms"
    return field_name


def _tracked(run_id: str | None, what: str = "MLflow run") -> str:
    return f"; {what} {run_id}" if run_id else ""


@dataclass
class MixtureSummary:
    """One EM or gradient-ascent fit (``method``: "em" or the optimiser's name)."""

    method: str
    final_log_likelihood: float
    n_iter: int
    converged: bool
    fit_seconds: float
    compile_seconds: float
    seconds_per_iteration: float
    bic: float
    aic: float
    n_rejected: int | None = None  # gradient ascent: steps rejected as not finite
    run_id: str | None = None
    init_seconds: float = 0.0  # the shared start, warm (left out of seconds_per_iteration)
    compile_cache_hits: int = 0  # programs read from the persistent compilation cache
    capped: bool = False  # stopped by its budget (max_iter), not by the stopping rule
    n_esteps: int | None = None  # E-step evaluations (the cost unit of EM-like methods)
    stop_reason: str = ""

    @classmethod
    def of(cls, method: str, result, x, timing: dict, weights=None,
           init_seconds: float = 0.0) -> "MixtureSummary":
        """``init_seconds``: the warm start (``experiments.common.time_start``), taken
        out of the loop's per-iteration time."""
        n_iter = int(result.n_iter)
        n_esteps = getattr(result, "n_esteps", None)
        n_esteps = None if n_esteps is None or int(n_esteps) < 0 else n_esteps  # -1: not counted
        return cls(
            method=method, final_log_likelihood=float(result.curve[n_iter]), n_iter=n_iter,
            converged=bool(result.converged), fit_seconds=timing["fit_seconds"],
            compile_seconds=timing["compile_seconds"],
            seconds_per_iteration=per_iteration(timing, n_iter, init_seconds),
            bic=float(mg.bic(result.params, x, sample_weight=weights)),
            aic=float(mg.aic(result.params, x, sample_weight=weights)),
            n_rejected=int(result.n_rejected) if hasattr(result, "n_rejected") else None,
            init_seconds=init_seconds,
            compile_cache_hits=int(timing.get("compile_cache_hits", 0)),
            capped=result.stop_reason == "steps",
            n_esteps=None if n_esteps is None else int(n_esteps),
            stop_reason=result.stop_reason)

    def metrics(self) -> dict[str, float]:
        return scalars(self)

    @property
    def objective(self) -> float:
        return self.final_log_likelihood

    @property
    def warning(self) -> str:
        """What went wrong numerically but did not stop the fit ("" when nothing)."""
        n = self.n_rejected or 0
        return f"{n} gradient steps were not finite and were rejected" if n else ""

    def report(self) -> str:
        line = (f"final mean log-likelihood {self.final_log_likelihood:.6f} after "
                f"{self.n_iter} {unit(self.method)}s{_tracked(self.run_id)}")
        return line + (f"\nwarning: {self.warning}" if self.warning else "")


@dataclass
class MeanShiftSummary:
    n_clusters: int
    n_iter: int
    converged: bool
    bandwidth: float
    fit_seconds: float
    compile_seconds: float
    seconds_per_iteration: float
    run_id: str | None = None

    def metrics(self) -> dict[str, float]:
        return scalars(self)

    @property
    def objective(self) -> float:
        return float(self.n_clusters)

    def report(self) -> str:
        return (f"{self.n_clusters} clusters (bandwidth {self.bandwidth:.4g}) after "
                f"{self.n_iter} iterations{_tracked(self.run_id)}")


@dataclass
class SeedsSummary:
    """Seeds ``seeds`` fitted in one compiled program (``n_seeds``)."""

    seeds: list[int]
    fits: list[MixtureSummary]
    batch_fit_seconds: float
    batch_compile_seconds: float
    failed_seeds: list[int] = field(default_factory=list)
    run_id: str | None = None

    @property
    def objective(self) -> float:
        return max(f.final_log_likelihood for f in self.fits)

    def report(self) -> str:
        return (f"{len(self.seeds)} seeds in {self.batch_fit_seconds:.3f} s "
                f"(+{self.batch_compile_seconds:.1f} s compile); best final mean "
                f"log-likelihood {self.objective:.6f}{_tracked(self.run_id, 'MLflow parent run')}")


@dataclass
class ComparisonSummary:
    """Methods fitted from one shared start (``compare.py``); ``comparison`` holds the
    curves, time to target and alignment (``compare.measure``)."""

    methods: dict[str, MixtureSummary]
    comparison: dict
    run_id: str | None = None
    experiment_id: str | None = None
    tracking_uri: str | None = None
    charts: dict[str, str] = field(default_factory=dict)
    name: str | None = None  # the run's name, when tracked

    @property
    def objective(self) -> float:
        return next(iter(self.methods.values())).final_log_likelihood

    def report(self) -> str:
        """The table of methods: final value, iterations, warm and compile time, time
        to target."""
        comp = self.comparison
        width = max(8, *(len(m) for m in self.methods))
        lines = [f"\nComparison run '{self.name}'"] if self.name else []
        lines += [f"\n{'method':{width}s} {'final mean log-lik':>18s}  {'iterations/steps':20s} "
                 f"{'E-steps':>7s} {'ms/iter (warm)':>14s} {'compile s':>9s}  to target"]
        for method, s in self.methods.items():
            t = comp["to_target"][method]
            to_target = (f"{t['iterations_to_target']} in {t['ms_to_target']:.3g} ms"
                         if t["reached_target"] else "not reached")
            if t.get("target_met_at_start"):
                to_target += " (the start meets it)"
            count = f"{s.n_iter} {unit(method)}s" + (" (budget)" if s.capped else "")
            esteps = "-" if s.n_esteps is None else str(s.n_esteps)
            lines.append(f"{method:{width}s} {s.final_log_likelihood:18.6f}  {count:20s} "
                         f"{esteps:>7s} {1e3 * s.seconds_per_iteration:14.3g} "
                         f"{s.compile_seconds:9.2f}  {to_target}")
        lines.append(f"(target: {comp['target']:.6f}; start {1e3 * comp['init_seconds']:.3g} ms, "
                     "included in ms to target, not in ms/iter; the methods are aligned "
                     f"to {comp['alignment']['reference']} in alignment.json)")
        return "\n".join(lines)


@dataclass
class VariationalSummary:
    """One variational fit."""

    final_lower_bound: float  # per sample
    final_log_likelihood: float  # of the plug-in mixture, per sample
    effective_components: int
    n_iter: int
    converged: bool
    fit_seconds: float
    compile_seconds: float
    seconds_per_iteration: float
    bic: float
    method: str = "variational"
    run_id: str | None = None

    def metrics(self) -> dict[str, float]:
        return scalars(self)

    @property
    def objective(self) -> float:
        return self.final_lower_bound

    def report(self) -> str:
        return (f"final lower bound {self.final_lower_bound:.6f} per sample after "
                f"{self.n_iter} iterations; {self.effective_components} components with "
                f"weight above the threshold{_tracked(self.run_id)}")
