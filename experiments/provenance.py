"""What identifies a run and lets it be re-run: the code, the environment, the data,
the config."""

import functools
import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

PACKAGES = ("mogjax", "jax", "jaxlib", "numpy", "optax", "mlflow", "hydra-core", "scipy")


@functools.cache  # once per process: every run of a sweep or a batch shares it
def git_info() -> dict[str, str]:
    """The commit and dirty flag of this project's checkout, when it is a git repository."""
    git = ["git", "-C", str(Path(__file__).resolve().parents[1])]
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
