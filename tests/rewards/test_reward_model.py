"""``reward_model``: a train.method=reward output scoring GRPO completions (tiny models)."""

import json
import math
import statistics
from pathlib import Path

import pytest

from tifa_lite.config import load_recipe
from tifa_lite.errors import ConfigError
from tifa_lite.rewards import build_rewards
from tifa_lite.runplan import resolve_plan

REPO = Path(__file__).resolve().parents[2]
PROMPT = [{"role": "system", "content": "You are Sheldon."}, {"role": "user", "content": "Leonard: Penny is here."}]


@pytest.fixture(scope="module")
def reward_adapter(tiny_model_dir, sample_data, tmp_path_factory):
    """A real train.method=reward output (LoRA SEQ_CLS adapter + score head) from one step."""
    from tifa_lite.training.runner import train

    out = tmp_path_factory.mktemp("rm") / "reward"
    train(REPO / "recipes" / "reward_qlora_hh.yaml", overrides={
        "model.name_or_path": str(tiny_model_dir), "quant.bits": None, "lora.r": 4, "lora.alpha": 8,
        "data.path": str(sample_data / "hh_rlhf_sample.jsonl"), "data.limit": 4, "data.max_length": 128,
        "data.eval_ratio": 0.0, "train.eval_steps": None, "train.max_steps": 1, "train.per_device_batch_size": 2,
        "train.gradient_accumulation_steps": 1, "train.gradient_checkpointing": False, "train.progress_bar": False,
        "train.output_dir": str(out), "train.precision": "fp32",
    })
    return out


def reward_for(path, **kwargs):
    return build_rewards([{"name": "reward_model", "kwargs": {"path": str(path), **kwargs}}]).funcs[0]


def completions(*texts):
    return [[{"role": "assistant", "content": t}] for t in texts]


def test_scores_change_with_the_completion(reward_adapter):
    reward = reward_for(reward_adapter, batch_size=2)
    assert reward.__name__ == "reward_model"
    texts = ["Bazinga!", "I am a helpful AI assistant.", "Bazinga!"]
    scores = reward(prompts=[PROMPT] * 3, completions=completions(*texts))
    assert len(scores) == 3 and all(math.isfinite(s) for s in scores)
    assert scores[0] != scores[1], "different replies must score differently"
    assert scores[0] == pytest.approx(scores[2], abs=1e-5), "batching must not change a score"


def test_standardize_gives_mean_zero_unit_spread(reward_adapter):
    reward = reward_for(reward_adapter, standardize=True)
    scores = reward(prompts=[PROMPT] * 4, completions=completions("Bazinga!", "No.", "Hello there, Penny.", "Hmm"))
    assert statistics.fmean(scores) == pytest.approx(0.0, abs=1e-5)
    assert statistics.pstdev(scores) == pytest.approx(1.0, abs=1e-3)


def test_renders_with_the_policys_chat_template(reward_adapter, tiny_model_dir):
    from transformers import AutoTokenizer

    policy = AutoTokenizer.from_pretrained(tiny_model_dir)
    policy.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    reward = build_rewards([{"name": "reward_model", "kwargs": {"path": str(reward_adapter)}}],
                           context={"policy_tokenizer": policy}).funcs[0]
    text = reward.func.render(PROMPT, completions("Bazinga!")[0])
    assert text == "[system] You are Sheldon.\n[user] Leonard: Penny is here.\n[assistant] Bazinga!\n"


def test_a_merged_classification_model_loads_too(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.num_labels = 1
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "merged")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "merged")
    scores = reward_for(tmp_path / "merged")(prompts=[PROMPT] * 2, completions=completions("Yes.", "No, never."))
    assert len(scores) == 2 and scores[0] != scores[1]


def test_what_is_not_a_reward_model_is_refused(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="does not exist.*reward_qlora_hh"):
        reward_for(tmp_path / "missing")
    with pytest.raises(ConfigError, match="neither a reward-model adapter nor a sequence-classification"):
        reward_for(tiny_model_dir)  # a causal LM: its score head would be random
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "adapter_config.json").write_text(json.dumps({"task_type": "CAUSAL_LM"}))
    with pytest.raises(ConfigError, match="CAUSAL_LM adapter, not a reward model"):
        reward_for(tmp_path / "sft")


def test_roleplay_recipe_trains_a_step_with_the_reward_model(reward_adapter, tiny_model_dir, tmp_path):
    from tifa_lite.methods.common import Run
    from tifa_lite.methods.grpo import build_trainer, check_batch
    from tifa_lite.modeling import load_for_training

    recipe = REPO / "recipes" / "grpo_roleplay_rm.yaml"
    shipped = load_recipe(recipe)
    assert [r.name for r in shipped.grpo.rewards] == ["reward_model", "repetition", "length"]
    check_batch(Run(config=shipped, work_dir=tmp_path, model=None, tokenizer=None, peft_config=None, plan=resolve_plan(shipped)))

    config = load_recipe(recipe, {
        "model.name_or_path": str(tiny_model_dir), "quant.bits": None, "lora.r": 4, "lora.alpha": 8,
        "data.path": str(REPO / "data" / "roleplay_sheldon_sample.jsonl"), "data.limit": 4,
        "train.max_steps": 1, "train.per_device_batch_size": 2, "train.gradient_accumulation_steps": 1,
        "train.gradient_checkpointing": False, "train.progress_bar": False, "train.output_dir": str(tmp_path / "out"),
        "grpo.num_generations": 2, "grpo.max_completion_length": 8,
        "grpo.rewards": [{"name": "reward_model", "kwargs": {"path": str(reward_adapter), "standardize": True}},
                         {"name": "repetition", "weight": 0.5}, {"name": "length", "weight": 0.5}],
    })
    model, tokenizer, peft = load_for_training(config)
    trainer = build_trainer(Run(config=config, work_dir=tmp_path / "work", model=model, tokenizer=tokenizer,
                                peft_config=peft, plan=resolve_plan(config)))
    trainer.train()
    logged = next(h for h in trainer.state.log_history if "rewards/reward_model/mean" in h)
    assert logged["rewards/reward_model/std"] > 0  # standardised scores of different replies
