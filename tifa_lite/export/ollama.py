"""A merged model → a folder Ollama can ``ollama create`` from: the GGUF and a ``Modelfile``.

The Modelfile's ``TEMPLATE`` is the training chat template as a Go template
(:mod:`tifa_lite.export.gotemplate`), with the ``<think>`` history policy on ``.Thinking``;
``PARAMETER stop`` names every token that ends a turn
(:func:`tifa_lite.conversation.template_structure.end_of_turn_tokens`); the recipe's sampling
(``generation_config.json`` of the merged model, or ``--recipe``) becomes ``PARAMETER``s.

Before anything is kept, the TEMPLATE is rendered on sample conversations (a system turn
and none, an earlier answer with a ``<think>`` block) and compared with the Jinja template;
a difference is an error and leaves no folder behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tifa_lite.errors import ConfigError
from tifa_lite.export.gguf import ExportError, export_gguf

GGUF_NAME = "model.gguf"

# Our sampling keys → Ollama's PARAMETER names.
OLLAMA_PARAMETERS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "repetition_penalty": "repeat_penalty",
    "max_new_tokens": "num_predict",
}

CHECK_CONVERSATIONS = [
    [
        {"role": "system", "content": "You are Tifa Lockhart, a bartender in Midgar."},
        {"role": "user", "content": "Hi! Who are you?"},
        {"role": "assistant", "content": "<think>A new face; be friendly.</think>\nI'm Tifa. What can I get you?"},
        {"role": "user", "content": "Something strong, please."},
    ],
    [
        {"role": "user", "content": "Hello."},
        {"role": "assistant", "content": "Hi there."},
        {"role": "user", "content": "What's on the menu?"},
    ],
]


def _quote(text: str, what: str) -> str:
    if '"""' in text:
        raise ExportError(f'the {what} contains """, which a Modelfile cannot quote.')
    return '"""' + text + '"""'


def modelfile_text(
    tokenizer,
    sampling: dict[str, Any],
    *,
    strip_think: bool = True,
    add_bos: bool = False,
    system: str | None = None,
    gguf_name: str = GGUF_NAME,
    adapter_file: str | None = None,
) -> str:
    """The Modelfile for ``tokenizer``'s chat template; raises if the TEMPLATE would render
    the check conversations differently from the Jinja template."""
    from tifa_lite.export.gotemplate import go_template, ollama_messages, render_go_template
    from tifa_lite.conversation.template_structure import TemplateShapeError, analyse, check_regular, end_of_turn_tokens
    from tifa_lite.conversation.templates import apply_think_policy

    try:
        structure = analyse(tokenizer)
        check_regular(tokenizer, structure)
    except TemplateShapeError as exc:
        raise ExportError(f"cannot write an Ollama TEMPLATE: {exc}") from None
    if system and not structure.has_system:
        raise ExportError("the chat template has no system turn (it refuses one), so the Modelfile cannot carry "
                          "a SYSTEM prompt: export without --system.")
    template = go_template(structure, strip_think=strip_think, drop_bos=add_bos)
    for messages in CHECK_CONVERSATIONS:
        if not structure.has_system and messages[0]["role"] == "system":
            continue  # the Jinja template itself refuses it
        expected = tokenizer.apply_chat_template(apply_think_policy(messages, strip_think), tokenize=False,
                                                 add_generation_prompt=True)
        if add_bos and structure.bos_token:
            expected = expected.removeprefix(structure.bos_token)  # the runtime adds it
        got = render_go_template(template, {"Messages": ollama_messages(messages)})
        if got != expected:
            raise ExportError(
                "the Ollama TEMPLATE renders a conversation differently from the chat template:\n"
                f"  jinja: {expected!r}\n  ollama: {got!r}"
            )
    lines = [f"FROM ./{gguf_name}", *([f"ADAPTER ./{adapter_file}"] if adapter_file else []), "", f"TEMPLATE {_quote(template, 'chat template')}", ""]
    if system:
        lines += [f"SYSTEM {_quote(system, 'system prompt')}", ""]
    for token in end_of_turn_tokens(tokenizer, structure):
        lines.append(f"PARAMETER stop {json.dumps(token, ensure_ascii=False)}")
    greedy = sampling.get("do_sample") is False or sampling.get("temperature") == 0
    for key, name in OLLAMA_PARAMETERS.items():
        value = sampling.get(key)
        if greedy and key in ("temperature", "top_p", "top_k"):
            continue
        if value is not None:
            lines.append(f"PARAMETER {name} {value}")
    if greedy:
        lines.append("PARAMETER temperature 0")
    return "\n".join(lines) + "\n"


def export_ollama(
    model: str | Path,
    output: str | Path,
    *,
    outtype: str = "q4_k_m",
    recipe: str | Path | None = None,
    system: str | None = None,
    think_policy: str = "strip",
    overwrite: bool = False,
    check: bool = True,
    llama_cpp: bool = False,
    converter: str = "llama.cpp",
) -> dict[str, Any]:
    """Write ``output/model.gguf`` and ``output/Modelfile``; the folder appears whole or not at all.
    The GGUF is Q4_K_M by default, what Ollama's own library serves (made by llama.cpp's
    converter and quantiser, :func:`tifa_lite.export.gguf.export_gguf`)."""
    import gguf
    from transformers import AutoTokenizer

    from tifa_lite.conversation.session import resolve_sampling

    model_dir = Path(model).expanduser().resolve()
    from tifa_lite.atomic import check_output_path, replacing_dir

    out = check_output_path(output, "--output")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--output {out} exists and is not empty. Choose another folder or pass --overwrite.")
    if think_policy not in ("strip", "keep"):
        raise ConfigError(f"--think-policy {think_policy!r}: use strip or keep.")
    if not model_dir.exists():
        raise ConfigError(f"--model {model_dir}: the folder does not exist.")
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"--model {model_dir}: no config.json; give a merged model folder (`tifa-lite merge`).")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if not tokenizer.chat_template:
        raise ConfigError(f"--model {model_dir}: the tokenizer has no chat template for the Modelfile's TEMPLATE.")
    sampling = resolve_sampling(model_dir, recipe=recipe)

    # The one temporary-name scheme (tifa_lite.atomic): a killed export's folder is removed by the next.
    with replacing_dir(out, "exporting") as staging:
        report = export_gguf(model_dir, staging / GGUF_NAME, outtype=outtype, check=check, llama_cpp=llama_cpp,
                             converter=converter)
        field = gguf.GGUFReader(staging / GGUF_NAME).fields.get("tokenizer.ggml.add_bos_token")
        add_bos = bool(field.contents()) if field is not None else False
        text = modelfile_text(
            tokenizer, sampling, strip_think=think_policy == "strip", add_bos=add_bos, system=system
        )
        (staging / "Modelfile").write_text(text, encoding="utf-8")
    report.update(output=str(out), gguf=str(out / GGUF_NAME), modelfile=str(out / "Modelfile"), sampling=sampling)
    return report
