"""Addresses in the MLflow 3.17 UI that draw several curves in one chart.

The run page's "Model metrics" tab can't be set up to overlay curves from Python. It
draws one chart per metric key, grouped into sections by the key's prefix
(``log_likelihood (2)``). The chart layout lives only in the browser's localStorage
(``MLflowLocalStorage-1.1-RunPage-<run_id>-model-chartUIState``), so no run tag,
experiment tag or URL parameter changes it.

The UI's metric page takes its whole state from the address, so a script can build it.
This is the page that the UI's own "Compare runs" metric table links to:

    <ui>/#/metric/?runs=["<run_id>"]&experiments=["<exp>"]
                   &plot_metric_keys=["log_likelihood/em","log_likelihood/adam"]&x_axis=step...

It draws every key in ``plot_metric_keys`` for every run in ``runs`` in one chart.
Nothing has to be written to the store for it to work. ``compare.py`` prints this
address and links to it from the parent run's description (the run page's Overview tab).
"""

import json
from urllib.parse import parse_qs, quote

# Turns the sidebar to "Model training". Without it the metric page shows the GenAI
# sidebar.
WORKFLOW = "machine_learning"
# Values of the metric page's x-axis selector.
X_AXES = ("step", "wall", "relative")
# Every parameter the UI's own link to the metric page sets, in the order it sets them.
_PARAMS = ("runs", "metric", "experiments", "plot_metric_keys", "plot_layout", "x_axis",
           "y_axis_scale", "line_smoothness", "show_point", "deselected_curves",
           "last_linear_y_axis_range", "workflowType")


def _json(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def overlay_fragment(run_ids, experiment_id, metric_keys, *, x_axis: str = "step") -> str:
    """The address (from ``#`` on) of one chart of ``metric_keys`` for ``run_ids``.

    Relative to the UI's root, so it works as a link in a run's description whatever
    host and port the UI is served on.
    """
    run_ids, metric_keys = [str(r) for r in run_ids], [str(k) for k in metric_keys]
    if not run_ids or not metric_keys:
        raise ValueError("need at least one run id and one metric key")
    if x_axis not in X_AXES:
        raise ValueError(f"x_axis must be one of {X_AXES}, not {x_axis!r}")
    values = {
        "runs": _json(run_ids),
        "metric": _json(metric_keys[0]),
        "experiments": _json([str(experiment_id)]),
        "plot_metric_keys": _json(metric_keys),
        "plot_layout": "{}",
        "x_axis": x_axis,
        "y_axis_scale": "linear",
        "line_smoothness": "0",  # the raw curves
        "show_point": "false",
        "deselected_curves": "[]",
        "last_linear_y_axis_range": "[]",
        "workflowType": WORKFLOW,
    }
    query = "&".join(f"{name}={quote(values[name], safe='')}" for name in _PARAMS)
    return f"#/metric/?{query}"


def overlay_url(base_url: str, run_ids, experiment_id, metric_keys, *,
                x_axis: str = "step") -> str:
    """The full address: ``base_url`` (the UI's root, e.g. ``http://127.0.0.1:5000``)
    plus ``overlay_fragment(...)``."""
    fragment = overlay_fragment(run_ids, experiment_id, metric_keys, x_axis=x_axis)
    return f"{base_url.rstrip('/')}/{fragment}"


def parse_overlay(address: str) -> dict:
    """What the metric page reads from an address that ``overlay_url`` or
    ``overlay_fragment`` made. JSON values come back decoded."""
    _, sep, fragment = address.partition("#")
    path, _, query = fragment.partition("?")
    if not sep or path.rstrip("/") != "/metric":
        raise ValueError(f"not an address of the metric page: {address!r}")
    raw = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
    out = dict(raw)
    for name in ("runs", "metric", "experiments", "plot_metric_keys", "plot_layout",
                 "deselected_curves", "last_linear_y_axis_range"):
        if name in raw:
            out[name] = json.loads(raw[name])
    return out


def run_description(title: str, charts: dict[str, str]) -> str:
    """Markdown for a run's description (tag ``mlflow.note.content``, shown on the
    Overview tab): ``title`` followed by one link per ``{label: fragment}``."""
    lines = [title, ""]
    lines += [f"- [{label}]({fragment})" for label, fragment in charts.items()]
    return "\n".join(lines)


def ui_base(tracking_uri: str) -> str:
    """The UI's root for a store: a server's own address, else ``mlflow ui``'s default
    ``http://127.0.0.1:5000`` (the command ``ui_command`` prints)."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return "http://127.0.0.1:5000"


def ui_command(tracking_uri: str) -> str | None:
    """The command that serves the UI on a local store (None for a server)."""
    if tracking_uri.startswith(("http://", "https://")):
        return None
    return (f".venv/bin/mlflow ui --backend-store-uri {tracking_uri} "
            "--host 127.0.0.1 --port 5000")


def print_ui_command(tracking_uri: str, run_id: str, what: str = "MLflow run") -> str:
    """Print ``what``, the run id, the store and (local store) the command that opens
    the UI; return the UI's root."""
    print(f"\n{what}: {run_id}  (store: {tracking_uri})")
    if command := ui_command(tracking_uri):
        print(f"Open the UI:  {command}")
    return ui_base(tracking_uri)


def run_page(base: str, experiment_id: str, run_id: str, tab: str = "model-metrics") -> str:
    """The address of a run's page in the UI's classic (machine learning) view."""
    return (f"{base}/#/experiments/{experiment_id}/runs/{run_id}/{tab}"
            f"?workflowType={WORKFLOW}")
