"""What sample weights and missing values cost per EM iteration.

    .venv/bin/python benchmarks/weights_missing.py             # n=1e6, d=8, k=8, full, float32
    .venv/bin/python benchmarks/weights_missing.py --n 200000  # a quicker look

Rows (measured in this run, on the same data and start): plain EM; EM with random
sample weights; ``missing="marginalize"`` on data without NaN (the plain program);
and with 1%, 10% and 30% (``--fractions``) of the entries missing completely at
random (rows grouped by pattern, ``mogjax.missing``), at ``d`` and at ``--wide-d``
columns (``--wide-n`` rows: with many columns nearly every row has a pattern of its
own, and the per-pattern work and memory, ``O(p k d^3)`` and ``O(p k d^2)``, grow
with the pattern count ``p``; a setting whose per-pattern arrays would pass
``--pattern-gib`` is reported, not run). Seconds per iteration are
``(t(N) - t(0)) / N`` of warm compiled fits with ``tol=0``, the best of
``--repeats`` interleaved timings, so compilation and initialisation stay out.

Last, chunked EM over a memory-mapped ``.npy`` holding the 10% data with NaN
(``fit_em(np.load(path, mmap_mode="r"), chunk_size=...)``), per iteration and its
peak resident memory, against the in-memory marginalised fit's, each measured in a
fresh process (``VmHWM``, Linux).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def per_iteration(fit, iterations: int, repeats: int) -> float:
    """``(t(N) - t(0)) / N``, each the best of ``repeats`` warm calls, interleaved."""
    import jax

    def timed(m):
        start = time.perf_counter()
        jax.block_until_ready(fit(m).curve)
        return time.perf_counter() - start

    timed(0), timed(iterations)  # compile
    t0, tn = np.inf, np.inf
    for _ in range(repeats):
        t0, tn = min(t0, timed(0)), min(tn, timed(iterations))
    return (tn - t0) / iterations


def with_holes(x: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """``x`` with ``fraction`` of the entries NaN at random (each row keeps one)."""
    rng = np.random.default_rng(seed)
    holes = np.where(rng.random(x.shape) < fraction, np.nan, x).astype(x.dtype)
    empty = np.isnan(holes).all(axis=1)
    holes[empty, 0] = x[empty, 0]
    return holes


def n_patterns(x: np.ndarray) -> int:
    from mogjax.missing import find_patterns

    return len(find_patterns(x)[0])


def pattern_gib(p: int, d: int, k: int) -> float:
    """Per-pattern arrays of one E-step (float32): theta and the moments (p, k, D),
    the completion and its products (p, k, d, d), roughly."""
    width = d * (d + 1) // 2 + d
    return p * k * (2 * width + 6 * d * d) * 4 / 2**30


def table(title: str, times: dict, base: float, notes: dict) -> None:
    print(f"\n{title}\n")
    print("| fit | ms / iteration | x plain EM | patterns |")
    print("|---|---|---|---|")
    for name, sec in times.items():
        if sec is None:
            print(f"| {name} | not run | | {notes[name]} |")
        else:
            print(f"| {name} | {1e3 * sec:.1f} | {sec / base:.2f} | {notes.get(name, '')} |")


def peak(mode: str, path: str, k: int, iterations: int, chunk_size: int) -> str:
    """Run ``--peak`` in a fresh process: its output line."""
    out = subprocess.run(
        [sys.executable, __file__, "--peak", mode, path, "--k", str(k), "--iterations",
         str(iterations), "--chunk-size", str(chunk_size)],
        capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def run_peak(mode: str, path: str, k: int, iterations: int, chunk_size: int) -> None:
    """A marginalised fit of the .npy at ``path`` (memory-mapped when chunked): per
    iteration (slope of two warm fits) and the process's peak resident memory."""
    import jax
    import mogjax as mg

    mapped = np.load(path, mmap_mode="r")
    data = mapped if mode == "chunked" else np.array(mapped)
    kw = dict(missing="marginalize", tol=0.0, seed=0)
    if mode == "chunked":
        kw["chunk_size"] = chunk_size
    start = mg.fit_em(data, k, max_iter=0, **kw).params

    def fit(m):
        return mg.fit_em(data, max_iter=m, init_params=start, **kw)

    sec = per_iteration(fit, iterations, 1)
    jax.block_until_ready(fit(iterations).curve)
    with open("/proc/self/status") as status:  # this process's own high-water mark
        hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    print(f"{1e3 * sec:.1f} {hwm / 1024:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fractions", default="0.01,0.1,0.3")
    parser.add_argument("--wide-d", type=int, default=32)
    parser.add_argument("--wide-n", type=int, default=100_000)
    parser.add_argument("--pattern-gib", type=float, default=2.0)
    parser.add_argument("--chunk-size", type=int, default=131_072)
    parser.add_argument("--no-chunked", action="store_true")
    parser.add_argument("--peak", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak:
        return run_peak(args.peak[0], args.peak[1], args.k, args.iterations, args.chunk_size)

    import jax
    import mogjax as mg

    fractions = [float(f) for f in args.fractions.split(",")]
    print(f"k={args.k}, full, float32, jax {jax.__version__} on {jax.devices()[0].platform}, "
          f"{os.cpu_count()} cores; best of {args.repeats}, {args.iterations} iterations")

    def setting(n, d, extra_rows: bool):
        x, _, _ = mg.make_mixture(0, n, args.k, d, separation=3.0)
        x = np.asarray(x, np.float32)
        start = mg.fit_em(x, args.k, max_iter=0).params
        common = dict(init_params=start, tol=0.0)
        rows = {"EM": lambda m: mg.fit_em(x, max_iter=m, **common)}
        notes = {"EM": 1}
        if extra_rows:
            w = np.random.default_rng(0).uniform(0.5, 2.0, n).astype(np.float32)
            rows["EM, sample weights"] = lambda m: mg.fit_em(x, max_iter=m, sample_weight=w,
                                                             **common)
            rows["EM, missing='marginalize', no NaN"] = lambda m: mg.fit_em(
                x, max_iter=m, missing="marginalize", **common)
            notes.update({"EM, sample weights": 1, "EM, missing='marginalize', no NaN": 1})
        times = {}
        for fraction in fractions:
            holes = with_holes(x, fraction)
            name = f"EM, {fraction:.0%} entries NaN"
            p = n_patterns(holes)
            need = pattern_gib(p, d, args.k)
            if need > args.pattern_gib:
                notes[name] = f"{p:,} (per-pattern arrays ~{need:.1f} GiB > --pattern-gib)"
                times[name] = None
                continue
            notes[name] = f"{p:,}"
            rows[name] = (lambda h: lambda m: mg.fit_em(h, max_iter=m, missing="marginalize",
                                                        **common))(holes)
        for name, fit in rows.items():
            times[name] = per_iteration(fit, args.iterations, args.repeats)
        times = {name: times[name] for name in list(rows) + [t for t in times if t not in rows]}
        table(f"n={n:,}, d={d}", times, times["EM"], notes)
        return x

    x = setting(args.n, args.d, True)
    setting(args.wide_n, args.wide_d, False)
    if args.no_chunked:
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "holes.npy")
        np.save(path, with_holes(x, 0.1))
        del x
        size = os.path.getsize(path) / 2**20
        print(f"\nmarginalised EM, n={args.n:,}, d={args.d}, 10% NaN, from a {size:.0f} MiB "
              f".npy (each in a fresh process)\n")
        print("| fit | ms / iteration | peak resident MiB |")
        print("|---|---|---|")
        for mode, name in (("memory", "in memory (np.array of the file)"),
                           ("chunked", f"chunked, memory-mapped, chunk_size={args.chunk_size:,}")):
            ms, rss = peak(mode, path, args.k, args.iterations, args.chunk_size).split()
            print(f"| {name} | {ms} | {rss} |")


if __name__ == "__main__":
    main()
