"""tifa_lite.merge on real (tiny) adapters: equality with PEFT's own merge, the outputs,
the self-check, the no-op flag, base mismatches and atomicity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import tifa_lite
from tifa_lite.errors import ConfigError
from tifa_lite.merging import MergeError, stream

from .conftest import train_adapter


def _state(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for shard in stream.base_shards(folder):
        with safe_open(str(shard), framework="pt") as f:
            tensors.update({k: f.get_tensor(k) for k in f.keys()})
    return tensors


def _peft_merged(base_dir: Path, adapter: Path) -> dict[str, torch.Tensor]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}


def _no_leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".merging-" in p.name]


def test_lora_merge_matches_peft_and_writes_a_complete_model(tiny_model_dir, lora_adapter, tmp_path):
    adapter = tmp_path / "run"
    shutil.copytree(lora_adapter, adapter)
    (adapter / "tifa_sampling.json").write_text(json.dumps({"do_sample": True, "temperature": 0.6, "top_p": 0.85, "max_new_tokens": 77}))
    out = tmp_path / "merged"

    report = tifa_lite.merge(adapter, out, dtype="fp32", base=str(tiny_model_dir), max_shard_size="1MB")

    assert report["method"] == "streamed-per-layer-peft-merge"
    assert report["self_check"]["passed"] and report["self_check"]["max_logit_diff_vs_base_plus_adapter"] < 1e-3
    assert report["self_check"]["adapter_effect_max_logit_diff"] > 0.01
    assert report["self_check"]["greedy_agreement"] == 1.0
    assert report["self_check"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert report["self_check"]["placement_reason"]
    assert report["no_op"] is False and report["weights"]["changed_tensors"] == 14  # 7 Linear × 2 layers
    assert json.loads((out / "merge_report.json").read_text())["self_check"]["passed"]
    # Sharded, with the index transformers reads; same tensors as PEFT's full-model merge.
    assert (out / "model.safetensors.index.json").is_file() and len(stream.base_shards(out)) > 1
    expected = _peft_merged(tiny_model_dir, adapter)
    got = _state(out)
    for key, tensor in got.items():
        torch.testing.assert_close(tensor, expected[key], rtol=1e-5, atol=1e-6)
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["temperature"] == 0.6 and gen["top_p"] == 0.85 and gen["max_new_tokens"] == 77 and gen["do_sample"]
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(out).chat_template == AutoTokenizer.from_pretrained(adapter).chat_template
    assert _no_leftovers(tmp_path) == []


@pytest.mark.parametrize("variant", ["use_rslora", "use_dora"])
def test_rslora_and_dora_merge_like_peft(tiny_model_dir, tmp_path, variant):
    adapter = train_adapter(tiny_model_dir, tmp_path / "ad", steps=2, **{variant: True})
    report = tifa_lite.merge(adapter, tmp_path / "out", dtype="fp32", base=str(tiny_model_dir))
    assert report["self_check"]["passed"]
    assert report["lora"][variant]
    expected = _peft_merged(tiny_model_dir, adapter)
    for key, tensor in _state(tmp_path / "out").items():
        torch.testing.assert_close(tensor, expected[key], rtol=1e-5, atol=1e-5)


def test_qlora_adapter_merges_into_16bit_base(tiny_model_dir, qlora_adapter, tmp_path):
    report = tifa_lite.merge(qlora_adapter, tmp_path / "out", dtype="bf16", base=str(tiny_model_dir))
    check = report["self_check"]
    assert check["passed"] and check["rounding_noise"] is not None
    assert check["max_logit_diff_merged_vs_base"] > 0
    state = _state(tmp_path / "out")
    assert all(t.dtype == torch.bfloat16 for t in state.values() if t.is_floating_point())
    # Merged into the full-precision base, not into NF4-rounded weights.
    expected = _peft_merged(tiny_model_dir, qlora_adapter)
    key = "model.layers.0.self_attn.q_proj.weight"
    torch.testing.assert_close(state[key], expected[key].to(torch.bfloat16))


def test_self_check_fails_on_a_corrupted_adapter_and_leaves_nothing(tiny_model_dir, lora_adapter, tmp_path):
    from safetensors.torch import load_file, save_file

    adapter = tmp_path / "corrupt"
    shutil.copytree(lora_adapter, adapter)
    tensors = load_file(adapter / "adapter_model.safetensors")
    key = next(k for k in tensors if k.endswith("q_proj.lora_B.weight"))
    tensors[key] = torch.full_like(tensors[key], 3e4)  # finite in fp32, overflows fp16 once merged
    save_file(tensors, adapter / "adapter_model.safetensors")

    with pytest.raises(MergeError, match="self-check failed"):
        tifa_lite.merge(adapter, tmp_path / "out", dtype="fp16", base=str(tiny_model_dir))
    assert not (tmp_path / "out").exists() and _no_leftovers(tmp_path) == []

    tensors[key] = torch.full_like(tensors[key], float("nan"))
    save_file(tensors, adapter / "adapter_model.safetensors")
    with pytest.raises(MergeError, match="NaN"):
        tifa_lite.merge(adapter, tmp_path / "out", dtype="fp32", base=str(tiny_model_dir))
    assert not (tmp_path / "out").exists() and _no_leftovers(tmp_path) == []


def test_self_check_catches_a_merge_that_exports_the_untouched_base(tiny_model_dir, lora_adapter, tmp_path, monkeypatch):
    monkeypatch.setattr(stream, "merge_weight", lambda weight, parts, cfg, module: weight)
    with pytest.raises(MergeError, match="self-check failed"):
        tifa_lite.merge(lora_adapter, tmp_path / "out", dtype="fp32", base=str(tiny_model_dir))
    assert not (tmp_path / "out").exists() and _no_leftovers(tmp_path) == []


def test_untrained_adapter_is_flagged_as_no_op(tiny_model_dir, tmp_path):
    adapter = train_adapter(tiny_model_dir, tmp_path / "ad", steps=0)
    report = tifa_lite.merge(adapter, tmp_path / "out", dtype="fp32", base=str(tiny_model_dir))
    assert report["no_op"] is True
    assert "never trained" in report["warning"]
    assert report["self_check"]["max_logit_diff_merged_vs_base"] == 0.0
    assert "cannot tell" in report["self_check"]["warning"]


def test_base_mismatch_is_a_clear_error(lora_adapter, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    # The recorded base is gone, so only the adapter's own checks (class, shapes, vocab) can speak.
    adapter = tmp_path / "run"
    shutil.copytree(lora_adapter, adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    lora_adapter = adapter

    small = dict(vocab_size=49152, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    LlamaForCausalLM(LlamaConfig(hidden_size=32, **small)).save_pretrained(tmp_path / "other")
    with pytest.raises(MergeError, match="base mismatch.*mlp.down_proj: base \\[32, 128\\]"):
        tifa_lite.merge(lora_adapter, tmp_path / "out", base=str(tmp_path / "other"))
    Qwen2ForCausalLM(Qwen2Config(hidden_size=64, **small)).save_pretrained(tmp_path / "qwen")
    with pytest.raises(MergeError, match="LlamaForCausalLM.*Qwen2ForCausalLM"):
        tifa_lite.merge(lora_adapter, tmp_path / "out", base=str(tmp_path / "qwen"))
    LlamaForCausalLM(LlamaConfig(hidden_size=64, **{**small, "vocab_size": 1000})).save_pretrained(tmp_path / "vocab")
    with pytest.raises(MergeError, match="tokenizer has 49152 tokens"):
        tifa_lite.merge(lora_adapter, tmp_path / "out", base=str(tmp_path / "vocab"))
    assert not (tmp_path / "out").exists() and _no_leftovers(tmp_path) == []


def test_base_of_another_family_with_the_same_shapes_is_refused(tiny_model_dir, lora_adapter, tmp_path):
    from transformers import MistralConfig, MistralForCausalLM

    adapter = tmp_path / "run"
    shutil.copytree(lora_adapter, adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config.pop("auto_mapping", None)  # as saved by TRL runs with task_type CAUSAL_LM
    config["base_model_name_or_path"] = str(tiny_model_dir)
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    MistralForCausalLM(MistralConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2)).save_pretrained(tmp_path / "mistral")
    with pytest.raises(MergeError, match="model_type: llama vs mistral"):
        tifa_lite.merge(adapter, tmp_path / "out", base=str(tmp_path / "mistral"))


def test_base_comes_from_the_run_files_and_output_is_refused_unless_overwrite(tiny_model_dir, lora_adapter, tmp_path):
    adapter = tmp_path / "run"
    shutil.copytree(lora_adapter, adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "moved-away")
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    (adapter / "resolved_config.yaml").write_text(
        f"model:\n  name_or_path: {tiny_model_dir}\nsampling:\n  temperature: 0.3\n  top_p: 0.5\n"
    )
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        tifa_lite.merge(adapter, out)
    report = tifa_lite.merge(adapter, out, dtype="fp32", overwrite=True, check=False)
    assert report["base"] == str(tiny_model_dir.resolve())
    assert json.loads((out / "generation_config.json").read_text())["temperature"] == 0.3
    assert "self_check" not in report


def test_greedy_recipe_sampling_writes_a_valid_greedy_generation_config(tiny_model_dir, lora_adapter, tmp_path):
    """A recipe with sampling.temperature 0 (the GRPO reproduction's) over a base whose own
    generation_config samples: the merged config is greedy and transformers accepts it."""
    from transformers import GenerationConfig

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    GenerationConfig(do_sample=True, temperature=0.7, top_p=0.8, top_k=20).save_pretrained(base)
    adapter = tmp_path / "run"
    shutil.copytree(lora_adapter, adapter)
    (adapter / "resolved_config.yaml").write_text(
        f"model:\n  name_or_path: {base}\nsampling:\n  temperature: 0.0\n  top_p: 0.9\n  max_new_tokens: 64\n"
    )
    tifa_lite.merge(adapter, tmp_path / "out", base=str(base), dtype="fp32", check=False)
    gen = GenerationConfig.from_pretrained(tmp_path / "out")
    assert (gen.do_sample, gen.max_new_tokens) == (False, 64)
    assert gen.temperature in (None, 1.0) and gen.top_p in (None, 1.0) and gen.top_k in (None, 50)


def test_not_an_adapter_is_a_clear_error(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="full model"):
        tifa_lite.merge(tiny_model_dir, tmp_path / "out")


def test_cli_prints_json_report_last(tiny_model_dir, lora_adapter, tmp_path, capsys):
    from tifa_lite.cli import main

    rc = main(["merge", "--adapter", str(lora_adapter), "--output", str(tmp_path / "out"),
               "--base", str(tiny_model_dir), "--dtype", "bf16", "--json"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    assert report["self_check"]["passed"]
    assert any(line.strip().startswith("self-check: max logit diff") for line in lines[:-1])
    rc = main(["merge", "--adapter", str(lora_adapter), "--output", str(tmp_path / "out")])
    assert rc == 2  # exists: a user-facing error, no traceback


def test_adapter_beyond_plain_lora_takes_peft_full_model_merge(tiny_model_dir, tmp_path):
    adapter = train_adapter(tiny_model_dir, tmp_path / "ad", steps=2, bias="all")
    report = tifa_lite.merge(adapter, tmp_path / "out", dtype="fp32", base=str(tiny_model_dir))
    assert report["method"] == "peft-merge_and_unload"
    assert any("trains biases" in note for note in report["notes"])
    assert report["self_check"]["passed"] and report["no_op"] is False
    expected = _peft_merged(tiny_model_dir, adapter)
    for key, tensor in _state(tmp_path / "out").items():
        torch.testing.assert_close(tensor, expected[key])


def test_checkpoint_folder_finds_the_run_files_beside_it(tiny_model_dir, lora_adapter, tmp_path):
    from tifa_lite.merging.adapter import read_adapter, resolve_base

    run = tmp_path / "run.partial"
    shutil.copytree(lora_adapter, run / "checkpoint-2")
    (run / "resolved_config.yaml").write_text(f"model:\n  name_or_path: {tiny_model_dir}\n")
    (run / "tifa_sampling.json").write_text(json.dumps({"temperature": 0.2}))
    info = read_adapter(run / "checkpoint-2")
    assert info.sampling == {"temperature": 0.2}
    assert resolve_base(info).path == tiny_model_dir.resolve()


def test_reward_adapter_merges_into_a_classifier_that_keeps_its_head(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    adapter = train_adapter(tiny_model_dir, tmp_path / "reward", reward=True)
    out = tmp_path / "merged"
    report = tifa_lite.merge(adapter, out, dtype="fp32", base=str(tiny_model_dir))

    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and config["pad_token_id"] is not None
    assert "score.weight" in _state(out) and "lm_head.weight" not in _state(out)
    check = report["self_check"]
    assert check["passed"] and check["compared"] == "scores of the score head" and check["greedy_agreement"] is None
    assert check["adapter_effect_max_logit_diff"] > 1e-3  # the LoRA part moves the scores beyond the head alone
    assert any("score head" in note for note in report["notes"])

    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = tokenizer(["The sea is wide and deep.", "Two plus two is four."], return_tensors="pt", padding=True)
    merged = AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32).eval()
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1, dtype=torch.float32)
    base.config.pad_token_id = tokenizer.pad_token_id
    reference = PeftModel.from_pretrained(base, str(adapter)).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, reference(**batch).logits, atol=1e-4, rtol=1e-4)


def test_reward_adapter_without_its_head_is_refused(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    adapter = train_adapter(tiny_model_dir, tmp_path / "reward", reward=True)
    tensors = {k: v for k, v in load_file(adapter / "adapter_model.safetensors").items() if "score" not in k}
    save_file(tensors, adapter / "adapter_model.safetensors")
    with pytest.raises(MergeError, match="random head"):
        tifa_lite.merge(adapter, tmp_path / "out", dtype="fp32", base=str(tiny_model_dir))
    assert not (tmp_path / "out").exists()

