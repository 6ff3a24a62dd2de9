"""Disk estimates: what they count, checked against the shape they are computed from."""

from __future__ import annotations

from tifa_lite.config import load_recipe
from tifa_lite.planner.disk import SIDE_FILES, gguf_bytes, merged_bytes, training_bytes
from tifa_lite.planner.memory import lora_params
from tifa_lite.planner.shapes import known_shape

QWEN = "Qwen/Qwen2.5-0.5B-Instruct"


def recipe(**train):
    return load_recipe({"model": {"name_or_path": QWEN}, "train": {"max_steps": 100, "save_steps": 10, **train}})


def test_a_merged_model_is_its_parameters_at_the_dtype():
    shape = known_shape(QWEN)
    assert merged_bytes(shape, "fp32") - SIDE_FILES == 2 * (merged_bytes(shape, "bf16") - SIDE_FILES)
    assert merged_bytes(shape, "bf16") - SIDE_FILES == 2 * shape.total_params


def test_a_k_quant_made_by_llama_cpp_needs_its_f16_intermediate_too():
    shape = known_shape(QWEN)
    assert gguf_bytes(shape, "q4_k_m", "builtin") < gguf_bytes(shape, "q8_0") < gguf_bytes(shape, "f16")  # the files
    assert gguf_bytes(shape, "q4_k_m", "llama.cpp") == gguf_bytes(shape, "q4_k_m", "builtin") + 2 * shape.total_params


def test_training_counts_the_checkpoints_held_at_once():
    # save_total_limit=2: a third is written before the oldest goes; 10 saves without a limit.
    two, four, unlimited = (training_bytes(recipe(save_total_limit=n)) for n in (2, 4, None))
    per_checkpoint = (four - two) / 2
    assert per_checkpoint > 0
    assert unlimited - two == 7 * per_checkpoint
    config = recipe()
    adapter = lora_params(known_shape(QWEN), config.lora.r, ("q_proj", "k_proj", "v_proj", "o_proj",
                                                               "gate_proj", "up_proj", "down_proj"))
    assert per_checkpoint > adapter * 2  # the adapter and at least its optimizer state
