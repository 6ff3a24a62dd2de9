"""train.auto_fit through the real train() path: the T4 profile on a recipe asking for bf16 is
switched to fp16 before loading, the change is printed and recorded in resolved_config.yaml."""

from __future__ import annotations

import yaml

from tifa_lite import train
from tifa_lite.config.loader import RECIPES_DIR


def test_t4_profile_auto_fit_switches_bf16_to_fp16_and_trains(tiny_model_dir, tmp_path, sample_data, capsys):
    overrides = {
        "model.name_or_path": str(tiny_model_dir),
        "quant.bits": None,
        "train.output_dir": str(tmp_path / "run"),
        "train.max_steps": 1,
        "train.per_device_batch_size": 2,
        "train.gradient_accumulation_steps": 1,
        "train.global_batch_size": None,
        "train.precision": "bf16",  # what a recipe written for an A10 asks for
        "data.path": str(sample_data / "roleplay_sheldon_sample.jsonl"),
        "data.limit": 4,
        "data.max_length": 256,
        "lora.r": 4,
    }
    result = train(RECIPES_DIR / "sft_qlora_roleplay.yaml", profile="t4", **overrides)
    out = capsys.readouterr().out
    assert "auto_fit: train.precision: 'bf16' -> 'fp16' (t4 has no bf16)" in out
    assert result.global_step == 1
    resolved = yaml.safe_load((result.output_dir / "resolved_config.yaml").read_text())
    assert resolved["train"]["precision"] == "fp16" and resolved["hardware"]["gpu"] == "t4"
