"""What sample weights and missing values cost per EM iteration.

    .venv/bin/python benchmarks/weights_missing.py             # n=1e6, d=8, k=8, full, float32
    .venv/bin/python benchmarks/weights_missing.py --n 200000  # a quicker look

Rows (one table, measured in this run on the same data and start): plain EM; EM with
random sample weights (target: at most 1.1x plain); ``missing="marginalize"`` on
data without NaN (it is the plain program: no cost); and with ``--holes`` (10%) of
the entries missing completely at random (grouped by pattern, ``mogjax.missing``).
Seconds per iteration are ``(t(N) - t(0)) / N`` of warm compiled fits with
``tol=0`` (best of ``--repeats``), so compilation and initialisation stay out.
"""

import argparse
import time

import numpy as np


def per_iteration(fit, iterations: int, repeats: int) -> float:
    import jax

    def best(m):
        jax.block_until_ready(fit(m).curve)  # compile
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(fit(m).curve)
            times.append(time.perf_counter() - start)
        return min(times)

    return (best(iterations) - best(0)) / iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--holes", type=float, default=0.1)
    args = parser.parse_args()

    import jax
    import mogjax as mg

    x, _, _ = mg.make_mixture(0, args.n, args.k, args.d, separation=3.0)
    x = np.asarray(x, np.float32)
    rng = np.random.default_rng(0)
    w = rng.uniform(0.5, 2.0, args.n).astype(np.float32)
    holes = np.where(rng.random(x.shape) < args.holes, np.nan, x).astype(np.float32)
    holes[np.isnan(holes).all(axis=1), 0] = x[np.isnan(holes).all(axis=1), 0]
    start = mg.fit_em(x, args.k, max_iter=0).params
    common = dict(init_params=start, tol=0.0)
    rows = {
        "EM": lambda m: mg.fit_em(x, max_iter=m, **common),
        "EM, sample weights": lambda m: mg.fit_em(x, max_iter=m, sample_weight=w, **common),
        "EM, missing='marginalize', no NaN": lambda m: mg.fit_em(
            x, max_iter=m, missing="marginalize", **common),
        f"EM, {args.holes:.0%} entries NaN": lambda m: mg.fit_em(
            holes, max_iter=m, missing="marginalize", **common),
    }
    times = {name: per_iteration(fit, args.iterations, args.repeats) for name, fit in rows.items()}
    base = times["EM"]
    patterns = len(np.unique(np.isnan(holes), axis=0))
    print(f"n={args.n:,}, d={args.d}, k={args.k}, full, float32, jax {jax.__version__} on "
          f"{jax.devices()[0].platform}; {patterns} missingness patterns\n")
    print("| fit | ms / iteration | x plain EM |")
    print("|---|---|---|")
    for name, sec in times.items():
        print(f"| {name} | {1e3 * sec:.1f} | {sec / base:.2f} |")


if __name__ == "__main__":
    main()
