"""Two real runs into one output folder at once: the second is refused before it touches
anything, naming the first one's PID and command; the first goes on undisturbed."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.bad_input.conftest import assert_refused, hidden, run_cli, subprocess_env
from tests.bad_input.test_kills import chat_data


def test_a_second_training_run_into_a_busy_output_dir_is_refused(train_args, tmp_path):
    data = chat_data(tmp_path / "chat.jsonl", 8)
    args = [str(a) for a in train_args(data, train__max_steps=100000, train__save_steps=100000, train__logging_steps=1)]
    first = subprocess.Popen([sys.executable, "-m", "tifa_lite", *args], env=subprocess_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run.partial" / "metrics.jsonl"
    try:
        while not metrics.is_file():  # the first run is training
            assert first.poll() is None, first.communicate()[1][-3000:]
            time.sleep(0.01)
        second = run_cli(*args, timeout=120)
        steps_before = metrics.read_text().count("\n")
        assert first.poll() is None, "the first run did not survive the second"
    finally:
        first.send_signal(signal.SIGINT)
        _, first_err = first.communicate(timeout=60)

    assert_refused(second, f"PID {first.pid}", "tifa-lite train", "train.output_dir=")
    assert first.returncode == 130, first_err
    assert "FileNotFoundError" not in first_err and "Traceback" not in first_err, first_err
    assert steps_before >= 1
    assert hidden(tmp_path) == []  # the lock went with the first run
