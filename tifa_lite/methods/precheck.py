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
    return None  # GRPO's prompts are built with its rewards, which need the model; checked below


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
    elif config.train.method == "grpo" and config.data.path:
        rows = check_grpo_rows(config)
    warn_if_no_step(config, rows)
    warn_if_many_epochs(config, rows)


# Rule rewards that compare a completion with the row's reference answer.
ANSWER_REWARDS = ("correctness", "correctness_numeric", "final_number")


def check_grpo_rows(config: RecipeConfig) -> int:
    """GRPO's prompt rows read without a tokenizer (format, GSM8K answers) and, where a reward
    compares with the reference answer, each row's ``answer``: refused here, not after the load.
    Returns the number of rows."""
    from tifa_lite.data.gsm8k import load_prompt_rows
    from tifa_lite.errors import DataError
    from tifa_lite.rewards import R1_ZERO_REWARDS

    d = config.data
    rows = load_prompt_rows(config, d.path, limit=d.limit)
    names = [s.name for s in config.grpo.rewards] if config.grpo.rewards else list(R1_ZERO_REWARDS)
    needing = [n for n in names if n in ANSWER_REWARDS]
    missing = [i for i, row in enumerate(rows) if row.get("answer") in (None, "")]
    if needing and missing:
        raise DataError(
            f"data.path={d.path}: {len(missing)} of {len(rows)} row(s) have no 'answer' (the first is row "
            f"{missing[0] + 1}), and the reward {needing[0]!r} compares each completion with it. Give every row an "
            f"answer ({{question, answer: '... #### n'}} or {{prompt, answer}}), or drop {needing[0]!r} from grpo.rewards."
        )
    return len(rows)


# More epochs than this over a handful of rows is almost always a max_steps meant for a
# larger data set: the adapter memorises the rows.
MANY_EPOCHS = 20


def warn_if_many_epochs(config: RecipeConfig, rows: int | None) -> None:
    t = config.train
    if t.max_steps <= 0 or not rows:
        return
    world = config.distributed.world_size or 1
    per_step = t.per_device_batch_size * t.gradient_accumulation_steps * world
    if config.train.method == "grpo":
        per_step = max(1, per_step // config.grpo.num_generations)  # each prompt is sampled num_generations times
    epochs = t.max_steps * per_step / rows
    if epochs > MANY_EPOCHS:
        log.warning(
            "train.max_steps=%d over %d training row(s) at %d row(s) per step is %.0f epochs: the model will "
            "memorise these rows. Use more data, or fewer steps (train.max_steps=-1 with train.num_epochs).",
            t.max_steps, rows, per_step, epochs,
        )


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
