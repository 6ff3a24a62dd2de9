"""Every output follows the umask, weights included (safetensors' own writer makes 0600 files,
which another user of a shared machine cannot read). umask 002 (group-writable) shows the
modes come from the umask, not from a fixed 0644."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.bad_input.test_kills import chat_data

UMASK = 0o002


@pytest.fixture
def umask_002():
    old = os.umask(UMASK)
    try:
        yield
    finally:
        os.umask(old)


def wrong_modes(folder: Path) -> list[str]:
    wrong = []
    for path in [folder, *folder.rglob("*")]:
        want = (0o777 if path.is_dir() else 0o666) & ~UMASK
        mode = stat.S_IMODE(path.lstat().st_mode)
        if not path.is_symlink() and mode != want:
            wrong.append(f"{path.relative_to(folder.parent)} {oct(mode)}")
    return wrong


def test_a_trained_adapter_its_checkpoints_and_its_merge_follow_the_umask(cli, train_args, tmp_path, umask_002):
    data = chat_data(tmp_path / "chat.jsonl", 4)
    run = cli(*train_args(data, train__max_steps=1, train__save_steps=1, train__keep_checkpoints=True))
    assert run.code == 0, run.err
    out = tmp_path / "run"
    assert (out / "adapter_model.safetensors").is_file() and list(out.glob("checkpoint-1/*.safetensors"))
    assert wrong_modes(out) == []

    merged = cli("merge", "--adapter", out, "--output", tmp_path / "merged", "--dtype", "fp32", "--no-check")
    assert merged.code == 0, merged.err
    assert list((tmp_path / "merged").glob("*.safetensors"))
    assert wrong_modes(tmp_path / "merged") == []
