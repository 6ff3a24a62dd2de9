"""Reward lookup: recipe ``grpo.rewards`` entries → named callables for TRL's GRPOTrainer.

A reward is named by
  - a registered name: the R1-Zero five, exactly as the write-up scores (``xmlcount``,
    ``soft_format``, ``strict_format``, ``int_answer``, ``correctness``), their lenient
    variants (``soft_format_lenient``, ``strict_format_lenient``, ``int_answer_numeric``,
    ``correctness_numeric``; see :mod:`tifa_lite.rewards.rule`), ``final_number``,
    ``repetition``, ``length``, ``reward_model``,
  - ``trl:<name>`` for TRL's own rewards (``trl:think_format_reward``,
    ``trl:get_repetition_penalty_reward`` …),
  - ``package.module:function`` or ``path/to/file.py:function`` for your own.

``kwargs`` go to factories (callables named ``get_*`` / ``make_*``, which return the
reward) and are otherwise bound as keyword arguments of the reward itself.

Every reward is wrapped in :class:`NamedReward`: a stable ``__name__`` (TRL logs
``rewards/<name>/mean`` per reward) and an error that names the reward when it raises
or returns the wrong number of scores, instead of a traceback deep inside TRL.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import math
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tifa_lite.config.passthrough import coerce, keyword_parameters
from tifa_lite.errors import ConfigError, TifaError
from tifa_lite.rewards import rule
from tifa_lite.rewards.reward_model import make_reward_model


class RewardError(TifaError):
    """A reward function failed or returned malformed scores during training."""


def _trl_reward(name: str) -> Callable:
    import trl.rewards

    return getattr(trl.rewards, name)


def _repetition(ngram_size: int = 3, max_penalty: float = -1.0, **_context):
    # TRL's penalty counts repeated token n-grams: tokenizer-defined, so it works for
    # Chinese role-play text as well as English, with no word segmentation.
    return _trl_reward("get_repetition_penalty_reward")(ngram_size=ngram_size, max_penalty=max_penalty)


def _length(max_completion_len: int | None = None, soft_punish_cache: int | None = None, **context):
    # DAPO's soft overlong punishment: 0 up to (max - cache) tokens, then linear to -1 at max.
    max_len = int(max_completion_len or context["max_completion_length"])
    cache = int(soft_punish_cache if soft_punish_cache is not None else max(1, max_len // 4))
    return _trl_reward("get_soft_overlong_punishment")(max_completion_len=max_len, soft_punish_cache=cache)


# name → (callable, is_factory)
REGISTRY: dict[str, tuple[Callable, bool]] = {
    "xmlcount": (rule.xmlcount, False),
    "soft_format": (rule.soft_format, False),
    "strict_format": (rule.strict_format, False),
    "int_answer": (rule.int_answer, False),
    "correctness": (rule.correctness, False),
    "soft_format_lenient": (rule.soft_format_lenient, False),
    "strict_format_lenient": (rule.strict_format_lenient, False),
    "int_answer_numeric": (rule.int_answer_numeric, False),
    "correctness_numeric": (rule.correctness_numeric, False),
    "final_number": (rule.final_number, False),
    "repetition": (_repetition, True),
    "length": (_length, True),
    "reward_model": (make_reward_model, True),
}

# What GRPOTrainer hands every reward on each call, besides the data set's own columns.
TRL_SUPPLIED = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments")

# The reproduction's five rule rewards, in its order.
R1_ZERO_REWARDS = ["xmlcount", "soft_format", "strict_format", "int_answer", "correctness"]


class NamedReward:
    """Callable class (not a closure) so TRL can pickle it for async rollout workers."""

    def __init__(self, name: str, func: Callable, source: str):
        self.__name__ = name
        self.func = func
        self.source = source

    def __call__(self, prompts=None, completions=None, completion_ids=None, **kwargs) -> list[float | None]:
        expected = len(completions if completions is not None else completion_ids)
        try:
            scores = self.func(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
        except TifaError:
            raise
        except Exception as exc:
            raise RewardError(f"reward {self.__name__!r} ({self.source}) raised {_describe(exc)}") from exc
        return self.check(scores, expected)

    def check(self, scores, expected: int) -> list[float | None]:
        try:
            scores = list(scores)
        except TypeError:
            raise RewardError(
                f"reward {self.__name__!r} ({self.source}) returned {type(scores).__name__}; "
                f"it must return a list of {expected} floats (one per completion)."
            ) from None
        if len(scores) != expected:
            raise RewardError(
                f"reward {self.__name__!r} ({self.source}) returned {len(scores)} scores for {expected} "
                "completions; it must return exactly one score (float or None) per completion."
            )
        out: list[float | None] = []
        for i, s in enumerate(scores):
            if s is None:
                out.append(None)  # TRL reads None as "no opinion" (NaN, skipped in the weighted sum)
                continue
            try:
                value = float(s)
            except (TypeError, ValueError):
                raise RewardError(
                    f"reward {self.__name__!r} ({self.source}) returned {s!r} for completion {i}; "
                    "scores must be numbers or None."
                ) from None
            out.append(value)
        return out

    def __repr__(self) -> str:
        return f"NamedReward({self.__name__!r}, {self.source})"


class AsyncNamedReward(NamedReward):
    """For ``async def`` rewards (remote judges): TRL awaits them concurrently."""

    async def __call__(self, prompts=None, completions=None, completion_ids=None, **kwargs) -> list[float | None]:
        expected = len(completions if completions is not None else completion_ids)
        try:
            scores = await self.func(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
        except TifaError:
            raise
        except Exception as exc:
            raise RewardError(f"reward {self.__name__!r} ({self.source}) raised {_describe(exc)}") from exc
        return self.check(scores, expected)


def _describe(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _load_reference(ref: str) -> tuple[Callable, str]:
    """``module.path:function`` or ``path/to/file.py:function`` → (object, its attribute name)."""
    target, _, attr = ref.rpartition(":")
    if not target or not attr:
        raise ConfigError(
            f"grpo.rewards: {ref!r} is not a known reward. Use one of {', '.join(REGISTRY)}, "
            "trl:<name>, module.path:function or path/to/file.py:function."
        )
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise ConfigError(f"grpo.rewards: {ref!r}: no such file {path}.")
        mod_name = "tifa_lite_user_rewards_" + re.sub(r"\W", "_", str(path.resolve()))
        spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module  # so pickling by reference finds it again
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise ConfigError(f"grpo.rewards: importing {path} for {ref!r} failed: {_describe(exc)}") from exc
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ConfigError(f"grpo.rewards: {ref!r}: cannot import module {target!r} ({exc}).") from exc
    if not hasattr(module, attr):
        public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise ConfigError(f"grpo.rewards: {ref!r}: {target} has no {attr!r} (it has {', '.join(public[:12])}).")
    return getattr(module, attr), attr


def _is_async(func: Callable) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(getattr(func, "__call__", None))


def _is_factory(attr: str) -> bool:
    return attr.startswith(("get_", "make_"))


def _unique(name: str, taken: set[str]) -> str:
    base, n = name, 2
    while name in taken:
        name = f"{base}_{n}"
        n += 1
    taken.add(name)
    return name


@dataclass
class ResolvedRewards:
    funcs: list[NamedReward]  # AsyncNamedReward for async def rewards
    weights: list[float]

    @property
    def names(self) -> list[str]:
        return [f.__name__ for f in self.funcs]


def resolve_reward(name: str, kwargs: dict[str, Any] | None = None, context: dict[str, Any] | None = None,
                   key: str = "grpo.rewards.kwargs"):
    """One reward spec → ``(callable, display name, source)``. ``kwargs`` are typed by the
    parameters of the factory or reward they go to; ``key`` names them in errors."""
    kwargs = dict(kwargs or {})
    context = dict(context or {})
    if name in REGISTRY:
        func, factory = REGISTRY[name]
        source = f"tifa_lite.rewards:{name}"
        display = name
        if factory:
            # Run-wide values (max_completion_length) are defaults the recipe's kwargs override.
            func = functools.partial(func, **{k: v for k, v in context.items() if k not in kwargs})
    elif name.startswith("trl:"):
        attr = name[4:]
        import trl.rewards

        available = [n for n in dir(trl.rewards) if not n.startswith("_") and not n.endswith("_rewards")]
        if attr not in available:
            raise ConfigError(f"grpo.rewards: {name!r}: TRL has no reward {attr!r} (it has {', '.join(available)}).")
        func = getattr(trl.rewards, attr)
        source = name
        display = re.sub(r"^get_", "", attr)
        factory = _is_factory(attr)
    else:
        func, attr = _load_reference(name)
        source = name
        display = re.sub(r"^(get_|make_)", "", attr)
        factory = _is_factory(attr)
        if not callable(func):
            raise ConfigError(f"grpo.rewards: {name!r} is not callable.")
    kwargs = _typed_kwargs(func, factory, kwargs, key, name)
    if factory:
        try:
            func = func(**kwargs)
        except Exception as exc:
            raise ConfigError(f"grpo.rewards: building {name!r} with kwargs {kwargs} failed: {_describe(exc)}") from exc
    elif kwargs:
        func = functools.partial(func, **kwargs)
    return func, display, source


def _typed_kwargs(func: Callable, factory: bool, kwargs: dict[str, Any], key: str, name: str) -> dict[str, Any]:
    """A factory's kwargs are its parameters; a reward's are its parameters other than what
    TRL passes it on every call (binding those would be overridden without a word)."""
    if not kwargs:
        return kwargs
    return coerce(kwargs, keyword_parameters(func, exclude=() if factory else TRL_SUPPLIED), key, f"reward {name!r}")


def build_rewards(specs: list, context: dict[str, Any] | None = None) -> ResolvedRewards:
    """``specs``: RewardSpec models (or dicts with name/weight/kwargs) in recipe order."""
    funcs, weights, taken = [], [], set()
    for index, spec in enumerate(specs):
        if isinstance(spec, dict):
            name, weight, kwargs = spec["name"], spec.get("weight", 1.0), spec.get("kwargs", {})
        else:
            name, weight, kwargs = spec.name, spec.weight, spec.kwargs
        if not math.isfinite(float(weight)):
            raise ConfigError(f"grpo.rewards: {name!r} has a non-finite weight {weight}.")
        func, display, source = resolve_reward(name, kwargs, context, key=f"grpo.rewards[{index}].kwargs")
        wrapper = AsyncNamedReward if _is_async(func) else NamedReward
        funcs.append(wrapper(_unique(display, taken), func, source))
        weights.append(float(weight))
    return ResolvedRewards(funcs, weights)
