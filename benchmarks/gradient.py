"""EM against gradient ascent (Adam, L-BFGS) on one likelihood, from one start.

Run it directly::

    .venv/bin/python benchmarks/gradient.py              # n=100,000, d=8, k=8, ~3 minutes on 2 cores
    .venv/bin/python benchmarks/gradient.py --n 20000    # a quicker look
    .venv/bin/python benchmarks/gradient.py --float64

Data: ``mogjax.datasets.make_mixture`` (full covariances, eigenvalues in [0.5, 2], means
drawn with scale ``--separation``; at the default 1.5 the components overlap enough
that EM needs tens of iterations from k-means++; at 3 it needs about 6).

Every method starts from the same parameters (``fit_gradient`` takes EM's start, so
entry 0 of every curve is the same number) and reports the full-data mean
log-likelihood after every iteration or step. The target is EM's final value (run to
``tol=1e-6``) minus 1e-3; "steps to target" is the first curve entry at or above it,
"s to target" that many steps times the steady-state seconds per step.

Seconds per step leave compilation and initialisation out: for EM,
``(t(fit_em) - t(fit_em, max_iter=0)) / n_iter`` with both programs compiled by an
earlier call; for gradient ascent, ``GradientResult.seconds_per_step`` (the compiled
loop alone, timed on the host). An L-BFGS step includes its line search.
"""

import argparse
import time

import numpy as np


def first_at_or_above(curve: np.ndarray, n_iter: int, level: float):
    hits = np.nonzero(curve[: n_iter + 1] >= level)[0]
    return int(hits[0]) if hits.size else None


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--separation", type=float, default=1.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--adam-lr", type=float, nargs="+", default=[0.02, 0.05, 0.1])
    parser.add_argument("--adam-steps", type=int, default=500)
    parser.add_argument("--lbfgs-steps", type=int, default=100)
    parser.add_argument("--gap", type=float, default=1e-3, help="distance to EM's final value")
    parser.add_argument("--float64", action="store_true")
    args = parser.parse_args()

    import jax

    if args.float64:
        jax.config.update("jax_enable_x64", True)
    from mogjax.datasets import make_mixture
    from mogjax.em import fit_em
    from mogjax.gradient import fit_gradient

    dtype = np.float64 if args.float64 else np.float32
    x, _, _ = make_mixture(args.seed, args.n, args.k, args.d, separation=args.separation)
    x = np.asarray(x, dtype)
    common = dict(covariance_type="full", init="kmeans++", seed=args.seed, reg_covar=1e-6)

    def run_em(max_iter):
        res = fit_em(x, args.k, max_iter=max_iter, tol=1e-6, **common)
        jax.block_until_ready(res.curve)
        return res

    run_em(1000), run_em(0)  # compile both programs
    t_em, em = min((timed(lambda: run_em(1000)) for _ in range(3)), key=lambda t: t[0])
    t_init, _ = min((timed(lambda: run_em(0)) for _ in range(3)), key=lambda t: t[0])
    n_em = int(em.n_iter)
    em_curve = np.asarray(em.curve, np.float64)
    final = em_curve[n_em]
    target = final - args.gap

    rows = [("EM", (t_em - t_init) / n_em, em_curve, n_em, float("nan"))]
    for lr in args.adam_lr:
        res = fit_gradient(x, args.k, optimizer="adam", learning_rate=lr, steps=args.adam_steps,
                           **common)
        rows.append((f"Adam lr={lr:g}", res.seconds_per_step, np.asarray(res.curve, np.float64),
                     int(res.n_iter), res.compile_seconds))
        assert float(res.curve[0]) == float(em.curve[0]), "not the same start"
    res = fit_gradient(x, args.k, optimizer="lbfgs", steps=args.lbfgs_steps, **common)
    rows.append(("L-BFGS (zoom)", res.seconds_per_step, np.asarray(res.curve, np.float64),
                 int(res.n_iter), res.compile_seconds))

    print(f"n={args.n}, d={args.d}, k={args.k}, full covariance, separation={args.separation}, "
          f"{np.dtype(dtype).name}, jax {jax.__version__} on {jax.devices()[0].platform}")
    print(f"start (all methods): {em_curve[0]:.6f}; EM final after {n_em} iterations "
          f"(tol=1e-6): {final:.6f}; target: >= final - {args.gap:g}")
    print()
    header = ("method", "ms/step", "steps to target", "s to target", "final mean ll",
              "steps run", "compile s")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for name, sec, curve, n_iter, compile_s in rows:
        hit = first_at_or_above(curve, n_iter, target)
        reach = "not reached" if hit is None else str(hit)
        seconds = "-" if hit is None else f"{hit * sec:.2f}"
        comp = "-" if np.isnan(compile_s) else f"{compile_s:.1f}"
        print(f"| {name} | {1e3 * sec:.1f} | {reach} | {seconds} | {curve[n_iter]:.6f} | "
              f"{n_iter} | {comp} |")


if __name__ == "__main__":
    main()
