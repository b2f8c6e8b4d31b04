"""Time that measures the algorithm, not the first call.

A fit's first call traces, compiles and dispatches its program; those costs are fixed,
so charged to a handful of EM iterations they swamp them, and an algorithm that takes
many cheap steps looks faster than it is. ``timed`` therefore calls the fit once
(compile seconds, from JAX's own monitoring events, are kept apart), then times
warm calls of the same compiled program (``jax.block_until_ready``) and keeps the
fastest. ``seconds_per_iteration`` is that warm total over the iterations taken, so
initialisation and dispatch are spread over them: iteration ``t`` of a curve is drawn
at ``t * seconds_per_iteration`` and its last point at the warm total.
"""

import time

import jax

# Compile seconds so far, from JAX's monitoring events; the listener is registered by
# the first ``timed`` call (nothing happens at import).
_COMPILE = {"seconds": 0.0, "listening": False}


def _on_event(name: str, seconds: float, **kwargs) -> None:
    if name.startswith("/jax/core/compile/"):
        _COMPILE["seconds"] += seconds


def _compile_seconds() -> float:
    if not _COMPILE["listening"]:
        jax.monitoring.register_event_duration_secs_listener(_on_event)
        _COMPILE["listening"] = True
    return _COMPILE["seconds"]


def timed(call, *, min_seconds: float = 0.2, max_calls: int = 5):
    """``call()`` compiled, then timed warm; returns ``(result, timing)``.

    ``timing``: ``compile_seconds`` (tracing, lowering and compiling in the first
    call), ``first_call_seconds``, ``fit_seconds`` (the fastest warm call; warm calls
    repeat until they add up to ``min_seconds`` or ``max_calls`` were made, so a
    long fit runs warm once) and ``warm_calls``. The result is the first call's (the
    program is deterministic: the warm calls return the same).
    """
    compiled_before, start = _compile_seconds(), time.perf_counter()
    result = jax.block_until_ready(call())
    first = time.perf_counter() - start
    compile_seconds = _compile_seconds() - compiled_before
    warm = []
    while not warm or (sum(warm) < min_seconds and len(warm) < max_calls):
        start = time.perf_counter()
        jax.block_until_ready(call())
        warm.append(time.perf_counter() - start)
    return result, {"compile_seconds": compile_seconds, "first_call_seconds": first,
                    "fit_seconds": min(warm), "warm_calls": len(warm)}


def per_iteration(timing: dict, n_iter: int) -> float:
    """The warm seconds of one iteration or step: ``fit_seconds / n_iter``."""
    return timing["fit_seconds"] / max(int(n_iter), 1)
