"""Time that measures the algorithm, not the first call.

A fit's first call traces, compiles and dispatches its program; those costs are fixed,
so charged to a handful of EM iterations they swamp them, and an algorithm that takes
many cheap steps looks faster than it is. ``timed`` therefore calls the fit once
(compile seconds, from JAX's own monitoring events, are kept apart), then times
warm calls of the same compiled program (``jax.block_until_ready``) and keeps the
fastest.

The start (initialisation and its E-step), the same for every method of a
comparison, is timed apart, warm (``experiments.common.time_start``), and taken out
of the loop's time: ``per_iteration`` is ``(warm total - start) / iterations``.
Iteration ``t`` of a curve sits at ``start + t * per_iteration`` on the time axis,
and time to target is start + iterations x per-iteration.

**Compile seconds** are what a call paid: tracing, lowering and XLA's compilation,
or, where JAX's persistent compilation cache (``use_compilation_cache``) held the
program, reading it back (``compile_cache_hits`` counts those). A program already
compiled in the process costs nothing, so only the first run of a shape in a
process, and with the cache only the first on the machine, pays.
"""

import time
from pathlib import Path

import jax

# Compile seconds and persistent-cache hits so far, from JAX's monitoring events; the
# listeners are registered by the first ``timed`` call (nothing happens at import).
_COMPILE = {"seconds": 0.0, "hits": 0, "listening": False}


def _on_duration(name: str, seconds: float, **kwargs) -> None:
    if name.startswith("/jax/core/compile/"):
        _COMPILE["seconds"] += seconds


def _on_event(name: str, **kwargs) -> None:
    if name == "/jax/compilation_cache/cache_hits":
        _COMPILE["hits"] += 1


def _compile_counts() -> tuple[float, int]:
    if not _COMPILE["listening"]:
        jax.monitoring.register_event_duration_secs_listener(_on_duration)
        jax.monitoring.register_event_listener(_on_event)
        _COMPILE["listening"] = True
    return _COMPILE["seconds"], _COMPILE["hits"]


def _compile_seconds() -> float:
    return _compile_counts()[0]


# The project's own git-ignored cache folder (``compilation_cache.dir: null``).
DEFAULT_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "jax"


def use_compilation_cache(folder: str | Path | None = None) -> Path:
    """Switch on JAX's persistent compilation cache in ``folder`` (default
    ``DEFAULT_CACHE``) for every program, however small or quick to compile; call
    before the first compile of the process. Returns the folder."""
    path = Path(folder) if folder else DEFAULT_CACHE
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return path


def timed(call, *, min_seconds: float = 0.2, max_calls: int = 5):
    """``call()`` compiled, then timed warm; returns ``(result, timing)``.

    ``timing``: ``compile_seconds`` (tracing, lowering and compiling, or reading
    from the persistent cache, in the first call), ``compile_cache_hits``,
    ``first_call_seconds``, ``fit_seconds`` (the fastest warm call; warm calls
    repeat until they add up to ``min_seconds`` or ``max_calls`` were made, so a
    long fit runs warm once) and ``warm_calls``. The result is the first call's (the
    program is deterministic: the warm calls return the same).
    """
    (compiled_before, hits_before), start = _compile_counts(), time.perf_counter()
    result = jax.block_until_ready(call())
    first = time.perf_counter() - start
    compiled_after, hits_after = _compile_counts()
    compile_seconds = compiled_after - compiled_before
    warm = []
    while not warm or (sum(warm) < min_seconds and len(warm) < max_calls):
        start = time.perf_counter()
        jax.block_until_ready(call())
        warm.append(time.perf_counter() - start)
    return result, {"compile_seconds": compile_seconds,
                    "compile_cache_hits": hits_after - hits_before,
                    "first_call_seconds": first, "fit_seconds": min(warm),
                    "warm_calls": len(warm)}


def per_iteration(timing: dict, n_iter: int, start_seconds: float = 0.0) -> float:
    """The warm seconds of one iteration or step, the start left out:
    ``(fit_seconds - start_seconds) / n_iter`` (0 when no iteration ran; never
    negative: a start timed slower than the whole fit, timing noise, counts as all
    of it)."""
    n = int(n_iter)
    return max(timing["fit_seconds"] - start_seconds, 0.0) / n if n > 0 else 0.0
