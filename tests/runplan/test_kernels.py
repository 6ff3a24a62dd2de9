"""train.use_liger_kernel: decided in the run plan, passed to TRL only where it runs."""

import pytest

from tifa_lite.config import load_recipe
from tifa_lite.errors import ConfigError
from tifa_lite.hardware import Hardware
from tifa_lite.runplan import resolve_plan
from tifa_lite.runplan.kernels import select_liger

CPU = Hardware(device="cpu", gpu_name=None, bf16=False, gpu_count=0, total_memory_gib=None)
GPU = Hardware(device="cuda", gpu_name="NVIDIA A10", bf16=True, gpu_count=1, total_memory_gib=22.06)


def test_off_unless_asked():
    assert select_liger(False, device="cuda", importable=(True, "")) == (False, None)


def test_cpu_runs_without_it_and_says_so():
    used, note = select_liger(True, device="cpu", importable=(True, ""))
    assert not used and "need a CUDA GPU" in note


def test_cuda_without_the_package_stops_before_loading():
    with pytest.raises(ConfigError, match=r"train.use_liger_kernel=true but liger-kernel .* not installed.*pip install liger-kernel"):
        select_liger(True, device="cuda", importable=(False, "liger-kernel (>= 0.3.0) is not installed"))
    assert select_liger(True, device="cuda", importable=(True, "")) == (True, None)


def test_plan_records_it_and_trl_gets_it(tmp_path, monkeypatch):
    from trl import SFTConfig

    from tifa_lite.methods.common import Run, make_config

    config = load_recipe({}, ["train.use_liger_kernel=true"])
    plan = resolve_plan(config, hardware=CPU)
    assert plan.liger_kernel is False and any("Liger" in s for s in plan.substitutes)
    run = Run(config=config, work_dir=tmp_path, model=None, tokenizer=None, peft_config=None, plan=plan)
    assert make_config(SFTConfig, run).use_liger_kernel is False

    monkeypatch.setattr("tifa_lite.runplan.kernels.liger_importable", lambda: (True, ""))
    monkeypatch.setattr("tifa_lite.modeling.attention.flash_attention_2_usable", lambda: False)
    plan = resolve_plan(config, hardware=GPU)
    assert plan.liger_kernel is True and "Liger kernels" in plan.describe()[2]
    assert plan.to_dict()["liger_kernel"] is True


def test_a_run_resumes_with_the_kernels_switched():
    """Like the attention kernel: the same optimisation, so a resumed run may turn Liger on or off."""
    from tifa_lite.training.resume import differing_keys

    assert differing_keys({"train": {"use_liger_kernel": False}}, {"train": {"use_liger_kernel": True}}) == []
