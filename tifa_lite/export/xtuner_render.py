"""Writes the xtuner 0.1.x config text (mmengine-style Python) for :mod:`tifa_lite.export.xtuner`.

Section by section it follows xtuner v0.1.23's
``xtuner/configs/internlm/internlm2_chat_7b/internlm2_chat_7b_qlora_oasst1_e3.py``, so a user
who knows xtuner's configs finds every knob where they expect it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tifa_lite.config.schema import RecipeConfig

XTUNER_VERSION = "0.1.23"


@dataclass
class PromptChoice:
    """The ``prompt_template`` the config gets, chosen by :mod:`tifa_lite.export.xtuner`."""

    expression: str  # Python source for ``prompt_template = …``
    default_system: str | None = None
    note: str = ""


def literal(value: Any) -> str:
    """A Python literal for a dict of str/bool/list (repr() is valid Python for these)."""
    if isinstance(value, dict):
        inner = ",\n    ".join(f"{k}={literal(v)}" for k, v in value.items())
        return f"dict(\n    {inner})"
    return repr(value)


def _dtype(config: RecipeConfig) -> str:
    precision = config.train.precision
    compute = config.quant.compute_dtype
    chosen = compute if compute != "auto" else precision
    return {"bf16": "bfloat16", "fp32": "float32"}.get(chosen, "float16")


def render_config(
    config: RecipeConfig, model_id: str, data_file: str, prompt: PromptChoice, evaluation_inputs: list[str],
    notes: list[str], recipe_name: str, system: str = "",
) -> str:
    m, q, lo, d, t = config.model, config.quant, config.lora, config.data, config.train
    dtype = _dtype(config)
    amp = dtype != "float32"
    by_steps = t.max_steps > 0
    # CPT in tifa_lite always cuts the token stream into full max_length blocks.
    pack = t.packing or t.method == "cpt"

    quant = ""
    if q.bits == 4:
        quant = f""",
        quantization_config=dict(
            type=BitsAndBytesConfig,
            load_in_4bit=True,
            load_in_8bit=False,
            llm_int8_threshold=6.0,
            llm_int8_has_fp16_weight=False,
            bnb_4bit_compute_dtype=torch.{dtype},
            bnb_4bit_use_double_quant={q.double_quant!r},
            bnb_4bit_quant_type={q.quant_type!r})"""
    elif q.bits == 8:
        quant = """,
        quantization_config=dict(type=BitsAndBytesConfig, load_in_8bit=True)"""

    lora = ""
    if lo.enabled:
        extra = ""
        if lo.target_modules != "all-linear":
            extra += f",\n        target_modules={lo.target_modules!r}"
        if lo.use_rslora:
            extra += ",\n        use_rslora=True"
        if lo.use_dora:
            extra += ",\n        use_dora=True"
        if lo.modules_to_save:
            extra += f",\n        modules_to_save={list(lo.modules_to_save)!r}"
        lora = f""",
    # No target_modules = every linear layer but the output head (xtuner's
    # find_all_linear_names), the same set as lora.target_modules=all-linear.
    lora=dict(
        type=LoraConfig,
        r={lo.r},
        lora_alpha={lo.alpha},
        lora_dropout={lo.dropout!r},
        bias={lo.bias!r},
        task_type='CAUSAL_LM'{extra})"""

    template_map = "None" if prompt.expression == "None" else "dict(type=template_map_fn_factory, template=prompt_template)"
    span_end = "max_iters" if by_steps else "max_epochs"
    warm_end = "warmup_iters" if by_steps else "warmup_ratio * max_epochs"
    by_epoch = "False" if by_steps else "True"
    schedulers = []
    if t.warmup_ratio > 0 and t.lr_scheduler != "constant":
        schedulers.append(f"""    dict(
        type=LinearLR,
        start_factor=1e-5,
        by_epoch={by_epoch},
        begin=0,
        end={warm_end},
        convert_to_iter_based={not by_steps})""")
    begin = warm_end if schedulers else "0"
    if t.lr_scheduler == "cosine":
        schedulers.append(f"""    dict(
        type=CosineAnnealingLR,
        eta_min=0.0,
        by_epoch={by_epoch},
        begin={begin},
        end={span_end},
        convert_to_iter_based={not by_steps})""")
    elif t.lr_scheduler == "linear":
        schedulers.append(f"""    dict(
        type=LinearLR,
        start_factor=1.0,
        end_factor=0.0,
        by_epoch={by_epoch},
        begin={begin},
        end={span_end},
        convert_to_iter_based={not by_steps})""")
    scheduler_text = "[\n" + ",\n".join(schedulers) + "\n]" if schedulers else "[]"

    amp_extra = f",\n    loss_scale='dynamic',\n    dtype={dtype!r}" if amp else ""
    optim = f"""dict(
    type={'AmpOptimWrapper' if amp else 'OptimWrapper'},
    optimizer=dict(
        type=optim_type, lr=lr, betas=betas, weight_decay=weight_decay),
    clip_grad=dict(max_norm=max_norm, error_if_nonfinite=False),
    accumulative_counts=accumulative_counts{amp_extra})"""

    steps_settings = (
        f"max_iters = {t.max_steps}  # train.max_steps\nwarmup_iters = {int(t.warmup_ratio * t.max_steps)}"
        if by_steps else f"max_epochs = {int(t.num_epochs)}"
    )
    train_cfg = "dict(type=TrainLoop, max_iters=max_iters)" if by_steps else "dict(type=TrainLoop, max_epochs=max_epochs)"
    evaluation = ""
    if evaluation_inputs:
        evaluation = """,
    dict(
        type=EvaluateChatHook,
        tokenizer=tokenizer,
        every_n_iters=evaluation_freq,
        evaluation_inputs=evaluation_inputs,
        system=SYSTEM,
        prompt_template=prompt_template)"""
    note_text = "".join(f"#   - {n}\n" for n in notes) or "#   (none)\n"

    return f"""# xtuner config generated by `tifa-lite export xtuner {recipe_name}`.
# Schema: xtuner {XTUNER_VERSION} (0.1.x configs, as internlm2_chat_7b_qlora_oasst1_e3.py).
# Train with:  xtuner train <this file>   (multi-GPU: NPROC_PER_NODE=N xtuner train <this file> --deepspeed deepspeed_zero2)
# Every value below comes from the recipe. Differences from a tifa_lite run:
{note_text}import torch
from datasets import load_dataset
from mmengine.dataset import DefaultSampler
from mmengine.hooks import (CheckpointHook, DistSamplerSeedHook, IterTimerHook,
                            LoggerHook, ParamSchedulerHook)
from mmengine.optim import AmpOptimWrapper, CosineAnnealingLR, LinearLR, OptimWrapper
from peft import LoraConfig
from torch.optim import AdamW
from transformers import (AutoModelForCausalLM, AutoTokenizer,
                          BitsAndBytesConfig)

from xtuner.dataset import process_hf_dataset
from xtuner.dataset.collate_fns import default_collate_fn
from xtuner.dataset.map_fns import template_map_fn_factory
from xtuner.engine.hooks import DatasetInfoHook, EvaluateChatHook
from xtuner.engine.runner import TrainLoop
from xtuner.model import SupervisedFinetune
from xtuner.utils import PROMPT_TEMPLATE

#######################################################################
#                          PART 1  Settings                           #
#######################################################################
# Model
pretrained_model_name_or_path = {model_id!r}
use_varlen_attn = False

# Data: written by tifa-lite beside this file (mmengine does not expand paths relative to
# a config loaded in lazy-import mode, so it is absolute: change it if you move the files)
data_path = {data_file!r}
prompt_template = {prompt.expression}
max_length = {d.max_length}
pack_to_max_length = {pack!r}

# Scheduler & Optimizer
batch_size = {t.per_device_batch_size}  # per_device
accumulative_counts = {t.gradient_accumulation_steps}
dataloader_num_workers = {t.dataloader_num_workers}
{steps_settings}
optim_type = AdamW
lr = {t.learning_rate!r}
betas = ({t.adam_beta1!r}, {t.adam_beta2!r})
weight_decay = {t.weight_decay!r}
max_norm = {t.max_grad_norm!r}  # grad clip
warmup_ratio = {t.warmup_ratio!r}

# Save
save_steps = {t.save_steps}
save_total_limit = {t.save_total_limit if t.save_total_limit is not None else -1}  # Maximum checkpoints to keep (-1 means unlimited)

# Evaluate the generation performance during the training
evaluation_freq = {t.save_steps}
SYSTEM = {system!r}
evaluation_inputs = {evaluation_inputs!r}

#######################################################################
#                      PART 2  Model & Tokenizer                      #
#######################################################################
tokenizer = dict(
    type=AutoTokenizer.from_pretrained,
    pretrained_model_name_or_path=pretrained_model_name_or_path,
    trust_remote_code={m.trust_remote_code!r},
    padding_side='right')

model = dict(
    type=SupervisedFinetune,
    use_varlen_attn=use_varlen_attn,
    use_activation_checkpointing={t.gradient_checkpointing!r},
    llm=dict(
        type=AutoModelForCausalLM.from_pretrained,
        pretrained_model_name_or_path=pretrained_model_name_or_path,
        trust_remote_code={m.trust_remote_code!r},
        torch_dtype=torch.{dtype}{quant}){lora})

#######################################################################
#                      PART 3  Dataset & Dataloader                   #
#######################################################################
train_dataset = dict(
    type=process_hf_dataset,
    dataset=dict(type=load_dataset, path='json', data_files=dict(train=data_path)),
    tokenizer=tokenizer,
    max_length=max_length,
    dataset_map_fn=None,  # the data is already in xtuner's conversation form
    template_map_fn={template_map},
    remove_unused_columns=True,
    shuffle_before_pack={d.shuffle!r},
    pack_to_max_length=pack_to_max_length,
    use_varlen_attn=use_varlen_attn)

train_dataloader = dict(
    batch_size=batch_size,
    num_workers=dataloader_num_workers,
    dataset=train_dataset,
    sampler=dict(type=DefaultSampler, shuffle={d.shuffle!r}),
    collate_fn=dict(type=default_collate_fn, use_varlen_attn=use_varlen_attn))

#######################################################################
#                    PART 4  Scheduler & Optimizer                    #
#######################################################################
# optimizer
optim_wrapper = {optim}

# learning policy ({t.lr_scheduler}, {t.warmup_ratio!r} warm-up)
param_scheduler = {scheduler_text}

# train, val, test setting
train_cfg = {train_cfg}

#######################################################################
#                           PART 5  Runtime                           #
#######################################################################
custom_hooks = [
    dict(type=DatasetInfoHook, tokenizer=tokenizer){evaluation}
]

default_hooks = dict(
    timer=dict(type=IterTimerHook),
    logger=dict(type=LoggerHook, log_metric_by_epoch=False, interval={t.logging_steps}),
    param_scheduler=dict(type=ParamSchedulerHook),
    checkpoint=dict(
        type=CheckpointHook,
        by_epoch=False,
        interval=save_steps,
        max_keep_ckpts=save_total_limit),
    sampler_seed=dict(type=DistSamplerSeedHook),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)

visualizer = None
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed={t.seed}, deterministic=False)
log_processor = dict(by_epoch=False)
"""
