"""Plots of fits (matplotlib, imported on demand; the Agg backend, no screen needed).

Colours and numbers mean one thing per run: component ``j`` is "component j + 1" in
colour ``j`` (``component_colors``) for its points, ellipses and centre in
``plot_clusters`` and its bar in ``plot_weights``; in the curve plots each method keeps
its colour, marker and line style in every panel, and the method with the fewest
points is drawn on top, thinnest, so no curve hides another. Axes where one curve has
10 times the points of another are drawn on a symmetric-log x axis, so EM's few
iterations are not squeezed into a corner of an optimiser's hundreds of steps.
Titles and subtitles wrap to the figure's width, inside it.
"""

import numpy as np

from mogjax.align import full_covariances

LOG_X_RATIO = 10  # a log x axis when the longest curve is this many times the shortest
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def component_colors(n: int) -> list:
    """Colour ``j`` of ``n`` components (or methods): tab10, tab20 beyond 10."""
    cmap = _pyplot().get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


_colors = component_colors


def _finite(curve) -> np.ndarray:
    curve = np.asarray(curve, dtype=float)
    return curve[np.isfinite(curve)]


def _maybe_log_x(ax, lengths, smallest_step: float) -> None:
    """A symmetric-log x axis (linear below ``smallest_step``) when ``lengths`` differ
    by ``LOG_X_RATIO`` or more."""
    lengths = [v for v in lengths if v > 0]
    if lengths and max(lengths) >= LOG_X_RATIO * min(lengths):
        ax.set_xscale("symlog", linthresh=smallest_step)
        ax.set_xlim(left=0)


def _wrap(text: str, inches: float, fontsize: float = 10) -> str:
    """``text`` wrapped to lines that fit ``inches`` at ``fontsize`` points (a line of
    DejaVu Sans averages about 0.55 em per character; 0.62 leaves a margin)."""
    import textwrap

    width = max(20, int(inches * 72 / (0.62 * fontsize)))
    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


def _titles(fig, title: str, subtitle: str) -> None:
    """Title and subtitle, wrapped to the figure's width (the figure's constrained
    layout keeps them inside it, above the axes)."""
    text = "\n".join(_wrap(t, 0.95 * fig.get_figwidth()) for t in (title, subtitle) if t)
    if text:
        fig.suptitle(text, fontsize=10)


def _styles(lengths: list[int]) -> list[dict]:
    """Line styles for curves of ``lengths`` points: a marker and dash pattern each,
    the longest drawn first and widest, the shortest last and thinnest (on top), so
    curves that coincide all stay visible."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    styles = [{} for _ in lengths]
    for rank, i in enumerate(order):
        styles[i] = dict(marker=MARKERS[i % len(MARKERS)], ls=LINESTYLES[i % len(LINESTYLES)],
                         lw=1.5 + 0.9 * (len(lengths) - 1 - rank), zorder=2 + rank, mfc="none",
                         ms=7 - min(rank, 3), markevery=max(1, lengths[i] // 12))
    return styles


def _unit_label(units: dict) -> str:
    kinds = sorted(set(units.values()))
    if len(kinds) == 1:
        return kinds[0]
    return " / ".join(f"{u} ({', '.join(n for n, v in units.items() if v == u)})" for u in kinds)


def plot_curves(curves: dict, *, seconds: dict | None = None, units: dict | None = None,
                title: str = "", subtitle: str = "", target: float | None = None,
                ylabel: str = "mean log-likelihood (nats per sample)",
                start_seconds: float = 0.0):
    """Mean log-likelihood curves against iterations (and warm milliseconds).

    Args:
      curves: name -> 1-D array of mean log-likelihood, entry ``t`` after ``t``
        iterations or steps (NaN-padded ok).
      seconds: name -> warm seconds per iteration, for a second panel against time.
      start_seconds: where point 0 sits on the time axis (the shared start, timed
        apart: point t at start + t x seconds per iteration).
      units: name -> what one entry is (``"iteration"``, ``"step"``); default iteration.
      title, subtitle: the figure's title and a second line (e.g. the stopping rule).
      target: a value drawn as a dashed line (e.g. the target of time-to-target).
      ylabel: what the curves are.

    Returns:
      A matplotlib ``Figure``.
    """
    plt = _pyplot()
    units = {name: (units or {}).get(name, "iteration") for name in curves}
    ncols = 2 if seconds else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.5 * ncols, 4.8), squeeze=False,
                             layout="constrained")
    axes = axes[0]
    lengths, times = [], []
    finite = {name: _finite(curve) for name, curve in curves.items()}
    styles = _styles([len(c) for c in finite.values()])
    for (name, curve), color, style in zip(finite.items(), _colors(len(curves)), styles):
        steps = np.arange(len(curve))
        lengths.append(len(curve) - 1)
        label = f"{name}: {len(curve) - 1} {units[name]}s, final {curve[-1]:.6f}"
        same = [other for other, c in finite.items() if other != name and len(c) == len(curve)
                and np.allclose(c, curve, rtol=0, atol=1e-7 * max(1.0, abs(curve[-1])))]
        if same and style["zorder"] > max(styles[list(finite).index(o)]["zorder"] for o in same):
            label += f" (on top of {', '.join(same)}: the same values)"
        axes[0].plot(steps, curve, color=color, label=label, **style)
        if seconds:
            ms = (start_seconds + steps * seconds[name]) * 1e3
            times.append((ms[-1], ms[1] if len(ms) > 1 else ms[-1]))
            axes[1].plot(ms, curve, color=color, label=name, **style)
    axes[0].set_xlabel(_unit_label(units))
    _maybe_log_x(axes[0], lengths, 1.0)
    if seconds:
        axes[1].set_xlabel("warm milliseconds (point t at start + t x time per iteration)"
                           if start_seconds else
                           "warm milliseconds (iteration t at t x warm total / iterations)")
        _maybe_log_x(axes[1], [t for t, _ in times], min(s for _, s in times) or 1e-3)
    for ax in axes:
        if target is not None:
            ax.axhline(target, color="0.4", ls="--", lw=1, label="target")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _titles(fig, title, subtitle)
    return fig


def _ellipse(ax, mean, cov, color):
    from matplotlib.patches import Ellipse

    vals, vecs = np.linalg.eigh(cov)
    angle = np.degrees(np.arctan2(vecs[1, -1], vecs[0, -1]))
    for n_std, ls in ((1.0, "-"), (2.0, "--")):
        width, height = 2 * n_std * np.sqrt(np.maximum(vals[::-1], 0))
        ax.add_patch(Ellipse(mean, width, height, angle=angle, fill=False, color=color, lw=1.5,
                             ls=ls))


def plot_clusters(x, labels, *, params=None, modes=None, title: str = "",
                  xlabel: str = "x1", ylabel: str = "x2", min_weight: float | None = None):
    """2-D points coloured by assignment, with each component's 1 sigma (solid) and
    2 sigma (dashed) ellipses and centre (a mixture's ``params``) or each cluster's
    mode (mean shift's ``modes``), all of component ``j`` in colour ``j``.

    Args:
      min_weight: components of weight at most this (a variational fit's switched-off
        components) get no ellipse or centre; the legend says which were left out.

    Returns:
      A matplotlib ``Figure``.
    """
    from matplotlib.lines import Line2D

    plt = _pyplot()
    x, labels = np.asarray(x), np.asarray(labels)
    centres = np.asarray(params.means if params is not None else modes)
    colors = _colors(len(centres))
    fig, ax = plt.subplots(figsize=(6.5, 5.2), layout="constrained")
    ax.scatter(x[:, 0], x[:, 1], c=[colors[j] for j in labels], s=9, alpha=0.6, lw=0)
    weights = np.asarray(params.weights) if params is not None else None
    covs = full_covariances(params) if params is not None else None
    left_out = []
    for j, centre in enumerate(centres):
        if weights is not None and min_weight is not None and weights[j] <= min_weight:
            left_out.append(j + 1)
            continue
        if covs is not None:
            _ellipse(ax, centre[:2], covs[j][:2, :2], colors[j])
        label = (f"component {j + 1} (weight {weights[j]:.2f})" if weights is not None
                 else f"mode {j + 1} ({int(np.sum(labels == j))} points)")
        ax.plot(*centre[:2], marker="X", ms=12, color=colors[j], mec="black", ls="", label=label)
    handles, names = ax.get_legend_handles_labels()
    if covs is not None:
        handles += [Line2D([], [], color="0.3", ls="-"), Line2D([], [], color="0.3", ls="--")]
        names += ["solid ellipse: 1 sigma", "dashed ellipse: 2 sigma"]
    if left_out:
        handles.append(Line2D([], [], ls=""))
        names.append(_wrap(f"not drawn: {len(left_out)} component"
                           f"{'s' if len(left_out) > 1 else ''} of weight <= {min_weight:g} "
                           f"({', '.join(map(str, left_out))})", 2.6, 8))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(_wrap(title, 6.0), fontsize=10)
    ax.legend(handles, names, fontsize=8, loc="best")
    return fig


def plot_metric_against(xs, ys, *, xlabel: str, ylabel: str, title: str = "",
                        integer_x: bool = False, best: str | None = None):
    """One metric against a swept value (e.g. BIC against k); several runs per value
    are points, the line joins the best per value.

    Args:
      integer_x: ticks at the swept values only (e.g. integer k).
      best: ``"min"`` or ``"max"``: mark and name the value of the best run.
    """
    plt = _pyplot()
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    pick = np.min if best != "max" else np.max
    values = np.unique(xs)
    line = np.array([pick(ys[xs == v]) for v in values])
    fig, ax = plt.subplots(figsize=(5.5, 4.2), layout="constrained")
    ax.plot(xs, ys, "o", color="C0", alpha=0.4, label="runs")
    ax.plot(values, line, "-", color="C0")
    if best:
        i = int(np.argmin(line) if best == "min" else np.argmax(line))
        shown = f"{values[i]:g}"
        ax.plot(values[i], line[i], "o", ms=14, mfc="none", mec="C3", mew=2,
                label=f"chosen {xlabel.split(' (')[0]} = {shown} "
                      f"({'lowest' if best == 'min' else 'highest'} {ylabel.split(' (')[0]})")
    if integer_x:
        ax.set_xticks(values)
        ax.set_xticklabels([f"{v:g}" for v in values])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(_wrap(title, 5.0), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_weights(weights, threshold: float, *, title: str = ""):
    """The mixing weights as bars, heaviest first, each labelled with its component's
    number and drawn in its colour as in ``plot_clusters`` (component ``j`` is
    "j + 1", colour ``j``); bars at or below ``threshold`` (the weight of an effective
    component, a variational fit's) are hatched and faint, the threshold drawn."""
    from matplotlib.patches import Patch

    plt = _pyplot()
    w = np.asarray(weights, dtype=float)
    order = np.argsort(-w, kind="stable")
    colors = _colors(len(w))
    fig, ax = plt.subplots(figsize=(5.5, 4.2), layout="constrained")
    for pos, j in enumerate(order, start=1):
        kept = w[j] > threshold
        ax.bar(pos, w[j], color=colors[j], alpha=1.0 if kept else 0.35,
               hatch=None if kept else "//", edgecolor="0.3" if not kept else colors[j])
        if kept:
            ax.annotate(f"{w[j]:.2f}", (pos, w[j]), ha="center", va="bottom", fontsize=8,
                        xytext=(0, 2), textcoords="offset points")
    ax.axhline(threshold, color="C3", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set(xlabel="component (numbered as in clusters.png), heaviest first",
           ylabel="posterior mean weight", xticks=np.arange(1, len(w) + 1),
           xticklabels=[str(j + 1) for j in order])
    handles, names = ax.get_legend_handles_labels()
    if np.any(w <= threshold):
        handles.append(Patch(facecolor="0.8", hatch="//", edgecolor="0.3"))
        names.append(f"at or below the threshold: not drawn in clusters.png")
    ax.set_title(_wrap(title, 5.0), fontsize=10)
    ax.legend(handles, names, fontsize=8)
    return fig


def plot_k_choices(bic_by_k: dict, kept_by_cap: dict, *, subtitle: str = ""):
    """Two ways of choosing k side by side: BIC against k (EM, the lowest marked) and
    the components a Dirichlet-process fit keeps against the most it may use.
    ``subtitle``: what was fitted (data set, covariance type)."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.4), layout="constrained")
    ks = sorted(bic_by_k)
    best = min(bic_by_k, key=bic_by_k.get)
    left.plot(ks, [bic_by_k[k] for k in ks], "o-", color="C0")
    left.plot(best, bic_by_k[best], "o", ms=14, mfc="none", mec="C3", mew=2,
              label=f"BIC's choice: k = {best}")
    left.set(xlabel="k (EM)", ylabel="BIC (lower is better)", xticks=ks, title="EM: BIC against k")
    caps = sorted(kept_by_cap)
    kept = int(kept_by_cap[caps[-1]])
    right.plot(caps, [kept_by_cap[c] for c in caps], "o-", color="C1",
               label="components kept")
    right.plot(caps, caps, ":", color="0.5", label="the cap")
    right.set(xlabel="k (the most components the posterior may use)",
              ylabel="components above the threshold", xticks=caps,
              title="Dirichlet process: components kept")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _titles(fig, f"Dirichlet process keeps {kept} components; BIC chooses k = {best}",
            subtitle)
    return fig
