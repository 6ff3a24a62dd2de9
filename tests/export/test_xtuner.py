"""`export xtuner`: the written config is valid Python that, executed with stand-ins for
the xtuner / mmengine / transformers / peft names it imports, holds the recipe's values;
the data beside it is xtuner's conversation form and renders, by xtuner's template rule,
to the same text as our chat template."""

from __future__ import annotations

import argparse
import ast
import builtins
import json
import types
from pathlib import Path

import pytest
import torch

from tifa_lite.config.schema import RecipeConfig
from tifa_lite.data.xtuner import xtuner_to_messages
from tifa_lite.errors import ConfigError
from tifa_lite.export.xtuner import export_xtuner, split_text

# Exactly the names xtuner v0.1.23's internlm2_chat_7b_qlora_oasst1_e3.py imports (plus
# mmengine.optim.OptimWrapper for fp32); any other import in the generated file fails.
IMPORTABLE = {
    "datasets": {"load_dataset"},
    "mmengine.dataset": {"DefaultSampler"},
    "mmengine.hooks": {"CheckpointHook", "DistSamplerSeedHook", "IterTimerHook", "LoggerHook", "ParamSchedulerHook"},
    "mmengine.optim": {"AmpOptimWrapper", "CosineAnnealingLR", "LinearLR", "OptimWrapper"},
    "peft": {"LoraConfig"},
    "torch.optim": {"AdamW"},
    "transformers": {"AutoModelForCausalLM", "AutoTokenizer", "BitsAndBytesConfig"},
    "xtuner.dataset": {"process_hf_dataset"},
    "xtuner.dataset.collate_fns": {"default_collate_fn"},
    "xtuner.dataset.map_fns": {"template_map_fn_factory"},
    "xtuner.engine.hooks": {"DatasetInfoHook", "EvaluateChatHook"},
    "xtuner.engine.runner": {"TrainLoop"},
    "xtuner.model": {"SupervisedFinetune"},
    "xtuner.utils": {"PROMPT_TEMPLATE"},
}


class Stub:
    """Stands in for an imported class/function; ``from_pretrained`` too."""

    def __init__(self, name):
        self.name = name

    def __getattr__(self, attr):
        return Stub(f"{self.name}.{attr}")

    def __eq__(self, other):
        return isinstance(other, Stub) and other.name == self.name

    def __hash__(self):
        return hash(self.name)

    def __repr__(self):
        return f"Stub({self.name})"


def load_config(path: Path) -> dict:
    """Parse, then exec the config with only torch real and every other import stubbed."""
    source = path.read_text(encoding="utf-8")
    ast.parse(source)
    real_import = builtins.__import__

    def fake_import(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "torch":
            return real_import(name, globals, locals, fromlist, level)
        allowed = IMPORTABLE.get(name)
        if allowed is None or not fromlist or not set(fromlist) <= allowed:
            raise ImportError(f"the generated config imports {fromlist} from {name}, not in xtuner 0.1.23's set")
        module = types.ModuleType(name)
        for item in fromlist:
            setattr(module, item, Stub(item))
        return module

    namespace: dict = {"__builtins__": {**vars(builtins), "__import__": fake_import}}
    exec(compile(source, str(path), "exec"), namespace)
    return namespace


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


CHATS = [
    {"messages": [{"role": "system", "content": "You are Sheldon."},
                  {"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Bazinga."}]},
    {"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."},
                  {"role": "user", "content": "And 3+3?"}, {"role": "assistant", "content": "6."}]},
]


def recipe(data_path, **sections) -> RecipeConfig:
    base = {
        "model": {"name_or_path": "smollm2-135m-instruct"},
        "data": {"path": str(data_path), "format": "messages", "max_length": 512},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return RecipeConfig.model_validate(base)


def test_config_parses_and_holds_the_recipe(tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", CHATS)
    config = recipe(
        data,
        quant={"double_quant": False},
        lora={"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"], "use_rslora": True},
        train={"learning_rate": 1e-4, "per_device_batch_size": 3, "gradient_accumulation_steps": 5,
               "num_epochs": 2, "packing": True, "max_grad_norm": 0.5, "warmup_ratio": 0.1,
               "weight_decay": 0.01, "adam_beta2": 0.95, "seed": 123, "save_steps": 20,
               "save_total_limit": 3, "logging_steps": 2, "precision": "bf16", "gradient_checkpointing": True},
    )
    result = export_xtuner(config, tmp_path / "out" / "rp.py", recipe_name="rp.yaml")
    ns = load_config(result.config_path)

    assert ns["pretrained_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert ns["data_path"] == str(result.data_path.resolve()) == str(tmp_path / "out" / "rp_data.jsonl")
    assert (ns["max_length"], ns["pack_to_max_length"]) == (512, True)
    assert (ns["batch_size"], ns["accumulative_counts"], ns["max_epochs"]) == (3, 5, 2)
    assert (ns["lr"], ns["betas"], ns["weight_decay"], ns["max_norm"], ns["warmup_ratio"]) == (1e-4, (0.9, 0.95), 0.01, 0.5, 0.1)
    assert (ns["save_steps"], ns["save_total_limit"]) == (20, 3)

    model = ns["model"]
    assert model["type"] == Stub("SupervisedFinetune")
    assert model["use_activation_checkpointing"] is True
    llm = model["llm"]
    assert llm["type"] == Stub("AutoModelForCausalLM.from_pretrained")
    assert llm["torch_dtype"] is torch.bfloat16
    assert llm["quantization_config"] == dict(
        type=Stub("BitsAndBytesConfig"), load_in_4bit=True, load_in_8bit=False, llm_int8_threshold=6.0,
        llm_int8_has_fp16_weight=False, bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=False, bnb_4bit_quant_type="nf4",
    )
    assert model["lora"] == dict(
        type=Stub("LoraConfig"), r=8, lora_alpha=16, lora_dropout=0.1, bias="none", task_type="CAUSAL_LM",
        target_modules=["q_proj", "v_proj"], use_rslora=True,
    )
    assert ns["optim_wrapper"]["type"] == Stub("AmpOptimWrapper") and ns["optim_wrapper"]["dtype"] == "bfloat16"
    assert ns["optim_wrapper"]["optimizer"] == dict(type=Stub("AdamW"), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.01)
    warmup, cosine = ns["param_scheduler"]
    assert warmup["type"] == Stub("LinearLR") and warmup["end"] == pytest.approx(0.1 * 2)
    assert cosine["type"] == Stub("CosineAnnealingLR") and cosine["end"] == 2
    assert ns["train_cfg"] == dict(type=Stub("TrainLoop"), max_epochs=2)
    assert ns["default_hooks"]["logger"]["interval"] == 2
    assert ns["randomness"]["seed"] == 123
    assert ns["train_dataset"]["dataset"] == dict(type=Stub("load_dataset"), path="json", data_files=dict(train=ns["data_path"]))
    assert ns["train_dataset"]["dataset_map_fn"] is None
    assert ns["evaluation_inputs"] == ["Hi.", "What is 2+2?"] and ns["SYSTEM"] == "You are Sheldon."

    rows = [json.loads(line) for line in result.data_path.read_text(encoding="utf-8").splitlines()]
    assert result.rows == len(rows) == 2
    assert [xtuner_to_messages(r, "x") for r in rows] == [c["messages"] for c in CHATS]


def test_max_steps_become_iterations_and_fp32_skips_amp(tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", CHATS)
    config = recipe(data, train={"max_steps": 50, "warmup_ratio": 0.1, "precision": "fp32", "lr_scheduler": "linear"},
                    quant={"bits": None})
    ns = load_config(export_xtuner(config, tmp_path / "c.py").config_path)
    assert ns["train_cfg"] == dict(type=Stub("TrainLoop"), max_iters=50)
    assert (ns["max_iters"], ns["warmup_iters"]) == (50, 5)
    warmup, decay = ns["param_scheduler"]
    assert warmup["by_epoch"] is False and warmup["end"] == 5
    assert decay == dict(type=Stub("LinearLR"), start_factor=1.0, end_factor=0.0, by_epoch=False,
                         begin=5, end=50, convert_to_iter_based=False)
    assert ns["optim_wrapper"]["type"] == Stub("OptimWrapper") and "dtype" not in ns["optim_wrapper"]
    assert "quantization_config" not in ns["model"]["llm"]
    assert "target_modules" not in ns["model"]["lora"]  # all-linear = xtuner's find_all_linear_names


def test_cpt_exports_pretraining_pieces(tmp_path):
    text = ("Sheldon knocked three times. " * 40 + "\n") * 30
    novel = tmp_path / "novel.txt"
    novel.write_text(text, encoding="utf-8")
    config = recipe(novel, data={"format": "text", "max_length": 256}, train={"method": "cpt"})
    result = export_xtuner(config, tmp_path / "cpt.py")
    ns = load_config(result.config_path)
    assert ns["prompt_template"] is None and ns["train_dataset"]["template_map_fn"] is None
    assert ns["pack_to_max_length"] is True
    rows = [json.loads(line) for line in result.data_path.read_text(encoding="utf-8").splitlines()]
    assert all(r["conversation"][0]["input"] == "" and len(r["conversation"]) == 1 for r in rows)
    assert all(len(r["conversation"][0]["output"]) <= 128 for r in rows)
    assert "".join(r["conversation"][0]["output"] for r in rows) == text


def test_split_text_keeps_all_text_in_order():
    text = "short line\n" + "x" * 25 + "\nend"
    pieces = split_text(text, 10)
    assert all(0 < len(p) <= 10 and p.strip() for p in pieces)
    # Only whitespace-only pieces are dropped (here a lone line break after a hard cut).
    assert "".join(pieces).replace("\n", "") == text.replace("\n", "")
    assert split_text("a\nb\n", 100) == ["a\nb\n"]


def xtuner_render(template: dict, conversation: list[dict], eos: str) -> str:
    """xtuner's template rule (xtuner/utils/templates.py): per turn
    [SYSTEM] + INSTRUCTION, then output + SUFFIX (+ EOS unless SUFFIX_AS_EOS), then SEP."""
    text = ""
    for i, turn in enumerate(conversation):
        if turn.get("system"):
            text += template["SYSTEM"].format(system=turn["system"])
        text += template["INSTRUCTION"].format(input=turn["input"], round=i + 1)
        text += turn["output"] + template.get("SUFFIX", "")
        if not template.get("SUFFIX_AS_EOS", False):
            text += eos
        text += template.get("SEP", "")
    return text


@pytest.mark.parametrize("name", ["chatml", "qwen", "tifa", "deepseek_r1", "ziya"])
def test_prompt_template_renders_like_our_chat_template(tmp_path, tiny_model_dir, name):
    from transformers import AutoTokenizer

    from tifa_lite.conversation.templates import apply_chat_template_choice, apply_think_policy, strips_think

    # Ziya has no system turn (the recipe's data is refused with one; see tests/conversation/test_templates.py).
    chats = [c for c in CHATS if name != "ziya" or c["messages"][0]["role"] != "system"] + [{"messages": [
        {"role": "user", "content": "Think first."},
        {"role": "assistant", "content": "<think>hmm</think>Done."},
        {"role": "user", "content": "Again?"},
        {"role": "assistant", "content": "<think>ok</think>Yes."},
    ]}]
    data = write_jsonl(tmp_path / "chat.jsonl", chats)
    config = recipe(data, model={"name_or_path": str(tiny_model_dir), "chat_template": name})
    result = export_xtuner(config, tmp_path / "c.py")
    template = load_config(result.config_path)["prompt_template"]
    rows = [json.loads(line) for line in result.data_path.read_text(encoding="utf-8").splitlines()]

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    apply_chat_template_choice(tokenizer, config.model)
    for chat, row in zip(chats, rows):
        ours = tokenizer.apply_chat_template(
            apply_think_policy(chat["messages"], strips_think(config.model)), tokenize=False
        )
        if tokenizer.bos_token and ours.startswith(tokenizer.bos_token) and name == "deepseek_r1":
            ours = ours[len(tokenizer.bos_token):]  # xtuner adds BOS as a token id, not text
        # xtuner appends its (untrained) SEP after the last turn too; ours has nothing after Ziya's last EOS.
        sep_after_last = "\n" if name == "ziya" else ""
        assert xtuner_render(template, row["conversation"], tokenizer.eos_token) == ours + sep_after_last


def test_tokenizer_own_chatml_template_is_detected(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "chat.jsonl", CHATS)
    config = recipe(data, model={"name_or_path": str(tiny_model_dir)})
    result = export_xtuner(config, tmp_path / "c.py")
    ns = load_config(result.config_path)
    assert ns["prompt_template"]["INSTRUCTION"] == "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n"
    assert ns["pretrained_model_name_or_path"] == str(Path(tiny_model_dir).resolve())
    assert "ChatML" in result.notes[0]


def test_unknown_template_needs_prompt_template_flag(tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", CHATS)
    config = recipe(data, model={"name_or_path": "meta-llama/Llama-3.1-8B-Instruct"})
    with pytest.raises(ConfigError, match="--prompt-template"):
        export_xtuner(config, tmp_path / "c.py")
    assert not (tmp_path / "c_data.jsonl").exists()  # refused before writing anything
    ns = load_config(export_xtuner(config, tmp_path / "c.py", prompt_template="llama3_chat").config_path)
    assert ns["prompt_template"] == Stub("PROMPT_TEMPLATE.llama3_chat")


@pytest.mark.parametrize(
    "sections, needle",
    [
        ({"train": {"method": "grpo"}}, "sft and cpt"),
        ({"train": {"num_epochs": 1.5}}, "whole number"),
        ({"train": {"lr_scheduler": "polynomial"}}, "lr_scheduler"),
        ({"model": {"name_or_path": "/models/q.gguf"}}, "GGUF"),
        ({"model": {"chat_template": "my.jinja"}}, ".jinja"),
    ],
)
def test_refusals_are_config_errors(tmp_path, sections, needle):
    data = write_jsonl(tmp_path / "chat.jsonl", CHATS)
    with pytest.raises(ConfigError, match=needle):
        export_xtuner(recipe(data, **sections), tmp_path / "c.py")


def test_cli_writes_both_files(tmp_path, capsys, monkeypatch):
    from tifa_lite.cli import COMMANDS, export

    assert "export" in COMMANDS and "xtuner" in export.SUBCOMMANDS
    data = write_jsonl(tmp_path / "chat.jsonl", CHATS)
    recipe_file = tmp_path / "rp.yaml"
    recipe_file.write_text(f"data:\n  path: {data}\n  format: messages\n", encoding="utf-8")
    parser = argparse.ArgumentParser()
    export.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["export", "xtuner", str(recipe_file), "lora.r=4", "--out", str(tmp_path / "x.py")])
    assert args.handler(args) == 0
    assert load_config(tmp_path / "x.py")["model"]["lora"]["r"] == 4
    assert "xtuner train" in capsys.readouterr().out

    monkeypatch.chdir(tmp_path)
    args = parser.parse_args(["export", "xtuner", str(recipe_file)])
    args.handler(args)
    assert (tmp_path / "rp_xtuner.py").is_file() and (tmp_path / "rp_xtuner_data.jsonl").is_file()
