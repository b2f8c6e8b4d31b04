"""The addresses of the MLflow UI's metric page that compare.py prints and links to.

What can be checked without a browser: the address carries the state the page reads
(runs, experiment, metric keys, x-axis) as JSON. compare.py logs every curve it names.
The parent run's description links to it. (The page itself was checked in headless
Chromium against MLflow 3.17.2. See experiments/ui_layout.py.)
"""

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from experiments import ui_layout

ROOT = Path(__file__).resolve().parents[1]

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


# --------------------------------------------------------------- compare.py, logged


@pytest.fixture(scope="module")
def cfg_factory():
    from experiments import configs

    configs.register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        yield lambda *overrides: compose("config", overrides=list(overrides))
    GlobalHydra.instance().clear()


def test_compare_links_one_chart_of_every_curve(cfg_factory, tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    from experiments import compare

    monkeypatch.chdir(tmp_path)  # the sqlite store's artifacts go under ./mlruns
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = cfg_factory(f"tracking.uri={uri}", "tracking.run_name=ui-layout-test",
                      "algorithm.max_iter=30")
    summary = compare.run(cfg)
    parent, exp_id = summary["run_id"], summary["experiment_id"]
    client = MlflowClient(uri)

    states = [ui_layout.parse_overlay(f) for f in summary["charts"].values()]
    assert [s["plot_metric_keys"] for s in states] == [
        ["log_likelihood/em", "log_likelihood/adam"],
        ["log_likelihood_by_ms/em", "log_likelihood_by_ms/adam"],
    ]
    for state in states:
        assert state["runs"] == [parent] and state["experiments"] == [exp_id]
        assert state["x_axis"] == "step"
        first = set()
        for key in state["plot_metric_keys"]:  # every curve named is on the run
            history = client.get_metric_history(parent, key)
            assert len(history) >= 2, key
            first.add(min(history, key=lambda m: m.step).value)
        assert len(first) == 1  # one shared start

    description = client.get_run(parent).data.tags["mlflow.note.content"]
    links = dict(re.findall(r"\[([^\]]+)\]\(([^)]+)\)", description))
    assert list(links.values()) == list(summary["charts"].values())
    assert all(SAFE_ADDRESS.match(target) for target in links.values())
    assert len(description) < 8000  # MLflow's limit on a tag's value

    compare.print_how_to_look(summary)
    out = capsys.readouterr().out
    for fragment in summary["charts"].values():
        assert f"http://127.0.0.1:5000/{fragment}" in out
    assert "model-metrics" in out
