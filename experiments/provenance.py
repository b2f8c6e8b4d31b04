"""What identifies a run and lets it be re-run: the code, the environment, the data,
the config; and the process that runs it (so a run whose process died is found)."""

import functools
import hashlib
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

PACKAGES = ("mogjax", "jax", "jaxlib", "numpy", "optax", "mlflow", "hydra-core", "scipy")
ROOT = Path(__file__).resolve().parents[1]
# The files whose content decides a run's numbers (``source_files``).
SOURCES = (("mogjax", "*.py"), ("mogjax", "*.csv"), ("experiments", "*.py"), ("conf", "*.yaml"))


@functools.cache  # once per process: every run of a sweep or a batch shares it
def git_info() -> dict[str, str]:
    """The commit and dirty flag of this project's checkout, when it is a git repository."""
    git = ["git", "-C", str(ROOT)]
    try:
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True,
                               check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit, "git_dirty": str(bool(dirty)).lower()}


@functools.cache
def environment() -> dict:
    """What a re-run needs to match: Python, platform, package versions, JAX's set-up."""
    import jax

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {
        "python": platform.python_version(), "platform": platform.platform(),
        "machine": platform.machine(), "packages": versions,
        "jax_backend": jax.default_backend(), "jax_devices": jax.device_count(),
        "jax_enable_x64": bool(jax.config.jax_enable_x64),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def data_hash(x) -> str:
    """SHA-256 (first 16 hex digits) of the data's float64 bytes and shape."""
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    return hashlib.sha256(str(arr.shape).encode() + arr.tobytes()).hexdigest()[:16]


def flatten(cfg: DictConfig | dict) -> dict[str, str]:
    """The resolved config (or a nested dict) as ``{"model.k": "2", ...}``."""
    out = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = str(node)

    if not isinstance(cfg, dict):
        cfg = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    walk(cfg, "")
    return out


@functools.cache
def source_files() -> dict[str, str]:
    """``{path: sha256 (16 hex digits)}`` of the project's code, data sets and configs
    (paths relative to the project), so a re-run names every file that changed."""
    out = {}
    for folder, pattern in SOURCES:
        for path in sorted((ROOT / folder).rglob(pattern)):
            if "__pycache__" not in path.parts:
                out[str(path.relative_to(ROOT))] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return out


def changed_sources(logged: dict[str, str], now: dict[str, str]) -> list[str]:
    """The files that differ between two ``source_files`` manifests, each with how."""
    changed = [f"{p} (modified)" for p in sorted(logged.keys() & now.keys()) if logged[p] != now[p]]
    changed += [f"{p} (added)" for p in sorted(now.keys() - logged.keys())]
    return changed + [f"{p} (removed)" for p in sorted(logged.keys() - now.keys())]


def process_identity(pid: int | None = None) -> dict[str, str]:
    """``host``, ``process_id`` and ``process_start`` (clock ticks after boot; "" where
    /proc is missing) of ``pid`` (default: this process). Every run records them."""
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "process_id": str(pid),
            "process_start": _start_ticks(pid) or ""}


def _stat(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/<pid>/stat`` (state first), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _start_ticks(pid: int) -> str | None:
    fields = _stat(pid)
    return fields[19] if fields else None  # field 22: starttime


def process_gone(identity: dict) -> bool:
    """Whether the process ``identity`` names ran on this host and exists no more (a
    process id reused by another process counts as gone). Other hosts: False."""
    if identity.get("host") != socket.gethostname() or not identity.get("process_id"):
        return False
    pid = int(identity["process_id"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: it exists
        pass
    fields = _stat(pid)
    if fields is None:
        return False
    if fields[0] in ("Z", "X"):  # a zombie: dead, its parent has not collected it yet
        return True
    started = identity.get("process_start")
    return bool(started) and fields[19] != started
