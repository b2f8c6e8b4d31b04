"""The main job (`make run`) until the tracked experiments land: EM on Old Faithful.

Fits a two-component full-covariance mixture to the Old Faithful data shipped with
mogjax and prints the likelihood curve and the fitted parameters.
"""

import numpy as np

import mogjax as mg
from mogjax.datasets import load_old_faithful


def main() -> None:
    x = load_old_faithful()
    res = mg.fit_em(x, 2, covariance_type="full", init="kmeans++", tol=1e-6, seed=0)
    n_iter = int(res.n_iter)
    print(f"Old Faithful: n={x.shape[0]}, d={x.shape[1]}; EM, k=2, full covariance")
    print(f"converged={bool(res.converged)} after {n_iter} iterations\n")
    print("iteration  mean log-likelihood")
    for t, value in enumerate(np.asarray(res.curve[: n_iter + 1])):
        print(f"{t:9d}  {value:.6f}")
    p = res.params
    np.set_printoptions(precision=4, suppress=True)
    for j in range(p.n_components):
        print(f"\ncomponent {j}: weight {float(p.weights[j]):.4f}")
        print(f"  mean       {np.asarray(p.means[j])}")
        print(f"  covariance {np.asarray(p.covariances[j]).tolist()}")
    print(f"\nBIC {float(mg.bic(p, x)):.2f}  AIC {float(mg.aic(p, x)):.2f}")


if __name__ == "__main__":
    main()
