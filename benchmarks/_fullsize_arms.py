"""One run of benchmarks/gpu_fullsize.py, in its own process on the GPU: the card's memory cap,
then our ``train()``, the plain TRL script, or a merge, measured (``_fullsize_measure``). A run
never raises: its row says ok, oom or error."""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

from _fullsize_measure import StepClock, cap_memory, cuda, grpo_split, loss_check, measured_memory, planned

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"


# --------------------------------------------------------------------------- ours


def ours(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    from tifa_lite.training.outputs import read_metrics
    from tifa_lite.training.runner import train

    recipe = REPO / "recipes" / spec["recipe"]
    overrides = {**spec["overrides"], "model.name_or_path": spec["model_path"], "train.output_dir": str(work / "out"),
                 "train.overwrite_output_dir": True, "train.resume": "never", "train.progress_bar": False,
                 "train.save_steps": 100_000, "train.logging_steps": 1, "train.auto_fit": False,
                 "train.max_steps": spec["steps"], "train.global_batch_size": None, "data.eval_ratio": 0.0}
    row = planned(recipe, overrides, spec["card"])
    clock = StepClock(spec["warmup"])
    result = train(recipe, **overrides)
    row.update(clock.summary())
    row.update(measured_memory())
    plan = json.loads((result.output_dir / "run_plan.json").read_text())
    row["run_plan"] = {"precision": plan["numerics"]["precision"], "attention": plan["attn_implementation"],
                       "liger_kernel": plan.get("liger_kernel"), "dequantized_generation": plan["dequantized_generation"],
                       "substitutes": plan["substitutes"]}
    metrics = read_metrics(result.output_dir / "metrics.jsonl")
    row.update(loss_check([m["loss"] for m in metrics if m.get("loss") is not None], spec["kind"], spec["vocab"]))
    if spec["kind"] == "sft" and clock.widest and not spec["overrides"].get("train.packing"):
        # Padded rows are as wide as each batch's longest: the planner asked again at the widest batch trained.
        row["widest_batch"] = clock.widest
        row["planned_at_widest_batch"] = planned(recipe, overrides, spec["card"], **{"data.max_length": clock.widest})
    if spec["kind"] == "grpo":
        row.update(grpo_split(clock))
    if spec.get("lever") == "liger" and not plan.get("liger_kernel"):
        row["note"] = "Liger NOT applied: " + "; ".join(x for x in plan["substitutes"] if "Liger" in x)
    row["adapter_dir"] = str(result.output_dir)
    return row


# --------------------------------------------------------------------------- plain TRL


def _plain_model(spec: dict[str, Any], quantised: bool):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from tifa_lite.hardware import resolve_precision, torch_dtype

    # On the CPU dry run the plain script trains in fp32 (transformers refuses fp16 without a GPU).
    precision = resolve_precision("auto") if cuda() else "fp32"
    dtype = torch_dtype(precision)
    kwargs: dict[str, Any] = {"attn_implementation": _plain_attention(precision)}
    if quantised:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=dtype)
        kwargs["dtype"] = dtype
    else:
        kwargs["dtype"] = torch.float32  # full-parameter: fp32 master weights under autocast, as ours
    if cuda():
        kwargs["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(spec["model_path"], **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(spec["model_path"])
    flags = {"bf16": precision == "bf16", "fp16": precision == "fp16", "use_cpu": not cuda()}
    return model, tokenizer, flags, precision


def _plain_attention(precision: str) -> str:
    """The kernel our run plan picks on this card (FlashAttention-2 where it imports and the card has
    bf16, else sdpa), so both sides attend alike."""
    from tifa_lite.hardware import supports_bf16
    from tifa_lite.modeling.attention import flash_attention_2_usable

    if cuda() and precision in ("bf16", "fp16") and supports_bf16() and flash_attention_2_usable():
        return "flash_attention_2"
    return "sdpa"


def _lora(spec: dict[str, Any]):
    from peft import LoraConfig

    lo = spec["lora"]
    return LoraConfig(r=lo["r"], lora_alpha=lo["alpha"], lora_dropout=lo["dropout"], target_modules="all-linear",
                      task_type="CAUSAL_LM")


def trl_sft(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """The plain script: load 4-bit, LoraConfig, SFTConfig, SFTTrainer on the same conversations."""
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    from tifa_lite.config import load_recipe

    recipe = REPO / "recipes" / spec["recipe"]
    o = {**spec["overrides"], "model.name_or_path": spec["model_path"]}
    ours_config = load_recipe(recipe, o)
    t, d = ours_config.train, ours_config.data
    row = planned(recipe, o, spec["card"])
    clock = StepClock(spec["warmup"])
    model, tokenizer, flags, precision = _plain_model(spec, quantised=True)
    rows = load_dataset("json", data_files=str(d.path), split="train")
    rows = rows.select(range(min(len(rows), d.limit or len(rows))))
    config = SFTConfig(
        output_dir=str(work / "out"), max_steps=spec["steps"], per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, learning_rate=t.learning_rate,
        max_length=d.max_length, packing=t.packing, logging_steps=1, save_strategy="no",
        report_to="none", disable_tqdm=True, gradient_checkpointing=True, seed=42, **flags, **spec["trl_args"])
    trainer = SFTTrainer(model=model, args=config, train_dataset=rows, processing_class=tokenizer,
                         peft_config=_lora(spec))
    trainer.train()
    row.update(clock.summary())
    row.update(measured_memory())
    row["run_plan"] = {"precision": precision, "attention": model.config._attn_implementation,
                       "liger_kernel": bool(config.use_liger_kernel), "packing": config.packing}
    row.update(loss_check([h["loss"] for h in trainer.state.log_history if "loss" in h], "sft", spec["vocab"]))
    return row


def trl_grpo(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """The plain GRPOTrainer script with the recipe's settings, rewards (the kit's functions as plain
    callables) and the same prompts."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from tifa_lite.config import load_recipe
    from tifa_lite.data.gsm8k import R1_ZERO_SYSTEM_PROMPT
    from tifa_lite.rewards import build_rewards

    recipe = REPO / "recipes" / spec["recipe"]
    o = {**spec["overrides"], "model.name_or_path": spec["model_path"]}
    config = load_recipe(recipe, o)
    row = planned(recipe, o, spec["card"])
    clock = StepClock(spec["warmup"])
    quantised = config.quant.bits == 4
    model, tokenizer, flags, precision = _plain_model(spec, quantised=quantised)
    system = config.data.system_prompt or R1_ZERO_SYSTEM_PROMPT
    lines = (DATA / "gsm8k_sample.jsonl").read_text(encoding="utf-8").splitlines()
    prompts = [{"prompt": [{"role": "system", "content": system}, {"role": "user", "content": json.loads(l)["question"]}],
                "answer": json.loads(l)["answer"].split("####")[-1].strip()} for l in lines if l.strip()]
    g, t = config.grpo, config.train
    rewards = build_rewards(g.rewards, context={"max_completion_length": g.max_completion_length})
    args = GRPOConfig(
        output_dir=str(work / "out"), max_steps=spec["steps"], per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, learning_rate=t.learning_rate, logging_steps=1,
        save_strategy="no", report_to="none", disable_tqdm=True, num_generations=g.num_generations,
        max_completion_length=g.max_completion_length, temperature=g.temperature, beta=g.beta, loss_type=g.loss_type,
        gradient_checkpointing=t.gradient_checkpointing, **flags)
    trainer = GRPOTrainer(model=model, args=args, processing_class=tokenizer, train_dataset=Dataset.from_list(prompts),
                          reward_funcs=rewards.funcs, peft_config=_lora(spec) if config.lora.enabled else None)
    trainer.train()
    row.update(clock.summary())
    row.update(measured_memory())
    row.update(grpo_split(clock))
    row["run_plan"] = {"precision": precision, "attention": model.config._attn_implementation, "liger_kernel": False}
    row.update(loss_check([h["loss"] for h in trainer.state.log_history if "loss" in h], "grpo", spec["vocab"]))
    return row


# --------------------------------------------------------------------------- merge

# Colab's free tier: a T4 and 12.7 GB of host RAM (its published figure), of which the notebook's own
# process holds part; the merge self-check's placement sees this much RAM, not the GPU box's.
COLAB_RAM_BYTES = int(12.7e9)


def merge(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    import shutil

    import tifa_lite
    from tifa_lite.merging import selfcheck

    real = selfcheck.free_memory

    def colab_free_memory():
        import psutil

        gpu, ram = real()
        return gpu, min(ram, max(0, COLAB_RAM_BYTES - psutil.Process().memory_info().rss))

    selfcheck.free_memory = colab_free_memory
    started = time.time()
    report = tifa_lite.merge(spec["adapter_dir"], work / "merged", dtype="fp16", overwrite=True)
    check = report["self_check"]
    row = {"merge_s": round(time.time() - started, 1), "self_check_passed": check["passed"],
           "placement": check["device"], "placement_reason": check["placement_reason"],
           "max_logit_diff": check["max_logit_diff_vs_reference"], "tolerance": check["tolerance"],
           "greedy_agreement": check["greedy_agreement"], "no_op": report["no_op"], "method": report["method"]}
    row.update(measured_memory())
    shutil.rmtree(work / "merged", ignore_errors=True)  # 15 GiB of disk the later runs may need
    return row


ARMS = {("ours", "sft"): ours, ("ours", "dpo"): ours, ("ours", "grpo"): ours,
        ("trl", "sft"): trl_sft, ("trl", "grpo"): trl_grpo, ("ours", "merge"): merge}


def run(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """One run, never raising: its row says ok, oom (with the allocator's figures at that point) or error."""
    import torch

    work.mkdir(parents=True, exist_ok=True)
    row: dict[str, Any] = {"id": spec["id"], "started": time.strftime("%H:%M:%S")}
    started = time.time()
    try:
        row.update(cap_memory(spec["card"]))
        row.update(ARMS[(spec["side"], spec["kind"])](spec, work))
        row["status"] = "ok"
    except torch.cuda.OutOfMemoryError as exc:
        row.update(status="oom", error=str(exc).splitlines()[0][:300], **measured_memory())
    except Exception as exc:  # the row records it; the driver goes on with the next run
        row.update(status="error", error=f"{type(exc).__name__}: {exc}"[:600], traceback=traceback.format_exc()[-2500:])
    row["wall_s"] = round(time.time() - started, 1)
    if os.environ.get("TIFA_LITE_NO_BF16"):
        row["TIFA_LITE_NO_BF16"] = os.environ["TIFA_LITE_NO_BF16"]
    return row
