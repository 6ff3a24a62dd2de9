"""What a run can check before its model loads (seconds, where the load takes minutes
for a 7B): the data, built with the tokenizer alone, and a schedule too short to take a
step at a non-zero learning rate.

The data built here is kept and handed to the method's ``build_trainer`` (through
:func:`built_data`), so checking early costs no second pass over the files."""

from __future__ import annotations

import hashlib
import logging
import math
from typing import TYPE_CHECKING, Any, Callable

from tifa_lite.config.schema import RecipeConfig

if TYPE_CHECKING:
    from tifa_lite.runplan import RunPlan

log = logging.getLogger(__name__)

PREFERENCE_METHODS = ("dpo", "orpo", "kto", "simpo", "reward")
_built: dict[str, Any] = {}


def _builder(method: str) -> Callable[[RecipeConfig, Any], Any] | None:
    if method == "sft":
        from tifa_lite.data.build import build_sft_data

        return build_sft_data
    if method == "cpt":
        from tifa_lite.data.build import build_cpt_data

        return build_cpt_data
    if method in PREFERENCE_METHODS:
        from tifa_lite.data.preference import load_preference_splits

        return load_preference_splits
    return None  # GRPO's prompts are built with its rewards, which need the model


def check_before_load(config: RecipeConfig, plan: "RunPlan | None" = None) -> None:
    """Raises the data's DataError/ConfigError before any model weight is read, and warns
    about a schedule whose every step is taken at learning rate 0. The tokenizer comes from
    the run plan's model source (resolved here only for a caller outside a run)."""
    builder = _builder(config.train.method)
    rows = None
    if builder is not None:
        from tifa_lite.modeling.load import load_tokenizer

        if plan is None:
            from tifa_lite.runplan import resolve_plan

            plan = resolve_plan(config)
        tokenizer = load_tokenizer(config, plan.model)
        built = builder(config, tokenizer)
        _built[_key(config, tokenizer, builder)] = built
        rows = len(built.train if hasattr(built, "train") else built[0])
    warn_if_no_step(config, rows)


def built_data(config: RecipeConfig, tokenizer, builder: Callable[[RecipeConfig, Any], Any]):
    """What :func:`check_before_load` built for this config and tokenizer, else a fresh build
    (a different tokenizer, e.g. unsloth's, or a run that skipped the check)."""
    found = _built.pop(_key(config, tokenizer, builder), None)
    return found if found is not None else builder(config, tokenizer)


def total_steps(config: RecipeConfig, rows: int | None) -> int | None:
    t = config.train
    if t.max_steps > 0:
        return t.max_steps
    if rows is None:
        return None
    world = config.distributed.world_size or 1
    per_epoch = max(1, math.ceil(math.ceil(rows / (t.per_device_batch_size * world)) / t.gradient_accumulation_steps))
    return math.ceil(per_epoch * t.num_epochs)


def warn_if_no_step(config: RecipeConfig, rows: int | None) -> None:
    """Warm-up starts at learning rate 0: a one-step run with any warm-up changes nothing, and
    its merge is a no-op found only at the end."""
    t = config.train
    steps = total_steps(config, rows)
    if steps == 1 and t.warmup_ratio > 0 and t.lr_scheduler != "constant":
        how = "train.max_steps=1" if t.max_steps == 1 else f"{rows} training row(s) make one optimizer step"
        log.warning(
            "%s with train.warmup_ratio=%g: the warm-up takes the only step at learning rate 0, so the "
            "weights will not change. Set train.warmup_ratio=0, or train for 2 or more steps.",
            how, t.warmup_ratio,
        )


def _key(config: RecipeConfig, tokenizer, builder) -> str:
    from tifa_lite.config import dump_config

    facts = (
        dump_config(config), builder.__qualname__, type(tokenizer).__name__, tokenizer.name_or_path, len(tokenizer),
        tokenizer.chat_template, tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id,
        tokenizer.padding_side, tokenizer.truncation_side,
    )
    return hashlib.sha256(repr(facts).encode()).hexdigest()
