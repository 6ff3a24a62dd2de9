"""A recipe → an xtuner QLoRA config (+ its data in xtuner's ``conversation`` JSONL).

For users who want to train the same run with xtuner itself (``xtuner train FILE``).
Target schema: xtuner 0.1.x, checked against v0.1.23 (the last 0.1 release on PyPI),
i.e. ``xtuner/configs/internlm/internlm2_chat_7b/internlm2_chat_7b_qlora_oasst1_e3.py``:
``SupervisedFinetune`` + ``BitsAndBytesConfig`` + ``LoraConfig``, ``process_hf_dataset``,
mmengine ``AmpOptimWrapper`` / ``param_scheduler`` / ``TrainLoop``.

The prompt template is written inline (xtuner's ``SYSTEM/INSTRUCTION/SUFFIX/SEP`` dict
form) from our own template, because the names in xtuner's ``PROMPT_TEMPLATE`` have
changed meaning between releases; the data goes through our own reader first, so
``data.format``, ``data.system_prompt``, ``data.limit`` and the ``<think>`` policy
apply exactly as in a tifa_lite run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tifa_lite import atomic
from tifa_lite.config.schema import RecipeConfig
from tifa_lite.errors import ConfigError
from tifa_lite.export.xtuner_render import XTUNER_VERSION, PromptChoice, literal, render_config  # noqa: F401 (XTUNER_VERSION re-exported)

log = logging.getLogger(__name__)

# Where the embedded model's weights come from on a machine that trains with xtuner.
EMBEDDED_HUB_IDS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}

CHATML = dict(
    SYSTEM="<|im_start|>system\n{system}<|im_end|>\n",
    INSTRUCTION="<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n",
    SUFFIX="<|im_end|>",
    SUFFIX_AS_EOS=True,
    SEP="\n",
    STOP_WORDS=["<|im_end|>"],
)
# Our named templates (tifa_lite.conversation.templates) in xtuner's form; the default system prompt is
# not part of an xtuner template, so it is written into the exported data instead.
TEMPLATES: dict[str, dict[str, Any]] = {
    "chatml": CHATML,
    "qwen": CHATML,
    "tifa": CHATML,
    "deepseek_r1": dict(
        SYSTEM="{system}",
        INSTRUCTION="<｜User｜>{input}<｜Assistant｜>",
        SUFFIX="<｜end▁of▁sentence｜>",
        SUFFIX_AS_EOS=True,
        SEP="",
        STOP_WORDS=["<｜end▁of▁sentence｜>"],
    ),
    # Ziya closes each answer with EOS: SUFFIX_AS_EOS=False makes xtuner append the EOS token.
    # No SYSTEM: Ziya has no system turn (tifa_lite.conversation.templates refuses one). xtuner's SEP is
    # never trained, like the newline our template puts before the next query.
    "ziya": dict(
        INSTRUCTION="<human>:{input}\n<bot>:",
        SUFFIX="",
        SUFFIX_AS_EOS=False,
        SEP="\n",
        STOP_WORDS=[],
    ),
}
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")


@dataclass
class XtunerExport:
    config_path: Path
    data_path: Path
    rows: int
    notes: list[str] = field(default_factory=list)


def export_xtuner(
    config: RecipeConfig, out: str | Path, prompt_template: str | None = None, recipe_name: str = "recipe"
) -> XtunerExport:
    """Write ``out`` (the xtuner config) and ``<out stem>_data.jsonl`` beside it."""
    if config.train.method not in ("sft", "cpt"):
        raise ConfigError(
            f"train.method={config.train.method}: `export xtuner` writes xtuner's supervised "
            "fine-tuning config, so it covers sft and cpt recipes only."
        )
    out = Path(out)
    if out.suffix != ".py":
        raise ConfigError(f"--out {out}: xtuner (mmengine) configs are Python files; use a .py name.")
    # Everything that can refuse the recipe runs before anything is written.
    notes = export_notes(config)
    model_id = xtuner_model_id(config)
    prompt = choose_prompt_template(config, prompt_template)
    if prompt.note:
        notes.insert(0, prompt.note)
    data_path = out.with_name(out.stem + "_data.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, inputs, system = write_dataset(config, data_path, prompt.default_system)
    text = render_config(config, model_id, str(data_path.resolve()), prompt, inputs, notes, recipe_name, system)
    atomic.write_text(out, text)
    return XtunerExport(out, data_path, rows, notes)


def choose_prompt_template(config: RecipeConfig, override: str | None = None) -> PromptChoice:
    from tifa_lite.conversation.templates import QWEN_SYSTEM

    if config.train.method == "cpt":
        return PromptChoice("None", note="cpt: raw text, no prompt template (xtuner's incremental pre-training form)")
    if override:
        if not override.isidentifier():
            raise ConfigError(f"--prompt-template {override!r}: give a name from xtuner's PROMPT_TEMPLATE.")
        return PromptChoice(f"PROMPT_TEMPLATE.{override}", note=f"prompt template chosen on the command line: {override}")
    name = config.model.chat_template
    if name in TEMPLATES:
        return PromptChoice(literal(TEMPLATES[name]), QWEN_SYSTEM if name == "qwen" else None)
    if name is not None:
        raise ConfigError(
            f"model.chat_template={name!r} is a custom .jinja file, which xtuner cannot use. Pass "
            "--prompt-template NAME (a name from xtuner's PROMPT_TEMPLATE) to choose its equivalent."
        )
    template_text = _tokenizer_template(config)
    model = config.model.name_or_path.lower()
    if template_text is not None:
        if "<|im_start|>" in template_text:
            default = QWEN_SYSTEM if QWEN_SYSTEM in template_text else None
            return PromptChoice(literal(CHATML), default, "the tokenizer's own template is ChatML")
    elif "qwen" in model or "internlm2" in model or "smollm" in model:
        # Not on disk here: these families ship ChatML templates; Qwen2/2.5 add a default system prompt.
        default = QWEN_SYSTEM if ("qwen2" in model and "qwen3" not in model) else None
        return PromptChoice(literal(CHATML), default, f"assumed ChatML for {config.model.name_or_path}")
    raise ConfigError(
        f"cannot tell which xtuner prompt template matches the chat template of {config.model.name_or_path}. "
        "Set model.chat_template to one of chatml, qwen, tifa, deepseek_r1, ziya, or pass "
        "--prompt-template NAME (a name from xtuner's PROMPT_TEMPLATE, e.g. llama3_chat)."
    )


def _tokenizer_template(config: RecipeConfig) -> str | None:
    """The chat template text of a model we can read without downloading, else None."""
    from tifa_lite.modeling import embedded

    name = config.model.name_or_path
    if embedded.is_embedded(name):
        # SmolLM2-Instruct's template is ChatML; checked without converting the GGUF.
        return "<|im_start|>"
    folder = Path(name).expanduser()
    for candidate in (folder / "chat_template.jinja", folder / "tokenizer_config.json"):
        if candidate.is_file():
            text = candidate.read_text(encoding="utf-8")
            if candidate.suffix == ".json":
                text = str(json.loads(text).get("chat_template") or "")
            if text:
                return text
    return None


def write_dataset(config: RecipeConfig, path: Path, default_system: str | None) -> tuple[int, list[str], str]:
    """Our data → xtuner JSONL. Returns the row count, and the first system prompt and up
    to two user prompts, which xtuner's EvaluateChatHook samples replies to while training."""
    from tifa_lite.data.build import load_conversations, require_path
    from tifa_lite.data.io import SkipReport, iter_records
    from tifa_lite.data.xtuner import messages_to_xtuner, text_to_xtuner

    require_path(config)
    d = config.data
    skipped = SkipReport()
    records: list[dict[str, Any]] = []
    prompts: list[str] = []
    system = ""
    if config.train.method == "cpt":
        for record in iter_records(d.path, d.on_error, skipped, source=d.source, split=d.split):
            text = record.data if isinstance(record.data, str) else (record.data or {}).get("text")
            if isinstance(text, str) and text.strip():
                records += [text_to_xtuner(piece) for piece in split_text(text, cpt_piece_chars(config))]
    else:
        for messages, where in load_conversations(config, d.path, skipped):
            if default_system and messages[0]["role"] != "system":
                messages = [{"role": "system", "content": default_system}, *messages]
            records.append(messages_to_xtuner(messages, where))
            if not prompts and messages[0]["role"] == "system":
                system = messages[0]["content"]
            if len(prompts) < 2:
                prompts.append(next(m["content"] for m in messages if m["role"] == "user"))
    if not records:
        raise ConfigError(f"data.path={d.path}: no usable records to export ({skipped.summary()}).")
    atomic.write_jsonl(records, path)
    if skipped.total:
        log.warning("export xtuner: %s", skipped.summary())
    return len(records), prompts, system


def cpt_piece_chars(config: RecipeConfig) -> int:
    # xtuner truncates every record to max_length tokens *before* packing, so a novel must
    # be cut up first. Half a character per token keeps a piece under max_length tokens even
    # for CJK text on byte-level tokenizers; packing then refills full blocks.
    return max(64, config.data.max_length // 2)


def split_text(text: str, max_chars: int) -> list[str]:
    """Cut at line ends into pieces of at most ``max_chars`` (a longer line is cut hard);
    whitespace-only pieces are dropped, since each piece becomes a training record."""
    pieces: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        while len(line) > max_chars:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(line[:max_chars])
            line = line[max_chars:]
        if len(current) + len(line) > max_chars:
            pieces.append(current)
            current = ""
        current += line
    if current.strip():
        pieces.append(current)
    return [p for p in pieces if p.strip()]


def export_notes(config: RecipeConfig) -> list[str]:
    """Where xtuner will not do exactly what tifa_lite does; written into the config."""
    t, notes = config.train, []
    if t.lr_scheduler not in SCHEDULERS:
        raise ConfigError(
            f"train.lr_scheduler={t.lr_scheduler}: export covers {', '.join(SCHEDULERS)} "
            "(mmengine has no equivalent wired here)."
        )
    if t.max_steps <= 0 and t.num_epochs != int(t.num_epochs):
        raise ConfigError(
            f"train.num_epochs={t.num_epochs}: xtuner's TrainLoop needs a whole number of epochs "
            "(max_epochs × batches must be an integer). Use a whole number or set train.max_steps."
        )
    if t.method == "cpt":
        notes.append(
            f"cpt: documents are cut into pieces of <= {cpt_piece_chars(config)} characters (xtuner truncates "
            "each record to max_length before packing); xtuner adds EOS after each piece, tifa_lite per document"
        )
    if t.precision == "auto":
        notes.append("precision=auto: float16 (runs on every GPU, as xtuner's own configs); use bfloat16 on Ampere+")
    if config.data.eval_path or config.data.eval_ratio:
        notes.append("evaluation data is not exported; xtuner samples chat replies (EvaluateChatHook) instead")
    if not t.assistant_only_loss and t.method == "sft":
        notes.append("assistant_only_loss=false: xtuner always trains on outputs only")
    if t.optim not in ("adamw_torch", "adamw_hf", "adamw_torch_fused"):
        notes.append(f"optim={t.optim}: xtuner's config uses torch AdamW")
    if config.quant.bits == 8:
        notes.append("quant.bits=8: LLM.int8 through BitsAndBytesConfig(load_in_8bit=True)")
    return notes


def xtuner_model_id(config: RecipeConfig) -> str:
    """What xtuner's from_pretrained should open: a hub id, or an absolute local folder."""
    from tifa_lite.modeling import embedded

    m = config.model
    if embedded.is_embedded(m.name_or_path):
        return EMBEDDED_HUB_IDS[m.name_or_path.lower()]
    if m.gguf_file or m.name_or_path.endswith(".gguf"):
        raise ConfigError("model.name_or_path is a GGUF file; xtuner loads Hugging Face checkpoints. Convert it first.")
    path = Path(m.name_or_path).expanduser()
    return str(path.resolve()) if path.exists() else m.name_or_path


