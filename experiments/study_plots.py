"""The pictures of a study (``experiments.study``): what it cost each method to reach
each setting's target, and how each method closed the gap.

- ``plot_settings``: iterations, milliseconds and E-steps to target against the swept
  setting (its numeric key with the most values on the x axis; a row of panels per
  combination of the other swept keys), a point per seed, the median with its
  interquartile range, runs that never reached the target drawn as crosses on the
  "never" line at the top.
- ``plot_curves``: the gap to each setting's best value on a log axis (a row per
  setting) against iterations or steps and against warm milliseconds, median over the
  seeds with an interquartile band, the target drawn; one x-scale rule for every
  panel (logarithmic), line styles and markers so that no method hides another.
"""

import numpy as np

from experiments.comparison import quartiles
from experiments.configs import plain

STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _color(i: int):
    return _pyplot().get_cmap("tab10")(i % 10)


def _number(value: str) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def what_was_fitted(config) -> str:
    """``k=5, full covariances, float64`` from the sweep's config (``swept`` where a
    sweep sets them per job)."""
    from experiments.configs import sweep_overrides, swept_keys

    swept = swept_keys(sweep_overrides(config))
    k = "k swept" if "model.k" in swept else f"k={config.model.k}"
    cov = ("covariance type swept" if "model.covariance_type" in swept
           else f"{plain(config.model.covariance_type)} covariances")
    precision = config.get("precision")
    return f"{k}, {cov}" + (f", {plain(precision)}" if precision is not None else "")


def _axis_key(summary: dict) -> str | None:
    """The swept key drawn on the x axis: numeric in every setting, most values."""
    values = [e["values"] for e in summary["settings"].values()]
    numeric = [k for k in summary["swept"]
               if values and all(_number(v.get(k)) is not None for v in values)]
    return max(numeric, key=lambda k: len({v[k] for v in values}), default=None)


def _panels(summary: dict, axis: str | None) -> dict:
    """``{panel name: [(x, setting name, entry)]}``: the settings split by the swept
    keys other than ``axis``."""
    out = {}
    for i, (name, entry) in enumerate(summary["settings"].items()):
        others = {k: v for k, v in entry["values"].items() if k != axis} if axis else {}
        panel = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in others.items())
        x = _number(entry["values"][axis]) if axis else i
        out.setdefault(panel or "all settings", []).append((x, name, entry))
    return out


def _plain_ticks(ax, x: bool = True, y: bool = True) -> None:
    """Log axes labelled ``0.5``, ``10``, ``1e+03`` at the decades, no minor labels."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    for on, axis in ((x, ax.xaxis), (y, ax.yaxis)):
        if on:
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())


QUANTITIES = (("iterations", "iterations or steps to target"),
              ("ms", "warm milliseconds to target"),
              ("esteps", "E-steps to target"))
# Where a zero count is drawn on the log axis (0 iterations: the start meets the target).
ZERO_AT = 0.5


def plot_settings(summary: dict, *, title: str = ""):
    """Cost to target against the swept setting (see module); a ``Figure``."""
    plt = _pyplot()
    axis = _axis_key(summary)
    panels = _panels(summary, axis)
    methods = list(dict.fromkeys(m for e in summary["settings"].values() for m in e["methods"]))
    fig, axes = plt.subplots(len(panels), 3, figsize=(15, 3.8 * len(panels) + 0.8),
                             squeeze=False, layout="constrained")
    for row, (panel, points) in zip(axes, panels.items()):
        xs = np.array([x for x, _, _ in points], dtype=float)
        log_x = axis is not None and np.all(xs > 0) and xs.max() / xs.min() >= 4
        for ax, (quantity, label) in zip(row, QUANTITIES):
            finite = [r[quantity] for _, _, e in points for v in e["methods"].values()
                      for r in v["per_run"] if r[quantity] is not None and r[quantity] > 0]
            top = 3 * max(finite, default=1.0)
            for i, method in enumerate(methods):
                offset = (i - (len(methods) - 1) / 2) * 0.06
                med_x, med_y, lo, hi = [], [], [], []
                for x, _, entry in points:
                    v = entry["methods"].get(method)
                    if v is None:
                        continue
                    xm = x * (1 + offset) if log_x else x + offset * (np.ptp(xs) or 1) * 0.5
                    runs = [r[quantity] for r in v["per_run"]] + [None] * v["failures"]
                    got = [max(r, ZERO_AT) for r in runs if r is not None]
                    ax.scatter([xm] * len(got), got, color=_color(i), alpha=0.35, s=14,
                               marker=MARKERS[i % len(MARKERS)])
                    never = len(runs) - len(got)
                    if never:
                        ax.scatter([xm], [top], color=_color(i), marker="x", s=40)
                        ax.annotate(str(never), (xm, top), fontsize=7, color=_color(i),
                                    xytext=(3, 3), textcoords="offset points")
                    q = _quartiles(runs)
                    if q is not None:
                        q25, q50, q75 = (max(v, ZERO_AT) for v in q)
                        med_x.append(xm)
                        med_y.append(q50)
                        lo.append(q50 - q25)
                        hi.append(q75 - q50 if np.isfinite(q75) else 0.0)
                ax.errorbar(med_x, med_y, yerr=[lo, hi], color=_color(i),
                            marker=MARKERS[i % len(MARKERS)],
                            ls=STYLES[i % len(STYLES)] if axis else "none",
                            capsize=3, lw=1.5, ms=7, label=f"{method} (median, IQR)")
            ax.axhline(top, color="0.5", lw=0.8, ls=":")
            ax.annotate("never reached (count)", (0.01, top), xycoords=("axes fraction", "data"),
                        fontsize=7, color="0.4", xytext=(0, -10), textcoords="offset points")
            ax.set_yscale("log")
            ax.set_ylim(bottom=0.8 * ZERO_AT if quantity != "ms" else None)
            _plain_ticks(ax, x=False)
            if log_x:
                ax.set_xscale("log")
                _plain_ticks(ax, y=False)
                ax.set_xticks(sorted(set(xs)))
            if axis is None:
                ax.set_xticks(xs)
                ax.set_xticklabels([n for _, n, _ in points], rotation=20, fontsize=7,
                                   ha="right")
                ax.set_xlim(-0.5, len(xs) - 0.5)
            ax.set_xlabel(axis.rsplit(".", 1)[-1] if axis else "setting")
            ax.set_ylabel(label)
            ax.set_title(panel, fontsize=9)
            ax.grid(alpha=0.3, which="both")
        row[0].legend(fontsize=7)
    fig.suptitle(f"{title}\nCost to each setting's target: a point per seed, the median "
                 "and interquartile range, crosses at the top for runs that never reached "
                 f"it (their count beside); 0 iterations (the start meets it) at {ZERO_AT:g}",
                 fontsize=10)
    return fig


def _quartiles(runs: list) -> tuple | None:
    """(q25, median, q75) with never-reached runs as inf; None when the median is."""
    if not runs:
        return None
    q = quartiles([np.inf if r is None else r for r in runs])
    return q if np.isfinite(q[1]) else None


def _held(curves: list) -> np.ndarray:
    """Curves of different lengths as rows of one array, each held at its last value."""
    curves = [np.asarray(c, dtype=float)[np.isfinite(c)] for c in curves]
    n = max(len(c) for c in curves)
    return np.stack([np.concatenate([c, np.full(n - len(c), c[-1])]) for c in curves])


def plot_curves(summary: dict, settings: dict, *, title: str = "", subtitle: str = ""):
    """The gap to each setting's best value against iterations and milliseconds (see
    module); ``settings`` as ``experiments.study.collect`` returns them."""
    plt = _pyplot()
    names = list(summary["settings"])
    methods = list(dict.fromkeys(m for e in summary["settings"].values() for m in e["methods"]))
    gap = summary["target_gap"]
    floor = gap * 1e-4
    fig, axes = plt.subplots(len(names), 2, figsize=(13, 3.4 * len(names) + 0.9),
                             squeeze=False, layout="constrained")
    for row, name in zip(axes, names):
        entry = summary["settings"][name]
        best = entry["best_final_log_likelihood"]
        for i, method in enumerate(methods):
            records = settings[name]["methods"].get(method, [])
            if not records or best is None:
                continue
            gaps = np.maximum(best - _held([r["curve"] for r in records]), floor)
            q25, q50, q75 = np.percentile(gaps, [25, 50, 75], axis=0)
            t = np.arange(gaps.shape[1])
            v = entry["methods"][method]
            ms = (v["median_init_ms"] or 0.0) + t * (v["median_ms_per_iteration"] or 0.0)
            style = dict(color=_color(i), ls=STYLES[i % len(STYLES)], lw=2.2 - 0.3 * (i % 4),
                         marker=MARKERS[i % len(MARKERS)], markevery=_mark_every(len(t), i),
                         ms=5, zorder=10 - i)
            label = f"{method} ({len(records)} runs)"
            for ax, x in zip(row, (t + 1, np.maximum(ms, 1e-4))):
                ax.plot(x, q50, label=label, **style)
                ax.fill_between(x, q25, q75, color=_color(i), alpha=0.12, lw=0)
        for ax, xlabel in zip(row, ("iterations or steps + 1", "warm milliseconds "
                                    "(start + iterations x per-iteration)")):
            ax.axhline(gap, color="0.3", ls="--", lw=1, label=f"target ({gap:g} below best)")
            ax.set_xscale("log")
            ax.set_yscale("log")
            _plain_ticks(ax)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("gap to the setting's best (nats per sample)")
            ax.set_title(name, fontsize=9)
            ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("\n".join(t for t in (title, "Gap to each setting's best final value: "
                                       "median over seeds, interquartile band", subtitle)
                           if t), fontsize=10)
    return fig


def _mark_every(n: int, i: int):
    """Markers at about 12 places on a log axis, shifted per method."""
    if n <= 1:
        return None
    places = np.unique(np.geomspace(1, n, 12).astype(int) - 1 + i % 3)
    return [int(p) for p in places if p < n]
