"""A sweep over seeds: one batched program against one fit (or one run) per seed.

Run it directly::

    .venv/bin/python benchmarks/sweeps.py                 # 32 seeds, n=10,000, d=2, k=3
    .venv/bin/python benchmarks/sweeps.py --seeds 8       # a quicker look
    .venv/bin/python benchmarks/sweeps.py --skip-scripts  # the library rows only

Two levels, each timed in this run:

- library: ``fit_em_seeds(x, k, seeds)`` against a Python loop of ``fit_em(x, k,
  seed=s)``, in one process, both "cold" (first call: tracing and compiling
  included) and "warm" (programs compiled);
- experiments, the whole job as a user runs it, each logging one MLflow run per seed
  to a fresh sqlite store (plots off): one process per seed (``fit.py seed=s``, as a
  shell loop or a cluster array job does), a Hydra multirun in one process
  (``fit.py -m seed=0,...``), and one batched job (``fit.py n_seeds=S``).

The data: ``make_mixture`` (n, d, k, separation 2); EM with the defaults (full
covariance, k-means++, tol 1e-3, max_iter 100). The load average is printed at start
and end: timings on a busy machine mean little.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def library_rows(x, k, seeds):
    import jax

    import mogjax as mg

    def loop():
        fits = [mg.fit_em(x, k, seed=s) for s in seeds]
        jax.block_until_ready(fits[-1].curve)
        return fits

    def batch():
        res = mg.fit_em_seeds(x, k, seeds)
        jax.block_until_ready(res.curve)
        return res

    cold_batch, _ = timed(batch)
    warm_batch, res = timed(batch)
    cold_loop, _ = timed(loop)
    warm_loop, fits = timed(loop)
    gap = max(abs(float(res.curve[i, int(f.n_iter)]) - float(f.final_log_likelihood))
              for i, f in enumerate(fits))
    return [("library, cold", cold_loop, cold_batch), ("library, warm", warm_loop, warm_batch)], gap


def script_rows(args, seeds):
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore"}
    env.pop("MLFLOW_TRACKING_URI", None)
    common = ["data=synthetic", f"data.n_samples={args.n}", f"data.n_features={args.d}",
              f"data.n_components={args.k}", "data.separation=2.0", f"model.k={args.k}",
              "tracking.log_plots=false"]
    fit = [sys.executable, str(ROOT / "experiments" / "fit.py")]

    def in_store(commands):
        with tempfile.TemporaryDirectory() as tmp:
            store = [f"tracking.uri=sqlite:///{tmp}/mlflow.db", f"hydra.run.dir={tmp}/out",
                     f"hydra.sweep.dir={tmp}/multi"]
            subprocess.run([*fit, "tracking.enabled=false", "model.k=1", f"hydra.run.dir={tmp}/w",
                            f"data.n_samples={args.n}", "data=synthetic"],
                           env=env, check=True, capture_output=True)  # warm the OS caches
            start = time.perf_counter()
            for command in commands:  # Hydra wants -m before the overrides
                flags = [c for c in command if c.startswith("-")]
                overrides = [c for c in command if not c.startswith("-")]
                subprocess.run([*fit, *flags, *common, *overrides, *store], cwd=tmp, env=env,
                               check=True, capture_output=True)
            return time.perf_counter() - start

    per_process = in_store([[f"seed={s}"] for s in seeds])
    multirun = in_store([["-m", "seed=" + ",".join(map(str, seeds))]])
    batched = in_store([[f"seed={seeds[0]}", f"n_seeds={len(seeds)}"]])
    return [("fit.py, one process per seed", per_process, batched),
            ("fit.py -m seed=..., one process", multirun, batched)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=2)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--skip-scripts", action="store_true")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")

    import mogjax as mg

    x, _, _ = mg.make_mixture(0, args.n, args.k, args.d, separation=2.0)
    x = np.asarray(x, np.float32)
    seeds = list(range(args.seeds))
    rows, gap = library_rows(x, args.k, seeds)
    if not args.skip_scripts:
        rows += script_rows(args, seeds)

    print(f"\n{len(seeds)} seeds, n={args.n}, d={args.d}, k={args.k}, float32")
    print(f"{'what':34s} {'one per seed (s)':>17s} {'batched (s)':>12s} {'ratio':>7s}")
    for name, separate, batched in rows:
        print(f"{name:34s} {separate:17.2f} {batched:12.2f} {separate / batched:6.1f}x")
    print(f"\nlargest |final log-likelihood, batched - alone| over the seeds: {gap:.2e}")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
