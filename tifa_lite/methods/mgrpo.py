"""``grpo.passes: 2``: Tifa's two-pass GRPO ("GRPO+GRPO", MGRPO) on TRL's GRPOTrainer.

Pass 1 is TRL's own generation and scoring. For each group whose lowest-scoring completion
is below ``grpo.revision.threshold``, a revision prompt is built: the original prompt, that
first answer, and a critique made of the sentences of the rewards it failed
(:mod:`tifa_lite.rewards.critique`). Pass 2 is TRL's generation and scoring again, on the
revision prompts (each repeated ``num_generations`` times, so it forms groups of its own);
its completions are scored as answers to the *original* prompt, so every reward (a
reward model included) judges the revised answer, not the revision dialogue. The two
batches are concatenated, each with the group-relative advantages TRL computed for it,
and TRL's loss runs on the union.

The subclass overrides two methods of GRPOTrainer and nothing in its loss: see
``docs/mgrpo.md`` for what TRL made easy and what it did not.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from trl import GRPOTrainer

from tifa_lite.config.schema import RevisionConfig
from tifa_lite.errors import ConfigError
from tifa_lite.rewards.critique import critique

# Tensors TRL left-pads (the prompt side); every other per-token tensor is right-padded.
LEFT_PADDED = ("prompt_ids", "prompt_mask")


def revision_prompt(prompt: Any, completion: Any, critique_text: str, template: str) -> Any:
    """The original prompt, the first answer, then the critique as the next user turn."""
    request = template.replace("{critique}", critique_text)
    if isinstance(prompt, list):
        answer = completion[-1]["content"] if isinstance(completion, list) else str(completion)
        return [*prompt, {"role": "assistant", "content": answer}, {"role": "user", "content": request}]
    return f"{prompt}{completion}\n\n{request}\n\n"


def groups_to_revise(totals: list[float], group_size: int, threshold: float | None, unit: int = 1) -> list[int]:
    """Row index of the lowest-scoring completion of each group to revise, lowest first.

    A group is revised when that completion is below ``threshold`` (always when None). The
    count is cut to a multiple of ``unit`` so the merged batch still splits evenly into
    TRL's ``steps_per_generation`` micro-batches, dropping the highest-scoring candidates."""
    candidates = []
    for start in range(0, len(totals), group_size):
        group = totals[start : start + group_size]
        scored = [(s, start + i) for i, s in enumerate(group) if not math.isnan(s)]
        if not scored:
            continue
        low, row = min(scored)
        if threshold is None or low < threshold:
            candidates.append((low, row))
    candidates.sort()
    keep = len(candidates) // unit * unit
    return [row for _, row in candidates[:keep]]


def merge_batches(first: dict[str, Any], second: dict[str, Any], pad_token_id: int) -> dict[str, Any]:
    """One training batch from two outputs of ``_generate_and_score_completions``."""
    if first.keys() != second.keys():
        raise ConfigError(f"MGRPO: the two passes produced different inputs ({sorted(first)} vs {sorted(second)}).")
    merged: dict[str, Any] = {}
    for key, a in first.items():
        b = second[key]
        if not isinstance(a, torch.Tensor):
            raise ConfigError(f"MGRPO supports text-only GRPO; the batch carries {key!r} ({type(a).__name__}).")
        if a.dim() == 0:  # num_items_in_batch: the loss normalises by the tokens of both passes
            merged[key] = a + b
        elif a.dim() == 1:
            merged[key] = torch.cat([a, b])
        elif a.dim() == 2:
            value = pad_token_id if key in ("prompt_ids", "completion_ids") else 1 if key == "tool_mask" else 0
            width = max(a.size(1), b.size(1))
            left = key in LEFT_PADDED
            merged[key] = torch.cat([_pad_to(a, width, value, left), _pad_to(b, width, value, left)])
        else:
            raise ConfigError(f"MGRPO supports text-only GRPO; the batch carries {key!r} with shape {tuple(a.shape)}.")
    return merged


def _pad_to(t: torch.Tensor, width: int, value: float, left: bool) -> torch.Tensor:
    missing = width - t.size(1)
    if not missing:
        return t
    return torch.nn.functional.pad(t, (missing, 0) if left else (0, missing), value=value)


class MGRPOTrainer(GRPOTrainer):
    def __init__(self, *args, revision: RevisionConfig, **kwargs):
        super().__init__(*args, **kwargs)
        if self.accelerator.num_processes > 1:
            raise ConfigError("grpo.passes=2 (MGRPO) runs in one process: a group's completions would be split across ranks.")
        self.revision = revision
        self._scoring_prompts: list | None = None
        self._last_scored: tuple[list, torch.Tensor] | None = None

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # Pass 2 scores the revised answers as answers to the original prompts.
        prompts = self._scoring_prompts if self._scoring_prompts is not None else prompts
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._last_scored = (completions, rewards_per_func)
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        first = super()._generate_and_score_completions(inputs)
        if not self.model.training:
            return first  # evaluation measures the policy as it answers: one pass
        completions, rewards_per_func = self._last_scored
        totals = self._totals(rewards_per_func)
        group = self.num_generations
        steps = self.args.steps_per_generation
        rows = groups_to_revise(totals.tolist(), group, self.revision.threshold, unit=steps // math.gcd(group, steps))
        metrics = self._metrics["train"]
        metrics["mgrpo/pass1_reward"].append(torch.nanmean(totals).item())
        metrics["mgrpo/revised_groups"].append(float(len(rows)))
        if not rows:
            return first

        names = [n for n, w in zip(self.reward_func_names, self.reward_weights.tolist()) if w != 0]
        columns = [self.reward_func_names.index(n) for n in names]
        revision_inputs, scoring_prompts = [], []
        for row in rows:
            start = row - row % group
            block = rewards_per_func[start : start + group]
            scores = {n: block[row - start, c].item() for n, c in zip(names, columns)}
            groups = {n: block[:, c].tolist() for n, c in zip(names, columns)}
            text = critique(scores, groups, self.revision.critiques)
            prompt = revision_prompt(inputs[row]["prompt"], completions[row], text, self.revision.template)
            revision_inputs += [{**inputs[row], "prompt": prompt} for _ in range(group)]
            scoring_prompts += [inputs[row]["prompt"]] * group
        self._scoring_prompts = scoring_prompts
        try:
            second = super()._generate_and_score_completions(revision_inputs)
        finally:
            self._scoring_prompts = None
        starts = [r - r % group for r in rows]
        revised_first = torch.cat([rewards_per_func[s : s + group] for s in starts])
        second_rewards = self._last_scored[1]
        metrics["mgrpo/pass1_reward_revised_groups"].append(torch.nanmean(self._totals(revised_first)).item())
        metrics["mgrpo/pass2_reward"].append(torch.nanmean(self._totals(second_rewards)).item())
        # Per reward, so a log shows what the revision fixed (the number, or only the format).
        for i, name in enumerate(self.reward_func_names):
            metrics[f"mgrpo/pass1_revised/{name}"].append(torch.nanmean(revised_first[:, i]).item())
            metrics[f"mgrpo/pass2/{name}"].append(torch.nanmean(second_rewards[:, i]).item())
        return merge_batches(first, second, self._tokenizer.pad_token_id)

    def _totals(self, rewards_per_func: torch.Tensor) -> torch.Tensor:
        """Weighted reward sum per completion, as TRL sums it (NaN where every reward abstained)."""
        weights = self.reward_weights.to(rewards_per_func.device)
        totals = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
        totals[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
        return totals
