"""What a reader sees in the plots (mogjax.plotting): titles inside the figure, one
number and colour per component in every plot of a run, switched-off components left
out and said so, no curve hidden under another, the ellipses explained."""

import numpy as np
import pytest
from matplotlib.colors import to_rgba

from mogjax.mixture import MixtureParams
from mogjax.plotting import plot_clusters, plot_curves, plot_weights

RULE = ("Every method stops after a gain in mean log-likelihood below 1e-05 nats per "
        "sample, or after at most 1000 iterations (EM) or steps (gradient)")


def inside(fig, text) -> bool:
    renderer = fig.canvas.get_renderer()
    box, frame = text.get_window_extent(renderer), fig.bbox
    return box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y1 <= frame.y1


def test_long_title_and_subtitle_stay_inside_the_figure():
    fig = plot_curves({"em": np.linspace(-5, -4, 9)}, units={"em": "iteration"},
                      title="em on faithful, k=2, full covariances: final mean "
                            "log-likelihood -4.155382 after 9 iterations", subtitle=RULE)
    fig.canvas.draw()
    assert inside(fig, fig._suptitle), fig._suptitle.get_text()
    assert "every method stops" in " ".join(fig._suptitle.get_text().split()).lower()


def test_coinciding_curves_stay_visible():
    """Same values: the later one is drawn on top, thinner, with another marker, and
    its legend entry says so."""
    c = np.linspace(-5, -4, 6)
    fig = plot_curves({"em": c, "adam": np.linspace(-5, -4, 200), "lbfgs": c.copy()},
                      units={"em": "iteration", "adam": "step", "lbfgs": "step"})
    lines = {line.get_label().split(":")[0]: line for line in fig.axes[0].lines}
    em, lbfgs = lines["em"], lines["lbfgs"]
    assert lbfgs.get_zorder() > em.get_zorder() and lbfgs.get_linewidth() < em.get_linewidth()
    assert lbfgs.get_marker() != em.get_marker() and lbfgs.get_linestyle() != em.get_linestyle()
    assert "on top of em" in lbfgs.get_label()


def params(weights):
    k = len(weights)
    means = np.stack([np.arange(k) * 3.0, np.zeros(k)], axis=1)
    return MixtureParams.from_covariances(np.asarray(weights), means, np.ones(k), "spherical")


def test_clusters_leave_out_switched_off_components_and_explain_the_ellipses():
    p = params([0.5, 0.0005, 0.4995])
    x = np.array([[0.1, 0.0], [6.1, 0.2]])
    fig = plot_clusters(x, np.array([0, 2]), params=p, min_weight=0.01, title="t")
    ax = fig.axes[0]
    assert len(ax.patches) == 4  # 1 and 2 sigma ellipses of components 1 and 3 only
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:2] == ["component 1 (weight 0.50)", "component 3 (weight 0.50)"]
    assert "solid ellipse: 1 sigma" in legend and "dashed ellipse: 2 sigma" in legend
    assert any("not drawn: 1 component of weight <= 0.01 (2)" in " ".join(t.split())
               for t in legend)


def test_weights_number_and_colour_components_as_the_clusters_do():
    w = np.array([0.2, 0.0, 0.7, 0.1])
    fig = plot_weights(w, 0.01)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["3", "1", "4", "2"]
    clusters = plot_clusters(np.zeros((4, 2)), np.arange(4), params=params(w / w.sum()))
    centre = {line.get_label().split(" (")[0]: to_rgba(line.get_color())[:3]
              for line in clusters.axes[0].lines}
    bars = ax.patches
    for bar, number in zip(bars, ["3", "1", "4", "2"]):
        assert np.allclose(bar.get_facecolor()[:3], centre[f"component {number}"])
    assert bars[3].get_alpha() == pytest.approx(0.35)  # component 2, weight 0: faint
