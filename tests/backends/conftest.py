"""Fixtures for backend tests: a stand-in for the `unsloth` package (no GPU here, and
unsloth has never run for real in this project) and a stubbed CUDA GPU.

Tests that use the stand-in are contract tests of our call shape, not tests of unsloth:
its two entry points have unsloth's parameter names and no ``**kwargs``, so a misspelt
or invented keyword fails here as it would be silently swallowed there. They do what
unsloth does, minus the Triton kernels: load the checkpoint with transformers, and wrap
it with a PEFT LoRA built from the keywords received.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types

import pytest
import torch

from tifa_lite.backends import select
from tifa_lite.hardware import Hardware

T4 = Hardware(device="cuda", gpu_name="Tesla T4", bf16=False, gpu_count=1, total_memory_gib=15.0)
CPU = Hardware(device="cpu", gpu_name=None, bf16=False, gpu_count=0, total_memory_gib=None)


class FakeFastLanguageModel:
    calls: list[tuple[str, dict]] = []

    @staticmethod
    def from_pretrained(
        model_name="unsloth/Llama-3.2-1B-Instruct",
        max_seq_length=2048,
        dtype=None,
        load_in_4bit=True,
        load_in_8bit=False,
        full_finetuning=False,
        token=None,
        device_map="sequential",
        trust_remote_code=False,
        revision=None,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        FakeFastLanguageModel.calls.append(("from_pretrained", dict(
            model_name=model_name, max_seq_length=max_seq_length, dtype=dtype, load_in_4bit=load_in_4bit,
            load_in_8bit=load_in_8bit, trust_remote_code=trust_remote_code, revision=revision,
        )))
        # fp32 on the CPU: the point here is the wiring, not unsloth's 4-bit kernels.
        model = AutoModelForCausalLM.from_pretrained(model_name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(model_name)
        tokenizer.pad_token = None  # so the caller's pad-token rule is exercised
        return model, tokenizer

    @staticmethod
    def get_peft_model(
        model,
        r=16,
        target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        lora_alpha=16,
        lora_dropout=0.0,
        bias="none",
        layers_to_transform=None,
        layers_pattern=None,
        use_gradient_checkpointing="unsloth",
        random_state=3407,
        max_seq_length=2048,
        use_rslora=False,
        modules_to_save=None,
        init_lora_weights=True,
        loftq_config={},  # noqa: B006 - unsloth's own default
        temporary_location="_unsloth_temporary_saved_buffers",
    ):
        from peft import LoraConfig, get_peft_model

        FakeFastLanguageModel.calls.append(("get_peft_model", dict(
            r=r, target_modules=target_modules, lora_alpha=lora_alpha, lora_dropout=lora_dropout, bias=bias,
            use_gradient_checkpointing=use_gradient_checkpointing, random_state=random_state,
            max_seq_length=max_seq_length, use_rslora=use_rslora, modules_to_save=modules_to_save,
        )))
        # unsloth iterates target_modules name by name, so a plain string would be split into letters.
        assert not isinstance(target_modules, str), "unsloth needs a list of module names"
        torch.manual_seed(random_state)
        config = LoraConfig(
            r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=list(target_modules),
            bias=bias, use_rslora=use_rslora, modules_to_save=modules_to_save, task_type="CAUSAL_LM",
        )
        return get_peft_model(model, config)


@pytest.fixture
def unsloth_stand_in(monkeypatch) -> type[FakeFastLanguageModel]:
    """The stand-in in sys.modules with a real ModuleSpec, so importlib.util.find_spec finds it."""
    module = types.ModuleType("unsloth")
    module.__spec__ = importlib.machinery.ModuleSpec("unsloth", loader=None)
    module.FastLanguageModel = FakeFastLanguageModel
    FakeFastLanguageModel.calls = []
    monkeypatch.setitem(sys.modules, "unsloth", module)
    return FakeFastLanguageModel


@pytest.fixture
def unsloth_absent(monkeypatch):
    real = select.importlib.util.find_spec
    monkeypatch.setattr(
        select.importlib.util, "find_spec", lambda name, *a: None if name == "unsloth" else real(name, *a)
    )


@pytest.fixture
def gpu_capability(monkeypatch):
    """A stubbed CUDA compute capability (7.5 = T4); call the fixture value to change it."""

    def set_capability(cap):
        monkeypatch.setattr(select, "cuda_capability", lambda hardware: cap)

    set_capability((7, 5))
    return set_capability
