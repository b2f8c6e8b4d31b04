"""Helpers for the experiment-layer tests: scripts as subprocesses, a real MLflow
store or server, reading runs back."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")
# A fit that runs for seconds and reports progress (to send a signal mid-fit).
LONG_FIT = ("data=synthetic", "data.n_samples=10000", "model.k=3", "stop.tol=0",
            "stop.max_iter=4000", "progress_every=50")


def script_env() -> dict:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore",
           "PYTHONUNBUFFERED": "1"}  # progress lines reach wait_for_line as printed
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def script_args(script, *overrides, store=None) -> list[str]:
    args = [sys.executable, str(ROOT / "experiments" / script), *overrides]
    if store:
        args.append(f"tracking.uri={store['uri']}")
    return args


def run_script(script, *overrides, store=None, check=True, timeout=300):
    """Run ``experiments/<script>`` with Hydra overrides against ``store``."""
    proc = subprocess.run(script_args(script, *overrides, store=store),
                          cwd=store["cwd"] if store else ROOT, env=script_env(),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    return proc


# A shell's background job inherits SIGINT ignored, and Python then installs no
# KeyboardInterrupt handler: a script started by a test run that was itself started in
# the background would ignore Ctrl-C. A small launcher (one thread, so no fork hazard
# as a preexec_fn in this multithreaded process would have) resets SIGINT, as a
# terminal's foreground process has it, and execs the script.
SIGINT_AS_IN_A_TERMINAL = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                           "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")


def start_script(script, *overrides, store, env=None, **kwargs) -> subprocess.Popen:
    """Start a script in the background, its stdout a pipe of text lines; it takes
    SIGINT as a script run from a terminal does."""
    args = script_args(script, *overrides, store=store)
    return subprocess.Popen([args[0], "-c", SIGINT_AS_IN_A_TERMINAL, *args[1:]],
                            cwd=store["cwd"], env=env or script_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for_line(proc: subprocess.Popen, text: str, timeout: float = 120) -> str:
    """Read ``proc``'s stdout until a line contains ``text`` (Hydra logs to stdout)."""
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        if text in line:
            return line
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"no line with {text!r}; exit {proc.poll()}: {proc.stderr.read()[-2000:]}")


def client_for(store):
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(store["uri"])
    return MlflowClient(store["uri"])


def runs_of(store, filter_string="", experiment="mogjax"):
    client = client_for(store)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=filter_string, max_results=1000)


def study_runs(store, study: str):
    """The jobs of the sweep tagged ``study`` (the sweep's parent, tagged too, left out)."""
    runs = runs_of(store, f"tags.study = '{study}'")
    return [r for r in runs if r.data.tags.get("sweep_parent") != "true"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_server(folder: Path, port: int | None = None):
    """A real ``mlflow server`` on 127.0.0.1 with a sqlite backend in ``folder``.

    Yields an object with ``url`` and ``stop()`` (SIGKILL, as a crashed server)."""
    port = port or free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
         "--artifacts-destination", str(folder / "artifacts")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("mlflow server did not start")
        yield SimpleNamespace(url=url, stop=lambda: kill_server(server))
    finally:
        kill_server(server)


def kill_server(server: subprocess.Popen) -> None:
    """SIGKILL the server's whole process group (its workers too)."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
