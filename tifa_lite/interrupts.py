"""One way every long command stops on SIGINT (Ctrl-C) or SIGTERM (``timeout``, ``docker
stop``, Slurm preemption, a notebook kernel shut down).

The signal becomes an :class:`Interrupted` exception raised where the program is, so every
``except BaseException`` / ``finally`` on the way out rolls its write back
(:mod:`tifa_lite.atomic` removes temporary files and folders; a training run keeps its
checkpoints). Python's default for SIGTERM is to die on the spot, which runs none of that.
On the way out, :func:`describe` blocks add where the command was and what it kept; the CLI
prints the result as one line and exits 128 + the signal (130, 143); the Python API raises it
without the library frames.

Training defers SIGTERM to the end of the current optimizer step, then saves a checkpoint and
stops (:class:`tifa_lite.training.outputs.StopOnSignal`): preemption then loses at most the
step in flight. The step gets :data:`TERM_GRACE_S` seconds to end (``docker stop`` kills after
10, Slurm after 30); a step still running then is abandoned for the last checkpoint, and a
second signal stops at once. A checkpoint being written is never cut (:func:`critical`).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
TERM_GRACE_S = float(os.environ.get("TIFA_LITE_TERM_GRACE_S", "8"))
NOTHING_KEPT = "nothing new (temporary files removed; earlier outputs untouched)"


class Interrupted(KeyboardInterrupt):
    """A command stopped by a signal. ``str()`` is the one line the user sees; the fields are
    filled on the way out by the innermost :func:`describe` that knows them."""

    def __init__(self, signum: int = signal.SIGINT, where: str | None = None, kept: str | None = None,
                 resume: str | None = None):
        super().__init__()
        self.signum, self.where, self.kept, self.resume = int(signum), where, kept, resume

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        line = f"stopped by {signal.Signals(self.signum).name}" + (f" {self.where}" if self.where else "")
        line += f". Kept: {self.kept or NOTHING_KEPT}."
        return line + (f" To resume: {self.resume}" if self.resume else "")


class _State:
    installed = 0           # depth of nested handling() blocks
    previous: dict = {}     # the handlers handling() replaced
    unwinding = False       # an Interrupted is on its way out: further signals wait
    raised: int | None = None  # the signal it was raised for
    deferring = 0           # depth of deferring_term() blocks (a training loop)
    critical = 0            # depth of critical() blocks (a checkpoint being written)
    pending: int | None = None


def _handler(signum: int, frame: Any) -> None:
    if _State.unwinding:
        return  # the rollback under way must finish; SIGKILL is there for a hang
    if _State.critical:
        _State.pending = _State.pending or signum
        return
    if _State.deferring and _State.pending is None and signum == signal.SIGTERM:
        _State.pending = signum
        signal.setitimer(signal.ITIMER_REAL, TERM_GRACE_S)
        return
    # A second signal while a deferred stop waits: stop now.
    _raise(_State.pending or signum, "(the training step did not end in time)" if _State.pending else None)


def _grace_over(signum: int, frame: Any) -> None:
    if _State.pending and not _State.critical and not _State.unwinding:
        _raise(_State.pending, f"(the training step did not end within {TERM_GRACE_S:g} s)")


def _raise(signum: int, where: str | None = None) -> None:
    _State.unwinding, _State.raised = True, signum
    raise Interrupted(signum, where)


def raise_swallowed() -> None:
    """Raise again an interrupt that a library caught as a KeyboardInterrupt and returned from
    (``uvicorn.run`` does), so that the command still ends as interrupted."""
    if _State.raised is not None:
        raise Interrupted(_State.raised)


@contextmanager
def handling() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` inside this block (main thread only;
    nested blocks share the outermost one's handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _State.installed == 0:
        _State.previous = {sig: signal.signal(sig, _handler) for sig in SIGNALS}
    _State.installed += 1
    try:
        yield
    finally:
        _State.installed -= 1
        if _State.installed == 0:
            for sig, previous in _State.previous.items():
                signal.signal(sig, previous)
            _State.unwinding, _State.deferring, _State.critical, _State.pending = False, 0, 0, None
            _State.raised = None


@contextmanager
def deferring_term() -> Iterator[None]:
    """A training loop: SIGTERM is noted (:func:`pending`) for
    :class:`tifa_lite.training.outputs.StopOnSignal` to act on at the step's end, instead of
    raised mid-step; SIGALRM ends the grace (:data:`TERM_GRACE_S`) while this block runs."""
    if not _State.installed or threading.current_thread() is not threading.main_thread():
        yield  # no handlers of ours, nothing to defer
        return
    _State.deferring += 1
    previous = signal.signal(signal.SIGALRM, _grace_over)
    try:
        yield
    finally:
        _State.deferring -= 1
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def critical() -> Iterator[None]:
    """A write that must not be cut (a checkpoint): signals wait until it is done, and one
    that came meanwhile is raised at the end (outside a training loop, which acts on it itself)."""
    enter_critical()
    try:
        yield
    finally:
        leave_critical()
    raise_pending()


def raise_pending() -> None:
    """Raise the signal that arrived during a deferral or a critical write, if any."""
    if _State.pending and not _State.critical and not _State.deferring and not _State.unwinding:
        _raise(_State.pending)


def pending() -> int | None:
    """The signal waiting to stop a training loop, if one came."""
    return _State.pending


def step_ended() -> None:
    """A training step ended in time for the deferred stop: no grace timer any more."""
    signal.setitimer(signal.ITIMER_REAL, 0)


def enter_critical() -> None:
    """:func:`critical` for a write whose start and end are two callbacks."""
    _State.critical += 1


def leave_critical() -> None:
    _State.critical = max(0, _State.critical - 1)


@contextmanager
def describe(where: str | Callable[[], str | None] | None = None, kept: str | Callable[[], str | None] | None = None,
             resume: str | None = None) -> Iterator[None]:
    """Fill what an interrupt passing through this block does not say yet; a plain
    KeyboardInterrupt (a notebook's interrupt button) becomes an :class:`Interrupted`."""
    try:
        yield
    except KeyboardInterrupt as exc:
        interrupted = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
        _fill(interrupted, where, kept, resume)
        if interrupted is exc:
            raise
        raise interrupted from None
    except Exception:
        if _State.raised is None:
            raise
        # Raised inside native code that called back into Python (safetensors reading a tensor):
        # the library reports its own error instead, but the cause is the signal.
        raise _fill(Interrupted(_State.raised), where, kept, resume) from None


def _fill(interrupted: Interrupted, where, kept, resume) -> Interrupted:
    for name, value in (("where", where), ("kept", kept), ("resume", resume)):
        if getattr(interrupted, name) is None and value is not None:
            setattr(interrupted, name, value() if callable(value) else value)
    return interrupted


def api(call: str) -> Callable:
    """For the Python API (notebooks): signals handled as in the CLI, and an interrupt
    raised as the one-line :class:`Interrupted`, without the library's frames."""

    def wrap(fn: Callable) -> Callable:
        @wraps(fn)
        def run(*args, **kwargs):
            try:
                with handling(), describe(resume=f"call {call} again with the same arguments"):
                    return fn(*args, **kwargs)
            except Interrupted as exc:
                raise exc.with_traceback(None) from None

        return run

    return wrap
