"""A real small file system (a tmpfs mount): what does not fit is refused before the work,
what runs out later is said in one line — ``no space on <filesystem>: need about N, have M``
— and nothing half-written is left on it."""

from __future__ import annotations

import threading
import time

import pytest

from tests.bad_input.conftest import assert_refused, fill, leftovers
from tests.bad_input.test_before_load import model_load  # noqa: F401  (fixtures)
from tests.bad_input.test_kills import adapter, chat_data  # noqa: F401


def test_a_merge_that_cannot_fit_is_refused_before_it_starts(cli, adapter, small_fs):  # noqa: F811
    fs = small_fs("1m")
    outcome = cli("merge", "--adapter", adapter, "--output", fs / "merged", "--dtype", "fp32", "--no-check")
    assert_refused(outcome, f"no space on {fs} (tmpfs): need about 2", "MB, have 1.0 MB", "--output")
    assert list(fs.iterdir()) == []


def test_a_gguf_export_that_cannot_fit_is_refused_before_it_starts(cli, tiny_model_dir, small_fs):
    fs = small_fs("1m")
    outcome = cli("export", "gguf", "--model", tiny_model_dir, "--output", fs / "m.gguf", "--no-check",
                  "--converter", "builtin")
    assert_refused(outcome, f"no space on {fs} (tmpfs): need about", "have 1.0 MB")
    assert list(fs.iterdir()) == []


def test_a_training_run_that_cannot_fit_is_refused_before_the_model_loads(cli, train_args, small_fs, tmp_path,
                                                                          model_load):  # noqa: F811
    fs = small_fs("4m")
    data = chat_data(tmp_path / "chat.jsonl", 8)
    outcome = cli(*train_args(data, train__output_dir=fs / "run"))
    assert_refused(outcome, f"no space on {fs} (tmpfs): need about", "have 4.2 MB", "train.output_dir")
    assert model_load.calls == 0
    assert list(fs.iterdir()) == []


def test_a_disk_that_fills_up_during_training_ends_in_one_line(cli, train_args, small_fs, tmp_path):
    """Another process fills the disk after the check: the next checkpoint cannot be written."""
    fs = small_fs("64m")
    data = chat_data(tmp_path / "chat.jsonl", 8)
    metrics = fs / "run.partial" / "metrics.jsonl"

    def fill_once_training() -> None:
        deadline = time.monotonic() + 120
        while not metrics.is_file() and time.monotonic() < deadline:
            time.sleep(0.01)
        fill(fs)

    filler = threading.Thread(target=fill_once_training)
    filler.start()
    try:
        outcome = cli(*train_args(data, train__output_dir=fs / "run", train__max_steps=40, train__save_steps=2,
                                  train__logging_steps=1))
    finally:
        filler.join()
    assert_refused(outcome, f"no space on {fs} (tmpfs): need about", "train.output_dir")
    assert "have 0.0 MB" in outcome.err or "have 0.1 MB" in outcome.err, outcome.err
    assert [p for p in leftovers(fs) if p.startswith(".")] == []


def test_out_of_space_anywhere_is_said_in_one_line(cli, small_fs, tmp_path):
    """data roleplay has no estimate of its own: the OS's ENOSPC, translated."""
    fs = small_fs("64k")
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "scene.txt").write_text("".join(f"Penny: question {i}\nSheldon: answer {i}\n" for i in range(3000)),
                                       encoding="utf-8")
    outcome = cli("data", "roleplay", "--texts", scripts, "--character", "Sheldon", "--output", fs / "rp.jsonl")
    assert_refused(outcome, f"no space on {fs} (tmpfs): need more than the")
    assert list(fs.iterdir()) == []


@pytest.mark.parametrize("writer", ["torch.save", "safetensors"])
def test_the_libraries_words_for_a_full_disk_are_translated(small_fs, writer):
    """torch says `enforce fail at inline_container.cc … unexpected pos`, safetensors `IoError … StorageFull`."""
    import torch

    from tifa_lite.diskspace import DiskFullError, translating

    fs = small_fs("1m")
    tensors = {"w": torch.zeros(1 << 19)}  # 2 MB
    with pytest.raises(DiskFullError) as caught, translating(fs, need=2e6, key="--output"):
        if writer == "torch.save":
            torch.save(tensors, fs / "x.pt")
        else:
            from safetensors.torch import save_file

            save_file(tensors, str(fs / "x.safetensors"))
    assert str(caught.value).startswith(f"no space on {fs} (tmpfs): need about 2.0 MB, have ")
