"""Prompt-only data for GRPO: GSM8K in its official form (``question``, ``answer``
ending in ``#### n``) and generic ``prompt`` rows, rendered as chat prompts with the
R1-Zero system prompt by default; and conversations (``messages``, sharegpt, …, e.g. the
role-play data kit's output), where the turns before the last assistant turn are the
prompt (with the conversation's own system turn, no R1-Zero default) and that turn is
kept as the ``reference`` column. Multi-turn prompts go through the recipe's ``<think>``
history policy (:class:`tifa_lite.conversation.templates.ConversationRules`).

TRL's GRPOConfig in this version has no ``max_prompt_length``, so prompts longer than
``grpo.max_prompt_length`` tokens are dropped here, counted in the data report.
They are dropped rather than cut because a truncated word problem is a different
(usually unanswerable) problem, which would only add noise to the rewards.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any, Iterable

from tifa_lite.config.schema import RecipeConfig
from tifa_lite.data.io import Record, SkipReport, is_local_spec, iter_records
from tifa_lite.errors import DataError
from tifa_lite.conversation.templates import ConversationRules

log = logging.getLogger(__name__)

# Our default: DeepSeek-R1-Zero's template with the tag layout spelled out on separate lines,
# so the strict-format reward is reachable by following the instruction literally. The
# reproduction recipe (grpo_qwen2.5-0.5b_gsm8k.yaml) sets the write-up's own text instead.
R1_ZERO_SYSTEM_PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The Assistant first thinks about the reasoning process in the mind and then provides the User with the answer. "
    "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, in this format:\n<think>\nreasoning process here\n</think>\n<answer>\nanswer here\n</answer>"
)

# Hub ids of GSM8K that need a configuration name the user would otherwise have to know.
_HUB_CONFIGS = {"openai/gsm8k": "main", "gsm8k": "main", "modelscope/gsm8k": "main"}


@dataclass
class PromptData:
    train: Any  # datasets.Dataset with "prompt" (+ "answer" for GSM8K)
    eval: Any | None
    report: dict[str, Any] = field(default_factory=dict)


def final_answer(answer_text: str, where: str) -> str:
    """The text after ``####`` in a GSM8K solution, as the write-up takes it
    (``answer.split("####")[1].strip()``, so "1,000" stays "1,000"): the exact ``correctness``
    reward compares strings; ``correctness_numeric`` and the evaluator normalise both sides."""
    if "####" not in answer_text:
        raise DataError(f"{where}: GSM8K 'answer' has no '#### <number>' final line (got {answer_text[-60:]!r}).")
    return answer_text.split("####")[1].strip()


def build_prompt(text: str, system_prompt: str | None, template: str | None) -> list[dict[str, str]]:
    user = template.format(question=text, prompt=text) if template else text
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": user})
    return messages


CONVERSATION_FORMATS = ("messages", "sharegpt", "xtuner", "alpaca")


def _row_format(row: dict[str, Any], fmt: str, where: str) -> str:
    if fmt in ("gsm8k", "prompt", *CONVERSATION_FORMATS):
        return fmt
    if fmt != "auto":
        raise DataError(
            f"data.format={fmt} is not prompt-only data; GRPO reads data.format=gsm8k, prompt or a conversation "
            f"format ({', '.join(CONVERSATION_FORMATS)})."
        )
    if "question" in row and ("answer" in row or "prompt" not in row):
        return "gsm8k"  # without an answer, refused as a GSM8K row that lacks one
    if "prompt" in row:
        return "prompt"
    if any(key in row for key in ("messages", "conversations", "conversation")):
        from tifa_lite.data.formats import detect_format

        return detect_format(row, where)
    raise DataError(
        f"{where}: cannot tell the format of this row (keys {sorted(row)}). GRPO expects GSM8K rows "
        "{question, answer: '... #### n'}, prompt rows {prompt, ...extra columns for the rewards} or conversations "
        "{messages: [...]}."
    )


def conversation_prompt_row(row: dict[str, Any], fmt: str, where: str, system_prompt: str | None) -> dict:
    """The turns before the last assistant turn are the prompt; that turn is the reference."""
    from tifa_lite.data.formats import to_messages

    messages = to_messages(row, fmt, where, system_prompt)  # validated: user first, alternating, a reply
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return {"prompt": messages[:last], "reference": messages[last]["content"]}


def to_prompt_row(row: dict[str, Any], fmt: str, where: str, system_prompt: str | None, template: str | None) -> dict:
    """``system_prompt`` None: the R1-Zero one for questions, and a conversation's own system turn."""
    fmt = _row_format(row, fmt, where)
    if fmt in CONVERSATION_FORMATS:
        return conversation_prompt_row(row, fmt, where, system_prompt)
    system_prompt = R1_ZERO_SYSTEM_PROMPT if system_prompt is None else system_prompt
    if fmt == "gsm8k":
        for key in ("question", "answer"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise DataError(f"{where}: GSM8K row needs a non-empty string '{key}'.")
        return {"prompt": build_prompt(row["question"], system_prompt, template), "answer": final_answer(row["answer"], where)}
    prompt = row.get("prompt")
    extra = {k: v for k, v in row.items() if k != "prompt"}
    if isinstance(prompt, str) and prompt.strip():
        return {"prompt": build_prompt(prompt, system_prompt, template), **extra}
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) and "role" in m for m in prompt):
        if system_prompt and prompt[0]["role"] != "system":
            prompt = [{"role": "system", "content": system_prompt}, *prompt]
        return {"prompt": prompt, **extra}
    raise DataError(f"{where}: 'prompt' must be a non-empty string or a list of {{role, content}} messages.")


def _records(config: RecipeConfig, spec, key: str, skipped: SkipReport) -> Iterable[Record]:
    d = config.data
    if d.source in ("hf", "modelscope") or (d.source == "auto" and not is_local_spec(spec)):
        return _hub_records(spec if isinstance(spec, str) else spec[0], d.source, d.split, key)
    return iter_records(spec, d.on_error, skipped, key=key, source="local", split=d.split)


def _hub_records(name: str, source: str, split: str, key: str) -> Iterable[Record]:
    # "id:config" picks a configuration; the official GSM8K ids get "main" without asking.
    name, _, subset = name.partition(":")
    subset = subset or _HUB_CONFIGS.get(name.lower())
    if source == "modelscope":
        try:
            from modelscope.msdatasets import MsDataset
        except ImportError:
            raise DataError(f"{key}={name} with data.source=modelscope needs: pip install modelscope") from None
        dataset = MsDataset.load(name, subset_name=subset, split=split)
    else:
        import datasets

        try:
            dataset = datasets.load_dataset(name, subset, split=split) if subset else datasets.load_dataset(name, split=split)
        except Exception as exc:  # the hub raises many types; the user needs the id and the cause
            raise DataError(f"{key}={name}: not a local file, and loading it from the hub failed ({exc}).") from None
    for index, row in enumerate(dataset):
        yield Record(dict(row), f"{name}[{index}]")


def load_prompt_rows(config: RecipeConfig, spec, key: str = "data.path", limit: int | None = None,
                     skipped: SkipReport | None = None) -> list[dict[str, Any]]:
    d = config.data
    skipped = skipped if skipped is not None else SkipReport()
    rules = ConversationRules(config.model)
    rows = []
    for record in _records(config, spec, key, skipped):
        if not isinstance(record.data, dict):
            raise DataError(f"{record.where}: GRPO data must be JSON records, not raw text.")
        try:
            row = to_prompt_row(record.data, d.format, record.where, d.system_prompt, d.prompt_template)
        except DataError as exc:
            if d.on_error == "skip":
                skipped.add("invalid prompt row", str(exc))
                continue
            raise DataError(f"{exc} (or set data.on_error=skip to skip such records)") from None
        # A multi-turn prompt's earlier answers are history: the generated turn comes after them.
        rows.append({**row, "prompt": rules(row["prompt"], record.where)})
        if limit and len(rows) >= limit:
            break
    rules.log(key)
    return rows


def prompt_length(tokenizer, prompt: list[dict[str, str]]) -> int:
    ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)


def drop_overlength(rows: list[dict], tokenizer, max_prompt_length: int) -> tuple[list[dict], int]:
    kept = [r for r in rows if prompt_length(tokenizer, r["prompt"]) <= max_prompt_length]
    return kept, len(rows) - len(kept)


def build_grpo_data(config: RecipeConfig, tokenizer) -> PromptData:
    import datasets

    d = config.data
    if not d.path:
        raise DataError("data.path is not set. Give a GSM8K-style JSONL file, e.g. data.path=../shared/data/gsm8k/train.jsonl")
    skipped = SkipReport()
    train_rows = load_prompt_rows(config, d.path, limit=d.limit, skipped=skipped)
    eval_rows = load_prompt_rows(config, d.eval_path, key="data.eval_path", skipped=skipped) if d.eval_path else []
    if d.shuffle:
        random.Random(d.seed).shuffle(train_rows)
    if not eval_rows and d.eval_ratio > 0:
        n_eval = max(1, int(len(train_rows) * d.eval_ratio))
        eval_rows, train_rows = train_rows[:n_eval], train_rows[n_eval:]
    max_len = config.grpo.max_prompt_length
    train_rows, dropped_train = drop_overlength(train_rows, tokenizer, max_len)
    eval_rows, dropped_eval = drop_overlength(eval_rows, tokenizer, max_len)
    if not train_rows:
        raise DataError(
            f"data.path: no usable prompt left (dropped {dropped_train} longer than grpo.max_prompt_length={max_len}; "
            f"{skipped.summary()}). Raise grpo.max_prompt_length or check the data."
        )
    report = {
        "train_rows": len(train_rows),
        "eval_rows": len(eval_rows),
        "dropped_overlength_prompts": dropped_train + dropped_eval,
        "skipped": skipped.total,
    }
    log.debug("GRPO data: %s; %s", report, skipped.summary())  # reported by the run's "data built" line
    return PromptData(
        train=datasets.Dataset.from_list(train_rows),
        eval=datasets.Dataset.from_list(eval_rows) if eval_rows else None,
        report=report,
    )
