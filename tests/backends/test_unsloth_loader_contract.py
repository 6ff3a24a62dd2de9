"""Contract tests of our call shape into unsloth (tifa_lite.backends.unsloth_loader), on the
CPU against a stand-in `unsloth` with unsloth's signatures: the keywords our recipe
becomes, the LoRA it builds compared with the transformers path, and TRL taking the
already-wrapped model without wrapping it again. No real unsloth runs here: what they
prove is our side of the call, not unsloth's kernels."""

from __future__ import annotations

import torch
from peft import PeftModel, get_peft_model

from tifa_lite.backends import load_for_training_with_backend
from tifa_lite.backends.unsloth_loader import linear_leaf_names
from tifa_lite.config.schema import RecipeConfig
from tifa_lite.modeling.load import load_for_training

from tifa_lite.hardware import Hardware
from tifa_lite.runplan import resolve_plan

from .conftest import CPU, T4

A10 = Hardware(device="cuda", gpu_name="NVIDIA A10", bf16=True, gpu_count=1, total_memory_gib=22.06)

PROJECTIONS = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def recipe(model_dir, **sections) -> RecipeConfig:
    sections.setdefault("model", {})
    # unsloth is an explicit opt-in: backend auto never picks it.
    sections["model"] = {"name_or_path": str(model_dir), "chat_template": "chatml", "backend": "unsloth", **sections["model"]}
    return RecipeConfig.model_validate(sections)


def test_recipe_maps_onto_unsloths_keywords(tiny_model_dir, gpu_capability, unsloth_stand_in):
    config = recipe(
        tiny_model_dir,
        lora={"r": 8, "alpha": 16, "dropout": 0.0, "use_rslora": True},
        data={"max_length": 512},
        train={"gradient_checkpointing": True, "seed": 7},
    )
    model, tokenizer, peft_config = load_for_training_with_backend(config, resolve_plan(config, hardware=T4, precision="fp16"))

    (name1, loaded), (name2, lora) = unsloth_stand_in.calls
    assert (name1, name2) == ("from_pretrained", "get_peft_model")
    assert loaded == dict(
        model_name=str(tiny_model_dir), max_seq_length=512, dtype=torch.float16, load_in_4bit=True,
        load_in_8bit=False, trust_remote_code=False, revision=None,
    )
    assert lora == dict(
        r=8, target_modules=PROJECTIONS, lora_alpha=16, lora_dropout=0.0, bias="none",
        use_gradient_checkpointing="unsloth", random_state=7, max_seq_length=512, use_rslora=True,
        modules_to_save=None,
    )
    # Already wrapped: TRL must get no LoRA config, or it would wrap the model a second time.
    assert peft_config is None
    assert isinstance(model, PeftModel)
    assert model.tifa_lite_backend == "unsloth"
    assert tokenizer.pad_token == tokenizer.eos_token
    assert "<|im_start|>" in tokenizer.chat_template  # the recipe's template, applied as on the other path
    assert model.get_base_model().config.use_cache is False


def test_16bit_lora_without_checkpointing(tiny_model_dir, gpu_capability, unsloth_stand_in):
    config = recipe(tiny_model_dir, quant={"bits": None}, train={"gradient_checkpointing": False},
                    lora={"target_modules": ["q_proj", "v_proj"], "modules_to_save": ["lm_head"]})
    load_for_training_with_backend(config, resolve_plan(config, hardware=A10, precision="bf16"))
    (_, loaded), (_, lora) = unsloth_stand_in.calls
    assert loaded["load_in_4bit"] is False and loaded["dtype"] == torch.bfloat16
    assert lora["target_modules"] == ["q_proj", "v_proj"]
    assert lora["use_gradient_checkpointing"] is False
    assert lora["modules_to_save"] == ["lm_head"]


def test_explicit_compute_dtype_is_what_unsloth_gets(tiny_model_dir, gpu_capability, unsloth_stand_in):
    config = recipe(tiny_model_dir, quant={"compute_dtype": "fp32"})
    load_for_training_with_backend(config, resolve_plan(config, hardware=T4, precision="fp16"))
    assert unsloth_stand_in.calls[0][1]["dtype"] == torch.float32


def test_fallback_loads_with_transformers(tiny_model_dir, gpu_capability, unsloth_absent):
    config = recipe(tiny_model_dir, model={"backend": "unsloth"}, quant={"bits": None})
    model, _, peft_config = load_for_training_with_backend(config, resolve_plan(config, hardware=CPU, precision="fp32"))
    assert not isinstance(model, PeftModel)
    assert peft_config is not None and peft_config.r == config.lora.r


def test_same_lora_either_way(tiny_model_dir, gpu_capability, unsloth_stand_in):
    """One recipe, both backends: same rank/alpha/dropout/rsLoRA, same wrapped layers,
    same number of trainable parameters."""
    config = recipe(tiny_model_dir, quant={"bits": None}, lora={"r": 4, "alpha": 8, "dropout": 0.1})

    base, _, lora_config = load_for_training(config)
    via_transformers = get_peft_model(base, lora_config)
    via_unsloth, _, _ = load_for_training_with_backend(config, resolve_plan(config, hardware=T4, precision="fp32"))

    def summary(peft_model):
        cfg = peft_model.peft_config["default"]
        wrapped = sorted(n for n, m in peft_model.named_modules() if hasattr(m, "lora_A"))
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        return cfg.r, cfg.lora_alpha, cfg.lora_dropout, cfg.use_rslora, cfg.bias, wrapped, trainable

    expected = summary(via_transformers)
    assert expected[5], "the transformers path wrapped no layer"
    assert summary(via_unsloth) == expected


def test_linear_leaf_names_skip_the_output_head(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert linear_leaf_names(model) == PROJECTIONS


def test_trl_trains_the_unsloth_model_without_rewrapping(tiny_model_dir, tmp_path, gpu_capability, unsloth_stand_in):
    import json

    from tifa_lite.methods import get_method
    from tifa_lite.methods.common import Run

    data = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"Count to {n}."},
                          {"role": "assistant", "content": " ".join(map(str, range(1, n + 1)))}]} for n in (3, 4, 5, 6)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = recipe(
        tiny_model_dir,
        quant={"bits": None},
        data={"path": str(data), "max_length": 128},
        # One step: no warmup, or its learning rate would be 0 and nothing would move.
        train={"max_steps": 1, "warmup_ratio": 0.0, "per_device_batch_size": 2, "save_steps": 100, "report_to": [],
               "progress_bar": False, "output_dir": str(tmp_path / "out")},
    )
    plan = resolve_plan(config, hardware=T4, precision="fp32")
    model, tokenizer, peft_config = load_for_training_with_backend(config, plan)
    run = Run(config=config, work_dir=tmp_path / "work", model=model, tokenizer=tokenizer, peft_config=peft_config, plan=plan)
    trainer = get_method("sft").build_trainer(run)
    assert trainer.model is model  # no second PeftModel around the first
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer.train()
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, lora_before[n])]
    assert changed and all("lora_" in n for n in changed)
