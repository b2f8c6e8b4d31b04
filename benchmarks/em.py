"""EM speed, side by side: mogjax, scikit-learn and (if installed) gmmx.

Run it with ``make bench``, or directly::

    .venv/bin/python benchmarks/em.py                       # every case: ~10 min on 2 cores (+5 if gmmx hangs)
    .venv/bin/python benchmarks/em.py --quick --cases diag  # n / 20: a smoke run in seconds

Every (case, library, dtype) runs in its own subprocess: a fresh JAX configuration
(x64 only for float64 runs) and its own peak memory. ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE`` are unset first: they can make numpy pick a slower kernel.
All libraries get the same data and the same initial parameters (two EM iterations of
mogjax in float64 on 20,000 rows) and then run EM with ``tol=0``. Seconds per
iteration are ``(t(M2) - t(M)) / (M2 - M)``, each t the minimum over repeats, so fixed
costs (checks, initialisation, scikit-learn's final E-step) cancel. For JAX libraries
both programs are compiled by a first call; "compile s" is that first call minus a
steady one. See benchmarks/README.md for the columns.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

# Removed before numpy loads OpenBLAS (here and in the workers, which inherit the
# environment): these settings can select a slower kernel than the CPU's own.
SLOW_BLAS = [var for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if os.environ.pop(var, None)]

import numpy as np  # noqa: E402

# name: covariance type, n, d, k, and the iteration counts: every library is timed at
# M and M2 iterations and reports its log-likelihood after M; M2 is smaller for the
# slow libraries (scikit-learn, gmmx) than for mogjax.
CASES = {  # name: (cov, n, d, k, M, M2 slow, M2 mogjax)
    "full": ("full", 1_000_000, 8, 8, 3, 5, 13),
    "full-d64": ("full", 200_000, 64, 32, 1, 2, 5),
    "diag": ("diag", 1_000_000, 8, 8, 3, 6, 13),
}
RUNS = [("sklearn", "float64"), ("sklearn", "float32"), ("mogjax", "float64"),
        ("mogjax", "float32"), ("gmmx", "float32")]  # the first is the baseline; gmmx: float32 only
INIT_ROWS = 20_000


def make_data(n, d, k, seed=0):
    """k Gaussians, equal weights, random covariances (eigenvalues in [0.5, 2]),
    means drawn so that two of them are about 8 apart: separated, with some overlap."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 8.0 / np.sqrt(2 * d), (k, d))
    labels = rng.integers(k, size=n)
    x = np.empty((n, d))
    for j in range(k):
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        root = q * np.sqrt(rng.uniform(0.5, 2.0, d))  # covariance root @ root.T
        rows = labels == j
        x[rows] = means[j] + rng.normal(size=(rows.sum(), d)) @ root.T
    return x


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def min_time(fn, repeats, budget_s=30.0):
    """Least time of ``repeats`` calls, or of fewer (at least one) past ``budget_s``."""
    times, start = [], time.perf_counter()
    while len(times) < repeats and (not times or time.perf_counter() - start < budget_s):
        times.append(timed(fn))
    return min(times, key=lambda t: t[0])


def per_iteration(fit, iters, repeats, compiles):
    """(s/iter, compile s, result of fit(M)); ``fit(m)`` runs m iterations and waits."""
    m1, m2 = iters
    first = [timed(lambda: fit(m))[0] for m in iters] if compiles else None
    t1, out = min_time(lambda: fit(m1), repeats)
    t2, _ = min_time(lambda: fit(m2), repeats)
    return (t2 - t1) / (m2 - m1), (first[1] - t2 if compiles else None), out


def peak_mb():
    """Peak resident memory of this process (Linux VmHWM; ru_maxrss would include
    the parent's, inherited across fork)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


def worker(case, lib, dtype, init_file, quick, repeats):
    """Time one (case, library, dtype); print the result as one JSON line."""
    cov, n, d, k, m, m2_slow, m2_mogjax = CASES[case]
    x = make_data(n // 20 if quick else n, d, k).astype(dtype)
    init = {key: val.astype(dtype) for key, val in np.load(init_file).items()}
    if lib == "sklearn":
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.mixture import GaussianMixture

        warnings.simplefilter("ignore", ConvergenceWarning)
        fit = lambda iters, data=x: GaussianMixture(
            k, covariance_type=cov, max_iter=iters, tol=0.0, init_params="random_from_data",
            weights_init=init["weights"], means_init=init["means"],
            precisions_init=init["precisions"], random_state=0).fit(data)
        fit(1, x[:5000])  # warm-up: imports, thread pools
        s_iter, compile_s, gm = per_iteration(fit, (m, m2_slow), repeats, False)
        return s_iter, compile_s, gm.score(x)
    import jax

    jax.config.update("jax_enable_x64", dtype == "float64")
    xj = jax.device_put(x)
    if lib == "mogjax":
        import mogjax

        fit = lambda iters: jax.block_until_ready(mogjax.fit_em(
            xj, k, covariance_type=cov, init_params=init, max_iter=iters, tol=0.0))
        s_iter, compile_s, res = per_iteration(fit, (m, m2_mogjax), repeats, True)
        return s_iter, compile_s, res.final_log_likelihood
    from gmmx import EMFitter, GaussianMixtureModelJax

    covs = np.linalg.inv(init["precisions"]) if cov == "full" else 1 / init["precisions"]
    gmm = GaussianMixtureModelJax.from_squeezed(
        means=init["means"], covariances=covs, weights=init["weights"], covariance_type=cov)
    fit = lambda iters: jax.block_until_ready(EMFitter(max_iter=iters, tol=0.0).fit(xj, gmm))
    s_iter, compile_s, res = per_iteration(fit, (m, m2_slow), repeats, True)
    return s_iter, compile_s, res.gmm.score(xj)


def blas_note():
    from threadpoolctl import threadpool_info

    return "; ".join(f"{i['internal_api']} {i['version']} kernel {i.get('architecture')}, "
                     f"{i['num_threads']} threads" for i in threadpool_info())


def run_worker(args, *worker_args):
    """Run one worker; return its (s/iter, compile s, LL, peak MB), or a note why not."""
    cmd = [sys.executable, __file__, "--worker", *worker_args, "--repeats", str(args.repeats)]
    try:
        proc = subprocess.run(cmd + ["--quick"] * args.quick, capture_output=True, text=True,
                              timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return f"over --timeout {args.timeout:.0f} s"
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or ["failed, no output"])[-1]
    return json.loads(proc.stdout.splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n / 20, for a smoke run")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--repeats", type=int, default=3, help="timings to take the min of")
    parser.add_argument("--timeout", type=float, default=300,
                        help="seconds before one run is given up (see README: gmmx can hang)")
    parser.add_argument("--worker", nargs=4, metavar=("CASE", "LIB", "DTYPE", "INIT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        s_iter, compile_s, ll = worker(*args.worker, args.quick, args.repeats)
        print(json.dumps([s_iter, compile_s, float(ll), peak_mb()]))
        return

    import jax

    jax.config.update("jax_enable_x64", True)  # the shared start is fitted in float64
    import mogjax

    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (should be ~0); "
          f"numpy BLAS: {blas_note()}; jax {jax.__version__}"
          + (f"; unset {', '.join(SLOW_BLAS)}" if SLOW_BLAS else ""))
    header = (f"{'case':<10}{'M':>3}{'n':>9}{'d':>4}{'k':>4}  {'dtype':<8}{'library':<9}"
              f"{'s/iter':>9}{'compile s':>11}{'speed-up':>10}{'final mean LL':>16}{'peak MB':>9}")
    print(header + "\n" + "-" * len(header))
    notes = []
    for case in args.cases:
        cov, n, d, k, m, *_ = CASES[case]
        n = n // 20 if args.quick else n
        p = mogjax.fit_em(make_data(n, d, k)[:INIT_ROWS], k, covariance_type=cov,
                          max_iter=2, tol=0.0).params
        with tempfile.NamedTemporaryFile(suffix=".npz") as init_file:
            np.savez(init_file, weights=p.weights, means=p.means, precisions=p.precisions)
            init_file.flush()
            baseline = None
            for lib, dtype in RUNS:
                result = run_worker(args, case, lib, dtype, init_file.name)
                if isinstance(result, str):
                    notes.append(f"{case} {lib} {dtype} left out: {result}")
                    continue
                s_iter, compile_s, ll, peak = result
                baseline = s_iter if (lib, dtype) == RUNS[0] else baseline
                speed_up = f"{baseline / s_iter:.2f}x" if baseline else "-"
                compile_s = "-" if compile_s is None else f"{compile_s:.2f}"
                print(f"{case:<10}{m:>3}{n:>9}{d:>4}{k:>4}  {dtype:<8}{lib:<9}{s_iter:>9.4f}"
                      f"{compile_s:>11}{speed_up:>10}{ll:>16.6f}{peak:>9.0f}", flush=True)
    for note in notes:
        print("note:", note)
    print(f"load average at the end {os.getloadavg()[0]:.2f} (should be ~1: this run)")


if __name__ == "__main__":
    main()
