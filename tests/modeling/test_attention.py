from tifa_lite.config import load_recipe
from tifa_lite.hardware import Hardware
from tifa_lite.modeling.attention import choose_attention

CPU = Hardware(device="cpu", gpu_name=None, bf16=False, gpu_count=0, total_memory_gib=None)
T4 = Hardware(device="cuda", gpu_name="Tesla T4", bf16=False, gpu_count=1, total_memory_gib=15.0)
A10 = Hardware(device="cuda", gpu_name="NVIDIA A10", bf16=True, gpu_count=1, total_memory_gib=22.0)
A10_REHEARSED = Hardware(device="cpu", gpu_name="NVIDIA A10", bf16=True, gpu_count=1, total_memory_gib=22.06,
                         rehearsal="a10")


def test_attention_falls_back_to_sdpa_without_flash_attn():
    assert choose_attention(load_recipe({}), CPU, "fp32") == ("sdpa", None)
    assert choose_attention(load_recipe({}, ["model.attn_implementation=eager"]), CPU, "fp32")[0] == "eager"


def test_an_a10_rehearsal_names_the_kernel_it_stands_in_for():
    implementation, note = choose_attention(load_recipe({}), A10_REHEARSED, "bf16")
    assert implementation == "sdpa" and "FlashAttention-2" in note


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
    assert choose_attention(config, A10, "bf16")[0] == "flash_attention_2"
    assert choose_attention(config, A10, "fp16")[0] == "flash_attention_2"
    assert choose_attention(config, A10, "fp32")[0] == "sdpa"  # its kernels take 16-bit inputs only
    _flash_attn(monkeypatch, available=False)  # transformers' own check says no (e.g. too old)
    assert choose_attention(config, A10, "bf16")[0] == "sdpa"
    _flash_attn(monkeypatch, available=True, imports=False)  # metadata says yes, the wheel is broken
    assert choose_attention(config, A10, "bf16")[0] == "sdpa"


def test_flash_attention_2_off_on_a_t4_and_when_treated_as_one(fake_cuda, monkeypatch):
    _flash_attn(monkeypatch, available=True)
    fake_cuda((7, 5), "Tesla T4")
    assert choose_attention(load_recipe({}), T4, "fp16")[0] == "sdpa"
    fake_cuda((8, 6), "NVIDIA A10", 22.06)
    monkeypatch.setenv("TIFA_LITE_NO_BF16", "1")
    assert choose_attention(load_recipe({}), A10, "fp16")[0] == "sdpa"
