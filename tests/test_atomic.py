"""Replacing a folder: at every moment the old or the new one exists in full, and a failure
half-way leaves the old one in place."""

import os
from pathlib import Path

import pytest

from tifa_lite import atomic
from tifa_lite.atomic import replacing_dir, swap_dir


def folders_holding(root: Path, name: str) -> list[str]:
    return sorted(p.parent.name for p in root.glob(f"*/{name}"))


@pytest.fixture
def old_and_new(tmp_path):
    target, new = tmp_path / "out", tmp_path / "out.partial"
    target.mkdir()
    (target / "old.txt").write_text("old")
    new.mkdir()
    (new / "new.txt").write_text("new")
    return target, new


def test_swap_keeps_one_complete_folder_at_every_step(tmp_path, old_and_new, monkeypatch):
    target, new = old_and_new
    real_replace = os.replace
    moments = []

    def watched_replace(src, dst):
        moments.append((folders_holding(tmp_path, "old.txt"), folders_holding(tmp_path, "new.txt")))
        real_replace(src, dst)
        moments.append((folders_holding(tmp_path, "old.txt"), folders_holding(tmp_path, "new.txt")))

    monkeypatch.setattr(atomic.os, "replace", watched_replace)
    swap_dir(new, target)
    assert len(moments) == 4  # two renames: old aside, new in
    assert all(old or new_ for old, new_ in moments)
    assert all(old for old, _ in moments[:-1]), "the old folder may go only after the new one is in place"
    assert (target / "new.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing set aside is left


def test_swap_failing_midway_puts_the_old_folder_back(tmp_path, old_and_new, monkeypatch):
    target, new = old_and_new
    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(src) == new:
            raise OSError("disk went away between the two renames")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk went away"):
        swap_dir(new, target)
    assert (target / "old.txt").read_text() == "old"
    assert (new / "new.txt").read_text() == "new"  # left where it was, for another try
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.partial"]


def test_replacing_dir_failing_midway_keeps_the_old_contents(tmp_path, old_and_new, monkeypatch):
    target, _ = old_and_new
    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(dst) == target and ".partial-" in Path(src).name:
            raise OSError("rename refused")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename refused"):
        with replacing_dir(target) as staging:
            (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.partial"]  # the fixture's, untouched


def dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    stale = tmp_path / f".pairs.jsonl.{dead_pid()}-0badc0de.partial"
    stale.write_text("half a line")
    atomic.write_text(tmp_path / "pairs.jsonl", "whole\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl"]


def test_files_derived_from_a_killed_writers_temporary_file_are_removed_too(tmp_path):
    """export gguf's round-trip probe link and llama.cpp's 16-bit intermediate before a K-quant
    sit beside the temporary file, named after it."""
    tag = f"{dead_pid()}-0badc0de"
    for suffix in (".partial", ".partial.gguf", ".partial.16bit.gguf"):
        (tmp_path / f".m.gguf.{tag}{suffix}").write_text("half")
    (tmp_path / ".m.gguf.notes").write_text("not ours")
    with atomic.replacing_file(tmp_path / "m.gguf") as tmp:
        tmp.write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.gguf.notes", "m.gguf"]


def test_temporary_names_follow_the_scheme_the_sweep_recognises(tmp_path):
    seen = []
    with replacing_dir(tmp_path / "merged", "merging") as staging:
        seen.append(staging.name)
    with atomic.replacing_file(tmp_path / "m.gguf") as tmp:
        seen.append(tmp.name)
    assert atomic._stale_pattern("merged").match(seen[0]) and atomic._stale_pattern("m.gguf").match(seen[1])
    assert f"-{os.getpid()}-" in seen[0] and f".{os.getpid()}-" in seen[1]


@pytest.mark.parametrize("kind, make, message", [
    ("dir", lambda p: p.write_text("x"), "is an existing file, not a folder"),
    ("file", lambda p: p.mkdir(), "is an existing folder, not a file"),
])
def test_check_output_path_refuses_the_wrong_kind(tmp_path, kind, make, message):
    from tifa_lite.errors import ConfigError

    make(tmp_path / "out")
    with pytest.raises(ConfigError, match=f"--output={tmp_path / 'out'} {message}"):
        atomic.check_output_path(tmp_path / "out", "--output", kind=kind)


def test_check_output_path_accepts_a_new_nested_path(tmp_path):
    assert atomic.check_output_path(tmp_path / "a" / "b" / "out", "k") == (tmp_path / "a" / "b" / "out").resolve()
