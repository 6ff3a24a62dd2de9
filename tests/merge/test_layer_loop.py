"""Merge of a looped run: an ordinary deeper model, each pass's layer a copy of its source with
that pass's LoRA merged, which plain transformers loads and which generates what the looped
model generates."""

import json

import pytest
import torch

from tifa_lite.config import dump_config, load_recipe
from tifa_lite.merging import merge


@pytest.fixture(scope="module")
def base_dir(tiny_model_dir, tmp_path_factory):
    """A 3-layer random Llama (so a layer follows the span) with the real tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny3")
    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.num_hidden_layers = 3
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def looped_run(base_dir, out, per_pass: bool):
    """A run folder as training leaves it: adapter, tokenizer, resolved_config.yaml; the model
    is loaded through tifa_lite (so looped by the load hook) and trained a few steps."""
    from peft import get_peft_model

    from tifa_lite.modeling import load_model, load_tokenizer
    from tifa_lite.modeling.load import lora_config
    from tifa_lite.runplan import resolve_plan

    config = load_recipe({}, [f"model.name_or_path={base_dir}", "quant.bits=null", "lora.r=4", "lora.alpha=8",
                              "lora.dropout=0.0", "model.layer_loop.start=1", "model.layer_loop.end=2",
                              "model.layer_loop.repeats=2", f"model.layer_loop.lora_per_pass={str(per_pass).lower()}"])
    plan = resolve_plan(config)
    tokenizer = load_tokenizer(config, plan.model)
    torch.manual_seed(0)
    model = get_peft_model(load_model(config, plan), lora_config(config))
    batch = tokenizer(["The sea is wide and deep.", "Two plus two is four."], return_tensors="pt", padding=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    for _ in range(3):
        model(**batch, labels=batch["input_ids"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "resolved_config.yaml").write_text(dump_config(config), encoding="utf-8")
    return model.eval(), tokenizer


@pytest.mark.parametrize("per_pass", [True, False])
def test_looped_adapter_merges_into_a_deeper_plain_model(base_dir, tmp_path, per_pass):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from tifa_lite.modeling.inference import load_inference_model

    looped, tokenizer = looped_run(base_dir, tmp_path / "run", per_pass)
    report = merge(tmp_path / "run", tmp_path / "merged", dtype="fp32")
    assert report["self_check"]["passed"] and not report["no_op"]
    assert report["layer_loop"]["slot_sources"] == [0, 1, 1, 2]
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config["num_hidden_layers"] == 4 and "tifa_lite_layer_loop" not in config
    assert config["tifa_lite_base"].endswith(str(base_dir))  # the real base, not the expanded copy
    assert not list(tmp_path.glob(".merged.looped-*"))  # the expanded copies are gone

    # weights per pass: slot s holds its source layer's weight plus the LoRA of its pass (scale alpha/r = 2);
    # a shared LoRA was saved once, under the first pass's slot
    merged = load_file(str(tmp_path / "merged" / "model.safetensors"))
    base = load_file(str(base_dir / "model.safetensors"))
    lora = load_file(str(tmp_path / "run" / "adapter_model.safetensors"))
    assert "model.layers.4.self_attn.q_proj.weight" not in merged
    for slot, src in enumerate([0, 1, 1, 2]):
        saved_as = slot if per_pass or slot != 2 else 1
        a = lora[f"base_model.model.model.layers.{saved_as}.self_attn.q_proj.lora_A.weight"]
        b = lora[f"base_model.model.model.layers.{saved_as}.self_attn.q_proj.lora_B.weight"]
        expected = base[f"model.layers.{src}.self_attn.q_proj.weight"] + 2.0 * (b @ a)
        torch.testing.assert_close(merged[f"model.layers.{slot}.self_attn.q_proj.weight"], expected)
    assert torch.equal(merged["model.layers.1.mlp.up_proj.weight"], merged["model.layers.2.mlp.up_proj.weight"]) != per_pass

    # plain transformers loads it and generates what the looped model generates, with and without cache
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    assert len(plain.model.layers) == 4
    ids = tokenizer("Once upon a time", return_tensors="pt")["input_ids"]

    def greedy(model, use_cache):
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                             use_cache=use_cache, pad_token_id=tokenizer.pad_token_id)
        return out[0, ids.shape[1]:].tolist()

    expected = greedy(looped, True)
    assert expected == greedy(looped, False) == greedy(plain, True) == greedy(plain, False)
    # the inference loader (chat/eval/serve) rebuilds the loop from the run folder alone
    reloaded = load_inference_model(None, tmp_path / "run")[0]
    assert len(reloaded.get_base_model().model.layers) == 4 and greedy(reloaded, True) == expected


def test_looped_merge_passes_base_weights_through(base_dir, tmp_path):
    """--base-weights reaches the merge of the expanded model: asking to merge this fp32 run into a
    dequantised 4-bit base is refused as for an ordinary run (before, the flag was dropped and the
    looped merge used auto), and nothing is written."""
    from tifa_lite.merging.adapter import MergeError

    looped_run(base_dir, tmp_path / "run", per_pass=True)
    with pytest.raises(MergeError, match="--base-weights dequantized"):
        merge(tmp_path / "run", tmp_path / "merged", dtype="fp32", base_weights="dequantized")
    assert not (tmp_path / "merged").exists()
    report = merge(tmp_path / "run", tmp_path / "merged", dtype="fp32", base_weights="original")
    assert report["base_weights"] == "original" and report["layer_loop"]["merged_layers"] == 4
