"""The output lock between real processes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import pytest

from tifa_lite.errors import ConfigError
from tifa_lite.runlock import lock_path, output_lock

HOLD = """
import sys, time
from tifa_lite.runlock import output_lock
with output_lock(sys.argv[1], "--output"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_live_writer_is_named_and_a_second_run_refused(tmp_path):
    out = tmp_path / "merged"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError) as refused, output_lock(out, "--output"):
            pass
    finally:
        holder.kill()
        holder.wait()
    message = str(refused.value)
    assert f"PID {holder.pid}" in message and "-c" in message and "--output=" in message, message


def test_a_dead_writers_lock_is_taken_over_with_a_note_and_removed_after(tmp_path, caplog):
    out = tmp_path / "run"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path(out).write_text(json.dumps({"pid": dead.pid, "command": "tifa-lite train r.yaml", "started": time.time()}))
    with caplog.at_level(logging.WARNING, logger="tifa_lite.runlock"), output_lock(out, "train.output_dir"):
        assert json.loads(lock_path(out).read_text())["pid"] == os.getpid()
    assert f"PID {dead.pid}: tifa-lite train r.yaml" in caplog.text
    assert not lock_path(out).exists()


def test_the_same_process_may_write_its_own_output_again(tmp_path):
    with output_lock(tmp_path / "m", "--output"), output_lock(tmp_path / "m", "--output"):
        pass
    assert list(tmp_path.iterdir()) == []
