"""Cross-section rules of the schema that would otherwise only fail on a GPU."""

import json
from pathlib import Path

import pytest

from tifa_lite.config import load_recipe
from tifa_lite.errors import ConfigError

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def _json(tmp_path, stage: int) -> str:
    path = tmp_path / f"zero{stage}.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": stage}}), encoding="utf-8")
    return str(path)


def test_a_zero3_deepspeed_json_with_a_4bit_base_is_refused(tmp_path):
    # zero_stage is left out: the stage comes from the JSON alone, as in a recipe that names only the file.
    with pytest.raises(ConfigError, match=r"distributed\.deepspeed=.*zero3\.json sets zero_optimization\.stage=3, "
                                          r"and quant\.bits=4"):
        load_recipe(RECIPES / "sft_qlora_roleplay.yaml", [f"distributed.deepspeed={_json(tmp_path, 3)}"])


def test_a_recipe_relative_zero3_json_is_read_once_resolved():
    # deepspeed/zero3.json only exists relative to recipes/: the check runs after the loader finds it.
    with pytest.raises(ConfigError, match=r"zero_optimization\.stage=3, and quant\.bits=4"):
        load_recipe(RECIPES / "sft_qlora_roleplay.yaml", ["distributed.deepspeed=deepspeed/zero3.json"])


def test_a_zero2_json_or_a_16bit_base_is_accepted(tmp_path):
    assert load_recipe(RECIPES / "sft_qlora_roleplay.yaml", [f"distributed.deepspeed={_json(tmp_path, 2)}"]).quant.bits == 4
    config = load_recipe(RECIPES / "sft_qlora_roleplay.yaml", [f"distributed.deepspeed={_json(tmp_path, 3)}",
                                                                "quant.bits=null", "lora.enabled=false"])
    assert config.distributed.json_zero_stage() == 3
