"""Real SIGINT (Ctrl-C) and SIGTERM (`timeout`, `docker stop`, preemption) sent to real
commands mid-write: each ends in one line — where it stopped, what it kept, the command to
resume — and exit 130 / 143, with no traceback and no hidden file left beside its output.
The signal is sent the moment the interesting write is under way (a staging folder or file
appears, a training step is logged), so no test waits on a long run."""

from __future__ import annotations

import json
import signal
import socket

from tests.bad_input.conftest import any_match, assert_refused, hidden, leftovers, signal_self_when, signal_when
from tests.bad_input.test_kills import adapter, chat_data  # noqa: F401  (fixtures)


def assert_one_line_stop(outcome, signum: int, *names: str) -> str:
    """Exit 128+signum, no traceback, one `stopped by` line naming ``names`` and the resume command."""
    assert "Traceback" not in outcome.err, outcome.err
    assert outcome.code == 128 + signum, outcome.err
    lines = [line for line in outcome.err.splitlines() if "stopped by" in line]
    assert len(lines) == 1, outcome.err
    line = lines[0]
    assert f"stopped by {signal.Signals(signum).name}" in line and "To resume: tifa-lite " in line, line
    for name in names:
        assert name in line, f"{name!r} not in: {line}"
    return line


def test_sigterm_mid_training_saves_a_checkpoint_and_a_second_run_meanwhile_is_refused(cli, train_args, tmp_path):
    """Preemption of a real training process; while it trains, a second run into the same
    train.output_dir is refused (it would share run.partial) and the first goes on."""
    data = chat_data(tmp_path / "chat.jsonl", 8)
    # No scheduled checkpoint: the one found afterwards is the one the SIGTERM made.
    args = train_args(data, train__max_steps=100000, train__save_steps=100000, train__logging_steps=1)
    partial = tmp_path / "run.partial"
    second = {}

    def second_run(first):
        second["outcome"] = cli(*args)  # a real run too, in this process
        second["first_alive"] = first.poll() is None
        second["pid"] = first.pid

    outcome = signal_when(args, lambda: (partial / "metrics.jsonl").is_file(), signal.SIGTERM, meanwhile=second_run)

    assert_refused(second["outcome"], f"is being written by another run: PID {second['pid']}", "`tifa-lite train ",
                   "train.output_dir=")
    assert second["first_alive"]
    checkpoints = sorted(partial.glob("checkpoint-*"))
    assert len(checkpoints) == 1 and (checkpoints[0] / "trainer_state.json").is_file(), checkpoints
    step = json.loads((checkpoints[0] / "trainer_state.json").read_text())["global_step"]
    assert checkpoints[0].name == f"checkpoint-{step}"
    assert_one_line_stop(outcome, signal.SIGTERM, f"at step {step} of 100000", f"Kept: checkpoint-{step} in {partial}",
                         "train.max_steps=100000")
    assert hidden(tmp_path) == []  # the lock went with the run


def test_ctrl_c_before_the_first_checkpoint_removes_the_run(cli, train_args, tmp_path):
    data = chat_data(tmp_path / "chat.jsonl", 8)
    args = train_args(data, train__max_steps=100000, train__save_steps=100000, train__logging_steps=1)
    with signal_self_when(lambda: (tmp_path / "run.partial" / "metrics.jsonl").is_file(), signal.SIGINT):
        outcome = cli(*args)

    assert_one_line_stop(outcome, signal.SIGINT, "no checkpoint yet")
    assert not (tmp_path / "run.partial").exists() and not (tmp_path / "run").exists()
    assert leftovers(tmp_path) == []


def test_ctrl_c_during_merge_removes_the_staging_folder(cli, adapter, tmp_path):  # noqa: F811
    out = tmp_path / "merged"
    with signal_self_when(any_match(tmp_path, ".merged.merging-*"), signal.SIGINT):
        outcome = cli("merge", "--adapter", adapter, "--output", out, "--dtype", "fp32", "--no-check")

    assert_one_line_stop(outcome, signal.SIGINT, "in `merge`", "Kept: nothing new")
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_sigterm_during_gguf_export_removes_the_partial_file(tiny_model_dir, tmp_path):
    out = tmp_path / "model.gguf"
    args = ["export", "gguf", "--model", tiny_model_dir, "--output", out, "--no-check", "--converter", "builtin"]
    outcome = signal_when(args, any_match(tmp_path, ".model.gguf.*.partial"), signal.SIGTERM)

    assert_one_line_stop(outcome, signal.SIGTERM, "in `export gguf`")
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_sigterm_during_data_roleplay_removes_the_partial_file(tmp_path):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    # Big enough that the output is still being written when the signal comes.
    (scripts / "scene.txt").write_text("".join(f"Penny: line {i} of the scene, asking something\n"
                                               f"Sheldon: answer {i}, which is of course correct\n"
                                               for i in range(60000)), encoding="utf-8")
    out = tmp_path / "out" / "rp.jsonl"
    args = ["data", "roleplay", "--texts", scripts, "--character", "Sheldon", "--output", out]
    outcome = signal_when(args, any_match(out.parent, ".rp.jsonl.*.partial"), signal.SIGTERM)

    assert_one_line_stop(outcome, signal.SIGTERM, "in `data roleplay`")
    assert not out.exists()
    assert leftovers(out.parent) == []


def test_sigterm_during_pairs_keeps_the_journal(cli, tiny_model_dir, sample_data, tmp_path):
    out = tmp_path / "pairs.jsonl"
    journal = tmp_path / "pairs.jsonl.partial"
    # The settings line, then at least one prompt's outcome.
    with signal_self_when(lambda: journal.is_file() and journal.read_text().count("\n") >= 2, signal.SIGTERM):
        outcome = cli("pairs", "reference-vs-self", "--model", tiny_model_dir, "--data",
                      sample_data / "hh_rlhf_sample.jsonl", "--limit", "50", "--max-new-tokens", "8", "--output", out)

    assert_one_line_stop(outcome, signal.SIGTERM, f"prompt(s) done, in the journal {journal}")
    assert not out.exists() and journal.is_file()
    assert hidden(tmp_path) == []


def test_ctrl_c_stops_the_server_in_one_line(cli, tiny_model_dir):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def listening() -> bool:
        with socket.socket() as client:
            return client.connect_ex(("127.0.0.1", port)) == 0

    # uvicorn catches the signal, shuts down and swallows the interrupt: it must still end as one.
    with signal_self_when(listening, signal.SIGINT):
        outcome = cli("serve", "--model", tiny_model_dir, "--port", port)
    assert_one_line_stop(outcome, signal.SIGINT, "in `serve`")
