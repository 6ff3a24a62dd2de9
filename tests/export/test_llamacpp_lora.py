"""A PEFT adapter → llama.cpp's LoRA GGUF: the scale folding that makes llama.cpp's
``alpha / r`` equal PEFT's scale (rsLoRA, rank and alpha patterns), the refusals, and (opt-in
`llamacpp` group) the converted adapter run in llama.cpp against transformers."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from tifa_lite.errors import ConfigError
from tifa_lite.export.llamacpp_lora import _rescaled_copy, llama_cpp_scales


def make_adapter(base_dir, out, seed: int = 0, b_scale: float = 1.0, **lora):
    """A random LoRA (``b_scale`` shrinks lora_B, so a real model stays fluent under it)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    config = LoraConfig(**{"r": 4, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj", "down_proj"],
                           "init_lora_weights": False, **lora})
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(b_scale)
    peft_model.save_pretrained(str(out))
    return out


def _llama_cpp_delta(folder, module: str) -> torch.Tensor:
    """ΔW as llama.cpp computes it from a converted folder: (alpha / r) · B A."""
    import json

    from safetensors.torch import load_file

    alpha = json.loads((folder / "adapter_config.json").read_text())["lora_alpha"]
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    a = tensors[f"base_model.model.{module}.lora_A.weight"]
    b = tensors[f"base_model.model.{module}.lora_B.weight"]
    return alpha / a.shape[0] * (b @ a)


def _peft_delta(adapter_dir, module: str) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(adapter_dir.parent / "base"))
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    layer = model.get_submodule(f"base_model.model.{module}")
    return layer.get_delta_weight("default")


@pytest.fixture(scope="module")
def base_copy(tiny_model_dir, tmp_path_factory):
    import shutil

    root = tmp_path_factory.mktemp("lora_gguf")
    shutil.copytree(tiny_model_dir, root / "base")
    return root


def test_plain_lora_is_converted_as_it_is(base_copy):
    factors, alpha = llama_cpp_scales(make_adapter(base_copy / "base", base_copy / "plain"))
    assert factors == {} and alpha == 16


@pytest.mark.parametrize("lora", [
    {"use_rslora": True},
    {"rank_pattern": {"v_proj": 8}, "alpha_pattern": {"down_proj": 64}},
    {"use_rslora": True, "rank_pattern": {"q_proj": 2}},
], ids=["rslora", "patterns", "rslora+rank"])
def test_folded_adapter_gives_peft_delta_under_llama_cpp_arithmetic(base_copy, tmp_path, lora):
    adapter = make_adapter(base_copy / "base", base_copy / ("adapter-" + "-".join(sorted(lora))), **lora)
    factors, alpha = llama_cpp_scales(adapter)
    assert factors, "these configs scale differently from alpha / r"
    staged = tmp_path / "staged"
    staged.mkdir()
    _rescaled_copy(adapter, factors, alpha, staged)
    for module in ("model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.v_proj", "model.layers.0.mlp.down_proj"):
        expected = _peft_delta(adapter, module)
        assert torch.allclose(_llama_cpp_delta(staged, module), expected, rtol=1e-5, atol=1e-7), module
    # the unfolded file would be off by PEFT's factor (what llama.cpp did with it before)
    q = "model.layers.0.self_attn.q_proj"
    if lora.get("use_rslora"):
        r = 2 if lora.get("rank_pattern", {}).get("q_proj") else 4
        assert factors[q] == pytest.approx(math.sqrt(r))


def test_dora_and_extra_modules_are_refused_by_name(base_copy):
    dora = make_adapter(base_copy / "base", base_copy / "dora", use_dora=True)
    with pytest.raises(ConfigError, match="DoRA adapter has no llama.cpp form.*merge"):
        llama_cpp_scales(dora)
    extra = make_adapter(base_copy / "base", base_copy / "extra", modules_to_save=["lm_head"])
    with pytest.raises(ConfigError, match="more than LoRA matrices.*merge"):
        llama_cpp_scales(extra)


# ---- the converted adapter in llama.cpp (opt-in: pytest -m llamacpp) ------------------------

PROMPT = "<|im_start|>user\nTell me about the tavern in the storm.<|im_end|>\n<|im_start|>assistant\nThe tavern"


@pytest.fixture(scope="module")
def llama_cpp(request):
    if "llamacpp" not in (request.config.getoption("-m") or ""):
        pytest.skip("opt-in group: run `bash scripts/install_llama_cpp.sh` once, then `pytest -m llamacpp`")
    return pytest.importorskip("llama_cpp", reason="llama-cpp-python: bash scripts/install_llama_cpp.sh")


@pytest.fixture(scope="module")
def f16_base(llama_cpp, embedded_model_dir, tmp_path_factory):
    from tifa_lite.export.llamacpp_convert import convert

    out = tmp_path_factory.mktemp("f16_base") / "base-f16.gguf"
    convert(embedded_model_dir, out, "f16")
    return out


def _llama_cpp_logits(gguf, lora, ids):
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(model_path=str(gguf), lora_path=str(lora) if lora else None, n_ctx=256,
                                   logits_all=True, verbose=False, n_threads=2, seed=0)
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
    llm.close()
    return torch.from_numpy(logits)


def _transformers_logits(base_dir, adapter, ids):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


@pytest.mark.llamacpp
@pytest.mark.parametrize("lora", [{}, {"use_rslora": True, "alpha_pattern": {"down_proj": 32}}], ids=["plain", "rslora+alpha"])
def test_converted_lora_in_llama_cpp_matches_transformers(llama_cpp, f16_base, embedded_model_dir, tmp_path, lora):
    from transformers import AutoTokenizer

    from tifa_lite.export.llamacpp_lora import convert_lora

    adapter = make_adapter(embedded_model_dir, tmp_path / "adapter", b_scale=0.05, **lora)
    converted = convert_lora(adapter, tmp_path / "adapter.gguf", base=embedded_model_dir)
    ids = AutoTokenizer.from_pretrained(str(embedded_model_dir))(PROMPT)["input_ids"]
    reference = _transformers_logits(embedded_model_dir, adapter, ids)
    base_only = _transformers_logits(embedded_model_dir, None, ids)
    served = _llama_cpp_logits(f16_base, converted, ids)
    error = (served - reference).abs().mean().item()
    effect = (reference - base_only).abs().mean().item()
    agree = (served.argmax(-1) == reference.argmax(-1)).float().mean().item()
    # f16 weights in llama.cpp vs fp32 here: a small error next to what the adapter changes
    assert error < effect / 10, (error, effect)
    assert agree >= 0.9, agree
    if lora:
        # the same adapter converted as it is: llama.cpp's alpha / r is not PEFT's scale
        from tifa_lite.export.llamacpp_convert import run_script

        raw = tmp_path / "raw"
        shutil.copytree(adapter, raw)
        run_script("convert_lora_to_gguf.py", ["--base", str(embedded_model_dir), "--outfile", str(tmp_path / "raw.gguf"),
                                               "--outtype", "f16", str(raw)], tmp_path / "raw.gguf", raw)
        unfolded = _llama_cpp_logits(f16_base, tmp_path / "raw.gguf", ids)
        assert json.loads((raw / "adapter_config.json").read_text())["use_rslora"]
        assert (unfolded - reference).abs().mean().item() > 3 * error
