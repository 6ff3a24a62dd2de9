"""`tifa-lite plan`: the report, --json, profiles, and no torch import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tifa_lite.cli import main
from tifa_lite.config import load_recipe
from tifa_lite.config.loader import PROFILES_DIR

RECIPE = "recipes/sft_qlora_roleplay.yaml"


def test_plan_json_last_line_has_peak(capsys):
    assert main(["plan", RECIPE, "--gpu", "t4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert data["gpu"] == "t4" and data["precision"] == "fp16"
    assert data["peak_gib"] == pytest.approx(sum(data["terms_gib"].values()), abs=0.01)
    assert data["terms_gib"]["base weights"] > 4  # a 7B NF4 base
    assert isinstance(data["fits"], bool)


def test_plan_report_names_every_term_and_a_verdict(capsys):
    assert main(["plan", RECIPE, "train.gradient_checkpointing=false", "--gpu", "8gb"]) == 0
    out = capsys.readouterr().out
    for term in ("runtime", "base weights", "LoRA params + grads", "optimizer states", "activations", "logits"):
        assert term in out
    assert "DOES NOT FIT" in out and "train.gradient_checkpointing: False -> True" in out


def test_plan_grpo_shows_generation_phase(capsys):
    overrides = ["train.method=grpo", "grpo.use_vllm='off'", "grpo.max_completion_length=1024",
                 "train.per_device_batch_size=8", "train.gradient_accumulation_steps=4", "train.global_batch_size=32"]
    assert main(["plan", RECIPE, *overrides, "--gpu", "a100-80g"]) == 0
    out = capsys.readouterr().out
    assert "generation KV cache" in out


def test_plan_with_unknown_gpu_is_a_clean_cli_error(capsys):
    assert main(["plan", RECIPE, "hardware.gpu=t5"]) == 2
    assert "unknown GPU" in capsys.readouterr().err


def test_plan_does_not_import_torch():
    code = (
        "import sys; from tifa_lite.cli.plan import run, register; import argparse;"
        "ap = argparse.ArgumentParser(); register(ap.add_subparsers());"
        f"run(ap.parse_args(['plan', '{RECIPE}', '--gpu', 'a10', '--json']));"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("NO-TORCH")


@pytest.mark.parametrize("name", ["t4", "a10", "modelscope_free", "rtx3090", "rtx4090", "8gb"])
def test_hardware_profiles_validate_and_name_their_card(name):
    config = load_recipe(RECIPE, profile=name)
    assert config.hardware.gpu != "auto" and config.train.auto_fit


def test_t4_profile_is_fp16_without_flash_attention():
    config = load_recipe(RECIPE, profile="t4")
    assert (config.train.precision, config.quant.compute_dtype, config.model.attn_implementation) == ("fp16", "fp16", "sdpa")
    assert (PROFILES_DIR / "t4.yaml").is_file()
