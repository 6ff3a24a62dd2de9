"""Multi-stage training (the Tifa road: CPT → CoT SFT → GRPO → anti-repetition DPO).

A pipeline file lists stages, each a recipe path plus overrides; every stage goes
through :func:`tifa_lite.training.runner.train`. Each stage starts from the previous stage's
result **merged** into a 16-bit model (:func:`tifa_lite.merge`), which the next
QLoRA stage quantises again on load — what LLaMA-Factory users do between stages.

Why merged, not stacked adapters:
- GRPO and DPO on a PEFT model use the model with its adapter *disabled* as the
  reference/KL anchor. With stacked adapters, disabling would also drop the earlier
  stages, so the anchor would be the original base instead of the SFT model the stage
  is meant to stay close to. After a merge the previous stage *is* the base.
- QLoRA quantises the base once per stage, and its adapter was trained against
  dequant(NF4(W)), not W. The merge adds ΔW to exactly that (``base_weights`` auto =
  dequantized for a 4-bit stage, :mod:`tifa_lite.merging.quantized_base`), so each
  stage's result is the model that was trained. Re-quantising dequant(NF4(W)) gives it
  back (exactly without double quant; within 3e-6 with it, against an NF4 error of 1e-2
  on a N(0, 0.02) weight), so quantisation error does not compound across stages.
- One adapter at a time keeps memory and the trainer setup the same as a single run,
  and the final product is one standalone model folder (chat, GGUF export, serving).
The cost is disk (one 16-bit copy per stage) and a merge per stage.

Layout: ``<output_dir>/<NN>_<stage>/adapter`` (the training run) and ``…/merged``.
Both are written atomically, so a stage whose ``merged`` folder exists is complete and
skipped on the next run; a stage killed mid-training resumes from its checkpoints
(``train.resume: auto``); a stage whose adapter finished but whose merge did not is
only merged.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tifa_lite.errors import ConfigError

log = logging.getLogger(__name__)


class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    recipe: str
    overrides: dict[str, Any] = Field(default_factory=dict)
    profile: str | list[str] | None = None
    # Merge the stage's adapter into its base. Off for the last stage if you want the adapter only.
    merge: bool = True
    # A `tifa-lite` command run before training, e.g. building anti-repetition pairs from the
    # previous stage's own samples. "{previous}" = the stage's base model, "{stage_dir}" = its
    # folder; both are also substituted in the stage's string overrides.
    prepare: list[str] | None = None

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"stage name {value!r}: use letters, digits, - and _ only (it names a folder)")
        return value


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = None
    output_dir: str = "outputs/pipeline"
    # The first stage's base; None keeps the first recipe's model.name_or_path.
    model: str | None = None
    # auto: bf16 where the GPU has it, fp16 on other GPUs, fp32 on the CPU.
    merge_dtype: str = "auto"
    # merge()'s self-check (merged vs base+adapter logits). Costs two extra model loads per stage.
    merge_check: bool = True
    # A tifa_lite.training.budgets name (full, gpu-small, cpu-tiny): per-method overrides applied first.
    budget: str | None = None
    # Applied to every stage before the stage's own overrides.
    overrides: dict[str, Any] = Field(default_factory=dict)
    profile: str | list[str] | None = None
    stages: list[StageSpec]

    @field_validator("stages")
    @classmethod
    def _unique(cls, stages: list[StageSpec]) -> list[StageSpec]:
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        names = [s.name for s in stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"stage names must be unique; repeated: {dupes}")
        return stages


@dataclass
class StageResult:
    name: str
    adapter_dir: Path
    merged_dir: Path | None
    status: str  # "trained" | "skipped (complete)" | "merged only"
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class PipelineResult:
    output_dir: Path
    stages: list[StageResult]

    @property
    def final_model(self) -> Path:
        last = self.stages[-1]
        return last.merged_dir or last.adapter_dir


def load_pipeline(path: str | Path, overrides: Iterable[str] | Mapping[str, Any] | None = None) -> tuple[PipelineSpec, Path]:
    """Read a pipeline YAML; stage recipes resolve relative to the pipeline file, then the CWD.
    Overrides: ``STAGE.key=value`` (one stage), ``*.key=value`` (every stage), or a
    pipeline key (``output_dir=…``, ``model=…``, ``merge_dtype=…``)."""
    from tifa_lite.config.loader import override_items, read_yaml

    path = Path(path)
    tree = read_yaml(path)
    stage_names = [s.get("name") for s in tree.get("stages") or [] if isinstance(s, dict)]
    for key, value in override_items(overrides):
        head, _, rest = key.partition(".")
        if head == "*" and rest:
            tree.setdefault("overrides", {})[rest] = value
        elif head in stage_names and rest:
            stage = next(s for s in tree["stages"] if s.get("name") == head)
            if rest in StageSpec.model_fields and rest != "name":
                stage[rest] = value  # dpo.prepare=[…], cpt.merge=false, grpo.recipe=…
            else:
                stage.setdefault("overrides", {})[rest] = value
        elif head in PipelineSpec.model_fields and not rest:
            tree[head] = value
        else:
            import difflib

            options = stage_names + ["*"] + list(PipelineSpec.model_fields)
            close = difflib.get_close_matches(head, options, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"pipeline override {key}={value!r}: {head!r} is not a stage or pipeline key{hint}. "
                f"Use STAGE.section.key=value with a stage of {stage_names}, *.section.key=value, or one of "
                f"{', '.join(PipelineSpec.model_fields)}."
            )
    try:
        spec = PipelineSpec.model_validate(tree)
    except ValidationError as exc:
        lines = [f"{path}: invalid pipeline"]
        for err in exc.errors():
            lines.append(f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']}")
        raise ConfigError("\n".join(lines)) from None
    return spec, path.resolve().parent


def resolve_recipe(recipe: str, pipeline_dir: Path) -> Path:
    for candidate in (pipeline_dir / recipe, Path(recipe)):
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(f"stage recipe {recipe}: not found next to the pipeline file ({pipeline_dir}) nor from {Path.cwd()}.")


def stage_dirs(output_dir: Path, index: int, name: str) -> tuple[Path, Path]:
    folder = output_dir / f"{index:02d}_{name}"
    return folder / "adapter", folder / "merged"


def _finished_run(folder: Path) -> bool:
    # train() renames <dir>.partial to <dir> only after every artifact is written.
    return folder.is_dir() and (folder / "resolved_config.yaml").is_file()


def _merged_complete(folder: Path) -> bool:
    # merge() writes into a temp folder and renames it at the end, report included.
    return (folder / "config.json").is_file() and (folder / "merge_report.json").is_file()


def merge_dtype(choice: str) -> str:
    if choice != "auto":
        return choice
    from tifa_lite.hardware import native_precision

    return native_precision()


def plan(spec: PipelineSpec, pipeline_dir: Path) -> list[dict[str, Any]]:
    """Per stage: recipe path, profile and the overrides train() will get (base wiring
    included). The base of stage N>0 is stage N-1's merged folder (known before it exists)."""
    output_dir = Path(spec.output_dir).expanduser().resolve()
    steps = []
    previous: Path | None = None
    for index, stage in enumerate(spec.stages):
        adapter_dir, merged_dir = stage_dirs(output_dir, index, stage.name)
        recipe = resolve_recipe(stage.recipe, pipeline_dir)
        overrides: dict[str, Any] = {}
        if previous is None and spec.model:
            overrides["model.name_or_path"] = spec.model
        if spec.budget:
            from tifa_lite.training.budgets import budget_overrides
            from tifa_lite.config.loader import read_yaml

            method = stage.overrides.get("train.method") or (read_yaml(recipe).get("train") or {}).get("method", "sft")
            overrides.update(budget_overrides(spec.budget, method))
        overrides.update(spec.overrides)
        overrides.update(stage.overrides)
        if previous is not None:
            # The chain is the point of a pipeline: no override may cut it.
            overrides.update({"model.name_or_path": str(previous), "model.source": "local", "model.gguf_file": None})
        # The pipeline owns the folders: a stage override cannot redirect them.
        overrides["train.output_dir"] = str(adapter_dir)
        fill = {"{previous}": str(overrides.get("model.name_or_path", "")), "{stage_dir}": str(adapter_dir.parent)}
        overrides = {k: _fill(v, fill) for k, v in overrides.items()}
        prepare = [_fill(str(arg), fill) for arg in stage.prepare] if stage.prepare else None
        profiles = [p for p in (_as_list(spec.profile) + _as_list(stage.profile))] or None
        steps.append({
            "name": stage.name,
            "recipe": recipe,
            "profile": profiles,
            "overrides": overrides,
            "adapter_dir": adapter_dir,
            "merged_dir": merged_dir if stage.merge else None,
            "prepare": prepare,
        })
        if not stage.merge and index < len(spec.stages) - 1:
            raise ConfigError(
                f"stage {stage.name}: merge: false is only allowed on the last stage — the next stage starts from the merged model."
            )
        previous = merged_dir
    return steps


def _fill(value: Any, fill: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, replacement in fill.items():
            value = value.replace(key, replacement)
    return value


def _prepare(step: dict[str, Any]) -> None:
    """Run the stage's `prepare` command once; a marker makes it resumable."""
    marker = step["adapter_dir"].parent / "prepare.done"
    if not step["prepare"] or marker.is_file():
        return
    from tifa_lite.cli import main

    marker.parent.mkdir(parents=True, exist_ok=True)
    log.info("stage %s: preparing: tifa-lite %s", step["name"], " ".join(step["prepare"]))
    code = main(step["prepare"])
    if code:
        raise ConfigError(f"stage {step['name']}: prepare command `tifa-lite {' '.join(step['prepare'])}` failed (exit {code}).")
    marker.write_text(" ".join(step["prepare"]) + "\n", encoding="utf-8")


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def run_pipeline(
    path: str | Path,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
    only: list[str] | None = None,
) -> PipelineResult:
    """Run (or resume) every stage in order. ``only``: stage names to run; earlier
    stages they depend on must already be complete."""
    from tifa_lite import merge
    from tifa_lite.training.runner import train

    spec, pipeline_dir = load_pipeline(path, overrides)
    steps = plan(spec, pipeline_dir)
    from tifa_lite.atomic import check_output_path

    output_dir = check_output_path(spec.output_dir, "output_dir")
    output_dir.mkdir(parents=True, exist_ok=True)
    dtype = merge_dtype(spec.merge_dtype)
    results: list[StageResult] = []
    for index, step in enumerate(steps):
        name, adapter_dir, merged_dir = step["name"], step["adapter_dir"], step["merged_dir"]
        done = _merged_complete(merged_dir) if merged_dir else _finished_run(adapter_dir)
        if done:
            log.info("stage %s: complete, skipped (%s)", name, merged_dir or adapter_dir)
            results.append(StageResult(name, adapter_dir, merged_dir, "skipped (complete)", metrics=_read_summary(adapter_dir)))
            continue
        if only and name not in only:
            raise ConfigError(f"stage {name} is not complete, and later stages start from it; run it first (drop --only).")
        if index > 0 and not _merged_complete(steps[index - 1]["merged_dir"]):
            raise ConfigError(f"stage {name}: the previous stage's model {steps[index - 1]['merged_dir']} is missing.")
        started = time.time()
        status = "merged only"
        metrics: dict[str, Any] = {}
        if not _finished_run(adapter_dir):
            _prepare(step)
            log.info("stage %d/%d %s: training %s", index + 1, len(steps), name, step["recipe"])
            trained = train(step["recipe"], profile=step["profile"], overrides=step["overrides"])
            metrics = {"global_step": trained.global_step, **trained.metrics}
            status = "trained"
        if merged_dir is not None:
            log.info("stage %s: merging into a %s model at %s", name, dtype, merged_dir)
            report = merge(adapter_dir, merged_dir, dtype=dtype, overwrite=True, check=spec.merge_check)
            metrics["merge_no_op"] = report.get("no_op")
        results.append(StageResult(name, adapter_dir, merged_dir, status, round(time.time() - started, 1), metrics))
        _write_summary(output_dir, spec, results)
    _write_summary(output_dir, spec, results)
    return PipelineResult(output_dir, results)


def _read_summary(adapter_dir: Path) -> dict[str, Any]:
    path = adapter_dir / "run_summary.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _write_summary(output_dir: Path, spec: PipelineSpec, results: list[StageResult]) -> None:
    summary = {
        "description": spec.description,
        "stages": [
            {"name": r.name, "status": r.status, "seconds": r.seconds, "adapter": str(r.adapter_dir),
             "merged": str(r.merged_dir) if r.merged_dir else None, "metrics": r.metrics}
            for r in results
        ],
    }
    (output_dir / "pipeline_summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
