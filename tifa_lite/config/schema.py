"""The one typed schema every recipe, profile and override is validated against.

Each section is a pydantic model with ``extra="forbid"`` so a misspelt key fails
loudly; :mod:`tifa_lite.config.loader` turns that failure into a message naming
the file, the key and the closest valid key.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Precision = Literal["auto", "bf16", "fp16", "fp32"]
Method = Literal["sft", "cpt", "grpo", "dpo", "orpo", "kto", "simpo", "reward"]
ThinkPolicy = Literal["auto", "strip", "keep"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LayerLoopConfig(Section):
    """Layers ``start..end-1`` run ``repeats`` times in the forward pass (Tifa's looped layers;
    :mod:`tifa_lite.modeling.layer_loop`). Checked against the model's depth when it loads."""

    start: int = Field(ge=0)
    end: int = Field(ge=1)  # exclusive
    repeats: int = Field(2, ge=2)
    # true: every pass gets its own LoRA (Relaxed Recursive Transformers); false: one LoRA shared by
    # all passes. Measured equal in quality (held-out perplexity within 0.05 of each other on every run,
    # benchmarks/results/layer_loop.md), so the default is the cheaper one: a third fewer adapter
    # parameters here, less optimizer state and memory.
    lora_per_pass: bool = False

    @model_validator(mode="after")
    def _span(self) -> "LayerLoopConfig":
        if self.end <= self.start:
            raise ValueError(
                f"model.layer_loop: end={self.end} must be greater than start={self.start} (end is exclusive: "
                "start: 10, end: 20 loops layers 10..19)."
            )
        return self


class ModelConfig(Section):
    name_or_path: str = "smollm2-135m-instruct"
    # auto: embedded name → local folder/.gguf → hub id. modelscope goes through
    # modelscope.snapshot_download so users in mainland China never touch the HF hub.
    source: Literal["auto", "local", "hf", "modelscope", "embedded"] = "auto"
    gguf_file: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    backend: Literal["auto", "transformers", "unsloth"] = "auto"
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = "auto"
    # None keeps the tokenizer's own template; a name picks one of tifa_lite.conversation.templates,
    # anything else is read as a path to a .jinja file.
    chat_template: str | None = None
    # auto/strip: <think>…</think> is removed from assistant turns before the last user turn
    # (SFT, DPO prompts, GRPO prompts, chat); keep: history is rendered as written.
    think_policy: ThinkPolicy = "auto"
    # Run a span of layers more than once (null: every layer once).
    layer_loop: LayerLoopConfig | None = None


class QuantConfig(Section):
    # 4 = QLoRA (bitsandbytes NF4), 8 = LLM.int8, None = 16/32-bit base.
    bits: Literal[4, 8] | None = 4
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Precision = "auto"


class LoraConfig(Section):
    enabled: bool = True
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: str | list[str] = "all-linear"
    use_dora: bool = False
    use_rslora: bool = False
    bias: Literal["none", "all", "lora_only"] = "none"
    modules_to_save: list[str] | None = None


DataFormat = Literal[
    "auto", "messages", "sharegpt", "alpaca", "text", "xtuner",
    "preference", "hh_rlhf", "hh_rlhf_raw", "gsm8k", "prompt",
]


class DataConfig(Section):
    # A file, a folder (every *.jsonl/*.json/*.txt/*.csv/*.tsv/*.parquet/*.jsonl.gz inside),
    # a glob, a list of those, or a hub / ModelScope data set id with ``source``.
    path: str | list[str] | None = None
    source: Literal["auto", "local", "hf", "modelscope"] = "auto"
    split: str = "train"
    # ``auto`` (the default) tells each record's format by its keys (messages /
    # conversations+from/value / instruction+output / conversation / text / chosen+rejected /
    # question+answer): users bring ShareGPT, Alpaca and CSV exports far more often than they
    # know which name the format has, and a wrong explicit name can only fail. An explicit
    # format is for data whose keys fit more than one (and refuses a record of another
    # format by naming it: "set data.format=sharegpt").
    format: DataFormat = "auto"
    eval_path: str | list[str] | None = None
    # Held out from ``path`` when no eval_path is given; 0 disables evaluation.
    eval_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    limit: int | None = Field(None, ge=1)
    max_length: int = Field(1024, ge=8)
    overlength: Literal["drop", "truncate"] = "truncate"
    on_error: Literal["raise", "skip"] = "raise"
    system_prompt: str | None = None
    # Python format string with {question} / {prompt}; used by prompt-only data (GRPO).
    prompt_template: str | None = None
    shuffle: bool = True
    seed: int = 42


class TrainConfig(Section):
    method: Method = "sft"
    output_dir: str = "outputs/run"
    overwrite_output_dir: bool = False
    # -1: unset, train for num_epochs. 0 is refused: transformers would read it as unset too.
    max_steps: int = -1
    num_epochs: float = 1.0
    per_device_batch_size: int = Field(4, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    # Intended global batch; scale profiles recompute gradient_accumulation_steps from it.
    global_batch_size: int | None = Field(None, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler: str = "cosine"
    warmup_ratio: float = Field(0.03, ge=0.0, le=1.0)
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    seed: int = 42
    precision: Precision = "auto"
    gradient_checkpointing: bool = False
    # Sequence packing for SFT/CPT (padding-free: no pad tokens, no cross-sample attention).
    packing: bool = False
    # Liger's Triton kernels (RMSNorm, RoPE, SwiGLU; TRL keeps its own fused LM head) through TRL's
    # use_liger_kernel, on a CUDA GPU with liger-kernel installed; a CPU run, rehearsal included, runs
    # without them (tifa_lite.runplan.kernels). Measured at full size by benchmarks/gpu_fullsize.py.
    use_liger_kernel: bool = False
    assistant_only_loss: bool = True
    logging_steps: int = Field(1, ge=1)
    save_steps: int = Field(50, ge=1)
    save_total_limit: int | None = 2
    eval_steps: int | None = None
    resume: str = "auto"  # auto | never | path to a checkpoint folder
    report_to: list[str] = Field(default_factory=list)
    auto_fit: bool = False
    dataloader_num_workers: int = 0
    progress_bar: bool = True
    # Checkpoints serve resumption; a finished run drops them (under ZeRO they hold ~16 bytes
    # per parameter) unless kept on purpose.
    keep_checkpoints: bool = False

    @field_validator("max_steps")
    @classmethod
    def _steps_set_or_unset(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError("must be at least 1 (or -1, the default: train for train.num_epochs)")
        return value


class RewardSpec(Section):
    # A registered name (tifa_lite.rewards), ``trl:<name>``, ``module.path:function``
    # or ``path/to/file.py:function``.
    name: str
    weight: float = 1.0
    kwargs: dict[str, Any] = Field(default_factory=dict)


class RevisionConfig(Section):
    """MGRPO's second pass (``grpo.passes: 2``, :mod:`tifa_lite.methods.mgrpo`)."""

    # Each group's lowest-scoring completion (weighted reward sum) is revised when it scores below this;
    # null revises every group's lowest, whatever it scored.
    threshold: float | None = None
    # The user turn after the first answer; {critique} becomes the failed rewards' sentences.
    template: str = "Your answer has problems. {critique} Answer the original request again, fixing them."
    # reward name → critique sentence, for rewards tifa_lite.rewards.critique does not know (or to reword one).
    critiques: dict[str, str] = Field(default_factory=dict)

    @field_validator("template")
    @classmethod
    def _has_critique(cls, value: str) -> str:
        if "{critique}" not in value:
            raise ValueError("grpo.revision.template must contain {critique}, where the failed rewards' sentences go.")
        return value


class GRPOConfig(Section):
    num_generations: int = Field(8, ge=2)
    max_prompt_length: int = 256
    max_completion_length: int = 200
    temperature: float = 0.9
    top_p: float = 1.0
    beta: float = 0.04
    loss_type: str = "dapo"
    scale_rewards: str = "group"
    # Micro-batches sampled per generate call. None: TRL's default, every micro-batch of an optimizer step at
    # once (train.gradient_accumulation_steps), the fastest (benchmarks/results/grpo.md). Fewer holds a smaller
    # KV cache for the same on-policy samples (train.auto_fit lowers it when generation is the memory peak);
    # more reuses one generation for several optimizer steps (off-policy; TRL clips the importance ratio).
    steps_per_generation: int | None = Field(None, ge=1)
    rewards: list[RewardSpec] = Field(default_factory=list)
    # 2 = MGRPO (Tifa's "GRPO+GRPO"): low-scoring completions get a revision prompt with a critique, a second
    # group is generated from it, and both groups enter the loss with their own group-relative advantages.
    passes: Literal[1, 2] = 1
    revision: RevisionConfig = Field(default_factory=RevisionConfig)
    use_vllm: Literal["auto", "on", "off"] = "auto"
    # QLoRA generation from a dense copy of the 4-bit base made once per generate call
    # (tifa_lite.modeling.dequantized); auto = where bitsandbytes would dequantise inside every matmul
    # (tifa_lite.runplan.generation.select_dequantized_generation). The planner counts the copy.
    dequantize_for_generation: Literal["auto", "on", "off"] = "auto"

    @field_validator("use_vllm", "dequantize_for_generation", mode="before")
    @classmethod
    def _yaml_switch(cls, value):
        # YAML 1.1 reads an unquoted on/off as a boolean.
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    vllm_gpu_memory_utilization: float = Field(0.2, gt=0.0, le=1.0)
    log_completions: bool = False
    # A group's prompt computed once (tifa_lite.methods.grpo_groups), each exact and measured on its own in
    # benchmarks/results/grpo.md: in transformers generation (one prefill per unique prompt, its KV cache repeated
    # to the group) and in the loss/reference forwards (the group packed into one row, padding dropped).
    prefill_once: bool = True
    pack_groups: bool = True
    # Any other trl.GRPOConfig field (epsilon_high, num_iterations, mask_truncated_completions, …),
    # typed by that field (tifa_lite.config.passthrough); a name this TRL version lacks is an error.
    trl_args: dict[str, Any] = Field(default_factory=dict)


class DPOConfig(Section):
    # DPO/KTO: strength of the pull towards the reference (the base, adapter disabled);
    # ORPO: lambda, the weight of the odds-ratio term; SimPO: the reward scale.
    beta: float = Field(0.1, gt=0)
    # dpo: any DPO loss of the installed TRL (sigmoid, ipo, hinge, robust, …), or a
    # list to combine them; kto: kto | apo_zero_unpaired. orpo/simpo have one loss each.
    loss_type: str | list[str] = "sigmoid"
    loss_weights: list[float] | None = None
    # SimPO's target reward margin (gamma).
    simpo_gamma: float = 0.5
    # KTO's weights of the desirable (chosen) and undesirable (rejected) halves.
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0
    # Compute the reference log-probs once before training: frees the reference pass
    # from every step (only matters for full fine-tuning, where it is a second model).
    precompute_ref_log_probs: bool = False
    # Any other field of the TRL config class train.method uses (DPOConfig, KTOConfig, ORPOConfig,
    # CPOConfig: label_smoothing, rpo_alpha, …), typed by that field like grpo.trl_args.
    trl_args: dict[str, Any] = Field(default_factory=dict)


class SamplingConfig(Section):
    """Recommended sampling for chat and the exported generation_config.json."""

    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int | None = None
    repetition_penalty: float = 1.0
    max_new_tokens: int = 512


class DistributedConfig(Section):
    # Path to a DeepSpeed JSON (relative paths resolve against the recipe's folder first).
    deepspeed: str | None = None
    zero_stage: Literal[0, 1, 2, 3] | None = None
    # Size the profile is written for; the launcher checks nnodes*nproc_per_node against it.
    # Left out (or null), it is nnodes × nproc_per_node: a profile for "N GPUs, whatever N is".
    world_size: int = Field(1, ge=1)
    nnodes: int = Field(1, ge=1)
    nproc_per_node: int = Field(1, ge=1)
    # Per-device micro-batch of a scale profile. With it set, train.per_device_batch_size and
    # train.gradient_accumulation_steps are derived so that micro × accumulation × world_size
    # equals the recipe's global batch (rule: tifa_lite.distributed.batch).
    micro_batch_size: int | None = Field(None, ge=1)
    # ZeRO-3 only: true gathers the sharded weights at every save, so checkpoints and the final
    # folder hold a model.safetensors plain transformers loads; false skips the gather and keeps
    # only DeepSpeed's shards (recover with zero_to_fp32.py). Without ZeRO-3 every rank holds
    # the whole model and it is always saved, so false is refused there.
    save_16bit_model: bool = True
    launcher: Literal["torchrun", "accelerate", "deepspeed"] = "torchrun"
    master_port: int = Field(29500, ge=1, le=65535)
    # Extra environment for every launched process (NCCL_SOCKET_IFNAME, NCCL_IB_HCA, …).
    env: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _world_size_from_sizes(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("world_size") is None:
            nnodes, nproc = data.get("nnodes", 1), data.get("nproc_per_node", 1)
            if isinstance(nnodes, int) and isinstance(nproc, int):
                data = {**data, "world_size": nnodes * nproc}
        return data

    @model_validator(mode="after")
    def _world_size_matches(self) -> "DistributedConfig":
        if self.world_size != self.nnodes * self.nproc_per_node:
            raise ValueError(
                f"distributed.world_size={self.world_size} but nnodes × nproc_per_node = "
                f"{self.nnodes} × {self.nproc_per_node} = {self.nnodes * self.nproc_per_node}. The profile is written "
                f"for {self.world_size} processes; to run on a different number, also set "
                f"distributed.world_size={self.nnodes * self.nproc_per_node} (the global batch is kept)."
            )
        return self

    def json_zero_stage(self) -> int | None:
        """``zero_optimization.stage`` of the DeepSpeed JSON when it can be read here; None otherwise
        (a missing or malformed file is reported by tifa_lite.distributed.runtime with its line)."""
        if not self.deepspeed:
            return None
        try:
            with open(self.deepspeed, encoding="utf-8") as f:
                stage = json.load(f).get("zero_optimization", {}).get("stage", 0)
        except (OSError, ValueError, AttributeError):
            return None
        return stage if isinstance(stage, int) else None


def zero3_quant_error(config: "RecipeConfig") -> str | None:
    """ZeRO-3 (from distributed.zero_stage or the DeepSpeed JSON's own stage) cannot take a bitsandbytes
    base: transformers loads it with a device_map, which ZeRO-3 refuses at load ("DeepSpeed Zero-3 is
    not compatible with passing a device_map"), only on a GPU."""
    d, bits = config.distributed, config.quant.bits
    if bits is None:
        return None
    if d.zero_stage == 3:
        return (f"distributed.zero_stage=3 with quant.bits={bits}: ZeRO-3 shards 16-bit weights and cannot shard "
                "bitsandbytes 4/8-bit layers here. Use a scale profile (quant.bits=null) or zero_stage<=2.")
    if d.json_zero_stage() == 3:
        return (f"distributed.deepspeed={d.deepspeed} sets zero_optimization.stage=3, and quant.bits={bits}: ZeRO-3 "
                "cannot load a bitsandbytes base (transformers places it with a device_map, which ZeRO-3 refuses at "
                "load). Set quant.bits=null (a scale profile), or point distributed.deepspeed at a ZeRO-2 JSON "
                "(recipes/deepspeed/zero2.json).")
    return None


class HardwareConfig(Section):
    # auto: detect; a name (t4, a10, l4, rtx3090, rtx4090, 8gb, a100-40g, a100-80g, h100; see
    # tifa_lite.planner.hardware_catalog) plans for / adapts to that card.
    gpu: str = "auto"
    # Memory of the card in GiB when it differs from the catalogue's (a 12 GB card: gpu=8gb, memory_gib=11.6).
    memory_gib: float | None = Field(None, gt=0)


class RecipeConfig(Section):
    profile: str | list[str] | None = None
    description: str | None = None
    model: ModelConfig = Field(default_factory=ModelConfig)
    quant: QuantConfig = Field(default_factory=QuantConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    grpo: GRPOConfig = Field(default_factory=GRPOConfig)
    dpo: DPOConfig = Field(default_factory=DPOConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "RecipeConfig":
        if self.quant.bits is not None and not self.lora.enabled:
            raise ValueError(
                f"quant.bits={self.quant.bits} with lora.enabled=false: a quantised base cannot be "
                "trained full-parameter. Set lora.enabled=true (QLoRA) or quant.bits=null (full fine-tuning)."
            )
        if (zero3 := zero3_quant_error(self)) is not None:
            raise ValueError(zero3)
        return self

    @property
    def is_qlora(self) -> bool:
        return self.quant.bits == 4 and self.lora.enabled
