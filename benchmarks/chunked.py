"""Exact EM over a memory-mapped file (chunked) against in-memory EM.

Writes a float32 ``.npy`` file of ``n`` rows (k Gaussians with random covariances),
then times, each mode in a fresh subprocess (its own JAX, its own peak memory):

- ``chunked``: ``mogjax.fit_em(np.load(path, mmap_mode="r"), ...)``, i.e.
  ``fit_em_chunked``: one validating pass, then one pass over the file per iteration;
- ``in-memory``: ``mogjax.fit_em`` on the first ``--in-memory-n`` rows read into
  memory (default: all ``n`` rows if four times their bytes fit in the available
  memory less 1 GB, else as many as do).

Both start from the same parameters (two EM iterations on the first 20,000 rows) and
run with ``tol=0``. In each worker, a first call of every program compiles it; then
``t(M)`` and ``t(M2)`` are timed and seconds per iteration are
``(t(M2) - t(M)) / (M2 - M)``, so what every fit does once (the chunked first pass,
the initial E-step, input checks) cancels. ``peak MB`` is the worker's ``VmHWM``.
The machine may be shared: the 1-minute load average at the start and end of each
worker is printed beside its numbers.

    .venv/bin/python benchmarks/chunked.py                      # n = 2e6, d = 64, k = 8: 0.5 GB, ~2 min
    .venv/bin/python benchmarks/chunked.py --n 4000000          # 1 GB: ~3 min
    .venv/bin/python benchmarks/chunked.py --n 80000000         # the 20 GB file (on demand: ~45 min, estimated)
    .venv/bin/python benchmarks/chunked.py --n 200000 --k 4     # a smoke run

The data file is deleted at the end unless ``--keep`` is given.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

INIT_ROWS = 20_000
BLOCK_ROWS = 1 << 20


def write_data(path, n, d, k, seed=0) -> None:
    """k Gaussians, equal weights, random covariances (eigenvalues in [0.5, 2]), means
    about 8 apart; written block by block as float32 ``.npy`` (no memory map)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 8.0 / np.sqrt(2 * d), (k, d))
    roots = []
    for _ in range(k):
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        roots.append(q * np.sqrt(rng.uniform(0.5, 2.0, d)))
    with open(path, "wb") as f:
        header = {"descr": "<f4", "fortran_order": False, "shape": (n, d)}
        np.lib.format.write_array_header_1_0(f, header)
        for start in range(0, n, BLOCK_ROWS):
            m = min(BLOCK_ROWS, n - start)
            labels = rng.integers(k, size=m)
            block = np.empty((m, d), np.float32)
            for j in range(k):
                rows = labels == j
                block[rows] = means[j] + rng.normal(size=(rows.sum(), d)) @ roots[j].T
            block.tofile(f)


def peak_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(args) -> None:
    """Both timed fits of one mode; prints a JSON line."""
    load0 = os.getloadavg()[0]
    import mogjax as mg

    mm = np.load(args.path, mmap_mode="r")
    init = mg.fit_em(np.array(mm[:INIT_ROWS]), args.k, covariance_type=args.cov, max_iter=2, seed=0)
    kw = dict(init_params=init.params, covariance_type=args.cov, tol=0.0)
    if args.mode == "chunked":
        data, n = mm, mm.shape[0]
        kw["chunk_size"] = args.chunk_size
    else:  # plain file read: no mapped pages in this process's resident memory
        n, d = args.in_memory_n, mm.shape[1]
        data = np.fromfile(args.path, np.float32, count=n * d, offset=mm.offset).reshape(n, d)

    def timed(iters):
        t0 = time.perf_counter()
        ll = float(mg.fit_em(data, args.k, max_iter=iters, **kw).final_log_likelihood)
        return time.perf_counter() - t0, ll

    timed(args.m)  # compiles (chunked: the chunk E-step and the M-step, for every M)
    t_m, _ = timed(args.m)
    if args.mode == "in-memory":
        timed(args.m2)  # max_iter is compiled into the in-memory program
    t_m2, ll = timed(args.m2)
    print(json.dumps({"mode": args.mode, "n": n, "t_m": t_m, "t_m2": t_m2, "ll": ll,
                      "peak_mb": peak_mb(), "load": [load0, os.getloadavg()[0]]}))


def run_worker(args, mode):
    cmd = [sys.executable, __file__, "--worker", mode, "--path", args.path, "--k", str(args.k),
           "--cov", args.cov, "--m", str(args.m), "--m2", str(args.m2),
           "--in-memory-n", str(args.in_memory_n)]
    if args.chunk_size:
        cmd += ["--chunk-size", str(args.chunk_size)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=True)
    except subprocess.TimeoutExpired:
        return None, f"{mode}: timed out after {args.timeout} s"
    except subprocess.CalledProcessError as err:
        return None, f"{mode}: failed: {err.stderr.strip().splitlines()[-1]}"
    return json.loads(out.stdout.strip().splitlines()[-1]), None


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2_000_000)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--cov", default="full")
    p.add_argument("--chunk-size", type=int, default=None, help="rows per chunk (default: mogjax's)")
    p.add_argument("--in-memory-n", type=int, default=None,
                   help="rows for in-memory EM (default: n, or as many as 4x their bytes fit "
                   "in MemAvailable less 1 GB)")
    p.add_argument("--modes", nargs="+", default=["chunked", "in-memory"],
                   choices=["chunked", "in-memory"])
    p.add_argument("--m", type=int, default=0, help="iterations of the shorter run")
    p.add_argument("--m2", type=int, default=2, help="iterations of the longer run")
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where the data file goes")
    p.add_argument("--keep", action="store_true", help="keep the data file")
    p.add_argument("--timeout", type=int, default=3600)
    p.add_argument("--worker", choices=["chunked", "in-memory"], help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.mode = args.worker
        return worker(args)

    nbytes = args.n * args.d * 4
    free = shutil.disk_usage(args.dir).free
    if nbytes + (1 << 30) > free:
        sys.exit(f"{nbytes / 1e9:.1f} GB file does not fit in {args.dir} ({free / 1e9:.1f} GB free)")
    if args.in_memory_n is None:
        fits = (mem_available() - (1 << 30)) // (4 * args.d * 4)  # 3.6x measured at n=4e6
        args.in_memory_n = int(min(args.n, fits))
    print(f"load average {os.getloadavg()}, {os.cpu_count()} cores, MemAvailable "
          f"{mem_available() / 1e9:.1f} GB, {free / 1e9:.0f} GB free in {args.dir}")
    fd, args.path = tempfile.mkstemp(suffix=".npy", dir=args.dir, prefix="mogjax-stream-")
    os.close(fd)
    try:
        t0 = time.perf_counter()
        write_data(args.path, args.n, args.d, args.k)
        print(f"wrote {args.path}: n={args.n:,} d={args.d} float32, {nbytes / 1e9:.2f} GB "
              f"in {time.perf_counter() - t0:.0f} s")
        rows, notes = [], []
        for mode in args.modes:
            result, err = run_worker(args, mode)
            rows += [result] if result else []
            notes += [err] if err else []
    finally:
        if not args.keep:
            os.remove(args.path)
    print(f"\nk={args.k} {args.cov}, tol=0, s/iter = (t(M2={args.m2}) - t(M={args.m})) / "
          f"{args.m2 - args.m}, compiled programs; peak MB: VmHWM of the worker\n")
    head = (f"| {'mode':9} | {'n':>11} | {'data GB':>7} | {'s/iter':>7} | {'t(M2) s':>7} | "
            f"{'peak MB':>8} | {'mean LL after M2':>16} | {'load':>9} |")
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        per_iter = (r["t_m2"] - r["t_m"]) / (args.m2 - args.m)
        print(f"| {r['mode']:9} | {r['n']:>11,} | {r['n'] * args.d * 4 / 1e9:>7.2f} | "
              f"{per_iter:>7.2f} | {r['t_m2']:>7.1f} | {r['peak_mb']:>8.0f} | "
              f"{r['ll']:>16.6f} | {r['load'][0]:>4.1f} {r['load'][1]:>4.1f} |")
    for note in notes:
        print("note:", note)


if __name__ == "__main__":
    main()
