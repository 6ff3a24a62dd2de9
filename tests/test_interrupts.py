"""The signal machinery in this process: real signals sent to ourselves."""

from __future__ import annotations

import os
import signal
import time
import traceback

import pytest

from tifa_lite import interrupts
from tifa_lite.interrupts import Interrupted


def wait_for_signal() -> None:
    time.sleep(5)  # a handler that raises ends this at once
    pytest.fail("the signal did not interrupt")


def test_sigterm_raises_interrupted_inside_the_block_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as caught, interrupts.handling():
        os.kill(os.getpid(), signal.SIGTERM)
        wait_for_signal()
    assert caught.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_critical_write_is_finished_before_the_signal_is_raised():
    done = []
    with pytest.raises(Interrupted), interrupts.handling():
        with interrupts.critical():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done.append("whole")
    assert done == ["whole"]


def test_sigterm_in_a_training_loop_waits_for_the_step_a_second_signal_does_not():
    with pytest.raises(Interrupted) as caught, interrupts.handling(), interrupts.deferring_term():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert interrupts.pending() == signal.SIGTERM  # noted, not raised: the step goes on
        os.kill(os.getpid(), signal.SIGTERM)
        wait_for_signal()
    assert caught.value.signum == signal.SIGTERM


def test_the_deferred_stop_gives_up_on_a_step_that_does_not_end(monkeypatch):
    monkeypatch.setattr(interrupts, "TERM_GRACE_S", 0.1)
    with pytest.raises(Interrupted) as caught, interrupts.handling(), interrupts.deferring_term():
        os.kill(os.getpid(), signal.SIGTERM)
        wait_for_signal()
    assert "did not end within 0.1 s" in str(caught.value)


def test_describe_fills_what_the_inner_block_left_open_and_turns_a_keyboard_interrupt_into_one():
    with pytest.raises(Interrupted) as caught:
        with interrupts.describe(where="outer", kept="outer kept", resume="run it again"):
            with interrupts.describe(kept="checkpoint-3"):
                raise KeyboardInterrupt  # a notebook's interrupt button, no handler of ours
    line = str(caught.value)
    assert line == "stopped by SIGINT outer. Kept: checkpoint-3. To resume: run it again"


def test_the_api_raises_one_line_without_the_library_frames():
    @interrupts.api("work(...)")
    def work():
        def deep():
            os.kill(os.getpid(), signal.SIGTERM)
            wait_for_signal()
        deep()

    with pytest.raises(Interrupted) as caught:
        work()
    assert str(caught.value).startswith("stopped by SIGTERM. Kept: nothing new")
    assert "To resume: call work(...) again" in str(caught.value)
    frames = [f.name for f in traceback.extract_tb(caught.value.__traceback__)]
    assert "deep" not in frames and "wait_for_signal" not in frames, frames


def test_an_interrupt_a_library_turned_into_its_own_error_is_still_an_interrupt():
    def library_call():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            wait_for_signal()
        except Interrupted:
            raise ValueError("could not determine the shape of object type 'torch.storage.UntypedStorage'") from None

    with pytest.raises(Interrupted) as caught, interrupts.handling(), interrupts.describe(where="in `merge`"):
        library_call()
    assert str(caught.value).startswith("stopped by SIGINT in `merge`.")
