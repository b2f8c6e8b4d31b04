"""What EM's theory costs (mogjax.theory), in EM iterations, at n = 1e5, d = 8, k = 8.

Run it directly::

    .venv/bin/python benchmarks/theory.py            # n = 100,000, d = 8, k = 8: a few minutes on 2 cores
    .venv/bin/python benchmarks/theory.py --quick    # n / 20: a smoke run

float64 throughout (the theory needs it). The data are benchmarks/em.py's (k
Gaussians, random covariances, some overlap); the point is a converged EM fit on them
(full covariances, p = 359 free parameters). One EM iteration is the slope of
``fit_em`` between two iteration counts of one compiled program (so the start and
the fixed costs cancel); every other figure is the least of ``--repeats`` warm calls
(default 1; the first call, minus a warm one, is reported as compile seconds). The machine is
shared, so absolute seconds are noisy: read the ratios, measured in one run. It also
prints the accuracy of the matrix-free rate (``krylov_rate``, 30 Jacobian-vector
products) against the dense one at this size.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from em import make_data  # noqa: E402  (benchmarks/em.py: the same data)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import mogjax as mg  # noqa: E402
from mogjax import theory as th  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - start, out


def warm(fn, repeats):
    """(least warm seconds, compile seconds = first call - least, result)."""
    first, out = timed(fn)
    best = min(timed(fn)[0] for _ in range(repeats))
    return best, max(first - best, 0.0), out


def em_iteration(x, params, repeats, iters=(5, 25)):
    """Seconds per EM iteration: the slope of fit_em between two iteration counts."""
    fit = lambda m: mg.fit_em(x, init_params=params, max_iter=m, tol=0.0, reg_covar=1e-6)
    t1 = warm(lambda: fit(iters[0]), repeats)[0]
    t2 = warm(lambda: fit(iters[1]), repeats)[0]
    return (t2 - t1) / (iters[1] - iters[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1, help="warm calls per figure")
    parser.add_argument("--quick", action="store_true", help="n / 20")
    args = parser.parse_args()
    n = args.n // 20 if args.quick else args.n
    x = jax.device_put(make_data(n, args.d, args.k))
    fit = mg.fit_em(x, args.k, max_iter=1000, tol=1e-10, reg_covar=1e-6, seed=0)
    params = fit.params
    p = mg.n_parameters(params)
    print(f"n={n} d={args.d} k={args.k} full, p={p}; EM fit: {int(fit.n_iter)} iterations, "
          f"converged={bool(fit.converged)}; device: {jax.devices()[0].device_kind}")
    per_iter = em_iteration(x, params, args.repeats)
    print(f"\n| {'quantity':<45} | {'warm s':>8} | {'compile s':>9} | {'EM iterations':>13} |")
    print(f"|{'-' * 47}|{'-' * 10}|{'-' * 11}|{'-' * 15}|")
    print(f"| {'one EM iteration (fit_em slope)':<45} | {per_iter:>8.4f} | {'':>9} | {1.0:>13.1f} |",
          flush=True)
    cases = [
        ("em_map_jacobian (dense, p JVPs)", lambda: th.em_map_jacobian(params, x)),
        ("em_rate (dense: Jacobian + eigvals)", lambda: th.em_rate(params, x)),
        ("krylov_rate (30 JVPs, Ic metric)", lambda: th.krylov_rate(params, x, dim=30)),
        ("observed_information (p HVPs)", lambda: th.observed_information(params, x)),
        ("complete_information (one E-step)", lambda: th.complete_information(params, x)),
        ("standard_errors", lambda: th.standard_errors(params, x)),
        ("missing_information_fraction", lambda: th.missing_information_fraction(params, x)),
        ("em_preconditioner", lambda: th.em_preconditioner(params, x)),
        ("fit_diagnostics (all of the above it needs)",
         lambda: th.fit_diagnostics(params, x, fit)),
    ]
    results = {}
    for name, fn in cases:  # each row as soon as it is measured
        seconds, compile_s, results[name] = warm(fn, args.repeats)
        print(f"| {name:<45} | {seconds:>8.4f} | {compile_s:>9.1f} | "
              f"{seconds / per_iter:>13.1f} |", flush=True)
    dense = results["em_rate (dense: Jacobian + eigvals)"]
    rate, residual = results["krylov_rate (30 JVPs, Ic metric)"]
    print(f"\nrate: dense {dense:.8f}, Krylov(30) {rate:.8f} (difference {dense - rate:.2e}, "
          f"residual bound {residual:.2e}); largest missing-information fraction "
          f"{results['missing_information_fraction'][0]:.8f}; "
          f"empirical rate from the curve {th.empirical_rate(fit):.6f}")


if __name__ == "__main__":
    main()
