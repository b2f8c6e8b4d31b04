"""Re-run a logged run and check that it reproduces, bit for bit.

    python experiments/rerun.py RUN_ID [--tracking-uri URI]

Reads the run's resolved config (``config.yaml``; a child of ``compare.py`` has its
own, with its method's settings; runs logged before that fall back to their parent's),
its package versions (``environment.json``), its source files' hashes
(``sources.json``) and its data hash; loads the same data, fits again with the same
seed, and compares the logged curve (and ``params.npz``) with the new ones. Exit
status 0 when they are identical, 1 when they differ or the data changed. Nothing is
logged. Every kind of fit run re-runs (EM and its accelerations, gradient ascent, mean
shift, variational); a run that did not finish (``RUNNING``, ``KILLED``, ``FAILED``)
is refused, naming its status.

Same config, seed, data, code, package versions and machine give bit-identical
results; when the numbers differ the script names what else differs: the data (its
hash), the files changed since the logged run (or, for runs without
``sources.json``, since its git commit), the package versions, the machine.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def _download(client, run_id: str, name: str) -> Path | None:
    from mlflow.exceptions import MlflowException

    if name not in {a.path for a in client.list_artifacts(run_id)}:
        return None
    try:
        return Path(client.download_artifacts(run_id, name, tempfile.mkdtemp()))
    except MlflowException:
        return None


def logged_run(client, run_id: str) -> dict:
    """What the run logged that a re-run needs: config, method, environment, data hash."""
    run = client.get_run(run_id)
    if run.info.status != "FINISHED":
        what = {"RUNNING": "is still running (or its process died: python -m experiments.reap "
                           "marks it KILLED)",
                "SCHEDULED": "has not started"}.get(run.info.status,
                                                  f"ended {run.info.status}")
        raise ValueError(f"run {run_id} {what}: only a FINISHED run has a complete record "
                         "to compare a re-run with")
    tags = run.data.tags
    method = tags.get("method")
    if method is None or method == "compare" or tags.get("sweep_parent") == "true":
        raise ValueError(f"run {run_id} has no single method to re-run (a compare or sweep "
                         "parent?); re-run one of its children")
    config = _download(client, run_id, "config.yaml")
    parent = tags.get("mlflow.parentRunId")
    if config is None and parent:  # an older compare child: the config is on its parent
        config = _download(client, parent, "config.yaml")
    if config is None:
        raise ValueError(f"run {run_id} has no config.yaml (nor has its parent)")
    env = _download(client, run_id, "environment.json") or (
        _download(client, parent, "environment.json") if parent else None)
    sources = _download(client, run_id, "sources.json")
    key = CURVES.get(method, "log_likelihood")
    history = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
    return {
        "config": config.read_text(), "method": method, "tags": tags,
        "environment": json.loads(env.read_text()) if env else {},
        "sources": json.loads(sources.read_text()) if sources else None,
        "curve_key": key, "curve": np.array([m.value for m in history], np.float64),
        "params": _download(client, run_id, "params.npz"),
    }


# The curve each kind of run logs (fits of a mixture: log_likelihood).
CURVES = {"meanshift": "max_shift", "variational": "lower_bound"}


def fit_again(config_text: str, method: str):
    """``(curve, params or None, data_hash)`` from a fresh fit of the logged config."""
    from omegaconf import OmegaConf

    from experiments import common, configs

    raw = OmegaConf.create(config_text)
    if "data" in raw and "source" not in raw.data:  # logged before data.source: name was it
        raw.data.source = raw.data.name
    cfg = OmegaConf.merge(OmegaConf.structured(configs.Config), raw)
    cfg.tracking.enabled = False
    configs.validate(cfg)
    with common.precision(cfg):  # the logged precision key, where the run had one
        return _fit(cfg, method)


def _fit(cfg, method: str):
    from experiments import common

    data = common.load_data(cfg)
    if method == "meanshift":
        result, _ = common.fit_mean_shift(cfg, data.x, data.weights)
        curve, params = result.curve[1 : int(result.n_iter) + 1], None
    elif method == "variational":  # the lower bound per sample, as variational.log_fit logs it
        from experiments import variational

        result, _ = variational.fit(cfg, data.x)
        curve = np.asarray(result.curve[: int(result.n_iter) + 1]) / data.x.shape[0]
        params = result.params
    else:
        result, _ = common.fit_mixture(cfg, data.x, method, data.weights)
        curve, params = result.curve[: int(result.n_iter) + 1], result.params
    return np.asarray(curve, np.float64), params, data.hash()


def environment_differences(logged: dict) -> list[str]:
    from experiments.provenance import environment

    now = environment()
    diffs = [f"{name}: {version} then, {now['packages'].get(name)} now"
             for name, version in logged.get("packages", {}).items()
             if now["packages"].get(name) != version]
    for key in ("python", "platform", "jax_backend", "jax_devices", "xla_flags"):
        if key in logged and logged[key] != now[key]:
            diffs.append(f"{key}: {logged[key]!r} then, {now[key]!r} now")
    return diffs


def compare(logged: dict, curve, params, data_hash: str) -> list[str]:
    """What differs between the logged run and the re-run (empty: identical)."""
    problems = []
    if logged["tags"].get("data_hash") not in (None, data_hash):
        problems.append(f"the data changed: hash {data_hash}, logged {logged['tags']['data_hash']}")
    old = logged["curve"]
    if old.shape != curve.shape:
        problems.append(f"{logged['curve_key']}: {curve.size} points, logged {old.size}")
    elif not np.array_equal(old, curve):
        problems.append(f"{logged['curve_key']} differs: max |difference| "
                        f"{np.max(np.abs(old - curve)):.3e} over {curve.size} points")
    if params is not None and logged["params"] is not None:
        with np.load(logged["params"], allow_pickle=False) as saved:
            for name in ("log_weights", "means", "prec_chol"):
                new = np.asarray(getattr(params, name))
                if saved[name].shape != new.shape or not np.array_equal(saved[name], new):
                    problems.append(f"parameter {name} differs")
    return problems


def code_differences(logged: dict) -> list[str]:
    """The files changed since the logged run: from its ``sources.json``, else (older
    runs) ``git diff`` against its commit."""
    from experiments.provenance import ROOT, SOURCES, changed_sources, git_info, source_files

    if logged["sources"] is not None:
        return changed_sources(logged["sources"], source_files())
    commit = logged["tags"].get("git_commit")
    if not commit or commit == git_info().get("git_commit") and git_info().get("git_dirty") == "false":
        return []
    folders = sorted({folder for folder, _ in SOURCES})
    diff = subprocess.run(["git", "-C", str(ROOT), "diff", "--name-only", commit, "--", *folders],
                          capture_output=True, text=True, timeout=30)
    if diff.returncode != 0:
        return [f"(the logged commit {commit} is not in this checkout)"]
    return [f"{path} (changed since commit {commit[:12]})" for path in diff.stdout.split()]


def causes(logged: dict) -> list[str]:
    """What differs between the logged run and this re-run, besides the numbers."""
    out = []
    if changed := code_differences(logged):
        out.append(f"the code changed since the logged run: {', '.join(changed)}")
    if logged["tags"].get("git_dirty") == "true" and logged["sources"] is None:
        out.append(f"the logged run came from a modified checkout of "
                   f"{logged['tags'].get('git_commit')} (its changes were not recorded)")
    if versions := environment_differences(logged["environment"]):
        out.append(f"the environment differs: {'; '.join(versions)}")
    if logged["tags"].get("batched") == "true":
        out.append("the logged run came from a batch of seeds (n_seeds): one vmapped program, "
                   "which a single fit reproduces to rounding only")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="experiments/rerun.py", description=__doc__.split("\n")[0])
    parser.add_argument("run_id")
    parser.add_argument("--tracking-uri", default=None,
                        help="the store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    args = parser.parse_args(argv)

    import jax
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from experiments import store

    uri = store.resolve_uri(args.tracking_uri)
    try:
        store.mlflow_defaults()
        store.check(uri)
        logged = logged_run(MlflowClient(uri), args.run_id)
    except (MlflowException, ValueError, store.TrackingUnavailable) as err:
        print(f"error: {store.first_line(err)}", file=sys.stderr)
        return 1
    # The logged run's precision, as a context (flipping the global flag after arrays
    # exist is unsupported in JAX and can break later compilations in this process).
    try:
        with jax.enable_x64(bool(logged["environment"].get("jax_enable_x64", False))):
            curve, params, data_hash = fit_again(logged["config"], logged["method"])
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    problems = compare(logged, curve, params, data_hash)
    if not problems:
        print(f"reproduced run {args.run_id}: {logged['curve_key']} ({curve.size} points)"
              + (" and parameters" if params is not None else "") + " identical, bit for bit")
        return 0
    print(f"run {args.run_id} did not reproduce:", *problems, sep="\n  ")
    if found := causes(logged):
        print("what else differs from the logged run:", *found, sep="\n  ")
    return 1


if __name__ == "__main__":
    sys.exit(main())
