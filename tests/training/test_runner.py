"""train() end to end on a tiny random Llama (seconds): every method variant writes the
documented outputs, and failures leave no output folder behind."""

import json
from pathlib import Path

import pytest

from tifa_lite import train
from tifa_lite.config.loader import RECIPES_DIR
from tifa_lite.errors import ConfigError, DataError
from tifa_lite.training.runner import partial_dir

ROLEPLAY = RECIPES_DIR / "sft_qlora_roleplay.yaml"
CPT = RECIPES_DIR / "cpt_qlora_novel.yaml"


def tiny_overrides(model_dir, out, sample_data, **extra):
    base = {
        "model.name_or_path": str(model_dir),
        "train.output_dir": str(out),
        "train.max_steps": 3,
        "train.per_device_batch_size": 2,
        "train.gradient_accumulation_steps": 1,
        "train.global_batch_size": None,
        "train.logging_steps": 1,
        "train.gradient_checkpointing": False,
        "data.path": str(sample_data / "roleplay_sheldon_sample.jsonl"),
        "data.limit": 24,
        "data.max_length": 256,
        "lora.r": 4,
        "lora.alpha": 8,
    }
    base.update(extra)
    return base


@pytest.fixture
def observed(monkeypatch):
    """The rows of every training batch our collator builds, and the decoder layers' MLP
    forward calls in training (activation checkpointing runs each layer's forward again in
    the backward). The MLP, not the layer: replacing the layer's forward would drop
    transformers' checkpointing wrapper. Evaluation (its batches and forwards) is left out."""
    from transformers import Trainer
    from transformers.models.llama.modeling_llama import LlamaMLP

    from tifa_lite.data.tokenize import PaddingCollator

    seen = {"batch_lengths": [], "layer_forwards": 0, "evaluating": False}
    collate, forward, evaluate = PaddingCollator.__call__, LlamaMLP.forward, Trainer.evaluate

    def recording_collate(self, rows):
        if not seen["evaluating"]:
            seen["batch_lengths"].append([len(r["input_ids"]) for r in rows])
        return collate(self, rows)

    def counting_forward(self, *args, **kwargs):
        seen["layer_forwards"] += not seen["evaluating"]
        return forward(self, *args, **kwargs)

    def flagged_evaluate(self, *args, **kwargs):
        seen["evaluating"] = True
        try:
            return evaluate(self, *args, **kwargs)
        finally:
            seen["evaluating"] = False

    monkeypatch.setattr(PaddingCollator, "__call__", recording_collate)
    monkeypatch.setattr(LlamaMLP, "forward", counting_forward)
    monkeypatch.setattr(Trainer, "evaluate", flagged_evaluate)
    return seen


def assert_length_grouped(batch_lengths):
    """Batches are runs of neighbouring lengths (length_grouped_order), not random draws."""
    ranges = sorted((min(b), max(b)) for b in batch_lengths)
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(ranges, ranges[1:])), ranges


def assert_run_outputs(out: Path, adapter: bool = True):
    assert out.is_dir() and not partial_dir(out).exists()
    names = {p.name for p in out.iterdir()}
    expected = {"resolved_config.yaml", "metrics.jsonl", "loss_curve.png", "tokenizer.json", "data_report.json"}
    expected |= {"adapter_model.safetensors", "adapter_config.json"} if adapter else {"model.safetensors", "config.json"}
    assert expected <= names, expected - names
    assert not any(name.startswith("checkpoint-") for name in names)  # a finished run drops them
    losses = [row["loss"] for row in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in row]
    assert len(losses) == 3 and all(loss > 0 for loss in losses)


def test_qlora_sft_from_the_shipped_recipe(tiny_model_dir, tmp_path, sample_data, observed):
    result = train(ROLEPLAY, **tiny_overrides(tiny_model_dir, tmp_path / "run", sample_data))
    assert result.global_step == 3 and result.config.is_qlora
    assert_run_outputs(result.output_dir)
    # train.gradient_checkpointing=false: one forward per layer (2) per step (3), no recomputation.
    assert observed["layer_forwards"] == 2 * 3
    assert_length_grouped(observed["batch_lengths"])
    report = json.loads((result.output_dir / "data_report.json").read_text())
    assert report["train_samples"] > 0 and report["trained_tokens"] < report["train_tokens"]


def test_plain_lora_and_packing(tiny_model_dir, tmp_path, sample_data, observed):
    result = train(ROLEPLAY, **tiny_overrides(tiny_model_dir, tmp_path / "run", sample_data,
                                              **{"quant.bits": None, "train.packing": True, "data.max_length": 1024}))
    assert_run_outputs(result.output_dir)
    assert_length_grouped(observed["batch_lengths"])  # packed rows differ in length too
    report = json.loads((result.output_dir / "data_report.json").read_text())
    assert report["packed_rows"] < report["train_samples"]


def test_full_fine_tuning_by_keys(tiny_model_dir, tmp_path, sample_data, observed):
    result = train(ROLEPLAY, **tiny_overrides(tiny_model_dir, tmp_path / "run", sample_data,
                                              **{"quant.bits": None, "lora.enabled": False,
                                                 "train.gradient_checkpointing": True}))
    assert_run_outputs(result.output_dir, adapter=False)
    # Checkpointing on: each layer's forward runs again in the backward.
    assert observed["layer_forwards"] == 2 * 2 * 3


def test_continued_pretraining_on_text(tiny_model_dir, tmp_path, sample_data):
    overrides = tiny_overrides(tiny_model_dir, tmp_path / "run", sample_data,
                               **{"data.path": str(sample_data / "novel_sample.txt"), "data.max_length": 128,
                                  "data.eval_ratio": 0.0})
    result = train(CPT, **overrides)
    assert_run_outputs(result.output_dir)
    report = json.loads((result.output_dir / "data_report.json").read_text())
    assert report["blocks"] >= 6 and report["documents"] == 1


def test_bad_data_leaves_no_output(tiny_model_dir, tmp_path, sample_data):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n{oops\n')
    out = tmp_path / "run"
    with pytest.raises(DataError, match=rf"{bad}:2: malformed JSON"):
        train(ROLEPLAY, **tiny_overrides(tiny_model_dir, out, sample_data, **{"data.path": str(bad), "data.limit": None}))
    assert not out.exists() and not partial_dir(out).exists()


def test_skip_bad_lines_and_count_overlength(tiny_model_dir, tmp_path, sample_data):
    good = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]}'
    long = json.dumps({"messages": [{"role": "user", "content": "word " * 400}, {"role": "assistant", "content": "ok"}]})
    data = tmp_path / "mixed.jsonl"
    data.write_text("\n".join([good] * 6 + ["{oops", '{"messages": [{"role": "user", "content": "x"}]}', long]) + "\n")
    result = train(ROLEPLAY, **tiny_overrides(tiny_model_dir, tmp_path / "run", sample_data, **{
        "data.path": str(data), "data.limit": None, "data.on_error": "skip", "data.overlength": "drop", "data.eval_ratio": 0.0,
        "data.max_length": 64}))
    report = json.loads((result.output_dir / "data_report.json").read_text())
    assert report["train_samples"] == 6
    assert report["skipped"] == {"malformed JSON": 1, "invalid conversation": 1}
    assert report["overlength_dropped"] == 1


def test_truncation_that_leaves_nothing_to_train_says_so(tiny_model_dir, tmp_path, sample_data):
    with pytest.raises(DataError, match=r"kept no assistant token after truncation to data.max_length=32"):
        train(ROLEPLAY, **tiny_overrides(tiny_model_dir, tmp_path / "run", sample_data, **{"data.max_length": 32}))
    assert not (tmp_path / "run.partial").exists()


def test_missing_data_file_is_a_clear_error(tiny_model_dir, tmp_path, sample_data):
    with pytest.raises(DataError, match="data.path: .*nope.jsonl does not exist"):
        train(ROLEPLAY, **tiny_overrides(tiny_model_dir, tmp_path / "run", sample_data,
                                         **{"data.path": str(tmp_path / "nope.jsonl")}))


def test_finished_output_folder_is_not_overwritten(tiny_model_dir, tmp_path, sample_data):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(ConfigError, match="already holds a finished run"):
        train(ROLEPLAY, **tiny_overrides(tiny_model_dir, out, sample_data))
    assert (out / "keep.txt").read_text() == "precious"


def test_short_run_leaves_its_curve_and_evaluates_held_out_rows_at_the_end(tiny_model_dir, tmp_path, sample_data):
    """Fewer steps than train.logging_steps, data.eval_ratio > 0 and no train.eval_steps (what
    the role-play, CPT, CoT and hh DPO recipes do): the last step is logged and evaluated."""
    result = train(ROLEPLAY, **tiny_overrides(tiny_model_dir, tmp_path / "run", sample_data, **{
        "train.max_steps": 2, "train.logging_steps": 5, "data.limit": 8, "data.eval_ratio": 0.25}))
    out = result.output_dir
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"] > 0) for r in rows if "loss" in r] == [(2, True)]
    evals = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in evals] == [2] and evals[0]["eval_loss"] > 0
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["eval_loss"] == evals[0]["eval_loss"] == result.metrics["eval_loss"]
    assert summary["train_loss"] == result.metrics["train_loss"] > 0
    assert (out / "loss_curve.png").stat().st_size > 0
    report = json.loads((out / "data_report.json").read_text())
    assert report["eval_samples"] == 2


def test_only_rank_0_touches_the_shared_staging_folder(tmp_path, monkeypatch):
    """Under a launcher: with train.resume=never rank 0 deletes the old staging folder and
    rewrites its files before it releases the others from the barrier; another rank never
    deletes or writes there (it may be writing checkpoint shards into it at any time)."""
    from tifa_lite.training import runner
    from tifa_lite.config import load_recipe
    from tifa_lite.distributed import runtime
    from tifa_lite.training.outputs import MetricsRecorder

    work = tmp_path / "run.partial"
    (work / "checkpoint-3").mkdir(parents=True)
    (work / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    at_barrier = []
    monkeypatch.setattr(runtime, "barrier", lambda: at_barrier.append(sorted(p.name for p in work.iterdir())))
    config = load_recipe(ROLEPLAY, ["train.resume=never", f"train.output_dir={tmp_path / 'run'}"])

    monkeypatch.setenv("RANK", "1")
    runner._prepare_work_dir(config, work, None)
    MetricsRecorder(work / "metrics.jsonl")  # a fresh run's recorder on rank 1
    assert at_barrier == [["checkpoint-3", "metrics.jsonl"]]
    assert sorted(p.name for p in work.iterdir()) == ["checkpoint-3", "metrics.jsonl"]

    monkeypatch.setenv("RANK", "0")
    at_barrier.clear()
    runner._prepare_work_dir(config, work, None)
    assert at_barrier == [["resolved_config.yaml"]]  # the old run was gone before anyone went on


def test_overwrite_that_fails_half_way_keeps_the_old_run(tiny_model_dir, tmp_path, sample_data, monkeypatch):
    """train.overwrite_output_dir: the old run is renamed aside, the new one renamed in; when
    the second rename fails the old run is back in place and the new one stays resumable."""
    from tifa_lite import atomic

    out = tmp_path / "run"
    out.mkdir()
    (out / "old_run.txt").write_text("the previous run")
    real_replace = atomic.os.replace

    def failing_replace(src, dst):
        if Path(src) == partial_dir(out):
            raise OSError("rename refused")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename refused"):
        train(ROLEPLAY, **tiny_overrides(tiny_model_dir, out, sample_data, **{
            "train.overwrite_output_dir": True, "train.max_steps": 1, "train.save_steps": 1}))
    assert sorted(p.name for p in out.iterdir()) == ["old_run.txt"]
    new = partial_dir(out)
    assert (new / "adapter_model.safetensors").is_file() and (new / "checkpoint-1").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "run.partial"]
