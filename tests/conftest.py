"""Shared test set-up: float64 everywhere (set before any array exists), small data,
programs compiled with XLA's cheapest backend optimisation."""

import gc
import os

# The suite compiles thousands of small programs, and compiling is most of its time;
# LLVM's optimisation passes buy nothing on test-sized data. Scripts the tests start
# inherit the setting. Benchmarks and users compile as XLA does by default.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 "
                                   "--xla_llvm_disable_expensive_passes=true")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mogjax.datasets import make_mixture  # noqa: E402

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")  # the ones scikit-learn has


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drop every compiled program after each test module. Each executable holds
    memory mappings, and the suite compiles thousands of programs: kept in one
    process they reach the kernel's limit on mappings (vm.max_map_count, 65,530),
    where LLVM aborts the process ("Unable to allocate section memory")."""
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def blobs():
    """300 points, 3 well-separated components in 2-D: (x, labels, true_params)."""
    return make_mixture(0, 300, 3, 2, separation=5.0)


@pytest.fixture(scope="session")
def offset_data():
    """240 points in 3-D, three overlapping groups, far from the origin (x + 100)."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(m, 1 + 0.3 * m, (80, 3)) for m in (0, 3, 6)])
    return x + 100.0


@pytest.fixture(scope="module")
def cfg_factory():
    """``cfg_factory(*overrides, hydra=False)``: the composed experiment config (Hydra's
    compose API; ``hydra=True`` keeps the ``hydra`` node, e.g. a preset's sweeper params)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from experiments import configs
    from tests.mlflow_helpers import CONF

    configs.register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        yield lambda *overrides, hydra=False: compose("config", overrides=list(overrides),
                                                      return_hydra_config=hydra)
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    """One sqlite store for the session (creating one costs seconds); ``cwd`` is its
    folder, where scripts run. Tests find their runs by name or tag."""
    path = tmp_path_factory.mktemp("mlflow")
    return {"uri": f"sqlite:///{path / 'mlflow.db'}", "cwd": path}
