import pytest
import torch

from tifa_lite.config import load_recipe
from tifa_lite.hardware import Hardware, resolve_precision
from tifa_lite.modeling.load import load_for_training, lora_config, quantization_config
from tifa_lite.runplan import resolve_plan

CPU = Hardware(device="cpu", gpu_name=None, bf16=False, gpu_count=0, total_memory_gib=None)
T4 = Hardware(device="cuda", gpu_name="Tesla T4", bf16=False, gpu_count=1, total_memory_gib=15.0)
A10 = Hardware(device="cuda", gpu_name="NVIDIA A10", bf16=True, gpu_count=1, total_memory_gib=22.0)


def test_precision_follows_hardware():
    assert resolve_precision("auto", A10) == "bf16"
    assert resolve_precision("auto", T4) == "fp16"
    assert resolve_precision("bf16", T4) == "fp16"  # downgraded, not a crash
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "fp32"


def _quant(overrides, hardware):
    config = load_recipe({}, overrides)
    return quantization_config(config, resolve_plan(config, hardware=hardware))


def test_nf4_double_quant_with_compute_dtype_by_hardware():
    q = _quant([], T4)
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.float16 == q.bnb_4bit_quant_storage
    assert _quant([], A10).bnb_4bit_compute_dtype == torch.bfloat16
    assert _quant(["quant.bits=8"], A10).load_in_8bit
    assert _quant(["quant.bits=null", "lora.enabled=false"], A10) is None


def test_explicit_bf16_compute_follows_a_t4_downgrade():
    q = _quant(["quant.compute_dtype=bf16", "train.precision=bf16"], T4)
    assert q.bnb_4bit_compute_dtype == torch.float16


def test_lora_switches():
    config = load_recipe({}, ["lora.use_dora=true", "lora.use_rslora=true", "lora.r=8", "lora.target_modules=[q_proj,v_proj]"])
    lc = lora_config(config)
    assert lc.use_dora and lc.use_rslora and lc.r == 8 and set(lc.target_modules) == {"q_proj", "v_proj"}
    assert lora_config(load_recipe({}, ["lora.enabled=false", "quant.bits=null"])) is None


def test_qlora_load_quantises_linear_layers_on_cpu(tiny_model_dir):
    import bitsandbytes as bnb

    config = load_recipe({}, [f"model.name_or_path={tiny_model_dir}"])
    model, tokenizer, peft_config = load_for_training(config)
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
        load_for_training(config, resolve_plan(config, hardware=h100_node))
    assert seen["device_map"] == {"": 3} and seen["quantization_config"].load_in_4bit
    monkeypatch.delenv("LOCAL_RANK")  # a single process owns GPU 0
    seen.clear()
    with pytest.raises(RuntimeError, match="stop after the arguments"):
        load_for_training(config, resolve_plan(config, hardware=h100_node))
    assert seen["device_map"] == {"": 0}


