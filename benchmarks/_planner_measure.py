"""One measured CPU training run for benchmarks/planner_validation.py (run in a fresh subprocess).

Prints one JSON line: peak RSS (ru_maxrss) of this process, the baseline RSS after the
imports, the RSS after model loading, and the settings. The run goes through the
project's own path: tifa_lite.modeling.load_for_training → tifa_lite.methods.sft
(TRL SFTTrainer) → trainer.train(), with fixed-length rows of real GSM8K text so
every step sees exactly ``seq_len`` tokens per row.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path


def maxrss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def current_rss_gib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**30


def rows_of_text(tokenizer, seq_len: int, count: int, data_file: Path) -> list[dict[str, list[int]]]:
    ids: list[int] = []
    with data_file.open(encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            ids.extend(tokenizer(rec["question"] + "\n" + rec["answer"] + "\n")["input_ids"])
            if len(ids) >= seq_len * count:
                break
    return [
        {"input_ids": ids[i * seq_len:(i + 1) * seq_len], "assistant_masks": [1] * seq_len}
        for i in range(count)
    ]


def main(spec: dict) -> dict:
    import torch  # noqa: F401  (the baseline counts the libraries every run imports)
    import transformers  # noqa: F401
    import trl  # noqa: F401
    import peft  # noqa: F401

    baseline = current_rss_gib()
    from tifa_lite.config import load_recipe
    from tifa_lite.data.build import BuiltData
    from tifa_lite.runplan import resolve_plan
    from tifa_lite.methods.common import Run
    from tifa_lite.methods.sft import trainer_for_data
    from tifa_lite.modeling import load_for_training

    out = Path(tempfile.mkdtemp(prefix="planner_measure_"))
    overrides = {
        "model.name_or_path": "smollm2-135m-instruct",
        "quant.bits": spec["bits"],
        "lora.enabled": spec["lora"],
        "lora.r": spec.get("r", 16),
        "train.per_device_batch_size": spec["batch"],
        "train.gradient_checkpointing": spec["checkpointing"],
        "train.max_steps": spec["steps"],
        "train.save_steps": 10_000,
        "train.logging_steps": 1,
        "train.progress_bar": False,
        "train.output_dir": str(out / "run"),
        "data.max_length": spec["seq_len"],
    }
    config = load_recipe({}, overrides)
    plan = resolve_plan(config)
    model, tokenizer, peft_config = load_for_training(config, plan)
    after_load = current_rss_gib()
    rows = rows_of_text(tokenizer, spec["seq_len"], spec["batch"] * spec["steps"], Path(spec["data_file"]))
    run = Run(config=config, work_dir=out / "run.partial", model=model, tokenizer=tokenizer,
              peft_config=peft_config, plan=plan)
    trainer = trainer_for_data(run, BuiltData(train=rows, eval=[]))
    start = time.time()
    trainer.train()
    return {
        **spec,
        "baseline_rss_gib": baseline,
        "after_load_rss_gib": after_load,
        "peak_rss_gib": maxrss_gib(),
        "train_seconds": round(time.time() - start, 1),
        "precision": plan.precision,
    }


if __name__ == "__main__":
    result = main(json.loads(sys.argv[1]))
    print("RESULT " + json.dumps(result))
