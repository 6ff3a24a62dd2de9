"""MGRPO (grpo.passes=2): which groups are revised, the revision prompt, merging the two
passes' batches, and a real training step on the tiny model where pass 2 must see the
critique and be scored against the original prompt."""

import math

import pytest
import torch

from tifa_lite.config import load_recipe
from tifa_lite.errors import ConfigError
from tifa_lite.methods.mgrpo import groups_to_revise, merge_batches, revision_prompt


def test_groups_to_revise_takes_each_groups_lowest_below_the_threshold():
    totals = [1.0, 0.0, 1.0, 1.0, 0.5, 2.0]  # three groups of two
    assert groups_to_revise(totals, 2, threshold=1.0) == [1, 4]  # group 1 (1.0, 1.0) passes
    assert groups_to_revise(totals, 2, threshold=None) == [1, 4, 2]  # lowest first, every group
    assert groups_to_revise(totals, 2, threshold=0.0) == []


def test_groups_to_revise_skips_unscorable_rows_and_keeps_a_multiple_of_unit():
    nan = float("nan")
    assert groups_to_revise([nan, nan, nan, 0.2], 2, threshold=1.0) == [3]
    # Three candidates, micro-batches need an even count: the best-scoring candidate is dropped.
    assert groups_to_revise([0.1, 1.0, 0.3, 1.0, 0.2, 1.0], 2, threshold=1.0, unit=2) == [0, 4]


def test_revision_prompt_chat_and_plain():
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    completion = [{"role": "assistant", "content": "5"}]
    out = revision_prompt(prompt, completion, "The final number is wrong.", "Problems: {critique} Again.")
    assert out[:2] == prompt
    assert out[2] == {"role": "assistant", "content": "5"}
    assert out[3] == {"role": "user", "content": "Problems: The final number is wrong. Again."}
    assert revision_prompt("Q: 2+2? A:", " 5", "Wrong.", "{critique} Try again.") == "Q: 2+2? A: 5\n\nWrong. Try again.\n\n"


def test_merge_batches_pads_prompts_left_and_completions_right():
    first = {
        "prompt_ids": torch.tensor([[5, 6]]), "prompt_mask": torch.tensor([[1, 1]]),
        "completion_ids": torch.tensor([[7, 8, 9]]), "completion_mask": torch.tensor([[1, 1, 1]]),
        "advantages": torch.tensor([0.5]), "num_items_in_batch": torch.tensor(3),
    }
    second = {
        "prompt_ids": torch.tensor([[1, 2, 3, 4]]), "prompt_mask": torch.tensor([[1, 1, 1, 1]]),
        "completion_ids": torch.tensor([[7]]), "completion_mask": torch.tensor([[1]]),
        "advantages": torch.tensor([-0.5]), "num_items_in_batch": torch.tensor(1),
    }
    merged = merge_batches(first, second, pad_token_id=0)
    assert merged["prompt_ids"].tolist() == [[0, 0, 5, 6], [1, 2, 3, 4]]
    assert merged["prompt_mask"].tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    assert merged["completion_ids"].tolist() == [[7, 8, 9], [7, 0, 0]]
    assert merged["completion_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert merged["advantages"].tolist() == [0.5, -0.5]
    assert int(merged["num_items_in_batch"]) == 4


def test_merge_batches_rejects_what_it_cannot_merge():
    with pytest.raises(ConfigError, match="different inputs"):
        merge_batches({"a": torch.tensor([1])}, {"b": torch.tensor([1])}, 0)
    with pytest.raises(ConfigError, match="text-only"):
        merge_batches({"pixel_values": torch.zeros(1, 3, 2, 2)}, {"pixel_values": torch.zeros(1, 3, 2, 2)}, 0)


def test_schema_revision_template_needs_the_critique_slot():
    with pytest.raises(Exception, match=r"\{critique\}"):
        load_recipe({"grpo": {"passes": 2, "revision": {"template": "Try again."}}})
    with pytest.raises(Exception, match="passes"):
        load_recipe({"grpo": {"passes": 3}})


def test_mgrpo_refuses_several_processes():
    from tests.methods.test_grpo import run_for
    from tifa_lite.methods.grpo import build_trainer

    config = load_recipe({"train": {"method": "grpo", "per_device_batch_size": 8}, "grpo": {"passes": 2},
                          "quant": {"bits": None}, "distributed": {"world_size": 2, "nproc_per_node": 2}})
    with pytest.raises(ConfigError, match="one process"):
        build_trainer(run_for(config))  # refused before any reward model or data is loaded


def test_second_pass_sees_the_critique_and_is_scored_on_the_original_prompt(tmp_path, tiny_model_dir, sample_data):
    from tests.methods.test_grpo import tiny_run
    from tifa_lite.methods.grpo import build_trainer
    from tifa_lite.methods.mgrpo import MGRPOTrainer

    run = tiny_run(tmp_path, tiny_model_dir, sample_data / "arithmetic" / "train.jsonl",
                   [{"name": "final_number"}, {"name": "repetition", "weight": 0.0}], max_steps=1)
    run.config.grpo.passes = 2
    run.config.grpo.revision.threshold = 1.0  # a random model never gets the number right: every group is revised
    trainer = build_trainer(run)
    assert isinstance(trainer, MGRPOTrainer)

    generated, scored, trained = [], [], []
    generate, score, loss = trainer._generate, trainer.reward_funcs[0].func, trainer._compute_loss
    trainer._generate = lambda prompts: generated.append(prompts) or generate(prompts)
    trainer.reward_funcs[0].func = lambda prompts, **kw: scored.append(prompts) or score(prompts=prompts, **kw)
    trainer._compute_loss = lambda model, inputs: trained.append(inputs["advantages"].shape[0]) or loss(model, inputs)
    trainer.train()

    assert len(generated) == 2, "one generation call per pass"
    first, second = generated
    assert len(first) == 4 and len(second) == 4  # 2 prompts x 2 generations; each group's lowest is revised
    for revised in second:
        original, answer, request = revised[:-2], revised[-2], revised[-1]
        assert original in first
        assert answer["role"] == "assistant"
        assert request["role"] == "user" and "The final number is wrong." in request["content"]
        # weight 0: repetition takes no part in the critique
        assert "repeats itself" not in request["content"]
    # Pass 2's rewards read the original prompts, not the revision dialogue.
    assert scored[1] == [r[:-2] for r in second]
    assert trained == [8], "both passes' groups enter one loss"
    logged = next(h for h in trainer.state.log_history if "mgrpo/pass2_reward" in h)
    assert logged["mgrpo/revised_groups"] == 2.0
    assert math.isfinite(logged["mgrpo/pass2_reward"]) and math.isfinite(logged["mgrpo/pass1_reward"])
    assert logged["mgrpo/pass1_revised/final_number"] == 0.0 and "mgrpo/pass2/repetition" in logged
