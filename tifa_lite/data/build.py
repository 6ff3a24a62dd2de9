"""Recipe ``data:`` section → tokenised train/eval datasets for SFT and CPT."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any

from tifa_lite.config.schema import RecipeConfig
from tifa_lite.data.formats import detect_format, to_messages
from tifa_lite.data.io import SkipReport, iter_records
from tifa_lite.data.tokenize import encode_conversation, pack_sequences
from tifa_lite.errors import DataError
from tifa_lite.conversation.templates import ConversationRules

log = logging.getLogger(__name__)


@dataclass
class BuiltData:
    train: list[dict[str, list[int]]]
    eval: list[dict[str, list[int]]]
    report: dict[str, Any] = field(default_factory=dict)


def require_path(config: RecipeConfig) -> None:
    if not config.data.path:
        raise DataError("data.path is not set. Give a JSONL/JSON/TXT file or folder, e.g. data.path=data/sample.jsonl")


def load_conversations(config: RecipeConfig, spec, skipped: SkipReport, key: str = "data.path") -> list[tuple[list[dict], str]]:
    d = config.data
    rules = ConversationRules(config.model)
    conversations = []
    for record in iter_records(spec, d.on_error, skipped, key=key, source=d.source, split=d.split):
        if not isinstance(record.data, dict):
            raise DataError(f"{record.where}: SFT data must be JSON records, not raw text (use train.method=cpt for text).")
        try:
            fmt = d.format if d.format != "auto" else detect_format(record.data, record.where)
            messages = to_messages(record.data, fmt, record.where, d.system_prompt)
        except DataError as exc:
            if d.on_error == "skip":
                skipped.add("invalid conversation", str(exc))
                continue
            raise DataError(f"{exc} (or set data.on_error=skip to skip such records)") from None
        conversations.append((rules(messages, record.where), record.where))
        if d.limit and len(conversations) >= d.limit and key == "data.path":
            break
    rules.log(key)
    return conversations


def build_sft_data(config: RecipeConfig, tokenizer) -> BuiltData:
    require_path(config)
    d = config.data
    skipped = SkipReport()
    train_convs = load_conversations(config, d.path, skipped)
    eval_convs = load_conversations(config, d.eval_path, skipped, key="data.eval_path") if d.eval_path else []
    if d.shuffle:
        random.Random(d.seed).shuffle(train_convs)
    if not eval_convs and d.eval_ratio > 0:
        n_eval = max(1, int(len(train_convs) * d.eval_ratio))
        eval_convs, train_convs = train_convs[:n_eval], train_convs[n_eval:]

    overlength = {"dropped": 0, "truncated": 0, "no_trained_tokens": 0}
    train = _encode_all(config, tokenizer, train_convs, overlength)
    evaluation = _encode_all(config, tokenizer, eval_convs, overlength)
    if not train:
        reasons = [skipped.summary()]
        if overlength["dropped"]:
            reasons.append(f"{overlength['dropped']} longer than data.max_length={d.max_length} were dropped")
        if overlength["no_trained_tokens"]:
            reasons.append(
                f"{overlength['no_trained_tokens']} kept no assistant token after truncation to "
                f"data.max_length={d.max_length} (long system prompt or context?)"
            )
        raise DataError(
            f"data.path={d.path}: no usable training samples: {'; '.join(reasons)}. "
            "Raise data.max_length or shorten the prompts."
        )
    report = {
        "train_samples": len(train),
        "eval_samples": len(evaluation),
        "skipped": skipped.counts,
        "overlength_dropped": overlength["dropped"],
        "overlength_truncated": overlength["truncated"],
        "no_trained_tokens_after_truncation": overlength["no_trained_tokens"],
        "train_tokens": sum(len(s["input_ids"]) for s in train),
        "trained_tokens": sum(sum(s["assistant_masks"]) for s in train),
    }
    _log_report(report, skipped)
    if config.train.packing:
        train = pack_sequences(train, d.max_length)
        evaluation = pack_sequences(evaluation, d.max_length) if evaluation else evaluation
        report["packed_rows"] = len(train)
    return BuiltData(train, evaluation, report)


def _encode_all(config, tokenizer, conversations, overlength) -> list[dict[str, list[int]]]:
    d = config.data
    out = []
    for messages, where in conversations:
        sample = encode_conversation(tokenizer, messages, config.train.assistant_only_loss, where)
        if len(sample["input_ids"]) > d.max_length:
            if d.overlength == "drop":
                overlength["dropped"] += 1
                continue
            overlength["truncated"] += 1
            sample = {k: v[: d.max_length] for k, v in sample.items()}
        if not any(sample["assistant_masks"]):
            overlength["no_trained_tokens"] += 1  # truncation removed every assistant token
            continue
        out.append(sample)
    return out


def build_cpt_data(config: RecipeConfig, tokenizer) -> BuiltData:
    """Raw text (novels) → one token stream, EOS between documents, cut into full blocks."""
    require_path(config)
    d = config.data
    skipped = SkipReport()
    documents: list[str] = []
    for record in iter_records(d.path, d.on_error, skipped, source=d.source, split=d.split):
        if isinstance(record.data, str):
            documents.append(record.data)
        elif isinstance(record.data, dict) and isinstance(record.data.get("text"), str):
            documents.append(record.data["text"])
        elif d.on_error == "skip":
            skipped.add("no text field", f"{record.where}: no 'text' field")
        else:
            raise DataError(f"{record.where}: continued pre-training needs .txt files or JSONL rows with a 'text' field.")
    stream: list[int] = []
    for text in documents:
        if text.strip():
            stream += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    block = d.max_length
    blocks = [stream[i : i + block] for i in range(0, len(stream) - block + 1, block)]
    if not blocks:
        raise DataError(
            f"data.path={d.path}: {len(stream)} tokens of text, fewer than one block of data.max_length={block}."
        )
    random.Random(d.seed).shuffle(blocks)
    n_eval = int(len(blocks) * d.eval_ratio) if d.eval_ratio > 0 else 0
    if d.limit:
        blocks = blocks[: d.limit + n_eval]
    samples = [{"input_ids": b, "assistant_masks": [1] * len(b)} for b in blocks]
    report = {"documents": len(documents), "tokens": len(stream), "blocks": len(samples), "skipped": skipped.counts}
    _log_report(report, skipped)
    return BuiltData(samples[n_eval:], samples[:n_eval], report)


def _log_report(report: dict[str, Any], skipped: SkipReport) -> None:
    # The run's "data built" line reports the counts; here only what was skipped is news.
    log.debug("data: %s", ", ".join(f"{k}={v}" for k, v in report.items() if k != "skipped"))
    if skipped.total:
        log.warning("data: %s; first: %s", skipped.summary(), skipped.examples[0])
