"""A quiet start: one line per stage and the trainer's bar; the libraries' bars, notices and
deprecation warnings only with --verbose. Run as a user runs it, in a fresh process."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOISE = ["Loading weights", "FutureWarning", "DeprecationWarning", "kernels-community", "Setting accelerator to CPU",
         "pin_memory", "Tokenizing", "Writing model shards"]
STAGES = ["model resolved: ", "model loaded: ", "data built: ", "trainer ready: "]


def tifa_lite(*args, cwd=REPO):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TIFA_LITE_VERBOSE", None)
    proc = subprocess.run([sys.executable, "-m", "tifa_lite", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_training_prints_one_line_per_stage_and_no_library_noise(tiny_model_dir, sample_data, tmp_path):
    output = tifa_lite(
        "train", "recipes/sft_qlora_roleplay.yaml", f"model.name_or_path={tiny_model_dir}",
        f"data.path={sample_data / 'roleplay_sheldon_sample.jsonl'}", "data.limit=8", "data.max_length=256",
        "train.max_steps=1", "train.per_device_batch_size=2", "train.gradient_accumulation_steps=1",
        "train.global_batch_size=null", "train.gradient_checkpointing=false", "lora.r=4",
        f"train.output_dir={tmp_path / 'run'}",
    )
    lines = output.replace("\r", "\n").splitlines()
    found = [next(i for i, line in enumerate(lines) if line.startswith(s)) for s in STAGES]
    assert found == sorted(found) and all(sum(line.startswith(s) for line in lines) == 1 for s in STAGES)
    assert "4-bit NF4" in lines[found[1]] and "eval at the end" in lines[found[3]]
    assert [n for n in NOISE if n in output] == []


def test_verbose_installs_no_filter(monkeypatch, capsys):
    """What --verbose turns off is what the test above finds absent: every filter at once."""
    import logging
    import warnings

    from tifa_lite import console
    from tifa_lite.cli import main

    monkeypatch.setitem(console._state, "verbose", False)
    assert main(["--verbose", "config", "recipes/sft_qlora_roleplay.yaml"]) == 0 and console.is_verbose()
    monkeypatch.setitem(console._state, "quiet", False)
    filters, level = list(warnings.filters), logging.getLogger("bitsandbytes").level
    deepspeed_filters = list(logging.getLogger("DeepSpeed").filters)
    console.quiet_libraries()
    assert warnings.filters == filters and logging.getLogger("bitsandbytes").level == level
    assert logging.getLogger("DeepSpeed").filters == deepspeed_filters
