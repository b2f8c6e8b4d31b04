"""Variational Bayesian mixtures, side by side: mogjax and scikit-learn's BayesianGaussianMixture.

Run it directly::

    .venv/bin/python benchmarks/variational.py            # n = 1e6, d = 8, k = 8, full (minutes)
    .venv/bin/python benchmarks/variational.py --quick    # n / 20: a smoke run

The data are ``benchmarks/em.py``'s (k Gaussians with random covariances). Both
libraries start from the same responsibilities (the one-hot labels of two EM
iterations of mogjax on the first 20,000 rows): mogjax as
``fit_variational(init_params=resp)``, scikit-learn through its
``_initialize(X, resp)``. Both run the Dirichlet-process prior with scikit-learn's
default priors and ``tol=0``. Seconds per iteration are ``(t(M2) - t(M)) / (M2 -
M)``, each t the least of ``--repeats`` runs, so fixed costs (checks, the first
M-step, scikit-learn's final E-step) cancel; mogjax is timed warm (its programs are
compiled by a first call, "compile s") with ``block_until_ready``. Every (library,
dtype) runs in its own subprocess (x64 only for the float64 mogjax run); the
speed-up is scikit-learn's s/iter at the same dtype over the row's. scikit-learn's
float32 fit is slower than its float64 one (its precision factors stay float64, so
the E-step's products mix dtypes), so the last line compares mogjax's float32 with
scikit-learn's float64 as well.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import em as em_bench  # noqa: E402  (unsets the slow OpenBLAS settings before numpy loads)
import numpy as np  # noqa: E402

N, D, K, COV = 1_000_000, 8, 8, "full"
ITERS = {"sklearn": (3, 5), "mogjax": (3, 23)}  # M (shared), M2
RUNS = [("sklearn", "float32"), ("mogjax", "float32"), ("sklearn", "float64"),
        ("mogjax", "float64")]  # each mogjax row is compared with the sklearn row above it
INIT_ROWS = 20_000


def worker(lib, dtype, labels_file, n, repeats):
    """Time one (library, dtype): (s/iter, compile s, lower bound after M, peak MB)."""
    x = em_bench.make_data(n, D, K).astype(dtype)
    resp = np.eye(K, dtype=dtype)[np.load(labels_file)[:n]]
    m1, m2 = ITERS[lib]
    if lib == "sklearn":
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.mixture import BayesianGaussianMixture

        warnings.simplefilter("ignore", ConvergenceWarning)

        def fit(iters, data=x, start=resp):
            bgm = BayesianGaussianMixture(n_components=K, covariance_type=COV, max_iter=iters,
                                          tol=0.0)
            bgm._initialize_parameters = lambda X, random_state, xp=None: bgm._initialize(
                X, start)
            return bgm.fit(data)

        fit(1, x[:5000], resp[:5000])  # warm-up: imports, thread pools
        s_iter, compile_s, bgm = em_bench.per_iteration(fit, (m1, m2), repeats, False)
        return s_iter, compile_s, float(bgm.lower_bound_)
    import jax

    jax.config.update("jax_enable_x64", dtype == "float64")
    from mogjax.variational import fit_variational

    xj = jax.device_put(x)
    fit = lambda iters: jax.block_until_ready(fit_variational(
        xj, K, covariance_type=COV, init_params=resp, max_iter=iters, tol=0.0))
    s_iter, compile_s, res = em_bench.per_iteration(fit, (m1, m2), repeats, True)
    return s_iter, compile_s, float(res.lower_bound)


def run_worker(args, lib, dtype, labels_file):
    cmd = [sys.executable, __file__, "--worker", lib, dtype, labels_file,
           "--repeats", str(args.repeats)] + ["--quick"] * args.quick
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return f"over --timeout {args.timeout:.0f} s"
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or ["failed, no output"])[-1]
    return json.loads(proc.stdout.splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n / 20, for a smoke run")
    parser.add_argument("--repeats", type=int, default=3, help="timings to take the min of")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run at most")
    parser.add_argument("--dtypes", nargs="+", choices=["float32", "float64"],
                        default=["float32", "float64"])
    parser.add_argument("--worker", nargs=3, metavar=("LIB", "DTYPE", "LABELS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    n = N // 20 if args.quick else N
    if args.worker:
        s_iter, compile_s, bound = worker(*args.worker, n, args.repeats)
        print(json.dumps([s_iter, compile_s, bound, em_bench.peak_mb()]))
        return

    import jax

    jax.config.update("jax_enable_x64", True)  # the shared start is fitted in float64
    import mogjax

    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (should be ~0); "
          f"numpy BLAS: {em_bench.blas_note()}; jax {jax.__version__}")
    x = em_bench.make_data(n, D, K)
    start = mogjax.fit_em(x[:INIT_ROWS], K, covariance_type=COV, max_iter=2, tol=0.0).params
    labels = np.asarray(mogjax.predict(start, x))
    header = (f"{'n':>9}{'d':>3}{'k':>3} {'cov':<5}{'dtype':<8}{'library':<9}{'M, M2':>7}"
              f"{'s/iter':>10}{'compile s':>11}{'speed-up':>10}{'lower bound after M':>22}"
              f"{'peak MB':>9}")
    print(header + "\n" + "-" * len(header))
    notes, sklearn_s, mogjax_s, summary = [], {}, {}, []
    with tempfile.NamedTemporaryFile(suffix=".npy") as labels_file:
        np.save(labels_file, labels)
        labels_file.flush()
        for lib, dtype in RUNS:
            if dtype not in args.dtypes:
                continue
            result = run_worker(args, lib, dtype, labels_file.name)
            if isinstance(result, str):
                notes.append(f"{lib} {dtype} left out: {result}")
                continue
            s_iter, compile_s, bound, peak = result
            (sklearn_s if lib == "sklearn" else mogjax_s)[dtype] = s_iter
            ratio = sklearn_s[dtype] / s_iter if dtype in sklearn_s else None
            speed_up = "-" if ratio is None else f"{ratio:.1f}x"
            if lib == "mogjax" and ratio is not None:
                summary.append((dtype, ratio))
            compile_s = "-" if compile_s is None else f"{compile_s:.2f}"
            m1, m2 = ITERS[lib]
            print(f"{n:>9}{D:>3}{K:>3} {COV:<5}{dtype:<8}{lib:<9}{f'{m1}, {m2}':>7}"
                  f"{s_iter:>10.4f}{compile_s:>11}{speed_up:>10}{bound:>22.6f}{peak:>9.0f}",
                  flush=True)
    for dtype, ratio in summary:
        verdict = "meets" if ratio >= 10 else "misses"
        print(f"{dtype}: mogjax is {ratio:.1f}x faster per iteration than scikit-learn "
              f"({verdict} the 10x target)")
    if "float64" in sklearn_s and mogjax_s.get("float32"):
        # scikit-learn's float32 path is its slow one (float64 precision factors
        # against float32 data), so compare with its float64 too.
        print(f"float32 mogjax against scikit-learn's faster float64: "
              f"{sklearn_s['float64'] / mogjax_s['float32']:.1f}x")
    for note in notes:
        print("note:", note)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
