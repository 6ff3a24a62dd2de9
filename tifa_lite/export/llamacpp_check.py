"""Check an exported GGUF with llama.cpp itself (through ``llama-cpp-python``), the runtime
users actually run it in (llama.cpp, Ollama, LM Studio), against transformers on the HF folder.

What is compared, each reported on its own:

* the chat template embedded in the file is the HF tokenizer's;
* BOS/EOS ids, and every end-of-turn token of the template is end-of-generation for llama.cpp
  (otherwise a reply never stops);
* the rendered chat prompt tokenises to the same ids in llama.cpp (with the file's own
  add-BOS setting) as in transformers — a doubled BOS or a wrong pre-tokenizer shows here;
* greedy generation from that prompt: the tokens, and whether and where each runtime stops.

``llama-cpp-python`` has no binary wheel on PyPI: ``scripts/install_llama_cpp.sh`` builds it
once from the source distribution and caches the wheel.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tifa_lite.errors import ConfigError

CHECK_MESSAGES = [
    {"role": "system", "content": "You are Tifa Lockhart, a friendly bartender in Midgar."},
    {"role": "user", "content": "Hi! What is your name?"},
]
INSTALL_HINT = "llama-cpp-python is not installed: run `bash scripts/install_llama_cpp.sh` (builds it once, then cached)."


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _hf_greedy(model_dir: Path, ids: list[int], stop_ids: list[int], max_new_tokens: int) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM

    from tifa_lite.evaluation.greedy import plain_greedy

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), **plain_greedy(max_new_tokens, eos_token_id=stop_ids or None))
    return out[0, len(ids):].tolist()


def _cpp_greedy(llm, ids: list[int], vocab, max_new_tokens: int) -> list[int]:
    import llama_cpp

    out: list[int] = []
    for token in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
        out.append(token)
        if llama_cpp.llama_vocab_is_eog(vocab, token) or len(out) >= max_new_tokens:
            break
    return out


def check_gguf_with_llama_cpp(model_dir: str | Path, gguf_file: str | Path, max_new_tokens: int = 64,
                              min_agreement: float = 0.9, messages: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """Compare ``gguf_file`` run by llama.cpp with ``model_dir`` run by transformers; ``passed``
    needs every structural check and llama.cpp predicting at least ``min_agreement`` of
    transformers' greedy tokens (teacher-forced), the end of turn included."""
    try:
        import llama_cpp
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    from transformers import AutoTokenizer

    from tifa_lite.conversation.template_structure import end_of_turn_ids

    model_dir, gguf_file = Path(model_dir), Path(gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    llm = llama_cpp.Llama(model_path=str(gguf_file), n_ctx=1024, n_threads=min(4, os.cpu_count() or 1),
                          seed=0, logits_all=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    meta = llm.metadata
    report: dict[str, Any] = {"gguf": str(gguf_file), "llama_cpp_python": llama_cpp.__version__}

    report["chat_template_matches"] = meta.get("tokenizer.chat_template") == tokenizer.chat_template
    report["bos"] = {"hf": tokenizer.bos_token_id, "llama_cpp": llm.token_bos()}
    report["eos"] = {"hf": tokenizer.eos_token_id, "llama_cpp": llm.token_eos()}
    ids_match = tokenizer.eos_token_id == llm.token_eos() and (
        tokenizer.bos_token_id is None or tokenizer.bos_token_id == llm.token_bos())
    stop_ids = end_of_turn_ids(tokenizer, tokenizer.eos_token_id)
    not_eog = [t for t in stop_ids if not llama_cpp.llama_vocab_is_eog(vocab, t)]
    report["end_of_turn_ids"] = stop_ids
    report["end_of_turn_not_eog_in_llama_cpp"] = not_eog

    conversation = messages or CHECK_MESSAGES
    text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    hf_ids = list(tokenizer.apply_chat_template(conversation, add_generation_prompt=True, return_dict=True)["input_ids"])
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
    cpp_ids = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
    report["add_bos"] = add_bos
    report["prompt_tokens"] = {"hf": len(hf_ids), "llama_cpp": len(cpp_ids)}
    report["prompt_tokens_match"] = cpp_ids == hf_ids
    if not report["prompt_tokens_match"]:
        at = _common_prefix(hf_ids, cpp_ids)
        report["prompt_first_difference"] = {"at": at, "hf": hf_ids[at:at + 4], "llama_cpp": cpp_ids[at:at + 4]}

    hf_new = _hf_greedy(model_dir, hf_ids, stop_ids, max_new_tokens)
    hf_stopped = bool(hf_new) and hf_new[-1] in stop_ids
    # Teacher-forced: llama.cpp reads transformers' greedy reply and predicts each next token.
    # It measures agreement step by step, so one q8_0 near-tie does not send the rest of the
    # comparison down a different path; at the step where transformers ends the turn,
    # llama.cpp must predict the end of turn too.
    llm.reset()
    llm.eval(hf_ids + hf_new)
    predicted = [int(row.argmax()) for row in llm.scores[len(hf_ids) - 1: len(hf_ids) + len(hf_new) - 1]]
    agreement = sum(int(a == b) for a, b in zip(predicted, hf_new)) / max(1, len(hf_new))
    cpp_new = _cpp_greedy(llm, hf_ids, vocab, max_new_tokens)
    cpp_stopped = bool(cpp_new) and bool(llama_cpp.llama_vocab_is_eog(vocab, cpp_new[-1]))
    report["greedy"] = {
        "max_new_tokens": max_new_tokens,
        "teacher_forced_agreement": agreement,
        "stop_predicted": (predicted[-1] == hf_new[-1]) if hf_stopped else None,
        "hf_tokens": len(hf_new), "llama_cpp_tokens": len(cpp_new),
        "same_leading_tokens": _common_prefix(hf_new, cpp_new),
        "identical": hf_new == cpp_new,
        "hf_stopped": hf_stopped, "llama_cpp_stopped": cpp_stopped,
        "hf_text": tokenizer.decode(hf_new, skip_special_tokens=True),
        "llama_cpp_text": tokenizer.decode(cpp_new, skip_special_tokens=True),
    }
    report["min_agreement"] = min_agreement
    report["passed"] = bool(
        report["chat_template_matches"] and ids_match and not not_eog and report["prompt_tokens_match"]
        and agreement >= min_agreement and report["greedy"]["stop_predicted"] is not False
    )
    del llm
    return report
