"""`tifa-lite pipeline FILE [STAGE.key=value | *.key=value | key=value …]`: run (or resume)
a multi-stage pipeline such as recipes/pipelines/tifa_lite.yaml."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("pipeline", help="run or resume a multi-stage pipeline (CPT → SFT → GRPO → DPO)")
    p.add_argument("pipeline", help="pipeline YAML, e.g. recipes/pipelines/tifa_lite.yaml")
    p.add_argument("overrides", nargs="*", help="STAGE.train.max_steps=2 (one stage), '*.train.max_steps=2' (all), output_dir=DIR")
    p.add_argument("--dry-run", action="store_true", help="print each stage's recipe, base and overrides; train nothing")
    p.set_defaults(handler=run)


def run(args) -> int:
    from tifa_lite.training.pipeline import load_pipeline, plan, run_pipeline

    if args.dry_run:
        spec, pipeline_dir = load_pipeline(args.pipeline, args.overrides)
        for step in plan(spec, pipeline_dir):
            print(f"[{step['name']}] {step['recipe']}" + (f" --profile {step['profile']}" if step["profile"] else ""))
            if step["prepare"]:
                print(f"    prepare: tifa-lite {' '.join(step['prepare'])}")
            for key, value in step["overrides"].items():
                print(f"    {key}={value}")
            print(f"    → adapter {step['adapter_dir']}" + (f", merged {step['merged_dir']}" if step["merged_dir"] else ""))
        return 0
    result = run_pipeline(args.pipeline, args.overrides)
    for stage in result.stages:
        print(f"{stage.name}: {stage.status} ({stage.seconds}s)")
    print(f"done: {result.final_model}")
    return 0
