"""``train.method: grpo``: TRL's GRPOTrainer with rewards from ``grpo.rewards``.

Generation runs through transformers by default; vLLM (colocated, sharing the GPU at
``grpo.vllm_gpu_memory_utilization``) only where the run plan says it can work
(:func:`tifa_lite.runplan.generation.select_vllm`).
"""

from __future__ import annotations

import logging

from tifa_lite.errors import ConfigError
from tifa_lite.methods.common import Run, compose_trainer, make_config
from tifa_lite.methods.grpo_groups import packed_group_trainer, prefill_once
from tifa_lite.methods.reference import reference_init_kwargs
from tifa_lite.modeling.dequantized import dequantize_for_generation
from tifa_lite.rewards import R1_ZERO_REWARDS, build_rewards

log = logging.getLogger(__name__)


def keep_generation_cache(model) -> None:
    """TRL's transformers generation fills unset fields from ``model.generation_config``: a
    checkpoint saved with ``use_cache: false`` there would re-run the whole sequence for every
    sampled token (about 10x slower generation on a CPU). Training itself reads
    ``model.config.use_cache`` (which load_model turns off), not this."""
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        generation_config.use_cache = True


def reward_specs(run: Run) -> list:
    # A GRPO recipe without rewards gets the R1-Zero five rather than failing deep in TRL.
    return run.config.grpo.rewards or [{"name": name} for name in R1_ZERO_REWARDS]


def check_batch(run: Run) -> None:
    t, g = run.config.train, run.config.grpo
    # TRL's generation batch spans every rank: micro-batch × micro-batches per generate call × world size.
    world = run.config.distributed.world_size
    if g.steps_per_generation:
        steps, steps_key = g.steps_per_generation, "grpo.steps_per_generation"
    else:
        steps, steps_key = t.gradient_accumulation_steps, "train.gradient_accumulation_steps"
    per_generation = t.per_device_batch_size * steps * world
    if per_generation % g.num_generations:
        raise ConfigError(
            f"train.per_device_batch_size*{steps_key}*distributed.world_size = {per_generation} "
            "completions per generation is not a "
            f"multiple of grpo.num_generations={g.num_generations}: each prompt's group of completions must be "
            "generated together. Change one of the three."
        )
    if run.config.data.eval_path or run.config.data.eval_ratio:
        if (t.per_device_batch_size * world) % g.num_generations:
            raise ConfigError(
                f"evaluation needs train.per_device_batch_size×world size ({t.per_device_batch_size * world}) to be a multiple of "
                f"grpo.num_generations ({g.num_generations})."
            )


def grpo_args(run: Run, reward_weights: list[float]):
    from trl import GRPOConfig

    g = run.config.grpo
    use_vllm = run.plan.vllm
    kwargs = dict(
        num_generations=g.num_generations,
        max_completion_length=g.max_completion_length,
        temperature=g.temperature,
        top_p=g.top_p,
        beta=g.beta,
        loss_type=g.loss_type,
        scale_rewards=g.scale_rewards,
        reward_weights=reward_weights,
        # passed even when None (TRL's default) so grpo.trl_args cannot set it behind the planner's back
        steps_per_generation=g.steps_per_generation,
        log_completions=g.log_completions,
        use_vllm=use_vllm,
        # No generation_kwargs: TRL hands them to vLLM's SamplingParams too, which rejects transformers-only
        # keys such as use_cache. The KV cache is switched on in the model's generation config (build_trainer).
        model_init_kwargs=reference_init_kwargs(run) if g.beta else None,
    )
    if use_vllm:
        # Colocate: one process, vLLM shares the training GPU; the only mode a single cheap GPU can run.
        from tifa_lite.runplan.generation import vllm_max_model_length

        kwargs.update(vllm_mode="colocate", vllm_gpu_memory_utilization=g.vllm_gpu_memory_utilization,
                      vllm_max_model_length=vllm_max_model_length(g))
    return make_config(GRPOConfig, run, extra=g.trl_args, extra_key="grpo.trl_args", **kwargs)


def build_trainer(run: Run):
    from trl import GRPOTrainer

    from tifa_lite.data.gsm8k import build_grpo_data

    check_batch(run)
    g = run.config.grpo
    if g.passes == 2 and run.config.distributed.world_size > 1:
        raise ConfigError("grpo.passes=2 (MGRPO) runs in one process; use grpo.passes=1 with distributed.world_size > 1.")
    # The policy's tokenizer renders prompt + completion for rewards that read whole conversations (reward_model).
    context = {"max_completion_length": g.max_completion_length, "policy_tokenizer": run.tokenizer,
               "hardware": run.plan.hardware}
    rewards = build_rewards(reward_specs(run), context=context)
    data = build_grpo_data(run.config, run.tokenizer)
    run.data_report.update(data.report)
    run.data_report["rewards"] = dict(zip(rewards.names, rewards.weights))
    args = grpo_args(run, rewards.weights)
    keep_generation_cache(run.model)
    if g.prefill_once and not run.plan.vllm:
        prefill_once(run.model, args)
    if run.plan.dequantized_generation:
        # outside prefill_once's wrapper: the shared prefill uses the copy too
        dequantize_for_generation(run.model, args)
    extra = {}
    trainer_class = GRPOTrainer
    if g.passes == 2:
        from tifa_lite.methods.mgrpo import MGRPOTrainer

        trainer_class, extra = MGRPOTrainer, {"revision": g.revision}
    if g.pack_groups:
        trainer_class = packed_group_trainer(trainer_class)
    return compose_trainer(trainer_class, run, args, data.train, data.eval, reward_funcs=rewards.funcs, **extra)
