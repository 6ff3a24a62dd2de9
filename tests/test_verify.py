"""Weights files checked whole from their size and header, on real files cut short or overwritten."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from tifa_lite.verify import CorruptFileError, check_safetensors, check_weights_folder, checkpoint_problem


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"a": torch.ones(64, 32), "b": torch.zeros(7, dtype=torch.bfloat16)}, str(path), metadata={"format": "pt"})
    return path


def cut(path, keep: float = 0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_whole_file_passes(weights):
    check_safetensors(weights)
    check_weights_folder(weights.parent)


def test_a_file_cut_in_half_is_named(weights):
    cut(weights)
    with pytest.raises(CorruptFileError, match="describes 8.2 KB of tensor data but the file holds") as info:
        check_safetensors(weights)
    assert str(weights) in str(info.value)


def test_a_zeroed_header_is_named(weights):
    data = bytearray(weights.read_bytes())
    data[:64] = bytes(64)
    weights.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="header length reads 0"):
        check_weights_folder(weights.parent)


def test_a_header_cut_short_and_a_garbled_header(weights):
    data = weights.read_bytes()
    weights.write_bytes(data[:20])
    with pytest.raises(CorruptFileError, match="header says it is"):
        check_safetensors(weights)
    (length,) = struct.unpack("<Q", data[:8])
    weights.write_bytes(data[:8] + b"{" * length + data[8 + length:])
    with pytest.raises(CorruptFileError, match="not valid JSON"):
        check_safetensors(weights)


def test_a_missing_shard_of_an_index(weights):
    (weights.parent / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(CorruptFileError, match="model-00002-of-00002.safetensors"):
        check_weights_folder(weights.parent)


def test_a_checkpoint_with_a_truncated_optimizer(tmp_path, weights):
    ckpt = tmp_path
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
    torch.save({"state": torch.ones(1000)}, ckpt / "optimizer.pt")
    assert checkpoint_problem(ckpt) is None
    cut(ckpt / "optimizer.pt")
    assert "optimizer.pt" in checkpoint_problem(ckpt)
    (ckpt / "trainer_state.json").write_text("{")
    assert "trainer_state.json is damaged" in checkpoint_problem(ckpt)
