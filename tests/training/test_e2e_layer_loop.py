"""Looped QLoRA SFT of the embedded SmolLM2-135M (30 layers, layers 10..19 twice = 40): it
trains, resumes from a checkpoint, merges into an ordinary 40-layer model that plain
transformers loads and that generates the trained looped model's greedy tokens, cached or not,
and exports to GGUF."""

import json
import shutil

import pytest
import torch

from tifa_lite import train
from tifa_lite.merging import merge
from tifa_lite.modeling.inference import load_inference_model
from tifa_lite.training.runner import partial_dir

pytestmark = pytest.mark.slow


def test_looped_qlora_sft_trains_resumes_merges_and_exports(tmp_path, sample_data):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    overrides = {
        "model.name_or_path": "smollm2-135m-instruct", "data.path": str(sample_data / "roleplay_sheldon_sample.jsonl"),
        "data.limit": 4, "data.max_length": 256, "data.eval_ratio": 0.0, "train.max_steps": 3, "train.save_steps": 1,
        "train.save_total_limit": None, "train.keep_checkpoints": True, "train.per_device_batch_size": 1,
        "train.gradient_accumulation_steps": 1, "train.global_batch_size": None, "train.gradient_checkpointing": False,
        "train.progress_bar": False, "train.output_dir": str(out), "lora.r": 4, "lora.alpha": 8,
        "model.layer_loop.start": 10, "model.layer_loop.end": 20, "model.layer_loop.repeats": 2,
    }
    first = train("recipes/sft_qlora_roleplay.yaml", **overrides)
    assert first.global_step == 3 and first.config.is_qlora

    # A run stopped after checkpoint-2: the same command resumes the looped adapter from it.
    work = partial_dir(out)
    shutil.move(out, work)
    shutil.rmtree(work / "checkpoint-3")
    resumed = train("recipes/sft_qlora_roleplay.yaml", **overrides)
    assert resumed.global_step == 3 and resumed.resumed_from == str(work / "checkpoint-2")
    adapter_keys = json.loads((out / "adapter_config.json").read_text())
    assert adapter_keys["peft_type"] == "LORA"

    report = merge(out, tmp_path / "merged", dtype="fp32")
    assert report["self_check"]["passed"] and report["layer_loop"]["merged_layers"] == 40
    assert report["base_weights"] == "dequantized"  # a QLoRA run merges into what it trained against
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    assert plain.config.num_hidden_layers == 40 and len(plain.model.layers) == 40

    # The model the run trained: the 4-bit base, looped, plus the adapter. A QLoRA run merges into
    # dequant(NF4(W)) by default (benchmarks/results/export.md), so this is what the merged model matches.
    looped, tokenizer, *_ = load_inference_model(None, out, bits=4)
    assert len(looped.get_base_model().model.layers) == 40
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Sheldon, what is your spot?"}],
                                           add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]

    def greedy(model, use_cache):
        # repetition_penalty pinned: the merged folder's generation_config.json carries the recipe's 1.17
        # (Tifa's sampling), the looped model's does not, and the comparison is of the models, not the settings
        out_ids = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=16,
                                 do_sample=False, use_cache=use_cache, pad_token_id=tokenizer.pad_token_id,
                                 repetition_penalty=1.0)
        return out_ids[0, ids.shape[1]:].tolist()

    expected = greedy(looped, True)
    assert expected == greedy(looped, False) == greedy(plain, True) == greedy(plain, False)

    from tifa_lite.export.gguf import export_gguf

    # the round trip reads the GGUF back with transformers and compares logits; llama.cpp itself
    # runs it where that group is installed (tests/export/test_llamacpp_check.py's fixture)
    gguf = export_gguf(tmp_path / "merged", tmp_path / "looped.gguf", outtype="f16", llama_cpp=_has_llama_cpp(),
                       converter="llama.cpp" if _has_llama_cpp() else "builtin")
    assert gguf["round_trip"]["passed"]
    assert gguf.get("llama_cpp", {"passed": True})["passed"]


def _has_llama_cpp() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None
