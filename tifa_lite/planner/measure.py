"""The planner's terms measured on the CPU: one training step of a (tiny) model loaded through the
kit's own path under a card's rehearsal, beside what :func:`tifa_lite.planner.memory.estimate`
plans for the same model shape and settings.

What each measured figure is:
- activations: bytes autograd saves for backward (``torch.autograd.graph.saved_tensors_hooks``)
  while a decoder layer runs, deduplicated by storage, without the model's own parameters; the
  packed mask's per-layer copies (a tokens x tokens tensor) are set apart as their own term;
- packed attention mask: the boolean 4-D mask pack_groups builds plus those per-layer copies;
- generation KV cache: the keys and values in the cache ``generate`` returns (GRPO);
- dequantised base: the dense copies :func:`tifa_lite.modeling.dequantized.dequantized_base` makes;
- LoRA params, LoRA grads, optimizer states: bytes of the trainable parameters, of their
  ``.grad`` after backward, of torch AdamW's state after one step.

The measurement runs on the CPU; the plan is the card's (device cuda). They meet because what is
compared is what autograd keeps, not the allocator, with LoRA dropout 0: torch's CPU dropout keeps
a mask in the input's dtype, CUDA's fused one a bool mask (the planner counts both, per device).
The logits and the loss are outside these terms (TRL's chunked head: benchmarks/planner_validation.py).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

from tifa_lite.hardware import rehearsing
from tifa_lite.planner.memory import GIB, estimate
from tifa_lite.planner.shapes import model_shape_from_config_dict

METHODS = ("sft", "dpo", "grpo")
CARDS = ("t4", "a10")


@dataclass(frozen=True)
class Setting:
    """Token counts of the measured step: small enough for a CPU, big enough that the per-token
    terms dwarf the fixed ones."""

    seq_len: int = 96  # SFT / DPO row length
    batch: int = 2  # SFT rows; DPO pairs (2 rows each)
    lora_r: int = 8
    num_generations: int = 4  # GRPO: one group of this many completions
    prompt_len: int = 48
    completion_len: int = 48


def recipe(model_dir: Path, method: str, s: Setting) -> dict:
    return {
        "model": {"name_or_path": str(model_dir), "source": "local"},
        "quant": {"bits": 4},
        "lora": {"enabled": True, "r": s.lora_r, "dropout": 0.0, "target_modules": "all-linear"},
        "data": {"max_length": s.seq_len},
        "train": {"method": method, "precision": "auto", "per_device_batch_size": s.num_generations if method == "grpo"
                  else s.batch, "gradient_accumulation_steps": 1},
        "grpo": {"num_generations": s.num_generations, "max_prompt_length": s.prompt_len,
                 "max_completion_length": s.completion_len, "use_vllm": "off", "pack_groups": True,
                 "prefill_once": False, "beta": 0.0},
    }


def planned_terms(config, card: str, model_dir: Path, norm_output_16bit: bool = False) -> dict[str, float]:
    """The plan's terms in bytes, for the card, with the model's own shape."""
    from tifa_lite.planner.fit import plan_input, resolve_gpu

    shape = model_shape_from_config_dict(json.loads((Path(model_dir) / "config.json").read_text()), name=Path(model_dir).name)
    # The card's plan, with the rehearsal's one difference in what autograd keeps: on the CPU PEFT's
    # torch.is_autocast_enabled() (a CUDA query) is False, so every adapter casts its input.
    plan = estimate(replace(plan_input(config, resolve_gpu(card), shape), generation_batch=None,
                            norm_output_16bit=norm_output_16bit, peft_casts_inputs=True))
    terms = {**plan.static, **plan.train_phase, **plan.generation_phase}
    out = {
        "activations": terms["activations"],
        "LoRA params": terms["LoRA params + grads"] / 2,
        "LoRA grads": terms["LoRA params + grads"] / 2,
        "optimizer states": terms["optimizer states"],
    }
    for name in ("packed attention mask", "generation KV cache"):
        if name in terms:
            out[name] = terms[name]
    return {k: v * GIB for k, v in out.items()}


class SavedBytes:
    """Bytes autograd saves while a decoder layer runs, by storage, minus the model's parameters;
    tensors whose last two dimensions are ``square`` x ``square`` are counted apart (mask copies)."""

    def __init__(self, model, layers, square: int | None = None):
        import torch

        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.params |= {b.untyped_storage().data_ptr() for b in model.buffers()}
        self.square = square
        self.inside = 0
        self.layer: dict[int, int] = {}
        self.masks: dict[int, int] = {}
        self._hooks = [h for layer in layers for h in (
            layer.register_forward_pre_hook(self._enter), layer.register_forward_hook(self._leave))]
        self._saved = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _enter(self, *_):
        self.inside += 1

    def _leave(self, *_):
        self.inside -= 1

    def _pack(self, t):
        if self.inside and hasattr(t, "untyped_storage"):
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in self.params:
                square = self.square is not None and t.dim() >= 2 and tuple(t.shape[-2:]) == (self.square, self.square)
                (self.masks if square else self.layer)[ptr] = storage.nbytes()
        return t

    def __enter__(self):
        self._saved.__enter__()
        return self

    def __exit__(self, *exc):
        self._saved.__exit__(*exc)
        for h in self._hooks:
            h.remove()


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def _cache_bytes(cache) -> int:
    total = 0
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if t is not None and hasattr(t, "numel"):
                total += t.numel() * t.element_size()
    return total


def norms_return_compute_dtype(model) -> int:
    """The alternative to counting the fp32 stream, for measuring it: each norm casts its output back
    to its input's dtype, so fp32 norm weights keep their arithmetic in fp32 while the stream, the
    MLP inputs and the KV cache stay 16-bit. Returns how many norms were hooked."""
    norms = [m for m in model.modules() if type(m).__name__.endswith("Norm")]
    for norm in norms:
        norm.register_forward_hook(lambda module, args, out: out.to(args[0].dtype) if args[0].is_floating_point() else out)
    return len(norms)


def load_trainable(config, card: str, norm_output_16bit: bool = False):
    """(PEFT model, run plan) as a training run has them after its trainer is built."""
    import torch
    from peft import get_peft_model

    from tifa_lite.hardware import torch_dtype
    from tifa_lite.modeling.dtypes import restore_frozen_dtypes, settle_adapter_dtype
    from tifa_lite.modeling.load import load_model, lora_config
    from tifa_lite.runplan import resolve_plan

    with rehearsing(card):
        plan = resolve_plan(config)
    torch.manual_seed(0)
    model = load_model(config, plan)
    if norm_output_16bit:
        norms_return_compute_dtype(model)
    n = plan.numerics
    model = get_peft_model(model, lora_config(config))
    settle_adapter_dtype(model, n.adapter_dtype)
    restore_frozen_dtypes(model, torch_dtype(n.weight_dtype), n.norm_dtype and torch_dtype(n.norm_dtype))
    return model, plan


def autocast_for(plan):
    import torch

    from tifa_lite.hardware import torch_dtype

    a = plan.numerics.autocast
    return torch.autocast("cpu", dtype=torch_dtype(a)) if a else contextlib.nullcontext()


def measure(model_dir: Path, card: str, method: str, setting: Setting = Setting(),
            norm_output_16bit: bool = False) -> dict[str, tuple[float, float]]:
    """``{term: (planned bytes, measured bytes)}`` for one family x card x method."""
    import torch

    from tifa_lite.config import load_recipe
    from tifa_lite.methods.grpo_groups import attention_mask_for, pack_groups
    from tifa_lite.modeling.layer_loop import decoder_layers

    config = load_recipe(recipe(model_dir, method, setting))
    planned = planned_terms(config, card, model_dir, norm_output_16bit)
    model, plan = load_trainable(config, card, norm_output_16bit)
    _, layers = decoder_layers(model)
    vocab = model.config.vocab_size
    measured: dict[str, float] = {}
    kwargs: dict = {}
    s = setting
    if method == "grpo":
        prompt = torch.randint(3, vocab, (1, s.prompt_len)).repeat(s.num_generations, 1)
        completion = torch.randint(3, vocab, (s.num_generations, s.completion_len))
        ids = torch.cat([prompt, completion], dim=1)
        packed = pack_groups(ids, torch.ones_like(ids), s.completion_len)
        mask = attention_mask_for(model, packed)  # one mask, or one per layer kind (windows)
        input_ids, square = packed.input_ids, packed.input_ids.shape[1]
        kwargs = dict(attention_mask=mask, position_ids=packed.position_ids)
    else:
        rows = s.batch * (2 if method == "dpo" else 1)
        input_ids, square, mask = torch.randint(3, vocab, (rows, s.seq_len)), None, None
    model.train()
    with SavedBytes(model, layers, square) as saved, autocast_for(plan):
        logits = model(input_ids=input_ids, use_cache=False, **kwargs).logits
        loss = logits.float().logsumexp(-1).mean()
    loss.backward()
    measured["activations"] = sum(saved.layer.values())
    if mask is not None:
        masks = list(mask.values()) if isinstance(mask, dict) else [mask]
        measured["packed attention mask"] = _tensor_bytes(masks) + sum(saved.masks.values())
    trainable = [p for p in model.parameters() if p.requires_grad]
    measured["LoRA params"] = _tensor_bytes(trainable)
    measured["LoRA grads"] = _tensor_bytes([p.grad for p in trainable])
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    optimizer.step()
    measured["optimizer states"] = _tensor_bytes(
        t for state in optimizer.state.values() for k, t in state.items() if k != "step")
    if method == "grpo":
        # After the training step (the terms do not depend on the order): on the CPU a no-grad 4-bit forward
        # repacks the weights for bitsandbytes' inference kernel, whose in-place bias add then fails under
        # autograd (GLM-4's biased projections).
        model.eval()
        model.config.use_cache = True
        with torch.no_grad():
            out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
                                 max_new_tokens=s.completion_len, min_new_tokens=s.completion_len,
                                 return_dict_in_generate=True, use_cache=True, pad_token_id=0)
        measured["generation KV cache"] = _cache_bytes(out.past_key_values)
    return {k: (planned.get(k, 0.0), v) for k, v in measured.items()}


def first_steps_losses(model_dir: Path, card: str, text: str, steps: int = 8, seq_len: int = 128, batch: int = 2,
                       norm_output_16bit: bool = False, new_tokens: int = 8) -> dict:
    """SFT steps on fixed rows of ``text`` under the card's rehearsal (autocast, CPU loss scaler for
    fp16), torch AdamW at 2e-4: the loss of each step, the loss scale at the end, and the bytes
    saved for backward and the KV cache of one generate call."""
    import torch
    from transformers import AutoTokenizer

    from tifa_lite.config import load_recipe
    from tifa_lite.modeling.layer_loop import decoder_layers

    config = load_recipe(recipe(model_dir, "sft", Setting(seq_len=seq_len, batch=batch)))
    model, plan = load_trainable(config, card, norm_output_16bit)
    ids = AutoTokenizer.from_pretrained(model_dir)(text)["input_ids"][: seq_len * batch]
    rows = torch.tensor(ids).view(batch, seq_len)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-4)
    scaler = torch.amp.GradScaler("cpu", enabled=plan.numerics.grad_scaler)
    _, layers = decoder_layers(model)
    losses, saved_bytes = [], 0
    model.train()
    for step in range(steps):
        with SavedBytes(model, layers) as saved, autocast_for(plan):
            loss = model(input_ids=rows, labels=rows, use_cache=False).loss
        saved_bytes = max(saved_bytes, sum(saved.layer.values()))
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
        losses.append(round(loss.item(), 4))
    model.eval()
    model.config.use_cache = True
    with torch.no_grad():
        out = model.generate(input_ids=rows, attention_mask=torch.ones_like(rows),
                             max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             return_dict_in_generate=True, use_cache=True, pad_token_id=0)
    return {"losses": losses, "loss_scale": scaler.get_scale() if plan.numerics.grad_scaler else None,
            "saved_bytes": saved_bytes, "kv_cache_bytes": _cache_bytes(out.past_key_values)}
