import math

import pytest

from tifa_lite.config import load_recipe
from tifa_lite.errors import ConfigError
from tifa_lite.methods import get_method
from tifa_lite.methods.common import Run
from tifa_lite.modeling import load_for_training
from tifa_lite.runplan import resolve_plan


def make_run(model_dir, sample_data, tmp_path, **overrides):
    items = {
        "model.name_or_path": str(model_dir), "data.path": str(sample_data / "hh_rlhf_sample.jsonl"),
        "data.max_length": 256, "data.limit": 8, "data.eval_ratio": 0.25,
        "train.max_steps": 2, "train.per_device_batch_size": 2, "train.gradient_checkpointing": False,
        "train.progress_bar": False, "train.output_dir": str(tmp_path / "out"), "train.eval_steps": 2,
        "lora.r": 4, "lora.alpha": 8,
    }
    items.update(overrides)
    config = load_recipe("recipes/reward_qlora_hh.yaml", items)
    model, tokenizer, peft_config = load_for_training(config)
    return Run(config=config, work_dir=tmp_path / "work", model=model, tokenizer=tokenizer,
               peft_config=peft_config, plan=resolve_plan(config))


def test_reward_trainer_on_qlora_seq_cls_head(tiny_model_dir, sample_data, tmp_path):
    run = make_run(tiny_model_dir, sample_data, tmp_path)
    trainer = get_method("reward").build_trainer(run)
    assert type(trainer).__name__ == "RewardTrainer"
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert any("score" in n for n in trainable) and any("lora_" in n for n in trainable)
    output = trainer.train()
    assert math.isfinite(output.training_loss)
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0


def test_reward_needs_a_classification_model(tiny_model_dir, sample_data, tmp_path):
    run = make_run(tiny_model_dir, sample_data, tmp_path)
    config = load_recipe("recipes/dpo_qlora_hh.yaml", {"model.name_or_path": str(tiny_model_dir), "quant.bits": None})
    causal, _, _ = load_for_training(config)
    run.model = causal
    with pytest.raises(ConfigError, match="one-logit sequence-classification"):
        get_method("reward").build_trainer(run)


@pytest.mark.slow
def test_reward_recipe_end_to_end_and_preference_eval(sample_data, tmp_path):
    from tifa_lite.evaluation.preference import evaluate_preference_files
    from tifa_lite.training.runner import train

    result = train("recipes/reward_qlora_hh.yaml", overrides={
        "model.name_or_path": "smollm2-135m-instruct", "data.max_length": 192, "data.limit": 8,
        "data.eval_ratio": 0.0, "train.eval_steps": None,
        "train.max_steps": 2, "train.per_device_batch_size": 2, "train.gradient_accumulation_steps": 1,
        "train.gradient_checkpointing": False, "train.output_dir": str(tmp_path / "rm"), "train.progress_bar": False,
    })
    assert result.global_step == 2 and (result.output_dir / "adapter_config.json").is_file()
    scored = evaluate_preference_files(str(sample_data / "hh_rlhf_sample.jsonl"), adapter=str(result.output_dir),
                                       limit=4, max_length=192)
    assert scored["kind"] == "reward_model" and scored["n"] == 4
