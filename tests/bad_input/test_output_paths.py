"""An output that cannot be written is refused before any work, naming the key and what to
do, by every command that writes one: train, merge, export, pairs, data, pipeline."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest

from tests.bad_input.conftest import NOBODY, RECIPE, assert_refused, conversation, leftovers, run_cli, why_user_cannot_run_us


def write_data(folder, rows=4):
    path = folder / "chat.jsonl"
    path.write_text("".join(json.dumps(conversation()) + "\n" for _ in range(rows)))
    return path


def test_train_output_dir_that_is_a_file(cli, train_args, tmp_path):
    taken = tmp_path / "run"
    taken.write_text("notes")
    outcome = cli(*train_args(write_data(tmp_path), train__output_dir=taken))
    assert_refused(outcome, f"train.output_dir={taken}", "is an existing file", "Choose a folder path")
    assert taken.read_text() == "notes" and leftovers(tmp_path) == []


def test_train_output_dir_under_a_read_only_folder(shared_tmp, read_only_user, tiny_model_dir):
    """A real read-only folder, and a real process (as another user when we are root):
    refused before the model loads, with no run.partial attempted."""
    data = write_data(shared_tmp)
    locked = shared_tmp / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    outcome = run_cli("train", RECIPE,
                      f"model.name_or_path={tiny_model_dir}", f"data.path={data}",
                      f"train.output_dir={locked / 'run'}", as_user=read_only_user)
    assert_refused(outcome, f"train.output_dir={locked / 'run'}", "not writable", "Choose a train.output_dir under a folder")
    assert "model loaded" not in outcome.err and list(locked.iterdir()) == []


def test_train_output_dir_below_a_file(cli, train_args, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    outcome = cli(*train_args(write_data(tmp_path), train__output_dir=tmp_path / "notes.txt" / "run"))
    assert_refused(outcome, "train.output_dir=", "notes.txt is a file", "Choose another train.output_dir")


def test_train_output_dir_holding_a_finished_run(cli, train_args, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "adapter_model.safetensors").write_text("x")
    outcome = cli(*train_args(write_data(tmp_path)))
    assert_refused(outcome, "train.output_dir", "already holds a finished run", "train.overwrite_output_dir=true")


def test_merge_output_that_is_a_file(cli, tmp_path):
    taken = tmp_path / "merged"
    taken.write_text("x")
    outcome = cli("merge", "--adapter", tmp_path / "no-adapter", "--output", taken)
    assert_refused(outcome, f"--output={taken}", "is an existing file", "Choose a folder path for --output")


def test_merge_output_under_a_read_only_folder(shared_tmp, read_only_user):
    locked = shared_tmp / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    outcome = run_cli("merge", "--adapter", shared_tmp / "adapter", "--output", locked / "merged", as_user=read_only_user)
    assert_refused(outcome, f"--output={locked / 'merged'}", "not writable")
    assert list(locked.iterdir()) == []


def test_merge_output_that_exists(cli, tmp_path):
    (tmp_path / "merged").mkdir()
    outcome = cli("merge", "--adapter", tmp_path / "a", "--output", tmp_path / "merged")
    assert_refused(outcome, "--output", "already exists", "--overwrite")


def test_export_gguf_output_that_is_a_folder(cli, tiny_model_dir, tmp_path):
    (tmp_path / "out").mkdir()
    outcome = cli("export", "gguf", "--model", tiny_model_dir, "--output", tmp_path / "out")
    assert_refused(outcome, f"--output={tmp_path / 'out'}", "is an existing folder", "Choose a file path for --output")
    assert leftovers(tmp_path) == []


def test_export_gguf_output_under_a_read_only_folder(shared_tmp, read_only_user, tiny_model_dir):
    locked = shared_tmp / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    outcome = run_cli("export", "gguf", "--model", tiny_model_dir, "--output", locked / "m.gguf", as_user=read_only_user)
    # As another user the model folder may be unreadable too; the output is checked first.
    assert_refused(outcome, f"--output={locked / 'm.gguf'}", "not writable")


def test_export_gguf_of_an_adapter_folder(cli, tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    outcome = cli("export", "gguf", "--model", tmp_path / "adapter", "--output", tmp_path / "m.gguf")
    assert_refused(outcome, "--model", "no config.json", "run `tifa-lite merge` first")


def test_pairs_output_that_is_a_folder(cli, tmp_path):
    (tmp_path / "pairs").mkdir()
    data = tmp_path / "prompts.jsonl"
    data.write_text(json.dumps({"prompt": "hi", "chosen": "a", "rejected": "b"}) + "\n")
    outcome = cli("pairs", "reference-vs-self", "--data", data, "--output", tmp_path / "pairs")
    assert_refused(outcome, f"--output={tmp_path / 'pairs'}", "is an existing folder", "Choose a file path")


def test_data_roleplay_output_below_a_file(cli, tmp_path):
    script = tmp_path / "script.txt"
    script.write_text("Penny: Hi!\nSheldon: Hello.\n")
    outcome = cli("data", "roleplay", "--texts", script, "--character", "Sheldon", "--output", script / "out.jsonl")
    assert_refused(outcome, "--output=", "script.txt is a file", "Choose another --output")
    assert script.read_text().startswith("Penny")


def test_pipeline_output_dir_that_is_a_file(cli, tmp_path):
    pipeline = RECIPE.parent / "pipelines" / "reasoning_cpu.yaml"
    taken = tmp_path / "pipe"
    taken.write_text("x")
    outcome = cli("pipeline", pipeline, f"output_dir={taken}")
    assert_refused(outcome, f"output_dir={taken}", "is an existing file")


def test_a_user_who_cannot_run_the_interpreter_is_a_skip_reason(tmp_path):
    """Root's interpreter or virtualenv under a private home (mode 700) is out of the lowered
    user's reach: the read-only tests skip with that reason instead of failing on the import."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a command as another user")
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    python = home / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o700)  # root's own, as a virtualenv in /root is to everyone else
    reason = why_user_cannot_run_us(NOBODY, str(python))
    assert reason is not None and f"uid {NOBODY} cannot run {python} and import tifa_lite" in reason
    assert "Permission denied" in reason
