"""Plots of fits (matplotlib, imported on demand; the Agg backend, no screen needed)."""

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(curves: dict, *, seconds: dict | None = None, title: str = ""):
    """Mean log-likelihood curves, against iteration (and seconds when given).

    Args:
      curves: name -> 1-D array of mean log-likelihood per iteration (NaN-padded ok).
      seconds: name -> seconds per iteration, for a second panel against time.

    Returns:
      A matplotlib ``Figure``.
    """
    plt = _pyplot()
    ncols = 2 if seconds else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4), squeeze=False)
    for name, curve in curves.items():
        curve = np.asarray(curve, dtype=float)
        curve = curve[np.isfinite(curve)]
        axes[0, 0].plot(np.arange(len(curve)), curve, label=name)
        if seconds:
            axes[0, 1].plot(np.arange(len(curve)) * seconds[name], curve, label=name)
    axes[0, 0].set_xlabel("iteration")
    if seconds:
        axes[0, 1].set_xlabel("seconds")
    for ax in axes[0]:
        ax.set_ylabel("mean log-likelihood")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _ellipse(ax, mean, cov, color):
    from matplotlib.patches import Ellipse

    vals, vecs = np.linalg.eigh(cov)
    angle = np.degrees(np.arctan2(vecs[1, -1], vecs[0, -1]))
    for n_std in (1.0, 2.0):
        width, height = 2 * n_std * np.sqrt(np.maximum(vals[::-1], 0))
        ax.add_patch(Ellipse(mean, width, height, angle=angle, fill=False, color=color, lw=1.5))


def _full_covariances(params) -> np.ndarray:
    k, d = params.n_components, params.n_features
    cov = np.asarray(params.covariances)
    kind = params.covariance_type
    if kind == "full":
        return cov
    if kind == "tied":
        return np.broadcast_to(cov, (k, d, d))
    if kind == "diag":
        return np.stack([np.diag(c) for c in cov])
    return cov[:, None, None] * np.eye(d)


def plot_clusters(x, labels, *, params=None, modes=None, title: str = ""):
    """2-D points coloured by assignment, with component ellipses (1 and 2 sigma)
    for a mixture or crosses at mean-shift modes.

    Returns:
      A matplotlib ``Figure``.
    """
    plt = _pyplot()
    x = np.asarray(x)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(x[:, 0], x[:, 1], c=np.asarray(labels), cmap="tab10", s=8, alpha=0.7)
    colors = plt.get_cmap("tab10")
    if params is not None:
        covs = _full_covariances(params)
        for j, mean in enumerate(np.asarray(params.means)):
            _ellipse(ax, mean[:2], covs[j][:2, :2], colors(j % 10))
            ax.plot(*mean[:2], "k+", ms=12)
    if modes is not None:
        modes = np.asarray(modes)
        ax.plot(modes[:, 0], modes[:, 1], "kx", ms=12, mew=2)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_metric_against(xs, ys, *, xlabel: str, ylabel: str, title: str = ""):
    """One metric against a swept value (e.g. BIC against k)."""
    plt = _pyplot()
    order = np.argsort(xs)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(np.asarray(xs)[order], np.asarray(ys)[order], "o-")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
