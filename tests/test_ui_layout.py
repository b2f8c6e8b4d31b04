"""The addresses of the MLflow UI's metric page that compare.py prints and links to.

What can be checked without a browser: the address carries the state the page reads
(runs, experiment, metric keys, x-axis) as JSON. That compare.py logs every curve it
names and links them from the parent's description is checked on a real run in
tests/test_experiments.py. (The page itself was checked in headless Chromium against
MLflow 3.17.2. See experiments/ui_layout.py.)
"""

import re

import pytest

from experiments import ui_layout

# A markdown link's target ends at ")" or a space; the UI parses the query with `qs`.
SAFE_ADDRESS = re.compile(r"^#/metric/\?[A-Za-z0-9_%.=&~-]+$")


def test_fragment_carries_the_chart_as_json():
    keys = ["log_likelihood/em", "log_likelihood/adam"]
    fragment = ui_layout.overlay_fragment(["abc123"], 7, keys)
    assert SAFE_ADDRESS.match(fragment), fragment
    state = ui_layout.parse_overlay(fragment)
    assert state["runs"] == ["abc123"]
    assert state["experiments"] == ["7"]
    assert state["plot_metric_keys"] == keys
    assert state["metric"] == keys[0]
    assert state["x_axis"] == "step" and state["line_smoothness"] == "0"
    assert state["workflowType"] == "machine_learning"
    assert state["deselected_curves"] == [] and state["plot_layout"] == {}


def test_url_is_base_plus_fragment():
    url = ui_layout.overlay_url("http://127.0.0.1:5000/", ["r1", "r2"], "1", ["loss"],
                                x_axis="relative")
    assert url.startswith("http://127.0.0.1:5000/#/metric/?runs=")
    state = ui_layout.parse_overlay(url)
    assert state["runs"] == ["r1", "r2"] and state["x_axis"] == "relative"


@pytest.mark.parametrize("kwargs, message", [
    ({"run_ids": [], "metric_keys": ["a"]}, "at least one"),
    ({"run_ids": ["r"], "metric_keys": []}, "at least one"),
    ({"run_ids": ["r"], "metric_keys": ["a"], "x_axis": "iteration"}, "x_axis"),
])
def test_bad_requests_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ui_layout.overlay_fragment(experiment_id="1", **kwargs)


def test_parse_refuses_other_pages():
    with pytest.raises(ValueError, match="metric page"):
        ui_layout.parse_overlay("http://h/#/experiments/1/runs/abc/model-metrics")


def test_description_links_every_chart():
    text = ui_layout.run_description("EM vs Adam.", {"A": "#/metric/?x=1", "B": "#/metric/?y=2"})
    assert text.splitlines()[0] == "EM vs Adam."
    assert re.findall(r"\[([^\]]+)\]\(([^)]+)\)", text) == [("A", "#/metric/?x=1"),
                                                             ("B", "#/metric/?y=2")]
