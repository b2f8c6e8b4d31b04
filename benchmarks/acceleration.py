"""Accelerated EM against plain EM: E-steps and warm milliseconds to the stopping rule.

Run it with::

    .venv/bin/python benchmarks/acceleration.py   # every case, both dtypes (~3 min, 2 cores)
    .venv/bin/python benchmarks/acceleration.py --cases slow --dtypes float64

Every method (``mogjax.fit_em(..., acceleration=...)``: ``None`` is plain EM) starts
from the same parameters (``init_params``: the k-means++ start of seed 0, fitted
once in float64) and stops by the same rule (``tol`` on the gain in mean
log-likelihood, ``patience=1``, ``max_iter`` counted in the method's iterations;
``tol`` is 1e-12 in float64 and 1e-7 in float32, where gains below ~1e-7 round to 0).
"E-steps" is the result's ``n_esteps`` (every pass over the data, rejected proposals
and line searches included); "warm ms" the least of ``--repeats`` calls of the
compiled fit (``block_until_ready``), so compilation is not in it; "x EM" are the
ratios to plain EM in the same run; "LL - EM" the final mean log-likelihood less
EM's (>= 0: at EM's optimum or above). Timings on a shared machine are noisy: the
ratios within one run are the figures to read.

Cases (rates measured with ``jax.jacfwd`` through ``mg.em_step``):

- ``slow``: two unit Gaussians 2 apart in 1-D, n = 10,000 (EM's rate ~0.995);
- ``medium``: the same 3 apart (rate ~0.93);
- ``separated``: 3 components in 2-D, full covariances, ``make_mixture(0, 10000, 3,
  2, separation=5.0)`` (well separated: EM converges in a few dozen iterations).
"""

import argparse
import os
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import mogjax as mg  # noqa: E402

METHODS = (None, "squarem", "daarem", "overrelaxed", "ecg")
TOL = {"float64": 1e-12, "float32": 1e-7}
MAX_ITER = 5000


def one_d(gap, n=10_000, seed=0):
    rng = np.random.default_rng(seed)
    half = n // 2
    rows = [rng.normal(-gap / 2, 1.0, half), rng.normal(gap / 2, 1.0, half)]
    return np.concatenate(rows)[:, None]


CASES = {
    "slow": lambda: (one_d(2.0), 2),
    "medium": lambda: (one_d(3.0), 2),
    "separated": lambda: (np.asarray(mg.make_mixture(0, 10_000, 3, 2, separation=5.0)[0]), 3),
}


def time_fit(fit, repeats):
    """(least warm seconds, result); the first call compiles and is not counted."""
    result = jax.block_until_ready(fit())
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fit())
        best = min(best, time.perf_counter() - start)
    return best, result


def run_case(name, dtype, repeats):
    x64, k = CASES[name]()
    start = mg.fit_em(x64, k, max_iter=0, seed=0).params  # the shared start, float64
    rows = []
    with jax.enable_x64(dtype == "float64"):
        x = jax.device_put(x64.astype(dtype))
        init = jax.tree.map(lambda a: jax.numpy.asarray(a, dtype), start)
        for method in METHODS:
            fit = lambda m=method: mg.fit_em(x, k, init_params=init, tol=TOL[dtype],
                                              max_iter=MAX_ITER, acceleration=m)
            seconds, res = time_fit(fit, repeats)
            rows.append((method or "em", int(res.n_iter), int(res.n_esteps), seconds * 1e3,
                         float(res.final_log_likelihood), bool(res.converged)))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--dtypes", nargs="+", choices=TOL, default=list(TOL))
    parser.add_argument("--repeats", type=int, default=5, help="warm timings to take the min of")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; jax {jax.__version__}")
    header = ("| case | dtype | method | iterations | E-steps | E-steps x EM | warm ms "
              "| ms x EM | LL - EM | converged |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for case in args.cases:
        for dtype in args.dtypes:
            rows = run_case(case, dtype, args.repeats)
            _, _, em_esteps, em_ms, em_ll, _ = rows[0]
            for method, n_iter, esteps, ms, ll, converged in rows:
                print(f"| {case} | {dtype} | {method} | {n_iter} | {esteps} | "
                      f"{esteps / em_esteps:.3f} | {ms:.1f} | {ms / em_ms:.3f} | "
                      f"{ll - em_ll:+.1e} | {converged} |", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
