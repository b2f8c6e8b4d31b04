"""What a comparison of methods measures, from their fits alone (no tracking here).

- **Time to target.** The target is ``target_gap`` (nats per sample) below the best
  final mean log-likelihood among the methods compared. For every method:
  ``iterations_to_target`` (the first iteration or step whose value reaches it),
  ``ms_to_target`` (the shared start plus that many warm iterations,
  ``experiments.timing``), ``esteps_to_target`` (E-step evaluations, the unit that
  compares EM with its accelerations), ``reached_target`` (1 or 0; the others are
  left out when 0), ``target_met_at_start`` (1 when the start already reaches it) and
  ``final_gap`` (best final value minus this method's). A study
  (``experiments.study``) measures the same against one target per setting.
- **Components aligned** (``mogjax.align``) to the reference method's (EM's when it is
  compared) before parameters are compared: ``max_mean_gap``, ``max_weight_gap``,
  ``max_covariance_gap`` and the matching order.
"""

import numpy as np

from mogjax.align import parameter_gaps


def first_reaching(curve, target: float) -> int | None:
    """The first index of ``curve`` at or above ``target`` (None: never)."""
    hits = np.flatnonzero(np.asarray(curve) >= target)
    return int(hits[0]) if hits.size else None


def esteps_per_iteration(n_esteps: int | None, n_iter: int) -> float:
    """A method's E-steps per iteration, the start's aside: ``(n_esteps - 1) / n_iter``
    (exactly 1 for EM; an average for the accelerations); 1 when not counted."""
    return (n_esteps - 1) / max(n_iter, 1) if n_esteps else 1.0


def reach(curve, target: float, seconds_per_iteration: float, start_seconds: float,
          esteps_per_iter: float = 1.0, esteps=None) -> dict:
    """``reached_target``, ``target_met_at_start`` and, when reached,
    ``iterations_to_target``, ``ms_to_target`` (start + iterations x per-iteration)
    and ``esteps_to_target``: the fit's own count when it kept one per curve point
    (``esteps``, ``FitResult.esteps``), else the start's E-step + iterations x E-steps
    per iteration."""
    hit = first_reaching(curve, target)
    out = {"reached_target": float(hit is not None), "target_met_at_start": float(hit == 0)}
    if hit is not None:
        out["iterations_to_target"] = hit
        out["ms_to_target"] = 1e3 * (start_seconds + hit * seconds_per_iteration)
        counted = esteps is not None and hit < len(esteps) and esteps[hit] >= 0
        out["esteps_to_target"] = float(esteps[hit]) if counted else 1 + hit * esteps_per_iter
    return out


def time_to_target(curves: dict, seconds_per_iteration: dict, target_gap: float,
                   start_seconds: float = 0.0, esteps_per_iter: dict | None = None,
                   esteps: dict | None = None):
    """``({method: metrics}, target)`` for curves ``curve[:n_iter + 1]`` (see module);
    ``esteps``: each method's E-steps per curve point, where counted."""
    best = max(float(c[-1]) for c in curves.values())
    target = best - target_gap
    per, counts = esteps_per_iter or {}, esteps or {}
    return {method: {"final_gap": best - float(curve[-1]),
                     **reach(curve, target, seconds_per_iteration[method], start_seconds,
                             per.get(method, 1.0), counts.get(method))}
            for method, curve in curves.items()}, target


NEVER = 1e300  # stands for inf (never reached) while quantiles interpolate


def quartiles(values) -> tuple[float, float, float]:
    """(q25, median, q75) of ``values`` where ``inf`` means never: a quartile that is
    never, or falls between a value and a never, is ``inf`` (NumPy's interpolation
    would give ``0 x inf = nan`` there)."""
    finite = np.minimum(np.asarray(values, dtype=float), NEVER)
    q = np.percentile(finite, [25, 50, 75])
    return tuple(float(v) if v < NEVER / 2 else float("inf") for v in q)


def reference_method(methods) -> str:
    """The method every other is aligned to: EM when compared, else the first."""
    return "em" if "em" in methods else list(methods)[0]


def alignment(params: dict) -> dict:
    """``{"reference": name, "distance": ..., "methods": {method: gaps}}`` with every
    method's components matched to the reference method's (``parameter_gaps``)."""
    ref = reference_method(params)
    return {"reference": ref, "distance": "bhattacharyya",
            "methods": {m: parameter_gaps(params[ref], p) for m, p in params.items()}}


# What the parent run shows of each method's summary (the children have the rest), by
# metric name (``experiments.summary.scalars``: times in milliseconds).
COMPARED = ("final_log_likelihood", "n_iter", "n_esteps", "ms_per_iteration", "fit_ms",
            "compile_ms", "capped")


def per_method_metrics(summaries: dict, to_target: dict, aligned: dict) -> dict:
    """``{"<name>/<method>": value}`` for the parent run: every method's ``COMPARED``
    summary values, time to target and parameter gaps."""
    out = {}
    for method, summary in summaries.items():
        gaps = aligned["methods"][method]
        values = {**{k: summary[k] for k in COMPARED if k in summary}, **to_target[method],
                  **{k: v for k, v in gaps.items() if k != "permutation"}}
        out.update({f"{name}/{method}": value for name, value in values.items()})
    return out
