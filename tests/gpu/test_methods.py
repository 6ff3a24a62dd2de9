"""DPO and GRPO on the GPU for a few steps (QLoRA), GRPO also with vLLM colocated when vllm
is installed."""

from __future__ import annotations

import importlib.util
import math

import pytest

from tifa_lite.training.runner import train

from . import support

pytestmark = support.pytestmark
COMMON = {"train.progress_bar": False, "train.auto_fit": False, "train.save_steps": 10_000, "train.logging_steps": 1,
          "train.warmup_ratio": 0.0, "train.global_batch_size": None, "train.gradient_accumulation_steps": 1,
          "train.overwrite_output_dir": True, "train.resume": "never", "train.precision": "auto",
          "quant.compute_dtype": "auto", "lora.r": 16, "lora.alpha": 32}


def _finite(values: list[float], steps: int) -> None:
    assert len(values) == steps and all(math.isfinite(v) for v in values), values


def test_dpo_three_steps(gpu_model_dir, tmp_path):
    result = train(support.REPO / "recipes" / "dpo_qlora_hh.yaml", **{
        **COMMON, "model.name_or_path": str(gpu_model_dir), "data.path": str(support.DATA / "hh_rlhf_sample.jsonl"),
        "data.max_length": 256, "data.eval_ratio": 0.0, "train.max_steps": 3, "train.per_device_batch_size": 2,
        "train.output_dir": str(tmp_path / "dpo")})
    values = support.losses(result.output_dir)
    _finite(values, 3)
    support.Results.add("dpo", steps=3, loss=[round(v, 4) for v in values])


def _grpo(gpu_model_dir, out, steps: int, use_vllm: str):
    return train(support.REPO / "recipes" / "grpo_qlora_a10.yaml", **{
        **COMMON, "model.name_or_path": str(gpu_model_dir),
        "data.path": str(support.DATA / "arithmetic" / "train.jsonl"), "data.format": "gsm8k", "data.limit": 16,
        "train.max_steps": steps, "train.per_device_batch_size": 4, "train.output_dir": str(out),
        "grpo.num_generations": 4, "grpo.max_completion_length": 32, "grpo.use_vllm": use_vllm,
        "grpo.vllm_gpu_memory_utilization": 0.3,
        # A random model scores 0 on the R1-Zero rules; repetition varies between its completions,
        # so advantages (and the loss's gradient) are not all zero.
        "grpo.rewards": [{"name": "xmlcount"}, {"name": "repetition"}]})


def test_grpo_three_steps_with_transformers_generation(gpu_model_dir, tmp_path):
    result = _grpo(gpu_model_dir, tmp_path / "grpo", 3, "off")
    values = support.losses(result.output_dir)
    _finite(values, 3)
    support.Results.add("grpo transformers", steps=3, loss=[round(v, 4) for v in values],
                        reward=[round(v, 3) for v in support.losses(result.output_dir, "reward")])


@support.requires_real_cuda
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed on this machine")
def test_grpo_two_steps_with_vllm_colocated(gpu_model_dir, tmp_path):
    result = _grpo(gpu_model_dir, tmp_path / "grpo_vllm", 2, "on")
    values = support.losses(result.output_dir)
    _finite(values, 2)
    support.Results.add("grpo vllm colocate", steps=2, loss=[round(v, 4) for v in values])


@pytest.fixture
def as_t4(monkeypatch):
    """The GPU treated as a T4 (TIFA_LITE_NO_BF16=1): fp16 compute, its loss scaler, fp32 norms."""
    from tifa_lite.hardware import NO_BF16_ENV

    monkeypatch.setenv(NO_BF16_ENV, "1")


def test_grpo_as_a_t4_generates_on_the_4bit_base(gpu_model_dir, tmp_path, as_t4):
    """GRPO's generation runs outside autocast: on a T4 with fp32 norms it crashed at step 1
    until the 16-bit heads cast their input (tifa_lite.modeling.dtypes.cast_head_inputs)."""
    result = _grpo(gpu_model_dir, tmp_path / "grpo_t4", 2, "off")
    values = support.losses(result.output_dir)
    _finite(values, 2)
    support.Results.add("grpo as T4", steps=2, loss=[round(v, 4) for v in values])


def test_full_parameter_fp16_as_a_t4(gpu_model_dir, tmp_path, as_t4):
    """fp32 master weights under fp16 autocast with the loss scaler (fp16 weights cannot be unscaled)."""
    import json

    result = train(support.REPO / "recipes" / "sft_qlora_roleplay.yaml", **support.sft_overrides(
        gpu_model_dir, tmp_path / "full_fp16", steps=3, **{"quant.bits": None, "lora.enabled": False,
                                                           "train.learning_rate": 1e-5}))
    numerics = json.loads((result.output_dir / "run_plan.json").read_text())["numerics"]
    assert (numerics["weight_dtype"], numerics["autocast"], numerics["grad_scaler"]) == ("fp32", "fp16", True)
    values = support.losses(result.output_dir)
    _finite(values, 3)
    support.Results.add("full-parameter fp16 as T4", steps=3, loss=[round(v, 4) for v in values])


def test_inference_entry_points_as_a_t4(gpu_model_dir, tmp_path, as_t4):
    """chat / serve / eval / pairs / the quickstart load through load_inference_model: 4-bit base,
    fp16 heads, fp32 norms, generation outside autocast."""
    from tifa_lite.conversation.session import chat

    session = chat(str(gpu_model_dir), bits=4, do_sample=False, max_new_tokens=4)
    reply = session.say("Hello")
    assert isinstance(reply, str)
    support.Results.add("chat 4-bit as T4", reply_chars=len(reply))
