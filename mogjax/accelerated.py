r"""Accelerated EM: SQUAREM, DAAREM, over-relaxed EM and ECG over EM's own map.

``mogjax.fit_em(x, k, acceleration=...)`` runs one of them instead of plain EM,
from the same start (same ``init``, ``seed``, ``init_params``: ``curve[0]`` is EM's
own), stopped by the same rule (``tol``, ``patience``; ``max_iter`` counts the
method's iterations). Each is a compiled ``lax.while_loop`` (``mogjax.em_map``)
over the very E-step and M-step plain EM uses; each returns a ``FitResult`` whose
``params`` are the best point visited (``curve[n_iter]`` its value) and whose
``n_esteps`` counts every E-step the loop made.

=================  ============================================================
``acceleration``   method (settings class; its module cites the paper)
=================  ============================================================
``"squarem"``      ``Squarem``: squared extrapolation, Varadhan & Roland (2008)
``"daarem"``       ``Daarem``: damped Anderson acceleration with restarts,
                   Henderson & Varadhan (2019)
``"overrelaxed"``  ``OverRelaxed``: adaptive over-relaxed EM,
                   Salakhutdinov & Roweis (2003)
``"ecg"``          ``ECG``: expectation-conjugate-gradient,
                   Salakhutdinov, Roweis & Ghahramani (2003)
=================  ============================================================

A name takes the method's defaults (the papers' and their R packages'); a settings
object (``Squarem(scheme=1)``) changes them. Settings are compiled in.
"""

import functools

import jax
import jax.numpy as jnp

from mogjax.daarem import Daarem
from mogjax.ecg import ECG
from mogjax.em_map import accelerated_loop
from mogjax.estep import e_step_data, stats_of
from mogjax.init import initialize
from mogjax.overrelaxed import OverRelaxed
from mogjax.results import FitResult, best_of
from mogjax.squarem import Squarem

ACCELERATIONS = {
    "squarem": Squarem,
    "daarem": Daarem,
    "overrelaxed": OverRelaxed,
    "ecg": ECG,
}

__all__ = ["ACCELERATIONS", "Daarem", "ECG", "OverRelaxed", "Squarem", "fit_accelerated",
           "resolve"]


def resolve(acceleration):
    """The settings object for ``acceleration`` (a name of ``ACCELERATIONS`` or a
    settings object); ``ValueError`` naming the choices otherwise."""
    if isinstance(acceleration, tuple(ACCELERATIONS.values())):
        if isinstance(acceleration, Squarem) and acceleration.scheme not in (1, 2, 3):
            raise ValueError(f"Invalid value for 'scheme': {acceleration.scheme!r}; it "
                             "must be 1, 2 or 3")
        if acceleration.coordinates not in ("natural", "unconstrained"):
            raise ValueError(f"Invalid value for 'coordinates': {acceleration.coordinates!r}"
                             "; it must be 'natural' or 'unconstrained'")
        return acceleration
    if isinstance(acceleration, str) and acceleration in ACCELERATIONS:
        return ACCELERATIONS[acceleration]()
    classes = ", ".join(c.__name__ for c in ACCELERATIONS.values())
    raise ValueError(
        f"Invalid value for 'acceleration': {acceleration!r}; it must be None, one of "
        f"{tuple(ACCELERATIONS)} or a settings object ({classes})")


@functools.partial(
    jax.jit,
    static_argnames=("method", "k", "covariance_type", "init", "capacity", "equal_weights",
                     "block_size", "verbose"),
)
def fit_accelerated(
    x, keys, user_init, tol, reg_covar, patience, previous, weight, max_iter, *, method, k,
    covariance_type, init, capacity, equal_weights, block_size, verbose=0,
) -> FitResult:
    """``mogjax.em.fit_em_compiled`` with ``method``'s loop: initialise as EM does for
    every key, run the method, keep the best run. Restarts run one after the other
    (``lax.map``), so each method's branches stay branches."""

    def one_run(key):
        params = initialize(
            key, x, k, covariance_type, init, reg_covar, equal_weights=equal_weights,
            block_size=block_size, sample_weight=weight, **user_init,
        )
        data, center, cached = e_step_data(x, covariance_type, weight=weight)
        e_step_fn = lambda p: stats_of(p, data, center, block_size, cached, weight)
        return accelerated_loop(method, e_step_fn, params, tol, reg_covar, max_iter,
                                equal_weights, verbose, patience, previous, capacity)

    if keys.shape[0] == 1:
        runs = jax.tree.map(lambda a: a[None], one_run(keys[0]))
    else:
        runs = jax.lax.map(one_run, keys)
    return best_of(runs)
