"""GRPO method: generation-backend selection, batch checks, TRL config mapping, and
training steps through TRL's GRPOTrainer (tiny model; the real one in the slow test)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tifa_lite.config import load_recipe
from tifa_lite.errors import ConfigError
from tifa_lite.methods.common import Run
from tifa_lite.methods.grpo import check_batch, grpo_args, reward_specs
from tifa_lite.runplan.generation import select_vllm
from tifa_lite.rewards import R1_ZERO_REWARDS, RewardError
from tifa_lite.runplan import resolve_plan

REPO = Path(__file__).resolve().parents[2]


def run_for(cfg, tmp_path=Path("/tmp/unused"), model=None, tokenizer=None, peft=None, hardware=None):
    return Run(config=cfg, work_dir=tmp_path, model=model, tokenizer=tokenizer, peft_config=peft,
               plan=resolve_plan(cfg, hardware=hardware))


def test_vllm_colocate_gets_no_transformers_only_generation_kwargs(tmp_path, monkeypatch):
    """TRL merges generation_kwargs into vLLM's SamplingParams(**kwargs): use_cache there
    is a TypeError at the first generation."""
    from tifa_lite.hardware import Hardware
    from tifa_lite.runplan import generation

    monkeypatch.setattr(generation, "vllm_importable", lambda: True)
    a10 = Hardware(device="cuda", gpu_name="NVIDIA A10", bf16=True, gpu_count=1, total_memory_gib=22.06)
    # vLLM takes a 16-bit base only (a 4-bit one falls back: tests/runplan/test_generation.py).
    cfg = load_recipe(REPO / "recipes" / "grpo_qlora_t4.yaml", ["quant.bits=null"])
    args = grpo_args(run_for(cfg, tmp_path, hardware=a10), [1.0] * 5)
    assert args.use_vllm and args.vllm_mode == "colocate"
    assert not args.generation_kwargs
    # Without it vLLM reserves a KV cache for the model's whole context (32k for Qwen2.5).
    assert args.vllm_max_model_length == cfg.grpo.max_prompt_length + cfg.grpo.max_completion_length


def test_check_batch():
    cfg = load_recipe({"train": {"method": "grpo", "per_device_batch_size": 3, "gradient_accumulation_steps": 1},
                       "grpo": {"num_generations": 2}})
    with pytest.raises(ConfigError, match="not a multiple of grpo.num_generations=2"):
        check_batch(run_for(cfg))
    cfg = load_recipe({"train": {"method": "grpo", "per_device_batch_size": 2, "gradient_accumulation_steps": 4},
                       "grpo": {"num_generations": 8}})
    check_batch(run_for(cfg))  # 8 completions per step: one group
    halves = load_recipe({"train": {"method": "grpo", "per_device_batch_size": 2, "gradient_accumulation_steps": 4},
                          "grpo": {"num_generations": 8, "steps_per_generation": 2}})
    with pytest.raises(ConfigError, match=r"grpo.steps_per_generation\*distributed.world_size = 4 completions per "
                                          r"generation is not a multiple of grpo.num_generations=8"):
        check_batch(run_for(halves))
    cfg.data.eval_ratio = 0.1
    with pytest.raises(ConfigError, match="evaluation needs"):
        check_batch(run_for(cfg))


def test_grpo_args_map_the_recipe(tmp_path):
    cfg = load_recipe(REPO / "recipes" / "grpo_qwen2.5-0.5b_gsm8k.yaml")
    args = grpo_args(run_for(cfg, tmp_path), [1.0, 0.5, 0.5, 0.5, 2.0])
    assert (args.learning_rate, args.adam_beta1, args.adam_beta2, args.weight_decay) == (5e-6, 0.9, 0.99, 0.1)
    warmup = getattr(args, "warmup_ratio", None) or args.warmup_steps  # transformers 5: a float < 1 is a ratio
    assert (warmup, args.lr_scheduler_type, args.max_grad_norm) == (0.1, "cosine", 0.1)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.num_generations) == (8, 4, 8)
    assert args.max_completion_length == 200
    assert args.reward_weights == [1.0, 0.5, 0.5, 0.5, 2.0]
    assert args.use_vllm is select_vllm("auto")
    # Nothing transformers-only: TRL hands generation_kwargs to vLLM's SamplingParams as well.
    assert not args.generation_kwargs
    # The write-up's TRL: per-sequence normalisation, beta 0.04, group-std advantages, and no
    # TRL 1.16 addition that would change the update.
    assert (args.loss_type, args.beta, args.scale_rewards, args.temperature, args.top_p) == ("grpo", 0.04, "group", 0.9, 1.0)
    assert (args.num_iterations, args.use_bias_correction_kl, args.vllm_importance_sampling_correction) == (1, False, False)
    assert (args.mask_truncated_completions, args.top_entropy_quantile, args.entropy_coef, args.top_k) == (False, 1.0, 0.0, 0)
    assert args.steps_per_generation == args.gradient_accumulation_steps


# The write-up's system prompt, as its notebook sets it.
WRITE_UP_SYSTEM_PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The assistant "
    "first thinks about the reasoning process in the mind and then provides the user with the answer. The reasoning "
    "process and answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., "
    "<think> reasoning process here </think><answer> answer here </answer>"
)


def test_reproduction_recipe_prompts_with_the_write_ups_system_prompt(tmp_path):
    from tifa_lite.data.gsm8k import load_prompt_rows

    cfg = load_recipe(REPO / "recipes" / "grpo_qwen2.5-0.5b_gsm8k.yaml")
    assert cfg.data.system_prompt == WRITE_UP_SYSTEM_PROMPT
    f = tmp_path / "g.jsonl"
    f.write_text(json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n", encoding="utf-8")
    cfg.data.path, cfg.data.source = str(f), "local"
    [row] = load_prompt_rows(cfg, str(f))
    assert row["prompt"][0] == {"role": "system", "content": WRITE_UP_SYSTEM_PROMPT}


def test_trl_args_pass_through_and_unknown_names_fail(tmp_path):
    cfg = load_recipe({"train": {"method": "grpo", "per_device_batch_size": 8},
                       "grpo": {"trl_args": {"epsilon_high": 0.28, "mask_truncated_completions": True}}})
    args = grpo_args(run_for(cfg, tmp_path), [1.0])
    assert (args.epsilon_high, args.mask_truncated_completions) == (0.28, True)
    cfg.grpo.trl_args = {"max_prompt_lenght": 9}
    with pytest.raises(ConfigError, match="max_prompt_lenght"):
        grpo_args(run_for(cfg, tmp_path), [1.0])


def test_trl_args_from_yaml_are_typed_by_grpo_config(tmp_path):
    """PyYAML reads 2e-1 as a string; it reaches TRL as the float its field declares."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  method: grpo\n  per_device_batch_size: 8\n"
                      "grpo:\n  trl_args:\n    epsilon_high: 2e-1\n    num_iterations: '2'\n", encoding="utf-8")
    cfg = load_recipe(recipe)
    assert cfg.grpo.trl_args["epsilon_high"] == "2e-1"
    args = grpo_args(run_for(cfg, tmp_path), [1.0])
    assert (args.epsilon_high, args.num_iterations) == (0.2, 2) and type(args.epsilon_high) is float


def test_trl_args_unknown_wrong_type_or_set_twice_name_the_recipe_key(tmp_path):
    cfg = load_recipe({"train": {"method": "grpo", "per_device_batch_size": 8}})
    cases = [
        ({"epsilon_hihg": 0.2}, r"grpo.trl_args.epsilon_hihg: trl.GRPOConfig has no setting .*did you mean 'epsilon_high'"),
        ({"num_iterations": "two"}, r"grpo.trl_args.num_iterations='two': trl.GRPOConfig expects int"),
        ({"beta": 0.2}, r"grpo.trl_args.beta: the recipe already sets trl.GRPOConfig.beta through grpo.beta; set it there"),
        ({"learning_rate": 0.2}, r"grpo.trl_args.learning_rate: .* through train.learning_rate"),
    ]
    for trl_args, message in cases:
        cfg.grpo.trl_args = trl_args
        with pytest.raises(ConfigError, match=message):
            grpo_args(run_for(cfg, tmp_path), [1.0])
    cfg.grpo.trl_args = {"generation_kwargs": {"top_k": 20}}  # ours sets none (vLLM rejects transformers-only keys)
    assert grpo_args(run_for(cfg, tmp_path), [1.0]).generation_kwargs == {"top_k": 20}


def test_trl_post_init_errors_become_config_errors_naming_the_keys(tmp_path):
    cfg = load_recipe({"train": {"method": "grpo", "per_device_batch_size": 8},
                       "grpo": {"steps_per_generation": 2, "trl_args": {"generation_batch_size": 16}}})
    with pytest.raises(ConfigError, match=r"^grpo.trl_args.generation_batch_size, grpo.steps_per_generation: "
                                          r"trl.GRPOConfig refused these settings: .*can not be both configured"):
        grpo_args(run_for(cfg, tmp_path), [1.0])
    cfg.grpo.trl_args = {"log_completions_hub_repo": "me/completions"}
    with pytest.raises(ConfigError, match=r"grpo.trl_args.log_completions_hub_repo, grpo.log_completions: "):
        grpo_args(run_for(cfg, tmp_path), [1.0])


def test_steps_per_generation_is_a_typed_key_trl_args_cannot_shadow(tmp_path):
    cfg = load_recipe({"train": {"method": "grpo", "per_device_batch_size": 4, "gradient_accumulation_steps": 4},
                       "grpo": {"num_generations": 4, "steps_per_generation": 2}})
    args = grpo_args(run_for(cfg, tmp_path), [1.0] * 5)
    assert (args.steps_per_generation, args.generation_batch_size) == (2, 8)
    default = grpo_args(run_for(load_recipe({"train": {"method": "grpo", "per_device_batch_size": 4,
                                                       "gradient_accumulation_steps": 4}}), tmp_path), [1.0] * 5)
    assert (default.steps_per_generation, default.generation_batch_size) == (4, 16)  # TRL's: the whole step at once
    shadow = load_recipe({"train": {"method": "grpo"}, "grpo": {"trl_args": {"steps_per_generation": 2}}})
    with pytest.raises(ConfigError, match="grpo.trl_args.steps_per_generation: the recipe already sets "
                                          "trl.GRPOConfig.steps_per_generation through grpo.steps_per_generation"):
        grpo_args(run_for(shadow, tmp_path), [1.0] * 5)


def test_default_rewards_are_r1_zero():
    cfg = load_recipe({"train": {"method": "grpo"}})
    assert [s["name"] for s in reward_specs(run_for(cfg))] == R1_ZERO_REWARDS


@pytest.mark.parametrize("recipe", ["grpo_qwen2.5-0.5b_gsm8k.yaml", "grpo_qlora_a10.yaml", "grpo_qlora_t4.yaml"])
def test_recipes_validate(recipe):
    cfg = load_recipe(REPO / "recipes" / recipe)
    assert cfg.train.method == "grpo"
    assert [r.name for r in cfg.grpo.rewards] == R1_ZERO_REWARDS
    check_batch(run_for(cfg))
    if "qlora" in recipe:
        assert cfg.is_qlora


def tiny_run(tmp_path, tiny_model_dir, data_path, rewards, **train):
    from tifa_lite.modeling import load_for_training

    cfg = load_recipe({
        "model": {"name_or_path": str(tiny_model_dir)},
        "quant": {"bits": None},
        "lora": {"r": 4, "alpha": 8},
        "data": {"path": str(data_path), "limit": 8},
        "train": {"method": "grpo", "max_steps": 2, "per_device_batch_size": 4, "learning_rate": 1e-3,
                  "output_dir": str(tmp_path / "out"), "progress_bar": False, "save_steps": 1000, **train},
        "grpo": {"num_generations": 2, "max_completion_length": 8, "rewards": rewards},
    })
    model, tokenizer, peft = load_for_training(cfg)
    return run_for(cfg, tmp_path / "work", model, tokenizer, peft)


def test_with_accumulation_every_micro_batch_holds_whole_groups(tmp_path, tiny_model_dir, sample_data, monkeypatch):
    """TRL shuffles a generation batch's rows before splitting it into micro-batches; with
    grpo.pack_groups the shuffle moves whole groups, so each micro-batch still shares its prompts
    (with TRL's row shuffle, 2-row micro-batches of 4 groups of 2 mostly hold two prompts)."""
    from tifa_lite.methods import grpo_groups
    from tifa_lite.methods.grpo import build_trainer

    packed = []
    real = grpo_groups.pack_groups

    def spy(ids, mask, completion_length):
        result = real(ids, mask, completion_length)
        packed.append(None if result is None else len(ids) - len(torch.unique(ids[:, :-completion_length], dim=0)))
        return result

    monkeypatch.setattr(grpo_groups, "pack_groups", spy)
    run = tiny_run(tmp_path, tiny_model_dir, sample_data / "arithmetic" / "train.jsonl", [{"name": "length"}],
                   per_device_batch_size=2, gradient_accumulation_steps=4, max_steps=1)
    trainer = build_trainer(run)
    assert trainer.args.steps_per_generation == 4 and trainer.args.generation_batch_size == 8
    trainer.train()
    # one optimizer step = 4 micro-batches, each a whole group of 2 rows sharing one prompt
    assert packed and all(shared == 1 for shared in packed), packed


def test_build_trainer_trains_and_logs_each_reward(tmp_path, tiny_model_dir, sample_data):
    from tifa_lite.methods.grpo import build_trainer

    rewards = [{"name": n} for n in R1_ZERO_REWARDS] + [{"name": "repetition", "weight": 0.5}, {"name": "length"}]
    run = tiny_run(tmp_path, tiny_model_dir, sample_data / "arithmetic" / "train.jsonl", rewards)
    trainer = build_trainer(run)
    assert trainer.args.use_vllm is False
    assert trainer.reward_func_names == R1_ZERO_REWARDS + ["repetition", "length"]
    assert run.data_report["train_rows"] == 8
    trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logs) == 2
    for name in trainer.reward_func_names:
        assert f"rewards/{name}/mean" in logs[0]
    # 8-token completions of a random model are always clipped: the length reward is -1.
    assert logs[0]["rewards/length/mean"] == -1.0
    lora = [p for n, p in trainer.model.named_parameters() if "lora_" in n]
    assert lora and all(p.requires_grad for p in lora)


def longest_run_of_single_tokens(lengths: list[int]) -> int:
    """Decoding steps in a row that fed one token (the shared prefill's first-use check and the
    prompt's forwards come before them)."""
    best = run = 0
    for n in lengths:
        run = run + 1 if n == 1 else 0
        best = max(best, run)
    return best


def test_generation_keeps_the_kv_cache_when_the_checkpoint_turned_it_off(tmp_path, tiny_model_dir, sample_data):
    import torch

    from tifa_lite.methods.grpo import build_trainer

    run = tiny_run(tmp_path, tiny_model_dir, sample_data / "arithmetic" / "train.jsonl", [{"name": "xmlcount"}],
                   max_steps=1, per_device_batch_size=2)
    run.model.generation_config.use_cache = False  # as a checkpoint saved that way loads
    trainer = build_trainer(run)
    lengths = []
    trainer.model.get_base_model().model.register_forward_pre_hook(
        lambda module, args, kwargs: None if torch.is_grad_enabled() else lengths.append(kwargs["input_ids"].shape[1]),
        with_kwargs=True)
    trainer.train()
    # Prompt once, then one new token per step: the cache is used (without it every step re-runs the sequence).
    assert longest_run_of_single_tokens(lengths) >= 7


def test_failing_reward_is_named_during_training(tmp_path, tiny_model_dir, sample_data):
    from tifa_lite.methods.grpo import build_trainer

    bad = tmp_path / "bad_reward.py"
    bad.write_text("def needs_label(completions, label, **kw):\n    return [1.0] * len(completions)\n")
    run = tiny_run(tmp_path, tiny_model_dir, sample_data / "arithmetic" / "train.jsonl",
                   [{"name": "xmlcount"}, {"name": f"{bad}:needs_label"}], max_steps=1)
    trainer = build_trainer(run)
    with pytest.raises(RewardError, match=r"reward 'needs_label' .*TypeError.*label"):
        trainer.train()


@pytest.mark.slow
def test_cli_reproduction_recipe_runs_on_cpu(tmp_path, sample_data):
    """The issue's Done-when command, kept small: 2 steps, 4 rows, 2 generations, 16 tokens."""
    out = tmp_path / "grpo_cpu"
    cmd = [
        sys.executable, "-m", "tifa_lite", "train", str(REPO / "recipes" / "grpo_qwen2.5-0.5b_gsm8k.yaml"),
        "model.name_or_path=smollm2-135m-instruct", "train.max_steps=2",
        f"data.path={sample_data / 'gsm8k_sample.jsonl'}", "data.limit=4",
        "train.per_device_batch_size=2", "train.gradient_accumulation_steps=1", "grpo.num_generations=2",
        "grpo.max_completion_length=16", "train.progress_bar=false", f"train.output_dir={out}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "reward" in m]
    assert [m["step"] for m in steps] == [1, 2]
    assert all(f"rewards/{n}/mean" in steps[0] for n in R1_ZERO_REWARDS)
    assert (out / "model.safetensors").is_file()  # full-parameter recipe: the whole model is saved


def test_batch_check_counts_every_rank():
    from tifa_lite.config import load_recipe
    from tifa_lite.errors import ConfigError
    from tifa_lite.methods.common import Run
    from tifa_lite.methods.grpo import check_batch

    def run(*overrides):
        cfg = load_recipe({}, ["train.method=grpo", "grpo.num_generations=8", *overrides])
        return Run(config=cfg, work_dir=None, model=None, tokenizer=None, peft_config=None, plan=resolve_plan(cfg))

    # 2 per rank × 16 ranks = 32 completions per step: four full groups of 8, as TRL counts them.
    check_batch(run("train.per_device_batch_size=2", "distributed.world_size=16",
                    "distributed.nnodes=2", "distributed.nproc_per_node=8", "quant.bits=null", "lora.enabled=false"))
    with pytest.raises(ConfigError, match="world_size = 2 completions"):
        check_batch(run("train.per_device_batch_size=2"))


def test_looped_model_generates_with_the_cache_and_trains(tmp_path, tiny_model_dir, sample_data):
    """model.layer_loop (shared LoRA, so every later pass goes through the cache view): GRPO's rollouts
    use the KV cache, one token a step, and a training step runs. (A random tiny model's rewards tie
    within each group, so this step's advantages are zero: that it learns is the SFT/DPO tests' job.)"""
    import torch

    from tifa_lite.methods.grpo import build_trainer
    from tifa_lite.modeling import load_for_training

    cfg = load_recipe({
        "model": {"name_or_path": str(tiny_model_dir), "layer_loop": {"start": 0, "end": 2, "repeats": 2, "lora_per_pass": False}},
        "quant": {"bits": None}, "lora": {"r": 4, "alpha": 8},
        "data": {"path": str(sample_data / "arithmetic" / "train.jsonl"), "limit": 4},
        "train": {"method": "grpo", "max_steps": 1, "per_device_batch_size": 2, "learning_rate": 1e-2,
                  "output_dir": str(tmp_path / "out"), "progress_bar": False, "save_steps": 1000},
        "grpo": {"num_generations": 2, "max_completion_length": 8, "rewards": [{"name": "length"}, {"name": "xmlcount"}]},
    })
    model, tokenizer, peft = load_for_training(cfg)
    trainer = build_trainer(run_for(cfg, tmp_path / "work", model, tokenizer, peft))
    assert len(trainer.model.get_base_model().model.layers) == 4
    lengths = []
    trainer.model.get_base_model().model.register_forward_pre_hook(
        lambda module, args, kwargs: None if torch.is_grad_enabled() else lengths.append(kwargs["input_ids"].shape[1]),
        with_kwargs=True)
    lora_b = [n for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert len(lora_b) == 2 * 7  # two distinct layers, seven linears each: one LoRA for both passes
    trainer.train()
    assert longest_run_of_single_tokens(lengths) >= 7
    assert trainer.state.global_step == 1 and any("loss" in h for h in trainer.state.log_history)
