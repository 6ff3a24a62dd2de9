"""After the merged model is written: run it, the base, and base+adapter (PEFT, unmerged)
on fixed prompts and compare logits (a reward model's: its scores). Only one model is in
memory at a time, and it is placed where it fits (:func:`plan_check`): the whole GPU,
else fp32 on the CPU when RAM allows, else split between the GPU and the CPU
(accelerate's device map, loaded straight from the shards), else 16-bit on the CPU.
A 7B in bf16 (15.2 GB) fits neither a T4 (15 GB) nor a free Colab's RAM (12.7 GB) alone;
split between the two it does.

The comparison is what catches the failures users report of other kits: a merge into
a quantised base (NF4 rounding dwarfs the tolerance), a wrong scaling (rsLoRA vs
LoRA), an fp16 overflow, or an export of the untouched base (merged == base while
base+adapter differs)."""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

import torch

from tifa_lite.hardware import torch_dtype
from tifa_lite.merging.adapter import ModelLoader
from tifa_lite.planner.merge_check import GPU_RESERVE, CheckPlacement, plan_check

log = logging.getLogger(__name__)

PROMPTS = [
    [{"role": "user", "content": "Hello! Who are you?"}],
    [{"role": "user", "content": "What is 12 * 7? Think step by step."}],
    [{"role": "system", "content": "You answer in one sentence."}, {"role": "user", "content": "Describe the sea."}],
]
RAW_PROMPT = "The quick brown fox jumps over the lazy dog. Once upon a time"

# Max |logit difference| allowed between merged and base+adapter. Rounding W+ΔW to a
# 16-bit dtype costs about what rounding W alone costs, so when the check runs in fp32 it
# measures that cost on the base (``rounding_noise``) and allows three times it, never
# less than FLOOR (on SmolLM2 bf16 the two differ by ~1.7x: 0.46 vs 0.28; fp32 merges
# agree to ~1e-4). When it cannot measure (the check runs in the 16-bit dtype itself: a
# GPU, or a model too large for fp32 in RAM) it uses FALLBACK. A merge that drops or
# rescales ΔW is off by the adapter's whole effect; a merge into NF4 by several units.
DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
FLOOR = {torch.float32: 1e-3, torch.bfloat16: 0.05, torch.float16: 0.01}
FALLBACK = {torch.float32: 1e-3, torch.bfloat16: 1.0, torch.float16: 0.25}


def encode_prompts(tokenizer) -> list[torch.Tensor]:
    texts = []
    if tokenizer.chat_template:
        for messages in PROMPTS:
            texts.append(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    texts.append(RAW_PROMPT)
    return [tokenizer(t, add_special_tokens=False, return_tensors="pt")["input_ids"] for t in texts]


@torch.no_grad()
def _logits(model, inputs: list[torch.Tensor], device: str) -> list[torch.Tensor]:
    return [model(input_ids=ids.to(device)).logits.float().cpu() for ids in inputs]


@torch.no_grad()
def _greedy(model, inputs: list[torch.Tensor], device: str, tokens: int) -> list[list[int]]:
    # Plain greedy on both sides: the merged folder carries the recipe's sampling.
    from tifa_lite.evaluation.greedy import plain_greedy

    plain = plain_greedy(tokens, eos_token_id=model.config.eos_token_id)
    outs = []
    for ids in inputs:
        out = model.generate(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device), **plain)
        outs.append(out[0, ids.shape[1]:].tolist())
    return outs


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    worst = 0.0
    for x, y in zip(a, b):
        d = (x - y).abs().max()
        if not torch.isfinite(d):
            return float("inf")
        worst = max(worst, float(d))
    return worst


def free_memory() -> tuple[int | None, int]:
    """(free GPU bytes or None without CUDA, available RAM bytes)."""
    try:
        import psutil

        ram = psutil.virtual_memory().available
    except ImportError:  # pragma: no cover - psutil comes with accelerate
        ram = 0
    return usable_gpu_memory(), ram


def usable_gpu_memory() -> int | None:
    """Bytes this process may still take on GPU 0: the driver's free memory, but no more than the
    process's cap (``torch.cuda.set_per_process_memory_fraction``, e.g. a shared card, or a bigger
    card standing in for a T4) leaves beside what torch already holds. The driver knows nothing of
    that cap, so a 15 GiB model "fitted" an H100 capped at a T4's 14.7 GiB and ran out of memory."""
    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    capped = int(total * torch.cuda.get_per_process_memory_fraction()) - torch.cuda.memory_reserved()
    return max(0, min(free, capped))


def _load(path: str, plan: CheckPlacement, weights_dtype: torch.dtype, loader: ModelLoader, gguf_file: str | None = None):
    kwargs: dict[str, Any] = {"dtype": weights_dtype, **loader.kwargs}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    if plan.placement == "cuda":
        kwargs["device_map"] = {"": 0}  # straight from the shards onto the GPU, never whole in RAM
    elif plan.placement == "cuda+cpu":
        kwargs["device_map"] = "auto"
        kwargs["max_memory"] = {0: plan.gpu_bytes, "cpu": plan.model_bytes - plan.gpu_bytes + GPU_RESERVE}
    model = loader.auto_class.from_pretrained(path, **kwargs)
    if plan.placement == "cpu":
        # Round to the output dtype first (what the merged file holds), then compute in fp32 or it.
        model = model.to(torch_dtype(plan.compute))
    return model.eval()


def self_check(
    merged_dir: Path,
    base_path: Path,
    adapter_dir: Path,
    tokenizer,
    weights_dtype: torch.dtype,
    param_bytes_fp32: int,
    base_gguf_file: str | None = None,
    tolerance: float | None = None,
    greedy_tokens: int = 12,
    loader: ModelLoader | None = None,
    plan: CheckPlacement | None = None,
    trained=None,
    merged_into: str = "original",
    base_transform=None,
) -> dict[str, Any]:
    """``merged_into="dequantized"``: the reference base is dequant(NF4(W)) (``base_transform``),
    in the check's own precision. ``trained`` (a :class:`TrainedQuant`): also run the trained
    model itself (4-bit base + adapter) and report how closely the merged model follows it."""
    from peft import PeftModel

    loader = loader or ModelLoader.causal_lm()
    plan = plan or plan_check(DTYPE_NAMES[weights_dtype], param_bytes_fp32, *free_memory())
    device = "cpu" if plan.placement == "cpu" else "cuda"  # inputs go where the first layers are
    compute = torch_dtype(plan.compute)
    inputs = encode_prompts(tokenizer)
    greedy = loader.head is None  # a reward model scores; it does not generate

    merged = _load(str(merged_dir), plan, weights_dtype, loader)
    merged_logits = _logits(merged, inputs, device)
    merged_greedy = _greedy(merged, inputs, device, greedy_tokens) if greedy else []
    del merged
    _release()

    base = _load(str(base_path), plan, compute, loader, base_gguf_file)
    if loader.head is not None:
        # The head is trained in full and lives in the adapter: without it the base scores with a random head.
        loader.load_head(base, adapter_dir)
    if base_transform is not None:
        with torch.no_grad():  # the base ΔW was added to: dequant(NF4(W)) where the run held 4-bit
            for name, param in base.named_parameters():
                param.data = base_transform(name, param.data).to(param.dtype)
    noise = None
    if compute != weights_dtype:
        exact_logits = _logits(base, inputs, device)
        with torch.no_grad():  # round to what the merged file holds, compute in fp32
            for param in base.parameters():
                param.data = param.data.to(weights_dtype).to(compute)
    base_logits = _logits(base, inputs, device)
    if compute != weights_dtype:
        noise = _max_diff(exact_logits, base_logits)
    # The reference: base + adapter unmerged, the way it was trained, in the same precision.
    ref = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    if plan.placement != "cuda+cpu":  # a split model stays where accelerate's device map put each layer
        ref = ref.to(device)
    ref_logits = _logits(ref, inputs, device)
    ref_greedy = _greedy(ref, inputs, device, greedy_tokens) if greedy else []
    del ref, base
    _release()
    vs_trained = None
    if trained is not None:
        vs_trained = _compare_with_trained(base_path, adapter_dir, trained, loader, plan, inputs, device,
                                           merged_logits, merged_greedy, greedy_tokens if greedy else 0)

    if tolerance is not None:
        tol = tolerance
    elif noise is not None:
        tol = max(FLOOR[weights_dtype], 3 * noise)
    else:
        tol = FALLBACK[weights_dtype]
    max_diff = _max_diff(merged_logits, ref_logits)
    effect = _max_diff(ref_logits, base_logits)
    from_base = _max_diff(merged_logits, base_logits)
    report = {
        "prompts": len(inputs),
        "device": plan.placement,
        "placement_reason": plan.why,
        "peak_model_gib": round(plan.model_bytes / 2**30, 3),
        "peak_gpu_gib": round(plan.gpu_bytes / 2**30, 3),
        "compute_dtype": plan.compute,
        "compared": "logits" if greedy else f"scores of the {loader.head} head",
        "merged_into": merged_into,
        "reference": ("dequant(NF4(W)) + adapter" if base_transform is not None else "base+adapter") + f", {plan.compute}",
        "max_logit_diff_vs_reference": max_diff,
        "max_logit_diff_vs_base_plus_adapter": max_diff,
        "vs_trained": vs_trained,
        "tolerance": tol,
        "rounding_noise": noise,
        "passed": max_diff <= tol,
        "max_logit_diff_merged_vs_base": from_base,
        "adapter_effect_max_logit_diff": effect,
        "greedy_tokens": greedy_tokens if greedy else 0,
        "greedy_agreement": sum(a == b for a, b in zip(merged_greedy, ref_greedy)) / len(inputs) if greedy else None,
    }
    if effect <= tol:
        report["warning"] = (
            f"the adapter moves logits by at most {effect:.3g}, not more than the tolerance {tol:g}: "
            "the self-check cannot tell this merge from the base"
        )
    return report


def _compare_with_trained(base_path, adapter_dir, trained, loader, plan, inputs, device, merged_logits,
                          merged_greedy, greedy_tokens) -> dict[str, Any]:
    """The merged model against the model that was trained: the base in 4-bit exactly as the
    run loaded it, plus the adapter unmerged."""
    from tifa_lite.evaluation.agreement import first_divergence, logit_agreement
    from tifa_lite.merging.quantized_base import load_trained

    model = load_trained(base_path, adapter_dir, trained, loader, device_map=None if device == "cpu" else {"": 0})
    logits = _logits(model, inputs, device)
    out: dict[str, Any] = {"model": f"4-bit base ({trained.describe()}) + adapter", **logit_agreement(logits, merged_logits),
                           "max_logit_diff": _max_diff(merged_logits, logits)}
    if greedy_tokens:
        out["greedy_first_divergence"] = first_divergence(_greedy(model, inputs, device, greedy_tokens), merged_greedy)
    del model
    _release()
    return out


def _release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
