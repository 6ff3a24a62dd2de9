"""Artifacts of every run: metrics.jsonl while training; at the end the adapter (or
model), tokenizer, data report and a loss-curve PNG beside resolved_config.yaml."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from transformers import TrainerCallback

log = logging.getLogger(__name__)


class MetricsRecorder(TrainerCallback):
    """Appends every log event as one JSON line, flushed at once, so a killed run keeps
    its curve up to the last logged step."""

    def __init__(self, path: Path, append: bool = False):
        from tifa_lite.distributed.runtime import is_main_process

        self.path = Path(path)
        # Only rank 0 writes the file (on_log), so only rank 0 may delete it.
        if not append and self.path.exists() and is_main_process():
            self.path.unlink()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        row = {"step": state.global_step, "epoch": state.epoch, **{k: _plain(v) for k, v in logs.items()}}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


class FinalStep(TrainerCallback):
    """The last optimizer step is always logged: a run shorter than train.logging_steps would
    otherwise leave no loss and no curve. With ``evaluate`` (rows held out, but no
    train.eval_steps to evaluate them on) it is also evaluated, so held-out data is used."""

    def __init__(self, evaluate: bool = False):
        self.evaluate = evaluate

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_log = True
            control.should_evaluate = control.should_evaluate or self.evaluate
        return control


class CheckpointModes(TrainerCallback):
    """A checkpoint is the user's output too (an interrupted run keeps it), but safetensors
    writes its weights 0600: give them the umask's modes, as every other file has."""

    def on_save(self, args, state, control, **kwargs):
        from tifa_lite.atomic import follow_umask

        if state.is_world_process_zero:
            follow_umask(Path(args.output_dir) / f"checkpoint-{state.global_step}")


class StopOnSignal(TrainerCallback):
    """A deferred SIGTERM (:func:`tifa_lite.interrupts.deferring_term`) is acted on at the end
    of the step it came in: a checkpoint is saved and training stops; the runner then raises
    the interrupt. Every checkpoint save, this one or a scheduled one, is a critical write
    that no signal cuts (from the step's end, where the save is decided, to ``on_save``)."""

    def __init__(self):
        self.saving = False

    def on_step_end(self, args, state, control, **kwargs):
        from tifa_lite import interrupts

        if interrupts.pending() and not self.saving:
            interrupts.step_ended()
            control.should_save = True
            control.should_training_stop = True
        if control.should_save and not self.saving:
            self.saving = True
            interrupts.enter_critical()
        return control

    def on_save(self, args, state, control, **kwargs):
        from tifa_lite import interrupts

        self._release()
        if interrupts.pending():  # came while the checkpoint was written
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self._release()

    def _release(self):
        from tifa_lite import interrupts

        if self.saving:
            self.saving = False
            interrupts.leave_critical()


def last_metrics(log_history: list[dict]) -> dict:
    """The final training summary (train_loss, …) and the last evaluation (eval_loss, …)."""
    out: dict = {}
    for row in log_history:
        out.update({k: v for k, v in row.items() if k.startswith(("train_", "eval_"))})
    return out


def _plain(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return value
    return value if math.isfinite(value) else None


def drop_metrics_after(path: Path, step: int) -> int:
    """Remove the rows logged after ``step`` (a resumed run logs those steps again from its
    checkpoint); returns how many were dropped."""
    from tifa_lite.atomic import write_text

    rows = read_metrics(path)
    kept = [row for row in rows if row.get("step", 0) <= step]
    if len(kept) != len(rows):
        write_text(path, "".join(json.dumps(row) + "\n" for row in kept))
    return len(rows) - len(kept)


def read_metrics(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_loss(metrics: list[dict], out: Path) -> list[str]:
    """Train and eval loss against the step, as a PNG; returns the curves drawn (none: no file)."""
    curves = {
        "train loss": [(m["step"], m["loss"]) for m in metrics if m.get("loss") is not None],
        "eval loss": [(m["step"], m["eval_loss"]) for m in metrics if m.get("eval_loss") is not None],
    }
    curves = {label: points for label, points in curves.items() if points}
    if not curves:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, points in curves.items():
        # Eval points are few, and a line through a single point is invisible: mark them.
        ax.plot(*zip(*points), "o-" if label == "eval loss" or len(points) == 1 else "-", label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return list(curves)


def finalize_outputs(trainer, run) -> None:
    work_dir = Path(run.work_dir)
    # save_model writes the adapter for a PeftModel, the full (ZeRO-3-gathered) weights otherwise.
    trainer.save_model(str(work_dir))
    if trainer.is_world_process_zero():
        run.tokenizer.save_pretrained(str(work_dir))
        _write_generation_config(run, work_dir)
        (work_dir / "data_report.json").write_text(json.dumps(run.data_report, indent=2), encoding="utf-8")
        summary = {
            "method": run.config.train.method,
            "global_step": trainer.state.global_step,
            "base_model": getattr(_base_config(trainer.model), "tifa_lite_base", None),
            "precision": run.precision,
            "qlora": run.config.is_qlora,
            **{k: last_metrics(trainer.state.log_history).get(k) for k in ("train_loss", "eval_loss")},
        }
        (work_dir / "run_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        plot_loss(read_metrics(work_dir / "metrics.jsonl"), work_dir / "loss_curve.png")
    trainer.accelerator.wait_for_everyone()


def _base_config(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.config


def _write_generation_config(run, work_dir: Path) -> None:
    """The recipe's recommended sampling travels with the weights (merge copies it)."""
    s = run.config.sampling
    config = {
        "do_sample": s.temperature > 0,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "repetition_penalty": s.repetition_penalty,
        "max_new_tokens": s.max_new_tokens,
    }
    if s.top_k is not None:
        config["top_k"] = s.top_k
    (work_dir / "tifa_sampling.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
