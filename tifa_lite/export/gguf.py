"""HF folder (a merged model) → one GGUF file for llama.cpp / Ollama / LM Studio.

By default the file is made by llama.cpp itself (:mod:`tifa_lite.export.llamacpp_convert`):
its ``convert_hf_to_gguf.py`` from the pinned llama-cpp-python source release, for every
architecture llama.cpp supports, then its quantiser for the K-quants people run
(``q4_k_m``, ``q5_k_m``, ``q6_k``; ``q8_0``, ``f16``, ``bf16`` come from the converter alone).

The hand-written writer below is kept only as ``converter="builtin"``: f16 and q8_0 for
Llama, Mistral, Qwen2 and Qwen3 with byte-level BPE vocabularies, from the ``gguf``
library already installed, with nothing fetched (llama.cpp's converter comes in a 76 MB
source release that pip downloads once). Why not retire it: it is the path with no
download and no compile, and the CPU tests exercise the export, the round trip and the
Ollama folder through it on a fresh clone. It is not the default because it covers four
architectures and no K-quant, and llama.cpp's own converter is the reference for what
llama.cpp loads. The builtin pieces come from the ``gguf`` library (tensor name map,
``BpeVocab``, ``SpecialVocab``, Q8_0, the writer); ours are the hyper-parameter keys,
Llama's Q/K row permutation, the token types and the pre-tokenizer name. Its tensors are
streamed (peak memory one tensor).

After writing, :func:`round_trip` loads the file back through transformers
(``gguf_file=``, which dequantises every type here) and compares logits and tokenisation
with the HF folder; ``llama_cpp=True`` also runs it in llama.cpp
(:mod:`tifa_lite.export.llamacpp_check`). How far each quant moves the model (KL, top-1,
greedy divergence, stopping) is the parity report's job (:mod:`tifa_lite.export.parity`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tifa_lite.atomic import check_output_path, replacing_file
from tifa_lite import diskspace
from tifa_lite.planner.disk import gguf_bytes
from tifa_lite.runlock import output_lock
from tifa_lite.errors import ConfigError, TifaError
from tifa_lite.export.llamacpp_convert import CONVERTERS
from tifa_lite.export.llamacpp_convert import OUTTYPES as LLAMA_CPP_OUTTYPES

log = logging.getLogger(__name__)

BUILTIN_OUTTYPES = ("f16", "q8_0")
OUTTYPES = LLAMA_CPP_OUTTYPES

# max |logit diff| GGUF-vs-HF allowed by the round trip (both run in fp32 on the CPU).
# f16 rounding gives ~1e-2 on SmolLM2; q8_0 ~0.3 to 1. Beyond these something is wrong
# (a missing permutation or a swapped tensor moves logits by several units). The K-quants
# move logits by several units by design: their round trip checks tokenisation and
# finiteness only, and the parity report measures them by KL and top-1 agreement.
ROUND_TRIP_TOLERANCE = {"f16": 0.25, "bf16": 0.5, "q8_0": 2.5}


class ExportError(TifaError):
    """The export cannot be done or its round-trip check failed; no file was left."""


# HF model_type → llama.cpp architecture. Mistral is Llama's architecture in llama.cpp
# (its convert script maps MistralForCausalLM to llama, Q/K permutation included).
_ARCHS = {"llama": "LLAMA", "mistral": "LLAMA", "qwen2": "QWEN2", "qwen3": "QWEN3"}
# Asked for, not exported here, and why (README "Merge and export" lists them too).
UNSUPPORTED = {
    "gemma2": "Gemma-2 needs its SentencePiece vocabulary (tokenizer.model scores), logit soft-capping and "
              "sliding-window metadata, which this exporter does not write",
    "gemma3": "Gemma-3 needs its SentencePiece vocabulary, per-layer-type RoPE and the sliding-window pattern, "
              "which this exporter does not write",
    "gemma3_text": "Gemma-3 needs its SentencePiece vocabulary, per-layer-type RoPE and the sliding-window pattern, "
                   "which this exporter does not write",
}
PERMUTED_QK = {"llama", "mistral"}  # HF rotate-half RoPE → llama.cpp's interleaved layout


def _arch(model_type: str):
    import gguf

    if model_type in UNSUPPORTED:
        raise ExportError(
            f"GGUF export of {model_type}: {UNSUPPORTED[model_type]}. Use llama.cpp's convert_hf_to_gguf.py "
            "on the merged folder (the merged model itself is a normal HF folder)."
        )
    if model_type not in _ARCHS:
        raise ExportError(
            f"GGUF export supports model_type {', '.join(_ARCHS)}; this model is {model_type!r}. "
            "Use llama.cpp's convert_hf_to_gguf.py for other architectures."
        )
    return getattr(gguf.MODEL_ARCH, _ARCHS[model_type])


def _rope_theta(config: dict[str, Any]) -> float:
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or params
    rope_type = scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type != "default":
        raise ExportError(f"rope scaling {rope_type!r} is not supported by this exporter (only plain RoPE).")
    return float(params.get("rope_theta") or config.get("rope_theta") or 10000.0)


def _pre_tokenizer(tokenizer_json: dict[str, Any]) -> str:
    """llama.cpp's name for the pre-tokenizer, recognised from tokenizer.json; a wrong
    name changes tokenisation silently in llama.cpp, so an unknown one is refused."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    pre = tokenizer_json.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre])
    kinds = [p.get("type") for p in parts]
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"  # GPT-2's own split regex inside ByteLevel
    if kinds == ["Digits", "ByteLevel"]:
        return "smollm"  # SmolLM/SmolLM2: single digits, then GPT-2 byte level
    if kinds == ["Split", "ByteLevel"]:
        regex = (parts[0].get("pattern") or {}).get("Regex")
        # transformers' GGUF reader keys its split regexes by llama.cpp's names: the first name
        # for this exact regex is one both llama.cpp and the round trip understand.
        for name, split in GGUF_PRE_TOKENIZER_SPLITS.items():
            if split == regex:
                return name
    raise ExportError(f"unknown pre-tokenizer {kinds}: cannot name it for llama.cpp; use convert_hf_to_gguf.py.")


def _add_hparams(writer, config: dict[str, Any], model_type: str, name: str, file_type: int) -> None:
    heads = config["num_attention_heads"]
    writer.add_name(name)
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_file_type(file_type)
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    # Qwen3 and Mistral-Nemo have head_dim != hidden/heads; llama.cpp reads it from here.
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    if model_type in PERMUTED_QK:
        writer.add_vocab_size(config["vocab_size"])
        writer.add_rope_dimension_count(head_dim)
    if model_type == "mistral" and config.get("sliding_window"):
        log.warning("sliding_window=%s is not written: llama.cpp runs Mistral as Llama with full attention, "
                    "the same as transformers up to %s tokens of context", config["sliding_window"], config["sliding_window"])


def _add_tokenizer(writer, model_dir: Path, model_type: str, vocab_size: int) -> None:
    import gguf

    tokenizer_json = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    if (tokenizer_json.get("model") or {}).get("byte_fallback"):
        # A SentencePiece vocabulary converted to tokenizer.json (Llama-2, Mistral 7B v0.1-v0.3,
        # Gemma): llama.cpp needs the SentencePiece scores, which tokenizer.json does not carry.
        raise ExportError(f"{model_dir}: a SentencePiece-style vocabulary (byte fallback) is not exported here; "
                          "use llama.cpp's convert_hf_to_gguf.py.")
    try:
        vocab = gguf.vocab.BpeVocab(model_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise ExportError(f"{model_dir}: only byte-level BPE tokenizers are exported ({exc}).") from None
    special = {t["content"]: t.get("special", False) for t in tokenizer_json.get("added_tokens", [])}
    tokens, types = [], []
    for text, _score, _type in vocab.all_tokens():
        token = text.decode("utf-8") if isinstance(text, bytes) else text
        tokens.append(token)
        if token in special:
            # Special added tokens are CONTROL; others (e.g. <think>) USER_DEFINED, matched whole.
            types.append(gguf.TokenType.CONTROL if special[token] else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    for i in range(len(tokens), vocab_size):  # embedding rows beyond the tokenizer (padding)
        tokens.append(f"[PAD{i}]")
        types.append(gguf.TokenType.UNUSED)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(tokenizer_json))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens))
    # Say it either way: left unset, llama.cpp picks a per-vocabulary default, and a BOS the
    # HF tokenizer never adds (the chat template writes it, or nothing does) would be doubled.
    special.add_special_token.setdefault("bos", False)
    special.add_special_token.setdefault("eos", False)
    special.add_to_gguf(writer, quiet=True)


def _permute(w: torch.Tensor, n_head: int, n_head_kv: int | None) -> torch.Tensor:
    # HF stores Llama Q/K rows for rotate_half RoPE; llama.cpp expects interleaved pairs.
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _plan(model_dir: Path, config: dict[str, Any], arch, outtype: str):
    """(gguf name, hf key, shard, ggml type) for every tensor, in file order."""
    import gguf
    from safetensors import safe_open

    from tifa_lite.merging.stream import base_shards

    shards = base_shards(model_dir)
    if not shards:
        raise ExportError(f"{model_dir}: no safetensors weights (model.safetensors or an index).")
    name_map = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    plan = []
    for shard in shards:
        with safe_open(str(shard), framework="pt") as f:
            for key in f.keys():
                if key.endswith("rotary_emb.inv_freq"):
                    continue
                if key == "lm_head.weight" and config.get("tie_word_embeddings"):
                    continue  # llama.cpp reuses token_embd when `output` is absent
                stem, _, suffix = key.rpartition(".")
                mapped = name_map.get_name(stem)
                if mapped is None:
                    raise ExportError(f"{model_dir}: tensor {key} has no GGUF name for {config['model_type']}.")
                shape = tuple(f.get_slice(key).get_shape())
                qtype = gguf.GGMLQuantizationType.F32
                if len(shape) == 2:
                    qtype = gguf.GGMLQuantizationType.F16
                    if outtype == "q8_0" and shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
                        qtype = gguf.GGMLQuantizationType.Q8_0
                plan.append((f"{mapped}.{suffix}", key, shard, shape, qtype))
    return plan


def _convert(tensor: torch.Tensor, gguf_name: str, config: dict[str, Any], qtype) -> np.ndarray:
    import gguf

    t = tensor.to(torch.float32)
    if config["model_type"] in PERMUTED_QK and gguf_name.endswith(("attn_q.weight", "attn_k.weight")):
        heads = config["num_attention_heads"]
        kv = config.get("num_key_value_heads") or heads
        t = _permute(t, heads, heads if "attn_q" in gguf_name else kv)
    data = t.numpy()
    if qtype == gguf.GGMLQuantizationType.F32:
        return data.astype(np.float32)
    if qtype == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float16)
    return gguf.quants.quantize(data, qtype)


def write_gguf(model_dir: Path, path: Path, outtype: str) -> None:
    import gguf
    from safetensors import safe_open

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    model_type = config.get("model_type", "")
    arch = _arch(model_type)
    plan = _plan(model_dir, config, arch, outtype)
    file_type = gguf.LlamaFileType.MOSTLY_Q8_0 if outtype == "q8_0" else gguf.LlamaFileType.MOSTLY_F16

    writer = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[arch])
    _add_hparams(writer, config, model_type, model_dir.name, file_type)
    _add_tokenizer(writer, model_dir, model_type, config["vocab_size"])
    for gguf_name, _key, _shard, shape, qtype in plan:
        if qtype == gguf.GGMLQuantizationType.Q8_0:
            byte_shape = gguf.quant_shape_to_byte_shape(shape, qtype)
            writer.add_tensor_info(gguf_name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), raw_dtype=qtype)
        else:
            np_dtype = np.dtype(np.float16 if qtype == gguf.GGMLQuantizationType.F16 else np.float32)
            writer.add_tensor_info(gguf_name, shape, np_dtype, int(np.prod(shape)) * np_dtype.itemsize)
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for gguf_name, key, shard, _shape, qtype in plan:
        with safe_open(str(shard), framework="pt") as f:
            writer.write_tensor_data(_convert(f.get_tensor(key), gguf_name, config, qtype))
    writer.close()


ROUND_TRIP_TEXTS = ["Hello world! 12345 tokens, <think>reasoning</think> answer.", "The capital of France is"]


def _read_back_config(model_dir: Path) -> dict[str, Any]:
    """transformers 5 reads a llama-architecture GGUF whose name says "mistral" as a Mistral
    file and then finds no Mistral tensor map in gguf-py; read a Mistral export back as the
    Llama it is in llama.cpp (same weights and hyper-parameters; full attention, as llama.cpp)."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "mistral":
        return {}
    from transformers import LlamaConfig

    fields = {k: v for k, v in config.items() if k not in ("model_type", "architectures", "sliding_window")}
    return {"config": LlamaConfig(**fields)}


@contextlib.contextmanager
def _read_back(model_dir: Path):
    """transformers reads back fewer GGUF architectures than llama.cpp writes (deepseek2, smollm3,
    …): its refusal, whatever its type, becomes one ExportError that says what was and was not done."""
    try:
        yield
    except (ValueError, RuntimeError, TypeError, KeyError) as error:
        import transformers

        model_type = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("model_type")
        raise ExportError(
            f"the GGUF of {model_dir} ({model_type}) was converted, but transformers {transformers.__version__} cannot "
            f"read it back to check it ({type(error).__name__}: {str(error).splitlines()[0][:160]}). Check it in "
            "llama.cpp instead (--check llama.cpp), or keep it unchecked (--no-check). No file was written.") from None


def round_trip(model_dir: Path, gguf_file: Path, outtype: str, tolerance: float | None = None) -> dict[str, Any]:
    """Load the GGUF back with transformers (which dequantises q8_0 to fp32 on load) and
    compare next-token logits and tokenisation with the HF folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(str(model_dir))
    with _read_back(model_dir):
        gguf_tok = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    token_mismatch = [t for t in ROUND_TRIP_TEXTS if hf_tok(t)["input_ids"] != gguf_tok(t)["input_ids"]]
    texts = list(ROUND_TRIP_TEXTS)
    if hf_tok.chat_template:
        texts.append(hf_tok.apply_chat_template([{"role": "user", "content": "Hi, who are you?"}], add_generation_prompt=True, tokenize=False))
    inputs = [hf_tok(t, add_special_tokens=False, return_tensors="pt")["input_ids"] for t in texts]

    def logits(model):
        with torch.no_grad():
            return [model(input_ids=ids).logits.float() for ids in inputs]

    hf = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    ref = logits(hf)
    del hf
    with _read_back(model_dir):
        back = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name,
                                                    dtype=torch.float32, **_read_back_config(model_dir)).eval()
    got = logits(back)
    del back
    diff = max(float((a - b).abs().max()) for a, b in zip(ref, got))
    agree = sum(int(a[0, -1].argmax() == b[0, -1].argmax()) for a, b in zip(ref, got)) / len(ref)
    tol = tolerance if tolerance is not None else ROUND_TRIP_TOLERANCE.get(outtype, float("inf"))
    return {
        "max_logit_diff": diff if np.isfinite(diff) else float("inf"),
        "tolerance": tol,
        "next_token_agreement": agree,
        "tokenizer_mismatches": token_mismatch,
        "passed": bool(np.isfinite(diff) and diff <= tol and not token_mismatch),
    }


def _read_shape(model_dir: Path):
    from tifa_lite.planner.shapes import model_shape_from_config_dict

    return model_shape_from_config_dict(json.loads((model_dir / "config.json").read_text(encoding="utf-8")))


def export_gguf(
    model: str | Path,
    output: str | Path,
    outtype: str = "f16",
    overwrite: bool = False,
    check: bool = True,
    tolerance: float | None = None,
    llama_cpp: bool = False,
    converter: str = "llama.cpp",
) -> dict[str, Any]:
    """Write ``output`` atomically; with ``check`` a failed round trip leaves no file, and with
    ``llama_cpp`` neither does a failed run in llama.cpp (:mod:`tifa_lite.export.llamacpp_check`).
    ``converter``: ``llama.cpp`` (its convert_hf_to_gguf.py and quantiser) or ``builtin``
    (this module's writer: f16/q8_0, four architectures, nothing fetched)."""
    if converter not in CONVERTERS:
        raise ConfigError(f"--converter {converter!r}: use one of {', '.join(CONVERTERS)}.")
    allowed = OUTTYPES if converter == "llama.cpp" else BUILTIN_OUTTYPES
    if outtype not in allowed:
        raise ConfigError(f"--outtype {outtype!r}: use one of {', '.join(allowed)}"
                          + (" (the builtin writer; llama.cpp's converter makes the K-quants)." if converter == "builtin" else "."))
    output = check_output_path(output, "--output", kind="file")
    model_dir = Path(model).expanduser().resolve()
    if not model_dir.exists():
        raise ConfigError(f"--model {model_dir}: the folder does not exist.")
    if not (model_dir / "config.json").is_file():
        hint = " It is a LoRA adapter: run `tifa-lite merge` first." if (model_dir / "adapter_config.json").is_file() else ""
        raise ConfigError(f"--model {model_dir}: no config.json, not a model folder.{hint}")
    if output.exists() and not overwrite:
        raise ConfigError(f"--output {output} already exists. Choose another file or pass --overwrite.")
    try:
        need = gguf_bytes(_read_shape(model_dir), outtype, converter)
    except (ConfigError, KeyError, TypeError, ValueError):  # an architecture the planner does not read
        need = None
    if need:
        diskspace.require(output, need, "--output")
    with output_lock(output, "--output"), diskspace.translating(output, need, "--output"), \
            replacing_file(output) as tmp:
        if converter == "builtin":
            write_gguf(model_dir, tmp, outtype)
        else:
            from tifa_lite.export import llamacpp_convert

            try:
                llamacpp_convert.write_gguf(model_dir, tmp, outtype)
            except llamacpp_convert.LlamaCppError as exc:
                raise ExportError(str(exc)) from None
        report: dict[str, Any] = {"model": str(model_dir), "output": str(output), "outtype": outtype,
                                  "converter": converter, "bytes": tmp.stat().st_size}
        if check:
            # transformers wants a .gguf name; check the temporary file through a link with one.
            probe = tmp.with_name(tmp.name + ".gguf")
            os.link(tmp, probe)
            try:
                report["round_trip"] = round_trip(model_dir, probe, outtype, tolerance)
            finally:
                probe.unlink()
            rt = report["round_trip"]
            if not rt["passed"]:
                raise ExportError(
                    f"GGUF round trip failed: max logit diff {rt['max_logit_diff']:.4g} (tolerance {rt['tolerance']:g}), "
                    f"tokenizer mismatches {rt['tokenizer_mismatches']}. No file was written."
                )
        if llama_cpp:
            from tifa_lite.export.llamacpp_check import check_gguf_with_llama_cpp

            report["llama_cpp"] = lc = check_gguf_with_llama_cpp(model_dir, tmp)
            if not lc["passed"]:
                raise ExportError(f"GGUF check in llama.cpp failed: {json.dumps(lc)}. No file was written.")
    return report
