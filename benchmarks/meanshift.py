"""Mean shift, side by side: mogjax (Gaussian kernel) and scikit-learn (flat kernel).

Run it directly::

    .venv/bin/python benchmarks/meanshift.py        # every case (sklearn: an hour+)
    .venv/bin/python benchmarks/meanshift.py --skip-slow-sklearn  # ~10 minutes
    .venv/bin/python benchmarks/meanshift.py --quick  # n / 10: a smoke run

Data: ``sklearn.datasets.make_blobs(n, centers=5, n_features=d, cluster_std=1,
random_state=0)``. Both libraries get the same bandwidth (mogjax: the Gaussian's
sigma; scikit-learn: the flat kernel's radius, so mogjax smooths more), the same
``max_iter=300``, and every point as a seed (``bins`` rows: the grid of side
bandwidth for both). Every run is its own subprocess (its own peak memory). mogjax
is timed on later calls, the least of ``--repeats`` ("first s" includes the
compilation); scikit-learn once (it is slow). Columns:

- total s: the whole fit; s/iter: total / n_iter (the most iterations any seed took).
- speed-up: scikit-learn's total / mogjax's, same case and seeding.
- kernel evals/s (mogjax): (seed, data row) kernel values computed / total s, only
  seeds still moving counting (``MeanShiftResult.kernel_evaluations``).
- peak MB: the worker's peak resident memory (VmHWM); fit MB: its growth during the
  fits, compilation included (the rest is Python, JAX and the data).
"""

import argparse
import json
import os
import subprocess
import sys
import time
import warnings

CASES = {  # name: (n, d, bandwidth)
    "2k": (2_000, 2, 1.0),
    "10k": (10_000, 2, 1.0),
    "50k": (50_000, 2, 1.0),
    "10k-d16": (10_000, 16, 6.0),
}
RUNS = [("sklearn", "float64", False), ("mogjax", "float32", False),
        ("mogjax", "float64", False), ("sklearn", "float64", True),
        ("mogjax", "float32", True)]  # (library, dtype, bin_seeding)
MAX_ITER = 300
SLOW_N = 50_000
REFERENCE = (  # shown when --skip-slow-sklearn leaves scikit-learn out
    "scikit-learn figures measured earlier on a 2-core machine like this one (bandwidth "
    "1.0, blobs; not by this script): 2,000 points 9.6 s (0.49 s with bin_seeding), "
    "10,000 points 38-83 s (1.1 s), 30,000 points 195 s")


def make_data(n, d):
    from sklearn.datasets import make_blobs

    return make_blobs(n_samples=n, centers=5, n_features=d, cluster_std=1.0,
                      random_state=0)[0]


def peak_mb():
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited)."""
    with open("/proc/self/status") as status:
        hwm = next(line.split()[1] for line in status if line.startswith("VmHWM"))
    return int(hwm) / 1024


def worker(case, lib, dtype, bins, quick, repeats):
    """Fit one (case, library, dtype, seeding); return a dict for the table."""
    n, d, bandwidth = CASES[case]
    x = make_data(n // 10 if quick else n, d).astype(dtype)
    before = peak_mb()
    if lib == "sklearn":
        from sklearn.cluster import MeanShift

        start = time.perf_counter()
        est = MeanShift(bandwidth=bandwidth, bin_seeding=bins, max_iter=MAX_ITER).fit(x)
        total = time.perf_counter() - start
        return {"total": total, "first": total, "n_iter": est.n_iter_,
                "k": len(est.cluster_centers_), "evals": None, "peak": peak_mb(),
                "fit_mb": peak_mb() - before}
    import jax

    jax.config.update("jax_enable_x64", dtype == "float64")
    from mogjax.meanshift import mean_shift

    def fit():
        start = time.perf_counter()
        res = jax.block_until_ready(mean_shift(x, bandwidth, max_iter=MAX_ITER,
                                               bin_seeding=bins))
        return time.perf_counter() - start, res

    first, _ = fit()
    total, res = min((fit() for _ in range(repeats)), key=lambda run: run[0])
    return {"total": total, "first": first, "n_iter": int(res.n_iter),
            "k": len(res.centers), "evals": float(res.kernel_evaluations),
            "peak": peak_mb(), "fit_mb": peak_mb() - before}


def row(case, n, d, bandwidth, lib, dtype, bins, r, speed):
    evals = "-" if r["evals"] is None else f"{r['evals'] / r['total']:.2e}"
    seeds = "bins" if bins else "all"
    return (f"{case:<9}{n:>7}{d:>4}{bandwidth:>5.1f}  {seeds:<6}{lib:<8}{dtype:<8}"
            f"{r['total']:>9.2f}{r['first']:>9.2f}{r['n_iter']:>7}"
            f"{r['total'] / max(r['n_iter'], 1):>9.4f}{r['k']:>9}{speed:>9}{evals:>15}"
            f"{r['peak']:>9.0f}{r['fit_mb']:>8.0f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n / 10, for a smoke run")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--repeats", type=int, default=2,
                        help="mogjax timings to take the least of")
    parser.add_argument("--skip-slow-sklearn", action="store_true",
                        help=f"no scikit-learn with all seeds at n >= {SLOW_N:,}")
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds before a run is stopped")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        case, lib, dtype, bins = args.worker
        warnings.simplefilter("ignore")
        result = worker(case, lib, dtype, bins == "1", args.quick, args.repeats)
        print(json.dumps(result))
        return

    import jax

    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"{os.cpu_count()} cores, load average {load}; jax {jax.__version__}; "
          f"max_iter={MAX_ITER}")
    header = (f"{'case':<9}{'n':>7}{'d':>4}{'bw':>5}  {'seeds':<6}{'library':<8}"
              f"{'dtype':<8}{'total s':>9}{'first s':>9}{'n_iter':>7}{'s/iter':>9}"
              f"{'clusters':>9}{'speed-up':>9}{'kernel evals/s':>15}{'peak MB':>9}"
              f"{'fit MB':>8}")
    print(header + "\n" + "-" * len(header), flush=True)
    notes = []
    for case in args.cases:
        n, d, bandwidth = CASES[case]
        n = n // 10 if args.quick else n
        baseline = {}
        for lib, dtype, bins in RUNS:
            if bins and d > 2:
                continue
            label = f"{case} {lib} {dtype}{' bin_seeding' if bins else ''}"
            if lib == "sklearn" and not bins and args.skip_slow_sklearn and n >= SLOW_N:
                notes.append(f"{label}: not run (--skip-slow-sklearn)")
                continue
            cmd = [sys.executable, __file__, "--worker", case, lib, dtype,
                   str(int(bins)), "--repeats", str(args.repeats)]
            try:
                proc = subprocess.run(cmd + ["--quick"] * args.quick, check=False,
                                      capture_output=True, text=True,
                                      timeout=args.timeout)
            except subprocess.TimeoutExpired:
                notes.append(f"{label}: stopped after {args.timeout:.0f} s")
                continue
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["?"])[-1]
                notes.append(f"{label}: failed ({last})")
                continue
            r = json.loads(proc.stdout.splitlines()[-1])
            if lib == "sklearn":
                baseline[bins] = r["total"]
            speed = "-"
            if lib == "mogjax" and bins in baseline:
                speed = f"{baseline[bins] / r['total']:.1f}x"
            print(row(case, n, d, bandwidth, lib, dtype, bins, r, speed), flush=True)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"load average at the end: {load} (above ~2 on these 2 cores, other "
          "processes shared the machine and the timings are noisy)")
    for note in notes:
        print("note:", note)
    if args.skip_slow_sklearn:
        print("note:", REFERENCE)


if __name__ == "__main__":
    main()
