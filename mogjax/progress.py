"""Progress of long fits, reported from inside compiled loops at a stride.

Fits log to the ``mogjax.progress`` logger (``logging.getLogger("mogjax.progress")``):
set it to ``INFO`` to see the lines.
"""

import functools
import logging

import jax
import numpy as np

progress_logger = logging.getLogger("mogjax.progress")


def log_progress(every, what, iteration, mean_log_likelihood) -> None:
    """Log the entries of ``iteration`` (and its values) that are multiples of ``every``
    (host side: host loops call it directly; compiled loops through ``report_every``)."""
    iteration = np.atleast_1d(np.asarray(iteration))
    values = np.atleast_1d(np.asarray(mean_log_likelihood))
    due = iteration % every == 0
    if np.any(due):  # under vmap the device-side stride test cannot skip the call
        progress_logger.info(
            "%s %d: mean log-likelihood %s", what, int(np.max(iteration)),
            ", ".join(f"{v:.6f}" for v in values[due]),
        )


def report_every(every: int, iteration, value, what: str = "EM iteration") -> None:
    """Inside a compiled loop: log ``"{what} {iteration}: mean log-likelihood {value}"``
    when ``iteration % every == 0``.

    ``every = 0`` compiles nothing. The host callback runs only at that stride, so a
    long fit shows progress without a round trip per iteration (under ``vmap``, with
    ``n_init > 1``, the condition becomes a select: the call then happens every
    iteration and the host skips the ones not due).
    """
    if every:
        jax.lax.cond(
            iteration % every == 0,
            lambda: jax.debug.callback(functools.partial(log_progress, every, what), iteration, value),
            lambda: None,
        )


