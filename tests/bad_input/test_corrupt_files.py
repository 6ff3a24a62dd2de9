"""Corrupt inputs, made the way users make them (a copy cut short, a header overwritten),
end in one line naming the broken file, before anything loads them; a resumed run skips a
damaged last checkpoint and continues from the intact one before it."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from tests.bad_input.conftest import assert_refused, conversation
from tests.merge.conftest import train_adapter
from tifa_lite.verify import check_weights_folder


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    return train_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter") / "lora", steps=1)


def cut_in_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def zero_header(path):
    data = bytearray(path.read_bytes())
    data[:8] = bytes(8)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [cut_in_half, zero_header])
def test_merge_of_a_damaged_adapter_names_the_file(cli, adapter, tmp_path, damage):
    broken = tmp_path / "lora"
    shutil.copytree(adapter, broken)
    damage(broken / "adapter_model.safetensors")
    outcome = cli("merge", "--adapter", broken, "--output", tmp_path / "merged", "--no-check")
    assert_refused(outcome, f"{broken / 'adapter_model.safetensors'}: damaged safetensors file")
    assert not (tmp_path / "merged").exists()


def test_loading_a_damaged_adapter_for_chat_names_the_file(adapter, tmp_path, tiny_model_dir):
    from tifa_lite.modeling.inference import load_inference_model
    from tifa_lite.verify import CorruptFileError

    broken = tmp_path / "lora"
    shutil.copytree(adapter, broken)
    cut_in_half(broken / "adapter_model.safetensors")
    with pytest.raises(CorruptFileError, match="adapter_model.safetensors: damaged"):
        load_inference_model(tiny_model_dir, broken)


def test_a_damaged_base_is_named_before_the_model_loads(cli, train_args, tiny_model_dir, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    cut_in_half(base / "model.safetensors")
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps(conversation()) + "\n")
    outcome = cli(*train_args(data, model__name_or_path=base))
    assert_refused(outcome, f"{base / 'model.safetensors'}: damaged safetensors file")


def test_merge_into_a_damaged_base_names_it(cli, adapter, tiny_model_dir, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    zero_header(base / "model.safetensors")
    outcome = cli("merge", "--adapter", adapter, "--base", base, "--output", tmp_path / "merged", "--no-check")
    assert_refused(outcome, f"{base / 'model.safetensors'}: damaged safetensors file", "header length reads 0")


def test_resume_skips_a_truncated_last_checkpoint(cli, train_args, tmp_path, caplog):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(conversation(f"q{i}", f"a{i}")) + "\n" for i in range(4)))
    args = train_args(data, train__save_steps=1, train__keep_checkpoints="true")
    first = cli(*args)
    assert first.code == 0, first.err
    # As a run killed while writing its second checkpoint leaves it.
    run, work = tmp_path / "run", tmp_path / "run.partial"
    run.rename(work)
    cut_in_half(work / "checkpoint-2" / "adapter_model.safetensors")
    with caplog.at_level(logging.WARNING):
        again = cli(*args)
    assert again.code == 0 and "Traceback" not in again.err, again.err
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert f"skipping {work / 'checkpoint-2'}, which is damaged" in warnings
    assert "adapter_model.safetensors: damaged safetensors file" in warnings
    # The second attempt resumed from step 1 and wrote step 2's checkpoint whole again.
    assert (run / "resolved_config.attempt1.yaml").is_file()
    assert json.loads((run / "checkpoint-2" / "trainer_state.json").read_text())["global_step"] == 2
    check_weights_folder(run / "checkpoint-2", torch_files=True)


def test_explicit_resume_from_a_damaged_checkpoint_is_refused(cli, tmp_path, train_args):
    ckpt = tmp_path / "checkpoint-3"
    ckpt.mkdir()
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
    (ckpt / "adapter_model.safetensors").write_bytes(bytes(100))
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps(conversation()) + "\n")
    outcome = cli(*train_args(data, train__resume=ckpt))
    assert_refused(outcome, f"train.resume={ckpt}: the checkpoint is damaged", "train.resume=auto")

