"""Fixtures and the one-screen summary of the GPU check (tests/gpu; see support.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import support

_OUTCOMES: dict[str, str] = {}
_HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def gpu_model_dir(tmp_path_factory) -> Path:
    return support.build_model(tmp_path_factory.mktemp("gpu_check_model"))


@pytest.fixture(scope="session")
def t4_sft(gpu_model_dir, tmp_path_factory):
    """QLoRA SFT with the GPU treated as a T4 (TIFA_LITE_NO_BF16=1), watched: the dtypes of one
    training forward, the precision it resolved to, the trainable dtypes after training."""
    return support_run_sft(gpu_model_dir, tmp_path_factory.mktemp("t4_sft") / "run", treat_as_t4=True)


@pytest.fixture(scope="session")
def bf16_sft(gpu_model_dir, tmp_path_factory):
    from tifa_lite.hardware import supports_bf16

    if not supports_bf16():
        pytest.skip("this GPU has no bf16 (compute capability < 8.0): the A10 path cannot run here")
    return support_run_sft(gpu_model_dir, tmp_path_factory.mktemp("bf16_sft") / "run", treat_as_t4=False)


def support_run_sft(model_dir: Path, out: Path, treat_as_t4: bool) -> dict:
    import os

    from tifa_lite.hardware import NO_BF16_ENV, resolve_precision
    from tifa_lite.methods import sft
    from tifa_lite.modeling.dtypes import trainable_dtypes
    from tifa_lite.training.runner import train

    watched: dict = {}
    real_compose = sft.compose_trainer

    def watching_compose(*args, **kwargs):
        trainer = real_compose(*args, **kwargs)
        watched["watch"] = support.DtypeWatch(trainer.model)
        watched["trainer"] = trainer
        watched["attn"] = trainer.model.config._attn_implementation
        watched["norm_dtypes"] = {p.dtype for n, p in trainer.model.named_parameters() if "norm" in n}
        return trainer

    previous = os.environ.get(NO_BF16_ENV)
    os.environ[NO_BF16_ENV] = "1" if treat_as_t4 else "0"
    sft.compose_trainer = watching_compose
    try:
        precision = resolve_precision("auto")
        result = train(support.REPO / "recipes" / "sft_qlora_roleplay.yaml",
                       **support.sft_overrides(model_dir, out, **{"train.precision": "auto", "quant.compute_dtype": "auto"}))
    finally:
        sft.compose_trainer = real_compose
        if previous is None:
            os.environ.pop(NO_BF16_ENV, None)
        else:
            os.environ[NO_BF16_ENV] = previous
    trainer = watched["trainer"]
    return {
        "precision": precision, "result": result, "watch": watched["watch"], "attn": watched["attn"],
        "norm_dtypes": watched["norm_dtypes"], "trainable": trainable_dtypes(trainer.model),
        "args_fp16": trainer.args.fp16, "args_bf16": trainer.args.bf16, "losses": support.losses(result.output_dir),
    }


def pytest_runtest_logreport(report):
    if Path(str(report.fspath)).resolve().parent != _HERE:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _OUTCOMES[report.nodeid.split("::", 1)[1]] = report.outcome


def pytest_terminal_summary(terminalreporter):
    ran = {k: v for k, v in _OUTCOMES.items() if v != "skipped"}
    if not ran:
        return  # every GPU check skipped (no CUDA): pytest -ra already lists each reason
    env = support.Results.environment()
    write = terminalreporter.write_line
    write("")
    write(f"=== GPU check: {env['mode']} | {env['gpu'] or 'CPU'} (cc {env['compute_capability']}) ===")
    write("    " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v))
    for name, outcome in _OUTCOMES.items():
        write(f"  {outcome.upper():8s} {name}")
    for row in support.Results.rows:
        figures = ", ".join(f"{k}={v}" for k, v in row.items() if k != "check")
        write(f"    {row['check']}: {figures}")
    path = support.Results.write(_OUTCOMES)
    if path:
        write(f"    written to {path}")
