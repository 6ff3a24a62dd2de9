"""A run killed with SIGKILL mid-training, started again with the same command, resumes
from its last complete checkpoint (left intact) and reaches the same final step."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tifa_lite.config.loader import RECIPES_DIR
from tifa_lite.runner import partial_dir


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_sigkill_then_same_command_resumes(tiny_model_dir, tmp_path, sample_data):
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "tifa_lite", "train", str(RECIPES_DIR / "sft_qlora_roleplay.yaml"),
        f"model.name_or_path={tiny_model_dir}", f"train.output_dir={out}", "train.max_steps=8",
        "train.save_steps=2", "train.save_total_limit=null", "train.per_device_batch_size=2",
        "train.gradient_accumulation_steps=1", "train.global_batch_size=null", "train.gradient_checkpointing=false", "train.logging_steps=1",
        f"data.path={sample_data / 'roleplay_sheldon_sample.jsonl'}", "data.limit=40", "data.max_length=512",
        "quant.bits=null", "lora.r=4", "train.progress_bar=false", "train.keep_checkpoints=true",
    ]
    work = partial_dir(out)
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(command, stdout=log, stderr=log)
    deadline = time.time() + 900
    # Kill once checkpoint-4 is complete, i.e. mid-way between checkpoints at the latest.
    while not (work / "checkpoint-4" / "trainer_state.json").is_file():
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.time() < deadline
        time.sleep(0.5)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert not out.exists(), "a killed run must not look finished"
    checkpoints = sorted(p.name for p in work.glob("checkpoint-*"))
    latest = max(checkpoints, key=lambda name: int(name.split("-")[1]))
    before = digest(work / latest)

    second = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"resuming from {work / latest}" in second.stderr
    assert (out / "adapter_model.safetensors").is_file() and not work.exists()
    import json

    state = json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    assert digest(out / latest) == before  # the checkpoint it resumed from is intact
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 8
