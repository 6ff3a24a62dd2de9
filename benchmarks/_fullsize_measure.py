"""What benchmarks/gpu_fullsize.py measures in one run's process, and how.

- Cap: ``torch.cuda.set_per_process_memory_fraction`` so torch's allocator gets what the card
  leaves after this process's CUDA context (measured here); the T4's fp16 path comes from
  ``TIFA_LITE_NO_BF16=1``, set by the driver before this process starts.
- Memory: ``torch.cuda.max_memory_allocated()`` / ``max_memory_reserved()`` over the whole run
  (load included), against the planner's allocator peak for the same recipe on the card.
- Speed: a clock on every optimizer step (CUDA synchronised), the first ``warmup`` steps left
  out. Tokens are what the trainer's loss sees: the attention mask's ones, or every position of a
  padding-free row. GRPO's generation time is TRL's own profiling span (``transformers.generate``).
- Losses: the first steps' logged loss, finite and in a plausible range for a random model.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

GIB = 2**30


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def cap_memory(card: str) -> dict[str, Any]:
    """The allocator capped at the card's memory less this process's CUDA context."""
    import torch

    from tifa_lite.hardware import REHEARSED_CARDS

    if not cuda():
        return {"cap": "none (CPU dry run: the card is rehearsed, TIFA_LITE_REHEARSE)"}
    free, total = torch.cuda.mem_get_info()
    # This process's context (the driver never gives the card to anything else during the run: the
    # driver process and the model builder stay off it).
    context = total - free
    cap = REHEARSED_CARDS[card].memory_gib * GIB - context
    torch.cuda.set_per_process_memory_fraction(cap / total)
    torch.cuda.reset_peak_memory_stats()
    return {"gpu": torch.cuda.get_device_name(0), "card_gib": REHEARSED_CARDS[card].memory_gib,
            "context_gib": round(context / GIB, 3), "allocator_cap_gib": round(cap / GIB, 3)}


class StepClock:
    """Times every optimizer step and counts the tokens the loss sees in it. The trainer hooks are
    installed once per process and feed whichever clock is current (the dry run runs every arm in one
    process)."""

    current: "StepClock | None" = None
    spans: dict[str, list[float]] = {}  # TRL's profiling spans of the current run, by name

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.steps: list[dict[str, float]] = []
        self._start = 0.0
        self._tokens = 0
        self.widest = 0  # the widest training batch (padded rows: the planner's length)
        self.first_step_at: float | None = None
        self.started = time.time()
        _install_hooks()
        StepClock.current = self
        StepClock.spans = {}

    def begin(self) -> None:
        _sync()
        self._start, self._tokens = time.time(), 0
        if self.first_step_at is None:
            self.first_step_at = self._start

    def end(self) -> None:
        _sync()
        self.steps.append({"seconds": time.time() - self._start, "tokens": self._tokens})

    def count(self, inputs) -> None:
        mask = inputs.get("attention_mask")
        self._tokens += int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
        self.widest = max(self.widest, int(inputs["input_ids"].shape[-1]))

    def summary(self) -> dict[str, Any]:
        measured = self.steps[self.warmup:] or self.steps[-1:]
        seconds = sum(s["seconds"] for s in measured)
        tokens = sum(s["tokens"] for s in measured)
        return {"steps": len(self.steps), "steps_measured": len(measured),
                "step_s": [round(s["seconds"], 3) for s in self.steps],
                "median_step_s": round(statistics.median(s["seconds"] for s in measured), 3) if measured else None,
                "tokens_per_step": [s["tokens"] for s in self.steps],
                "tokens_per_s": round(tokens / seconds, 1) if tokens and seconds else None,
                "load_and_setup_s": round(self.first_step_at - self.started, 1) if self.first_step_at else None}


def _sync() -> None:
    if cuda():
        import torch

        torch.cuda.synchronize()


_HOOKED = False


def _install_hooks() -> None:
    """Wrap the trainer's step events, the SFT/DPO loss (token counts) and TRL's profiling spans."""
    global _HOOKED
    if _HOOKED:
        return
    _HOOKED = True
    import trl
    from transformers.trainer_callback import CallbackHandler
    from trl.extras import profiling

    begin, end = CallbackHandler.on_step_begin, CallbackHandler.on_step_end

    def on_step_begin(handler, *args, **kwargs):
        if StepClock.current:
            StepClock.current.begin()
        return begin(handler, *args, **kwargs)

    def on_step_end(handler, *args, **kwargs):
        if StepClock.current:
            StepClock.current.end()
        return end(handler, *args, **kwargs)

    CallbackHandler.on_step_begin, CallbackHandler.on_step_end = on_step_begin, on_step_end

    def counting(compute_loss):
        def wrapped(trainer, model, inputs, *args, **kwargs):
            if model.training and StepClock.current:
                StepClock.current.count(inputs)
            return compute_loss(trainer, model, inputs, *args, **kwargs)

        return wrapped

    for cls in (trl.SFTTrainer, trl.DPOTrainer):
        cls.compute_loss = counting(cls.compute_loss)

    log_metrics = profiling.ProfilingContext._log_metrics

    def record(self, duration):
        StepClock.spans.setdefault(self.name.split(".", 1)[1], []).append(duration)
        return log_metrics(self, duration)

    profiling.ProfilingContext._log_metrics = record


def grpo_split(clock: StepClock) -> dict[str, Any]:
    """Generation vs the rest of each measured step, from TRL's profiling spans (one generate call per
    step here: steps_per_generation is the accumulation)."""
    generate = StepClock.spans.get("transformers.generate", [])
    steps = clock.steps
    if not generate or len(generate) % len(steps):
        return {"generation_s": None, "note": f"{len(generate)} generate spans for {len(steps)} steps"}
    per = len(generate) // len(steps)
    gen = [sum(generate[i * per:(i + 1) * per]) for i in range(len(steps))]
    measured = range(clock.warmup, len(steps)) if len(steps) > clock.warmup else range(len(steps) - 1, len(steps))
    g = statistics.median(gen[i] for i in measured)
    total = statistics.median(steps[i]["seconds"] for i in measured)
    return {"generation_s": round(g, 3), "train_and_rest_s": round(total - g, 3), "generation_s_per_step": [round(x, 3) for x in gen]}


def planned(recipe: Path, overrides: dict[str, Any], card: str, **replan: Any) -> dict[str, Any]:
    """The planner's figures for this recipe on the card (the catalogue's, bf16 per the run's env)."""
    from tifa_lite.config import load_recipe
    from tifa_lite.planner import fits, gpu_by_name, plan_config

    gpu = gpu_by_name(card)
    plan = plan_config(load_recipe(recipe, {**overrides, **replan}), gpu)
    return {"planned_peak_gib": round(plan.peak_gib, 3), "planned_allocator_gib": round(plan.allocator_peak_gib, 3),
            "planner_fits": fits(plan, gpu), "planned_phase": plan.phase,
            "planned_terms": {k: round(v, 3) for k, v in plan.terms.items()}}


def measured_memory() -> dict[str, Any]:
    if not cuda():
        import resource

        return {"peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}
    import torch

    return {"max_allocated_gib": round(torch.cuda.max_memory_allocated() / GIB, 3),
            "max_reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 3)}


def loss_check(losses: list[float], kind: str, vocab: int) -> dict[str, Any]:
    """A random model's first losses: SFT near ln(vocab) (uniform guessing), DPO near ln 2 (policy =
    reference at step 0), GRPO finite (its scale depends on the rewards)."""
    first = [round(float(x), 4) for x in losses[:3]]
    finite = bool(first) and all(math.isfinite(x) for x in first)
    bounds = {"sft": (0.0, 2 * math.log(vocab)), "dpo": (0.0, 5 * math.log(2))}.get(kind)
    in_range = finite and (bounds is None or all(bounds[0] < x < bounds[1] for x in first))
    return {"first_losses": first, "loss_finite": finite, "loss_in_range": in_range,
            "loss_range": [round(b, 2) for b in bounds] if bounds else "finite"}
