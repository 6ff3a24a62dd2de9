import pytest
import torch

from tifa_lite.config import load_recipe
from tifa_lite.hardware import Hardware, resolve_precision
from tifa_lite.modeling.load import attn_implementation, load_for_training, lora_config, quantization_config

CPU = Hardware(device="cpu", gpu_name=None, bf16=False, gpu_count=0, total_memory_gib=None)
T4 = Hardware(device="cuda", gpu_name="Tesla T4", bf16=False, gpu_count=1, total_memory_gib=15.0)
A10 = Hardware(device="cuda", gpu_name="NVIDIA A10", bf16=True, gpu_count=1, total_memory_gib=22.0)


def test_precision_follows_hardware():
    assert resolve_precision("auto", A10) == "bf16"
    assert resolve_precision("auto", T4) == "fp16"
    assert resolve_precision("bf16", T4) == "fp16"  # downgraded, not a crash
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "fp32"


def test_nf4_double_quant_with_compute_dtype_by_hardware():
    config = load_recipe({})
    q = quantization_config(config, "fp16")
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.float16
    assert quantization_config(load_recipe({}, ["quant.bits=8"]), "bf16").load_in_8bit
    assert quantization_config(load_recipe({}, ["quant.bits=null"]), "bf16") is None


def test_explicit_bf16_compute_follows_a_t4_downgrade():
    q = quantization_config(load_recipe({}, ["quant.compute_dtype=bf16"]), resolve_precision("bf16", T4))
    assert q.bnb_4bit_compute_dtype == torch.float16


def test_lora_switches():
    config = load_recipe({}, ["lora.use_dora=true", "lora.use_rslora=true", "lora.r=8", "lora.target_modules=[q_proj,v_proj]"])
    lc = lora_config(config)
    assert lc.use_dora and lc.use_rslora and lc.r == 8 and set(lc.target_modules) == {"q_proj", "v_proj"}
    assert lora_config(load_recipe({}, ["lora.enabled=false", "quant.bits=null"])) is None


def test_attention_falls_back_to_sdpa_without_flash_attn():
    assert attn_implementation(load_recipe({}), CPU) == "sdpa"
    assert attn_implementation(load_recipe({}, ["model.attn_implementation=eager"]), CPU) == "eager"


def test_qlora_load_quantises_linear_layers_on_cpu(tiny_model_dir):
    import bitsandbytes as bnb

    config = load_recipe({}, [f"model.name_or_path={tiny_model_dir}"])
    model, tokenizer, peft_config = load_for_training(config, "fp32", CPU)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    assert tokenizer.pad_token is not None and peft_config.r == 16
    assert model.config.tifa_lite_base.startswith("local:")


def test_report_to_keeps_installed_trackers_only(caplog):
    from tifa_lite.methods.common import available_trackers

    assert available_trackers(["definitely_not_a_tracker_pkg"]) == []
    assert "not installed" in caplog.text
    assert available_trackers([]) == []


def test_each_rank_quantises_onto_its_local_rank_gpu(monkeypatch, tiny_model_dir):
    """Under a launcher a node's ranks all see every GPU; rank LOCAL_RANK=3 must load its 4-bit
    model onto cuda:3, whatever torch.cuda.current_device() says (0 until someone sets it)."""
    from transformers import AutoModelForCausalLM

    h100_node = Hardware(device="cuda", gpu_name="NVIDIA H100", bf16=True, gpu_count=8, total_memory_gib=79.6)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setenv("LOCAL_RANK", "3")
    seen = {}

    def fake_from_pretrained(path, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop after the arguments")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    config = load_recipe({}, [f"model.name_or_path={tiny_model_dir}", "model.attn_implementation=sdpa"])
    with pytest.raises(RuntimeError, match="stop after the arguments"):
        load_for_training(config, "bf16", h100_node)
    assert seen["device_map"] == {"": 3} and seen["quantization_config"].load_in_4bit
    monkeypatch.delenv("LOCAL_RANK")  # a single process owns GPU 0
    seen.clear()
    with pytest.raises(RuntimeError, match="stop after the arguments"):
        load_for_training(config, "bf16", h100_node)
    assert seen["device_map"] == {"": 0}


def _flash_attn(monkeypatch, available: bool, imports: bool = True):
    """transformers' availability answer, and a flash_attn that imports or (a wheel built for
    another torch) raises ImportError when its CUDA extension loads."""
    import sys
    import types

    import transformers.utils

    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda *a, **k: available)
    # None in sys.modules makes `import flash_attn` raise ImportError, as a broken extension does.
    monkeypatch.setitem(sys.modules, "flash_attn", types.ModuleType("flash_attn") if imports else None)


def test_flash_attention_2_needs_a_16bit_precision_and_a_working_package(fake_cuda, monkeypatch):
    fake_cuda((8, 6), "NVIDIA A10", 22.06)
    config = load_recipe({})
    _flash_attn(monkeypatch, available=True)
    assert attn_implementation(config, A10, "bf16") == "flash_attention_2"
    assert attn_implementation(config, A10, "fp16") == "flash_attention_2"
    assert attn_implementation(config, A10, "fp32") == "sdpa"  # its kernels take 16-bit inputs only
    _flash_attn(monkeypatch, available=False)  # transformers' own check says no (e.g. too old)
    assert attn_implementation(config, A10, "bf16") == "sdpa"
    _flash_attn(monkeypatch, available=True, imports=False)  # metadata says yes, the wheel is broken
    assert attn_implementation(config, A10, "bf16") == "sdpa"


def test_flash_attention_2_off_on_a_t4_and_when_treated_as_one(fake_cuda, monkeypatch):
    _flash_attn(monkeypatch, available=True)
    fake_cuda((7, 5), "Tesla T4")
    assert attn_implementation(load_recipe({}), T4, "fp16") == "sdpa"
    fake_cuda((8, 6), "NVIDIA A10", 22.06)
    monkeypatch.setenv("TIFA_LITE_NO_BF16", "1")
    assert attn_implementation(load_recipe({}), A10, "fp16") == "sdpa"
