"""What one SFT training run really did, read from the trainer itself (used by sft_vs_trl.py).

Installed in a child process before a trainer is built, the probe wraps two methods of
``transformers.Trainer`` for every trainer in the process, so plain TRL and tifa_lite are
measured by the same code:

- ``get_train_dataloader``: the trainer's own collator is wrapped, so every batch is
  counted as it is built — real tokens (the unpadded rows handed to the collator), the
  padded tensor it returns, and the tokens the loss is taken on (labels that are not
  -100 after the one-token shift). No token count comes from a formula.
- ``training_step``: counts the forward calls of the first decoder layer's MLP during each
  step (2 per step means activation checkpointing recomputed the forward in the backward),
  reads the model's ``is_gradient_checkpointing`` flag, and can run one chosen step under
  ``torch.profiler`` (CPU self time per op, call counts, input shapes). With ``batches_only``
  the step does no compute at all: the epoch's batches are built and counted in seconds,
  a load-independent account of the padding each side's sampler and collator produce.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IGNORE_INDEX = -100


@dataclass
class Ledger:
    batches: list[dict[str, int]] = field(default_factory=list)
    layer_forwards_per_step: list[int] = field(default_factory=list)
    # Process CPU seconds (all threads) and wall seconds of each step: less sensitive to other
    # jobs on the machine than wall time, but neither is a result on a shared machine.
    step_cpu_seconds: list[float] = field(default_factory=list)
    step_wall_seconds: list[float] = field(default_factory=list)
    is_gradient_checkpointing: bool | None = None
    sampler: str | None = None
    torch_threads: int | None = None
    training_args: dict[str, Any] = field(default_factory=dict)
    collator: str | None = None
    trainer: Any = None

    def totals(self) -> dict[str, Any]:
        def total(key: str) -> int:
            return sum(b[key] for b in self.batches)

        log = self.trainer.state.log_history if self.trainer is not None else []
        return {
            "batches": len(self.batches),
            "tokens_real": total("real"),
            "tokens_padded": total("padded"),
            "tokens_loss": total("loss"),
            # Query-key pairs the attention computes (rows × width²): padding and long packed rows cost here.
            "attention_pairs": total("attention_pairs"),
            "batch_shapes": [[b["rows"], b["width"]] for b in self.batches],
            "layer_forwards_per_step": self.layer_forwards_per_step,
            "step_cpu_seconds": self.step_cpu_seconds,
            "step_wall_seconds": self.step_wall_seconds,
            "is_gradient_checkpointing": self.is_gradient_checkpointing,
            "sampler": self.sampler,
            "torch_threads": self.torch_threads,
            # Every TrainingArguments/SFTConfig value the trainer ran with, to diff two sides.
            "training_args": self.training_args,
            "collator": self.collator,
            # What the trainer logged besides the loss (entropy, token accuracy …): metrics it computes every step.
            "logged_keys": sorted({k for entry in log for k in entry}),
            "train_loss": next((e["train_loss"] for e in reversed(log) if "train_loss" in e), None),
        }


class CountingCollator:
    def __init__(self, inner, ledger: Ledger):
        self.inner, self.ledger = inner, ledger

    def __call__(self, rows):
        batch = self.inner(rows)
        labels = batch["labels"]
        self.ledger.batches.append({
            "rows": len(rows),
            "real": sum(len(r["input_ids"]) for r in rows),
            "padded": batch["input_ids"].numel(),
            "width": batch["input_ids"].shape[-1],
            "attention_pairs": batch["input_ids"].shape[0] * batch["input_ids"].shape[-1] ** 2,
            # The model predicts token t+1 from token t: the first label of a row is never a target.
            "loss": int((labels[..., 1:] != IGNORE_INDEX).sum()),
        })
        return batch


def first_layer_mlp(model):
    """The MLP of the first decoder layer. Not the layer itself: transformers checkpoints the
    layer's ``forward``, so hooks on the layer fire once even when the backward replays it;
    the replay calls the MLP again."""
    layer = next(m for m in model.modules() if type(m).__name__.endswith("DecoderLayer"))
    return layer.mlp


def install(profile_step: int | None = None, profile_out: Path | None = None, batches_only: bool = False) -> Ledger:
    import torch
    from transformers import Trainer

    ledger = Ledger()
    original_loader, original_step = Trainer.get_train_dataloader, Trainer.training_step
    hooked: set[int] = set()
    forwards = [0]

    def get_train_dataloader(self):
        if not isinstance(self.data_collator, CountingCollator):
            ledger.collator = type(self.data_collator).__name__
            self.data_collator = CountingCollator(self.data_collator, ledger)
        sampler = self._get_train_sampler()
        ledger.sampler = type(sampler).__name__ if sampler is not None else None
        ledger.trainer = self
        ledger.training_args = {k: v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)
                                for k, v in self.args.to_dict().items()}
        return original_loader(self)

    def training_step(self, model, inputs, *args, **kwargs):
        if id(model) not in hooked:
            hooked.add(id(model))
            first_layer_mlp(model).register_forward_pre_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
            base = self.accelerator.unwrap_model(model)
            base = base.get_base_model() if hasattr(base, "get_base_model") else base
            ledger.is_gradient_checkpointing = bool(getattr(base, "is_gradient_checkpointing", False))
            ledger.torch_threads = torch.get_num_threads()
        forwards[0] = 0
        step = len(ledger.layer_forwards_per_step)
        if batches_only:
            ledger.layer_forwards_per_step.append(0)
            return torch.zeros(())
        cpu, wall = time.process_time(), time.perf_counter()
        if profile_step is not None and step == profile_step:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                loss = original_step(self, model, inputs, *args, **kwargs)
            write_profile(prof, profile_out, inputs)
        else:
            loss = original_step(self, model, inputs, *args, **kwargs)
        ledger.layer_forwards_per_step.append(forwards[0])
        ledger.step_cpu_seconds.append(time.process_time() - cpu)
        ledger.step_wall_seconds.append(time.perf_counter() - wall)
        return loss

    Trainer.get_train_dataloader, Trainer.training_step = get_train_dataloader, training_step
    torch.manual_seed(0)
    return ledger


def write_profile(prof, out: Path, inputs) -> None:
    """The step's op table (text, sorted by self CPU time) and a JSON for diffing two sides."""
    out.parent.mkdir(parents=True, exist_ok=True)
    averages = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in averages) or 1
    ops = sorted(
        ({"op": e.key, "calls": e.count, "self_cpu_share": e.self_cpu_time_total / total} for e in averages),
        key=lambda o: -o["self_cpu_share"],
    )
    by_shape = sorted(
        ({"op": e.key, "shapes": str(e.input_shapes), "calls": e.count,
          "self_cpu_share": e.self_cpu_time_total / total}
         for e in prof.key_averages(group_by_input_shape=True) if e.key in ("aten::mm", "aten::addmm", "aten::bmm")),
        key=lambda o: -o["self_cpu_share"],
    )[:25]
    batch = {k: list(v.shape) for k, v in inputs.items() if hasattr(v, "shape")}
    out.with_suffix(".json").write_text(json.dumps({"batch": batch, "ops": ops, "matmul_by_shape": by_shape}, indent=1))
    out.with_suffix(".txt").write_text(
        f"batch shapes: {batch}\n\n" + averages.table(sort_by="self_cpu_time_total", row_limit=40)
        + "\n\nmatmuls by input shape:\n"
        + prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=25)
    )


def diff_profiles(a: Path, b: Path, top: int = 30) -> str:
    """Side-by-side op shares and call counts of two profiled steps, largest share differences first."""
    pa, pb = (json.loads(Path(p).read_text()) for p in (a, b))
    ia, ib = ({o["op"]: o for o in p["ops"]} for p in (pa, pb))
    rows = []
    for op in set(ia) | set(ib):
        oa, ob = ia.get(op, {"calls": 0, "self_cpu_share": 0.0}), ib.get(op, {"calls": 0, "self_cpu_share": 0.0})
        rows.append((op, oa, ob))
    rows.sort(key=lambda r: -max(r[1]["self_cpu_share"], r[2]["self_cpu_share"]))
    lines = [f"A = {a}  batch {pa['batch']}", f"B = {b}  batch {pb['batch']}", "",
             f"{'op':42s} {'A share':>8s} {'A calls':>8s} {'B share':>8s} {'B calls':>8s}"]
    for op, oa, ob in rows[:top]:
        lines.append(f"{op[:42]:42s} {oa['self_cpu_share']:8.1%} {oa['calls']:8d} {ob['self_cpu_share']:8.1%} {ob['calls']:8d}")
    return "\n".join(lines)
