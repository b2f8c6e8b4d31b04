"""Sweeps off this process and a team tracking server, with real components
(docs/cluster.md): Hydra's Ray launcher on a local Ray instance and on a running Ray
cluster joined by address; Submitit's local executor and the shipped Slurm config;
``scripts/tracking_server.py`` (PostgreSQL + ``mlflow server``) read back over REST.

Needs the ``cluster`` extra (pulled in by ``test``); the tracking-server test needs the
PostgreSQL server programs (``.ci/run`` installs them) and skips, saying why, without
(fails instead when ``MOGJAX_REQUIRE_POSTGRES=1``, as ``.ci/run`` sets).
"""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIT = str(ROOT / "experiments" / "fit.py")
TINY = ["data=faithful", "stop.max_iter=5"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra) -> dict[str, str]:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore",
           "RAY_USAGE_STATS_ENABLED": "0", **extra}
    for key in ("MLFLOW_TRACKING_URI", "MOGJAX_PARENT_RUN_ID", "MOGJAX_SWEEP_ID",
                "RAY_ADDRESS"):
        env.pop(key, None)
    return env


def ray_env() -> dict[str, str]:
    """Ray with token authentication and a token of our own: nothing in ~/.ray."""
    return clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))


def fit(*overrides, cwd, env, timeout=240) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, FIT, *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"fit.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def short_tmp(prefix: str) -> Path:
    """A short folder under /tmp: Ray's unix sockets must fit in 107 characters."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def sweep_runs(uri: str, study: str):
    """An MLflow client on ``uri`` and the runs tagged ``study`` (the sweep's jobs)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("mogjax")
    runs = client.search_runs([exp.experiment_id], f"tags.study = '{study}'")
    return client, [r for r in runs if r.data.tags.get("sweep_parent") != "true"]


def assert_one_sweep(uri: str, study: str, n: int) -> None:
    client, children = sweep_runs(uri, study)
    assert len(children) == n, [c.info.run_name for c in children]
    assert {c.info.status for c in children} == {"FINISHED"}
    sweep_ids = {c.data.tags.get("sweep_id") for c in children}
    parents = {c.data.tags.get("mlflow.parentRunId") for c in children}
    assert len(sweep_ids) == 1 and None not in sweep_ids, sweep_ids
    assert len(parents) == 1 and None not in parents, parents
    parent = client.get_run(parents.pop())
    assert parent.data.tags["sweep_id"] == sweep_ids.pop()
    assert parent.data.tags["sweep_parent"] == "true"


# ----------------------------------------------------------------------------- Ray


@pytest.mark.slow
def test_ray_sweep_on_a_local_ray_instance(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ray_tmp = short_tmp("ray-")
    try:
        fit("-m", "hydra/launcher=ray", *TINY, "model.k=1,2", "seed=0,1",
            "tags=[raytest]", f"tracking.uri={uri}",
            f"hydra.sweep.dir={tmp_path / 'multirun'}",
            "+hydra.launcher.ray.init.num_cpus=2",
            "+hydra.launcher.ray.init.include_dashboard=false",
            f"+hydra.launcher.ray.init._temp_dir={ray_tmp}",
            cwd=tmp_path, env=ray_env())
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert_one_sweep(uri, "raytest", 4)


@pytest.fixture
def ray_cluster():
    """A Ray cluster started apart from the sweep (`ray start --head --block`), on
    127.0.0.1 with free ports; yields (address, env). Stopped by its process id."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    env = ray_env()
    temp = short_tmp("rayc-")
    port = free_port()
    log = temp / "ray-start.log"
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
           "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
           "--object-store-memory=100000000", "--include-dashboard=false",
           "--disable-usage-stats", f"--temp-dir={temp}",
           f"--ray-client-server-port={free_port()}",
           f"--dashboard-agent-listen-port={free_port()}",
           f"--dashboard-agent-grpc-port={free_port()}",
           f"--runtime-env-agent-port={free_port()}",
           f"--metrics-export-port={free_port()}"]
    with open(log, "w") as out:
        head = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in log.read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start failed:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", env
    finally:
        head.send_signal(signal.SIGTERM)  # --block: stops the node's processes on exit
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_ray_sweep_on_a_running_cluster_by_address(tmp_path, ray_cluster):
    address, env = ray_cluster
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    fit("-m", "hydra/launcher=ray_cluster",
        f"hydra.launcher.ray.init.address={address}",
        *TINY, "model.k=1,2", "tags=[raycluster]", f"tracking.uri={uri}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}", cwd=tmp_path, env=env)
    assert_one_sweep(uri, "raycluster", 2)


# ------------------------------------------------------------------------ Submitit


def launcher_config(cfg_factory, *overrides) -> dict:
    """``hydra.launcher`` as ``fit.py ... --cfg hydra`` prints it (composed here, in
    process: the same config, without a Python start-up)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg_factory(*overrides, hydra=True).hydra.launcher)


def test_slurm_launcher_config_composes(cfg_factory):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    launcher = launcher_config(cfg_factory, "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                               "hydra.launcher.gpus_per_node=1", "hydra.launcher.timeout_min=30")
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["partition"] == "gpu" and launcher["gpus_per_node"] == 1
    assert launcher["timeout_min"] == 30 and launcher["cpus_per_task"] == 4
    assert launcher["mem_gb"] == 8 and launcher["array_parallelism"] == 32


def test_ray_cluster_launcher_config_composes(cfg_factory):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    launcher = launcher_config(cfg_factory, "hydra/launcher=ray_cluster",
                               "hydra.launcher.ray.init.address=head:6379")
    assert launcher["ray"]["init"] == {"address": "head:6379", "object_store_memory": None}


@pytest.mark.slow
def test_submitit_local_sweep(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    fit("-m", "hydra/launcher=submitit_local", *TINY, "model.k=1,2",
        "tags=[submitit]", f"tracking.uri={uri}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        "hydra.launcher.timeout_min=5", cwd=tmp_path, env=clean_env())
    assert_one_sweep(uri, "submitit", 2)


# ------------------------------------------------------------ team tracking server


def _postgres_or_skip() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import tracking_server
    finally:
        sys.path.pop(0)
    # .ci/run sets MOGJAX_REQUIRE_POSTGRES=1 after installing PostgreSQL: fail, not skip
    required = os.environ.get("MOGJAX_REQUIRE_POSTGRES") == "1"
    missing = pytest.fail if required else pytest.skip
    try:
        tracking_server.pg_bindir()
    except FileNotFoundError as err:
        missing(f"no PostgreSQL server programs: {err}")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        missing("psycopg2 (the cluster extra) is not installed")


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


@pytest.mark.slow
def test_tracking_server_on_postgresql(tmp_path):
    """`make tracking-server`'s script: PostgreSQL in a folder, `mlflow server` on it;
    fit.py logs by URI; the run reads back over REST and lies in PostgreSQL; its model
    registers (alias champion) in PostgreSQL and loads back through the server."""
    _postgres_or_skip()
    if os.geteuid() == 0:
        # PostgreSQL then runs as an unprivileged user, who cannot enter pytest's
        # 0700 tmp_path: use a folder of our own under /tmp that it can reach.
        base = short_tmp("mogjax-pg-")
        base.chmod(0o755)
    else:
        base = tmp_path
    folder, port, pg_port = base / "tracking", free_port(), free_port()
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "tracking_server.py"),
             "--dir", str(folder), "--port", str(port), "--pg-port", str(pg_port),
             "--workers", "1"],
            cwd=tmp_path, env=clean_env(), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"tracking server did not start:\n{log.read_text()[-4000:]}")
                time.sleep(0.5)

        proc = fit(*TINY, "stop.max_iter=20", f"tracking.uri={url}",
                   "tracking.run_name=pg-test", cwd=tmp_path, env=clean_env())
        run_id = re.search(r"MLflow run ([0-9a-f]{32})", proc.stdout).group(1)

        run = get_json(f"{url}/api/2.0/mlflow/runs/get?run_id={run_id}")["run"]
        assert run["info"]["status"] == "FINISHED"
        assert run["info"]["run_name"] == "pg-test"
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        n_iter = int(metrics["n_iter"])
        history = get_json(f"{url}/api/2.0/mlflow/metrics/get-history?run_id={run_id}"
                           "&metric_key=log_likelihood")["metrics"]
        curve = [m["value"] for m in sorted(history, key=lambda m: m["step"])]
        assert sorted(m["step"] for m in history) == list(range(n_iter + 1))
        # EM never goes down, up to float32 rounding of a mean of ~4 (the script runs float32)
        assert all(b >= a - 1e-5 for a, b in zip(curve, curve[1:], strict=False))
        assert curve[-1] == pytest.approx(metrics["final_log_likelihood"], abs=1e-6)

        # artifacts went through the server into the artifact folder
        listed = get_json(
            f"{url}/api/2.0/mlflow/artifacts/list?run_id={run_id}")["files"]
        assert {"params.npz", "config.yaml"} <= {f["path"] for f in listed}
        assert list((folder / "artifacts").rglob("params.npz"))

        # its model registers on the server and loads back by alias (issue 16)
        import mlflow

        from experiments.model import load_params
        from experiments.registry import register_run
        from experiments.tracking import load_run_params

        mlflow.set_tracking_uri(url)
        version = register_run(run_id, "pg-test")
        assert version.run_id == run_id and version.aliases == ["champion"]
        params = load_params("models:/pg-test@champion")
        assert params.means.tolist() == load_run_params(run_id, url).means.tolist()

        # and the run and the registered model live in PostgreSQL
        import psycopg2

        password = (folder / "pg-password").read_text().strip()
        conn = psycopg2.connect(host="127.0.0.1", port=pg_port, user="mlflow",
                                dbname="mlflow", password=password)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT status FROM runs WHERE run_uuid = %s", (run_id,))
                assert cur.fetchone() == ("FINISHED",)
                cur.execute("SELECT run_id, version FROM model_versions WHERE name = 'pg-test'")
                assert cur.fetchall() == [(run_id, int(version.version))]
                cur.execute("SELECT version FROM registered_model_aliases "
                            "WHERE name = 'pg-test' AND alias = 'champion'")
                assert cur.fetchone() == (int(version.version),)
        finally:
            conn.close()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            code = server.wait()
        stopped = not (folder / "pg" / "postmaster.pid").exists()
        if base != tmp_path:
            shutil.rmtree(base, ignore_errors=True)
    assert code == 0, log.read_text()[-3000:]
    assert stopped, "PostgreSQL still running after the server stopped"
