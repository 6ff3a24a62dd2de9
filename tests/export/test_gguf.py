"""GGUF export for Llama, Mistral, Qwen2 and Qwen3: written by our streaming writer, read back by
transformers (gguf_file=) and compared with the HF folder.

Unit tests use a 2-layer model with a small byte-level BPE vocabulary of its own:
transformers' GGUF reader parses the 49k-token SmolLM2 vocabulary in pure Python
(about a minute), which is left to the one slow test at the end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tifa_lite.errors import ConfigError
from tifa_lite.export import gguf as gguf_export
from tifa_lite.export.gguf import ExportError, export_gguf

# No digits: with so few merges the BPE trainer keeps whole-number tokens its own merges never
# build, and transformers' Qwen2 GGUF tokenizer (ignore_merges) would then pick them.
TEXTS = ["Hello world! The sea is wide and deep.", "Two plus two is four, so they say.", "<think>why</think> because."] * 20


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TEXTS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>")
    fast.add_tokens(["<think>", "</think>"])  # not special: GGUF USER_DEFINED
    fast.chat_template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    return fast


def _tiny(folder: Path, arch: str, tokenizer=None) -> Path:
    import transformers

    tok = tokenizer or _tokenizer()
    name = {"llama": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen3", "mistral": "Mistral"}[arch]
    cls_config, cls_model = getattr(transformers, f"{name}Config"), getattr(transformers, f"{name}ForCausalLM")
    # Qwen3Config's default head_dim is 128, not hidden/heads (16 here): as in the real Qwen3
    # models, and transformers' GGUF reader assumes that default.
    extra = {"head_dim": 128} if arch == "qwen3" else {}
    config = cls_config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=arch in ("qwen2", "qwen3"),
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, rms_norm_eps=1e-6, **extra,
    )
    torch.manual_seed(0)
    model = cls_model(config)
    with torch.no_grad():  # larger weights than the init so a layout error shows in the logits
        for p in model.parameters():
            p.mul_(8.0) if p.dim() == 2 else None
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return _tiny(tmp_path_factory.mktemp("gguf") / "llama", "llama")


@pytest.fixture(scope="module")
def tiny_qwen2(tmp_path_factory):
    return _tiny(tmp_path_factory.mktemp("gguf") / "qwen2", "qwen2")


@pytest.fixture(scope="module", params=["qwen3", "mistral"])
def tiny_newer(request, tmp_path_factory):
    return _tiny(tmp_path_factory.mktemp("gguf") / request.param, request.param), request.param


def test_llama_f16_round_trip(tiny_llama, tmp_path):
    import gguf

    out = tmp_path / "model.gguf"
    report = export_gguf(tiny_llama, out, outtype="f16", converter="builtin")
    rt = report["round_trip"]
    assert rt["passed"] and rt["max_logit_diff"] < 0.05 and rt["tokenizer_mismatches"] == []
    assert rt["next_token_agreement"] == 1.0
    reader = gguf.GGUFReader(out)
    fields = {k: f for k, f in reader.fields.items()}
    assert fields["general.architecture"].contents() == "llama"
    assert fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert fields["llama.rope.dimension_count"].contents() == 16
    tokens = fields["tokenizer.ggml.tokens"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    assert types[tokens.index("<|im_end|>")] == gguf.TokenType.CONTROL
    assert types[tokens.index("<think>")] == gguf.TokenType.USER_DEFINED
    names = {t.name: t for t in reader.tensors}
    assert names["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert names["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert "output.weight" in names  # untied lm_head is exported
    assert "<|im_start|>" in fields["tokenizer.chat_template"].contents()


def test_qwen2_q8_0_round_trip(tiny_qwen2, tmp_path):
    import gguf

    out = tmp_path / "model.gguf"
    report = export_gguf(tiny_qwen2, out, outtype="q8_0", converter="builtin")
    assert report["round_trip"]["passed"], report
    reader = gguf.GGUFReader(out)
    names = {t.name: t for t in reader.tensors}
    assert names["blk.0.ffn_up.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    assert "blk.0.attn_q.bias" in names  # Qwen2's QKV biases
    assert "output.weight" not in names  # tied: llama.cpp reuses token_embd
    assert reader.fields["general.architecture"].contents() == "qwen2"


def test_qwen3_and_mistral_round_trip(tiny_newer, tmp_path):
    import gguf

    folder, arch = tiny_newer
    out = tmp_path / "model.gguf"
    report = export_gguf(folder, out, outtype="f16", converter="builtin")
    rt = report["round_trip"]
    assert rt["passed"] and rt["max_logit_diff"] < 0.05 and rt["next_token_agreement"] == 1.0, rt
    reader = gguf.GGUFReader(out)
    expected_arch = {"qwen3": "qwen3", "mistral": "llama"}[arch]
    assert reader.fields["general.architecture"].contents() == expected_arch
    names = {t.name for t in reader.tensors}
    if arch == "qwen3":
        assert {"blk.0.attn_q_norm.weight", "blk.0.attn_k_norm.weight"} <= names
        assert reader.fields["qwen3.attention.key_length"].contents() == 128
    else:
        assert "output.weight" in names  # Mistral's untied head


def test_gemma_is_refused_with_its_reason(tmp_path):
    for model_type in ("gemma2", "gemma3_text"):
        folder = tmp_path / model_type
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
        with pytest.raises(ExportError, match="SentencePiece vocabulary.*convert_hf_to_gguf"):
            export_gguf(folder, tmp_path / f"{model_type}.gguf", check=False, converter="builtin")


def test_round_trip_catches_a_broken_layout_and_leaves_no_file(tiny_llama, tmp_path, monkeypatch):
    # Without llama.cpp's Q/K permutation the file loads but computes something else.
    monkeypatch.setattr(gguf_export, "_permute", lambda w, n_head, n_head_kv: w)
    out = tmp_path / "model.gguf"
    with pytest.raises(ExportError, match="round trip failed"):
        export_gguf(tiny_llama, out, converter="builtin")
    assert list(tmp_path.iterdir()) == []


def test_refusals(tiny_llama, tmp_path):
    out = tmp_path / "exists.gguf"
    out.write_bytes(b"x")
    with pytest.raises(ConfigError, match="already exists"):
        export_gguf(tiny_llama, out, converter="builtin")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="tifa-lite merge"):
        export_gguf(adapter, tmp_path / "a.gguf", converter="builtin")
    other = tmp_path / "gpt2"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ExportError, match="llama, mistral, qwen2, qwen3"):
        export_gguf(other, tmp_path / "b.gguf", check=False, converter="builtin")
    with pytest.raises(ConfigError, match="outtype"):
        export_gguf(tiny_llama, tmp_path / "c.gguf", outtype="q4_0", converter="builtin")


def test_cli(tiny_qwen2, tmp_path, capsys):
    from tifa_lite.cli import main

    out = tmp_path / "m.gguf"
    assert main(["export", "gguf", "--model", str(tiny_qwen2), "--output", str(out), "--converter", "builtin", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["round_trip"]["passed"] and out.is_file()


@pytest.mark.slow
def test_real_smollm2_vocabulary_round_trip(tiny_model_dir, tmp_path):
    # The embedded SmolLM2 tokenizer (49k tokens, chat template) on the tiny Llama's weights:
    # the vocabulary path of a real export, without a 135M-parameter forward pass.
    report = export_gguf(tiny_model_dir, tmp_path / "tiny.gguf", outtype="q8_0", converter="builtin")
    rt = report["round_trip"]
    assert rt["passed"] and rt["tokenizer_mismatches"] == [] and rt["next_token_agreement"] == 1.0
