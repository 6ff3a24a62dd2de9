"""``train(recipe, **overrides)``: the single path the CLI, the Python API and the
notebooks share.

Output folder discipline: a run works in ``<output_dir>.partial`` and is renamed to
``output_dir`` only when it has finished and every artifact is written, so a failed
run never leaves a half-written output folder. Checkpoints live in the ``.partial``
folder, so a killed run is resumed by running the same command again
(``train.resume: auto``) — after checking that the checkpoint was made by the same
recipe (:mod:`tifa_lite.training.resume`). A failure before the first checkpoint removes the
``.partial`` folder entirely. A finished run replacing an older one
(``train.overwrite_output_dir``) is swapped in so that one of the two always exists.

Under a launcher every rank runs this function and writes into the same folder; global
rank 0 alone deletes, renames and rewrites files there, the others wait at a barrier.
"""

from __future__ import annotations

import logging
import shutil
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from tifa_lite import diskspace, interrupts
from tifa_lite.atomic import check_output_path, follow_umask, swap_dir, write_text
from tifa_lite.config import dump_config, load_recipe
from tifa_lite.config.schema import RecipeConfig
from tifa_lite.errors import ConfigError
from tifa_lite.runlock import output_lock
from tifa_lite.training.resume import RESOLVED_CONFIG, check_same_run, checkpoint_step, keep_previous_config

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    output_dir: Path
    config: RecipeConfig
    global_step: int
    metrics: dict[str, Any]
    resumed_from: str | None


def partial_dir(output_dir: Path) -> Path:
    return output_dir.with_name(output_dir.name + ".partial")


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint whose trainer state was completely written."""
    candidates = []
    for ckpt in folder.glob("checkpoint-*"):
        step = ckpt.name.split("-")[-1]
        if step.isdigit() and (ckpt / "trainer_state.json").is_file():
            candidates.append((int(step), ckpt))
    return max(candidates)[1] if candidates else None


def latest_good_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint that passes :func:`tifa_lite.verify.checkpoint_problem`. A newer
    one that fails (a save cut short by a kill or a full disk) is skipped with a warning:
    resuming it would crash after the model load, and so would every rerun."""
    from tifa_lite.verify import checkpoint_problem

    steps = sorted((int(c.name.split("-")[-1]), c) for c in folder.glob("checkpoint-*") if c.name.split("-")[-1].isdigit())
    for _, ckpt in reversed(steps):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            return ckpt
        log.warning("train.resume: skipping %s, which is damaged (%s); falling back to the one before it.", ckpt, problem)
    return None


def train(
    recipe: str | Path | Mapping[str, Any] | RecipeConfig,
    profile: str | list[str] | None = None,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
    **kw_overrides: Any,
) -> TrainResult:
    """Run a recipe. Overrides are dotted keys: ``train(r, **{"train.max_steps": 2})``,
    ``train(r, train__max_steps=2)`` or ``train(r, overrides=["train.max_steps=2"])``."""
    items: dict[str, Any] = {}
    if overrides is not None:
        from tifa_lite.config.loader import override_items

        items.update(dict(override_items(overrides)))
    items.update({k.replace("__", "."): v for k, v in kw_overrides.items()})
    config = load_recipe(recipe, items, profile=profile)
    return run_config(config)


def run_config(config: RecipeConfig) -> TrainResult:
    from tifa_lite.distributed.runtime import is_main_process

    output_dir = check_output_path(config.train.output_dir, "train.output_dir")
    # One run per output folder (the ranks of one launch are one run: rank 0 holds it).
    with output_lock(output_dir, "train.output_dir") if is_main_process() else nullcontext():
        need = _disk_needed(config)
        with diskspace.translating(output_dir, need, "train.output_dir"):
            if need and is_main_process():
                diskspace.require(output_dir, need, "train.output_dir")
            return _run_locked(config, output_dir)


def _disk_needed(config: RecipeConfig) -> int | None:
    """Checkpoints and final weights (:mod:`tifa_lite.planner.disk`); None when the model's
    shape cannot be read without loading it (then only a late out-of-space is translated)."""
    from tifa_lite.planner.disk import training_bytes

    try:
        return training_bytes(config)
    except Exception as exc:  # a GGUF base, an uncached hub id: the load says what is wrong
        log.debug("no disk estimate: %s", exc)
        return None


def _run_locked(config: RecipeConfig, output_dir: Path) -> TrainResult:
    from tifa_lite.backends import load_for_training_with_backend, preload_backend
    from tifa_lite.runplan import resolve_plan

    if output_dir.exists() and any(output_dir.iterdir()) and not config.train.overwrite_output_dir:
        raise ConfigError(
            f"train.output_dir {output_dir} already holds a finished run. Choose another "
            "train.output_dir or set train.overwrite_output_dir=true."
        )
    from tifa_lite.hub import check_model_source

    check_model_source(config.model)  # an unreachable hub in a second, before torch is imported
    # Every hardware-dependent decision, once; everything below reads it.
    plan = resolve_plan(config)
    # unsloth (when selected) must be imported before transformers to patch it.
    preload_backend(plan.backend)
    from tifa_lite import console

    # Before the imports below: the first of them imports bitsandbytes, which warns on import.
    console.quiet_libraries()
    from tifa_lite.distributed.runtime import (
        barrier, env_rank, env_world_size, is_main_process, load_report,
        prepare_distributed, weights_fingerprint,
    )
    from tifa_lite.methods import get_method
    from tifa_lite.methods.common import Run, early_training_arguments
    from tifa_lite.methods.precheck import check_before_load
    from tifa_lite.training.outputs import (
        CheckpointModes, FinalStep, MetricsRecorder, StopOnSignal, finalize_outputs, last_metrics,
    )

    # Under a launcher this brings up the process group, so that rank 0 can own the folder below.
    config = prepare_distributed(config)
    if config.train.auto_fit:
        from tifa_lite.planner import apply_auto_fit

        config = apply_auto_fit(config, plan.hardware)
    if plan.vllm:
        from tifa_lite.planner import check_generation_reserve

        check_generation_reserve(config, plan.hardware)  # vLLM would stop at its start, after the load
    for line in plan.describe():
        console.stage("plan: %s", line)
    work_dir = partial_dir(output_dir)
    resume_from = _resume_point(config, work_dir)
    check_before_load(config, plan)  # data errors in seconds, not after a minutes-long model load
    stopped: dict[str, Any] = {}
    with interrupts.describe(where=lambda: _where_stopped(stopped.get("trainer")), kept=lambda: _what_was_kept(work_dir)):
        created = _prepare_work_dir(config, work_dir, resume_from, plan)
        try:
            # Held until the trainer exists: under ZeRO-3 it makes from_pretrained partition at load.
            early_args = early_training_arguments(config, work_dir, plan)
            model, tokenizer, peft_config = load_for_training_with_backend(config, plan)
            console.stage("model loaded: %s", console.describe_model(config, plan.precision, plan.backend))
            if env_world_size() is not None:
                log.info("rank %d after loading: %s", env_rank(), load_report(model))
            recorder = MetricsRecorder(work_dir / "metrics.jsonl", append=resume_from is not None)
            run = Run(
                config=config, work_dir=work_dir, model=model, tokenizer=tokenizer,
                peft_config=peft_config, plan=plan, callbacks=[recorder],
            )
            trainer = get_method(config.train.method).build_trainer(run)
            del early_args  # the trainer's own arguments now carry the DeepSpeed config
            # Held-out rows without train.eval_steps are evaluated at the end at least.
            trainer.add_callback(FinalStep(evaluate=trainer.eval_dataset is not None and trainer.args.eval_strategy == "no"))
            trainer.add_callback(StopOnSignal())
            trainer.add_callback(CheckpointModes())
            stopped["trainer"] = trainer
            console.stage("data built: %s", console.describe_data(run.data_report))
            console.stage("trainer ready: %s", console.describe_trainer(trainer, config))
            if resume_from:
                console.stage("resuming from %s", resume_from)
            # Under a launcher the ranks could see the signal at different steps and disagree on
            # saving (a collective): there it stops at once, back to the last scheduled checkpoint.
            with interrupts.deferring_term() if (env_world_size() or 1) == 1 else nullcontext():
                train_output = trainer.train(resume_from_checkpoint=resume_from)
            interrupts.raise_pending()  # a SIGTERM stopped it after saving a checkpoint
            if env_world_size() is not None:
                log.info("rank %d after training: %s", env_rank(), weights_fingerprint(trainer.model))
            finalize_outputs(trainer, run)
        except BaseException:
            # Rank 0 owns the folder; the other ranks may be writing into it or already gone.
            if is_main_process() and created and latest_checkpoint(work_dir) is None:
                shutil.rmtree(work_dir, ignore_errors=True)
            raise

    if is_main_process():
        # Not cut by a signal: the run is finished, and half its checkpoints gone would help no one.
        with interrupts.critical():
            follow_umask(work_dir)  # the weights, written 0600 by safetensors, included
            # Swapped in before the checkpoints go, so a failed swap leaves a resumable folder.
            swap_dir(work_dir, output_dir)
            if not config.train.keep_checkpoints:
                for checkpoint in output_dir.glob("checkpoint-*"):
                    shutil.rmtree(checkpoint)
    barrier()
    return TrainResult(
        output_dir=output_dir,
        config=config,
        global_step=trainer.state.global_step,
        metrics={**last_metrics(trainer.state.log_history), **train_output.metrics},
        resumed_from=str(resume_from) if resume_from else None,
    )


def _where_stopped(trainer) -> str:
    if trainer is None:
        return "before training began"
    return f"at step {trainer.state.global_step} of {trainer.state.max_steps}"


def _what_was_kept(work_dir: Path) -> str:
    checkpoint = latest_checkpoint(work_dir) if work_dir.is_dir() else None
    if checkpoint is None:
        return "no checkpoint yet, so nothing (the run starts over)"
    return f"{checkpoint.name} in {work_dir} (the same command resumes from it)"


def _resume_point(config: RecipeConfig, work_dir: Path) -> str | None:
    """The checkpoint to resume from, after checking it was made by this recipe. Reads only:
    every rank computes the same answer."""
    resume = config.train.resume
    if resume == "never":
        return None
    if resume == "auto":
        found = latest_good_checkpoint(work_dir) if work_dir.exists() else None
        if found is None and work_dir.exists() and latest_checkpoint(work_dir) is not None:
            log.warning("train.resume: no checkpoint in %s is intact; starting from step 0.", work_dir)
    else:
        found = Path(resume)
        if not (found / "trainer_state.json").is_file():
            raise ConfigError(f"train.resume={resume}: not a checkpoint folder (no trainer_state.json).")
        from tifa_lite.verify import checkpoint_problem

        problem = checkpoint_problem(found)
        if problem is not None:
            raise ConfigError(f"train.resume={resume}: the checkpoint is damaged ({problem}). Resume from an "
                              "earlier checkpoint-* folder, or set train.resume=auto to take the last intact one.")
    if found is None:
        return None
    check_same_run(found, config)
    return str(found)


def _prepare_work_dir(config: RecipeConfig, work_dir: Path, resume_from: str | None, plan=None) -> bool:
    """Rank 0 alone deletes, renames and rewrites in the staging folder (which every rank
    later writes checkpoint shards into); the others wait at the barrier. Returns whether
    this run created the folder (so a failure before the first checkpoint may remove it)."""
    from tifa_lite.distributed.runtime import barrier, is_main_process
    from tifa_lite.training.outputs import drop_metrics_after

    created = config.train.resume == "never" or not work_dir.exists()
    if is_main_process():
        if config.train.resume == "never" and work_dir.exists():
            shutil.rmtree(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        if resume_from is not None:
            keep_previous_config(work_dir)
            if Path(resume_from).parent == work_dir:
                step = checkpoint_step(Path(resume_from))
                dropped = drop_metrics_after(work_dir / "metrics.jsonl", step)
                if dropped:
                    log.info("metrics.jsonl: %d row(s) after step %d dropped; they are logged again", dropped, step)
        write_text(work_dir / RESOLVED_CONFIG, dump_config(config))
        if plan is not None:
            from tifa_lite.runplan import PLAN_FILE

            write_text(work_dir / PLAN_FILE, plan.to_json())
    barrier()
    # A node that does not share rank 0's file system needs the folder too.
    work_dir.mkdir(parents=True, exist_ok=True)
    return created
