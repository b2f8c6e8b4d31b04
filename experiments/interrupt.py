"""Ctrl-C and SIGTERM during a run: stop at once, mark the run KILLED, keep what was logged.

A compiled fit holds the main thread inside XLA, where Python cannot run a signal
handler until the fit returns. ``interruptible`` therefore runs the compute in a
worker thread while the main thread waits in short slices, so ``SIGINT``/``SIGTERM``
reach Python at once; ``signals_raise`` turns ``SIGTERM`` into ``RunInterrupted``,
which ``tracking.start_run`` records as ``KILLED`` before it propagates.
"""

import logging
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager

import jax

# Called by ``hard_exit`` (e.g. to close a sweep's parent run); see there.
EXIT_HOOKS: list = []


class RunInterrupted(BaseException):
    """Raised in the main thread by SIGTERM (a ``BaseException``, like
    ``KeyboardInterrupt``, so that a sweep stops instead of going on)."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


def signal_name(err: BaseException) -> str:
    """``"SIGINT"`` for Ctrl-C (``KeyboardInterrupt``), else the signal's name."""
    return signal.Signals(err.signum).name if isinstance(err, RunInterrupted) else "SIGINT"


def interruption(err: BaseException) -> str:
    """What stopped the run, in words: ``interrupted by SIGINT (Ctrl-C)``, ``interrupted
    by SIGTERM``, and the notes added on the way (the runs marked KILLED)."""
    name = signal_name(err)
    text = f"interrupted by {name}" + (" (Ctrl-C)" if name == "SIGINT" else "")
    return " ".join([text, *getattr(err, "__notes__", [])])


def exit_code(err: BaseException) -> int:
    """The shell's convention: 128 + the signal number (130 for Ctrl-C)."""
    return 128 + (err.signum if isinstance(err, RunInterrupted) else signal.SIGINT)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_interrupted(signum, frame):
    raise RunInterrupted(signum)


@contextmanager
def signals_raise():
    """Inside the block, SIGTERM raises ``RunInterrupted`` (SIGINT already raises
    ``KeyboardInterrupt``). No-op outside the main thread (e.g. in a Ray worker)."""
    if not _in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interruptible(fn, *args, timeout: float | None = None, **kwargs):
    """``fn(*args, **kwargs)`` in a daemon thread; the main thread stays able to take
    signals. Returns its value or raises its exception.

    If a signal interrupts the wait, the exception propagates at once and the worker
    is abandoned (it dies with the process). The worker computes in the caller's
    precision (``jax.enable_x64`` is a per-thread setting). After ``timeout`` seconds
    (None: none) the worker is abandoned too and ``TimeoutError`` raised.
    """
    if not _in_main_thread() and timeout is None:
        return fn(*args, **kwargs)
    box = {}
    x64 = bool(jax.config.jax_enable_x64)

    def target():
        try:
            with jax.enable_x64(x64):
                box["value"] = fn(*args, **kwargs)
        except BaseException as err:  # handed to the main thread below
            box["error"] = err

    worker = threading.Thread(target=target, name="mogjax-fit", daemon=True)
    worker.start()
    started = time.monotonic()
    while worker.is_alive():
        worker.join(0.1)
        if timeout is not None and time.monotonic() - started > timeout:
            raise TimeoutError(f"{getattr(fn, '__name__', 'the call')} ran past {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def hard_exit(code: int) -> None:
    """Leave the process now, after the runs were marked: flush the output, run
    ``EXIT_HOOKS``, then ``os._exit``. A normal exit would finalise the interpreter
    while an abandoned fit may still be inside XLA, which can abort the process."""
    for hook in list(EXIT_HOOKS):
        try:
            hook()
        except Exception as err:  # an exit hook must not hide the interrupt
            print(f"while exiting: {err}", file=sys.stderr)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
