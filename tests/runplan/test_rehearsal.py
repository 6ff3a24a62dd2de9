"""The CPU rehearsal of a T4 and an A10 (``TIFA_LITE_REHEARSE``): the card's run plan, run on
the CPU in the card's dtypes — and the GPU breakages it reproduces, each shown failing the
way it fails on the card before it is shown fixed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tifa_lite.config import load_recipe
from tifa_lite.errors import ConfigError
from tifa_lite.runplan import PLAN_FILE, resolve_plan

REPO = Path(__file__).resolve().parents[2]


def tiny_run(tiny_model_dir, tmp_path, recipe="recipes/sft_qlora_roleplay.yaml", **items):
    """One short step on the tiny random Llama: what the rehearsal needs is the dtype path, not speed."""
    return {
        "model.name_or_path": str(tiny_model_dir), "data.path": str(REPO / "data" / "roleplay_sheldon_sample.jsonl"),
        "data.limit": 2, "data.max_length": 256, "data.eval_ratio": 0.0, "data.overlength": "truncate",
        "train.max_steps": 1, "train.per_device_batch_size": 2, "train.gradient_accumulation_steps": 1,
        "train.warmup_ratio": 0.0, "train.progress_bar": False, "train.gradient_checkpointing": False,
        "train.output_dir": str(tmp_path / "out"), "lora.r": 4, "lora.alpha": 8, **items,
    }


@pytest.mark.parametrize("card, expected", [
    ("t4", dict(precision="fp16", autocast="fp16", grad_scaler=True, weight_dtype="fp16", quant_compute_dtype="fp16",
                adapter_dtype="fp32", norm_dtype="fp32")),
    ("a10", dict(precision="bf16", autocast="bf16", grad_scaler=False, weight_dtype="bf16", quant_compute_dtype="bf16",
                 adapter_dtype="fp32", norm_dtype=None)),
])
def test_the_rehearsal_resolves_the_cards_plan_on_the_cpu(monkeypatch, card, expected):
    monkeypatch.setenv("TIFA_LITE_REHEARSE", card)
    plan = resolve_plan(load_recipe(REPO / "recipes" / "sft_qlora_roleplay.yaml"))
    assert plan.device == "cpu" and plan.rehearsal == card
    assert {k: getattr(plan.numerics, k) for k in expected} == expected
    assert "rehearsed on the CPU" in plan.hardware.card and plan.attn_implementation == "sdpa"
    assert any("CPU kernels" in s for s in plan.substitutes)
    assert any("FlashAttention-2" in s for s in plan.substitutes) is (card == "a10")


def test_a_rehearsal_of_an_unknown_card_names_the_variable(monkeypatch):
    monkeypatch.setenv("TIFA_LITE_REHEARSE", "v100")
    with pytest.raises(ConfigError, match="TIFA_LITE_REHEARSE='v100'.*t4 or a10"):
        resolve_plan(load_recipe({}))


def test_full_parameter_16bit_keeps_fp32_master_weights_except_under_deepspeed():
    from tifa_lite.runplan.numerics import resolve_numerics

    for precision in ("fp16", "bf16"):
        full = resolve_numerics(precision, quant_bits=None, lora=False)
        assert (full.weight_dtype, full.autocast, full.adapter_dtype) == ("fp32", precision, None)
        assert resolve_numerics(precision, quant_bits=None, lora=False, deepspeed=True).weight_dtype == precision
        # Inference loads the weights in the card's 16-bit dtype.
        assert resolve_numerics(precision, quant_bits=None, lora=False, training=False).weight_dtype == precision
    assert resolve_numerics("fp16", quant_bits=None, lora=False).grad_scaler is True


class Observed:
    """What the training forward and optimizer step really ran in: the autocast dtype in force
    when the model's embedding ran (None: no autocast), and the accelerator's loss scaler."""

    def __init__(self):
        self.autocast: set[torch.dtype | None] = set()
        self.scalers: list[str] = []


def _observe(monkeypatch, observed: Observed, embeddings: list | None = None):
    from tifa_lite.methods import common

    real = common.compose_trainer

    def compose(*args, **kwargs):
        trainer = real(*args, **kwargs)
        def seen(*_):
            observed.autocast.add(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)

        trainer.model.get_input_embeddings().register_forward_hook(seen)
        if embeddings is not None:
            embeddings.append(trainer.model.get_input_embeddings().weight.dtype)
        observed.scalers.append(type(trainer.accelerator.scaler).__name__)
        return trainer

    monkeypatch.setattr(common, "compose_trainer", compose)
    for module in ("sft", "cpt", "dpo", "grpo", "reward"):
        mod = __import__(f"tifa_lite.methods.{module}", fromlist=["compose_trainer"])
        if hasattr(mod, "compose_trainer"):
            monkeypatch.setattr(mod, "compose_trainer", compose)


@pytest.mark.parametrize("card, head_dtype, scaler", [("t4", torch.float16, "GradScaler"), ("a10", torch.bfloat16, "NoneType")])
def test_qlora_sft_trains_in_the_cards_dtypes(monkeypatch, tiny_model_dir, tmp_path, card, head_dtype, scaler):
    from tifa_lite import train

    monkeypatch.setenv("TIFA_LITE_REHEARSE", card)
    observed = Observed()
    _observe(monkeypatch, observed)
    result = train("recipes/sft_qlora_roleplay.yaml", **tiny_run(tiny_model_dir, tmp_path))
    saved = json.loads((result.output_dir / PLAN_FILE).read_text())
    assert saved["hardware"]["rehearsal"] == card
    assert saved["numerics"]["precision"] == saved["numerics"]["autocast"] == {"t4": "fp16", "a10": "bf16"}[card]
    # Autocast in the card's dtype really ran around the training forward, and the fp16 run stepped
    # through a real loss scaler.
    assert observed.autocast == {head_dtype} and observed.scalers == [scaler]
    assert result.global_step == 1 and torch.isfinite(torch.tensor(result.metrics["train_loss"]))


def test_fp16_generation_on_a_4bit_base_outside_autocast(monkeypatch, tiny_model_dir):
    """The T4 crash at GRPO's first generation, chat, serve and eval: fp32 norms hand an fp32
    hidden state to the fp16 LM head outside autocast. Reproduced first (the head's input
    cast switched off), then the plan's load generates."""
    from transformers import AutoTokenizer

    from tifa_lite.modeling import dtypes
    from tifa_lite.modeling.load import load_model

    monkeypatch.setenv("TIFA_LITE_REHEARSE", "t4")
    config = load_recipe({}, [f"model.name_or_path={tiny_model_dir}"])  # QLoRA NF4
    plan = resolve_plan(config, purpose="inference")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    inputs = tokenizer("Hello", return_tensors="pt")

    monkeypatch.setattr("tifa_lite.modeling.load.cast_head_inputs", lambda model: 0)
    broken = load_model(config, plan)
    with pytest.raises(RuntimeError, match="same dtype"):
        broken.generate(**inputs, max_new_tokens=2, do_sample=False)
    monkeypatch.setattr("tifa_lite.modeling.load.cast_head_inputs", dtypes.cast_head_inputs)
    model = load_model(config, plan)
    assert {p.dtype for n, p in model.named_parameters() if "norm" in n} == {torch.float32}
    out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 2


def test_full_parameter_fp16_steps_with_the_scaler(monkeypatch, tiny_model_dir, tmp_path):
    """Weights loaded in fp16 + fp16's GradScaler fail at the first step ("Attempting to unscale
    FP16 gradients"), as on a T4; the plan's fp32 master weights under fp16 autocast train."""
    from tifa_lite import train

    monkeypatch.setenv("TIFA_LITE_REHEARSE", "t4")
    items = tiny_run(tiny_model_dir, tmp_path, **{"quant.bits": None, "lora.enabled": False})
    from tifa_lite.runplan import numerics

    real = numerics.resolve_numerics

    def as_before(*args, **kwargs):  # today's main: full-parameter weights in the compute dtype
        n = real(*args, **kwargs)
        return numerics.Numerics(**{**n.__dict__, "weight_dtype": n.precision})

    monkeypatch.setattr("tifa_lite.runplan.resolve_numerics", as_before)
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
        train("recipes/sft_qlora_roleplay.yaml", **items)
    monkeypatch.setattr("tifa_lite.runplan.resolve_numerics", real)
    observed = Observed()
    _observe(monkeypatch, observed)
    result = train("recipes/sft_qlora_roleplay.yaml", **items)
    assert observed.autocast == {torch.float16} and observed.scalers == ["GradScaler"]
    assert result.global_step == 1 and torch.isfinite(torch.tensor(result.metrics["train_loss"]))


def test_decisions_are_made_once_per_run(monkeypatch, tiny_model_dir, tmp_path):
    from tifa_lite import hardware, train
    from tifa_lite.modeling import resolve

    calls = {"detect": 0, "resolve_precision": 0, "resolve_model": 0, "select_backend": 0}

    def counting(module, name):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    from tifa_lite.backends import select

    counting(hardware, "detect")
    counting(hardware, "resolve_precision")
    counting(resolve, "resolve_model")
    counting(select, "select_backend")
    # resolve_plan imports these by name at call time, so the counters see every call.
    monkeypatch.setattr("tifa_lite.runplan.detect", hardware.detect)
    monkeypatch.setattr("tifa_lite.runplan.resolve_precision", hardware.resolve_precision)
    train("recipes/sft_qlora_roleplay.yaml", **tiny_run(tiny_model_dir, tmp_path))
    assert calls == {"detect": 1, "resolve_precision": 1, "resolve_model": 1, "select_backend": 1}


GSM8K = str(REPO / "data" / "gsm8k_sample.jsonl")
HH = str(REPO / "data" / "hh_rlhf_sample.jsonl")
GRPO_SMALL = {"data.path": GSM8K, "grpo.num_generations": 2, "grpo.max_completion_length": 6, "data.limit": 2,
              "data.max_length": 256}
# Every method, as its shipped recipe runs it, one optimizer step on the tiny model.
METHODS = {
    "cpt": ("recipes/cpt_qlora_novel.yaml", {"data.path": str(REPO / "data" / "novel_sample.txt"), "data.limit": None,
                                             "train.max_steps": 1}),
    "dpo": ("recipes/dpo_qlora_hh.yaml", {"data.path": HH, "data.max_length": 128}),
    "orpo": ("recipes/dpo_qlora_hh.yaml", {"data.path": HH, "data.max_length": 128, "train.method": "orpo"}),
    "simpo": ("recipes/dpo_qlora_hh.yaml", {"data.path": HH, "data.max_length": 128, "train.method": "simpo"}),
    "kto": ("recipes/dpo_qlora_hh.yaml", {"data.path": HH, "data.max_length": 128, "train.method": "kto"}),
    "reward": ("recipes/reward_qlora_hh.yaml", {"data.path": HH, "data.max_length": 128, "train.eval_steps": None}),
    "grpo": ("recipes/grpo_qlora_t4.yaml", GRPO_SMALL),
    "mgrpo": ("recipes/grpo_qlora_t4.yaml", {**GRPO_SMALL, "grpo.passes": 2}),
    "full-parameter grpo (R1 reproduction)": ("recipes/grpo_qwen2.5-0.5b_gsm8k.yaml", GRPO_SMALL),
}


@pytest.mark.slow
@pytest.mark.parametrize("card", ["t4", "a10"])
@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_a_step_in_the_cards_dtypes(monkeypatch, tiny_model_dir, tmp_path, card, method):
    """Each method's trainer as TRL builds it, then one step under the card's autocast (and on a T4
    its loss scaler). The frozen weights stay in the plan's dtype after the trainer is built:
    TRL's CPO/ORPO trainers upcast a quantised model's embeddings and LM head to fp32 (PEFT's
    prepare_model_for_kbit_training), which the plan puts back."""
    from tifa_lite import train

    monkeypatch.setenv("TIFA_LITE_REHEARSE", card)
    recipe, items = METHODS[method]
    observed = Observed()
    embeddings: list[torch.dtype] = []
    _observe(monkeypatch, observed, embeddings)
    result = train(recipe, **{**tiny_run(tiny_model_dir, tmp_path), **items})
    plan = json.loads((result.output_dir / PLAN_FILE).read_text())["numerics"]
    # The card's precision, or the recipe's own where it names one (grpo_qlora_t4.yaml: fp16 on an A10 too).
    assert plan["precision"] in ({"t4": "fp16", "a10": "bf16"}[card], "fp16")
    autocast = {"fp16": torch.float16, "bf16": torch.bfloat16}[plan["precision"]]
    assert autocast in observed.autocast  # GRPO also generates, outside autocast (None)
    assert observed.scalers == ["GradScaler" if plan["precision"] == "fp16" else "NoneType"]
    assert [str(d).replace("torch.", "") for d in embeddings] == [
        {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[plan["weight_dtype"]]]
    assert result.global_step == 1 and torch.isfinite(torch.tensor(result.metrics["train_loss"]))


@pytest.mark.parametrize("family", ["qwen3_moe", "gpt_oss", "deepseek_v3"])
def test_t4_generation_of_an_moe_model_outside_autocast(monkeypatch, zoo_model_dir, family):
    """The T4's fp32 norms hand an fp32 hidden state to an MoE router's 16-bit gate and to the
    fused 16-bit expert weights; outside autocast (GRPO's rollouts, chat, serve) Qwen3-MoE failed
    at its first generated token. Those modules cast their input to their weights' dtype. (On a CPU
    with AVX512-BF16, DeepSeek-V3's MLA projections narrower than a quantisation block also failed
    in bitsandbytes' repacking: they keep its plain path.)"""
    from transformers import AutoTokenizer

    from tifa_lite.modeling.load import load_model

    monkeypatch.setenv("TIFA_LITE_REHEARSE", "t4")
    folder = zoo_model_dir(family)
    config = load_recipe({}, [f"model.name_or_path={folder}"])
    model = load_model(config, resolve_plan(config, purpose="inference"))
    inputs = AutoTokenizer.from_pretrained(folder)(["Hello there"], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=2, do_sample=False, output_router_logits=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 2
