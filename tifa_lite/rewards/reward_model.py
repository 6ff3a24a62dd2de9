"""``reward_model``: a trained reward model (a ``train.method: reward`` output) as a GRPO reward.

    grpo:
      rewards:
        - {name: reward_model, kwargs: {path: outputs/reward_qlora_hh, batch_size: 8, standardize: true}}

``path`` is the run's output: a LoRA adapter (``adapter_config.json``; its base is the one
the run's ``resolved_config.yaml`` names) or a merged sequence-classification model. It is
loaded once, when the rewards are built. Each prompt + completion is rendered with the
*policy's* chat template (the text the policy actually produced, in the layout the reward
model was trained on when both share a base), tokenised with the reward model's tokenizer,
cut to its last ``max_length`` tokens (the score is read at the last token, the reply's
end) and scored in batches of ``batch_size``. ``standardize`` rescales each call's scores
to mean 0 and standard deviation 1, so a reward model's arbitrary scale does not drown
the other rewards of the sum.

Why not hand TRL the model itself (GRPOTrainer accepts a sequence-classification model as
a reward function): TRL renders with the reward model's tokenizer and template, scores the
whole generation batch in one forward pass with no truncation, cannot standardise, and
names the reward after the model's hub id; and it cannot load an adapter folder by path.
A callable keeps all of that here and goes through the same :class:`NamedReward`
error reporting as every other reward.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from tifa_lite.errors import ConfigError


def _check_reward_output(path: Path) -> bool:
    """True for an adapter folder, False for a merged model; ConfigError for anything else."""
    hint = "Train one first, e.g. tifa-lite train recipes/reward_qlora_hh.yaml, and give its train.output_dir."
    if not path.is_dir():
        raise ConfigError(f"grpo.rewards: reward_model path {path} does not exist. {hint}")
    adapter = path / "adapter_config.json"
    if adapter.is_file():
        task = json.loads(adapter.read_text(encoding="utf-8")).get("task_type")
        if task != "SEQ_CLS":
            raise ConfigError(f"grpo.rewards: reward_model path {path} is a {task} adapter, not a reward model (SEQ_CLS). {hint}")
        return True
    config = path / "config.json"
    architectures = (json.loads(config.read_text(encoding="utf-8")).get("architectures") or []) if config.is_file() else []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ConfigError(
            f"grpo.rewards: reward_model path {path} holds neither a reward-model adapter nor a sequence-classification "
            f"model (architectures {architectures or 'unknown'}). {hint}"
        )
    return False


class RewardModelReward:
    def __init__(self, path: str, policy_tokenizer: Any = None, batch_size: int = 8, standardize: bool = False,
                 max_length: int = 1024, bits: int | None = None, hardware: Any = None):
        from tifa_lite.modeling.inference import load_inference_model

        folder = Path(path).expanduser().resolve()
        is_adapter = _check_reward_output(folder)
        self.model, self.tokenizer, *_ = load_inference_model(
            None if is_adapter else folder, folder if is_adapter else None, bits=bits, reward_head=True,
            hardware=hardware)
        if getattr(self.model.config, "num_labels", None) != 1:
            raise ConfigError(f"grpo.rewards: reward_model path {folder} has {self.model.config.num_labels} labels, not 1.")
        self.policy_tokenizer = policy_tokenizer or self.tokenizer
        self.batch_size, self.standardize, self.max_length = int(batch_size), bool(standardize), int(max_length)

    def render(self, prompt: Any, completion: Any) -> str:
        if isinstance(prompt, list):
            reply = completion if isinstance(completion, list) else [{"role": "assistant", "content": str(completion)}]
            return self.policy_tokenizer.apply_chat_template(prompt + reply, tokenize=False)
        return f"{prompt}{completion}"

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        from tifa_lite.evaluation.preference import reward_scores

        ids = [
            self.tokenizer(self.render(p, c), add_special_tokens=False)["input_ids"][-self.max_length:]
            for p, c in zip(prompts, completions)
        ]
        scores = reward_scores(self.model, self.tokenizer, ids, self.batch_size)
        if self.standardize and len(scores) > 1:
            mean, std = statistics.fmean(scores), statistics.pstdev(scores)
            scores = [(s - mean) / (std + 1e-6) for s in scores]
        return scores


def make_reward_model(path: str, batch_size: int = 8, standardize: bool = False, max_length: int = 1024,
                      bits: int | None = None, policy_tokenizer: Any = None, hardware: Any = None,
                      **_context) -> RewardModelReward:
    """The registry's factory: loads the reward model once, when the rewards are built, on the
    run plan's hardware (``hardware`` from the training run's context)."""
    return RewardModelReward(path, policy_tokenizer, batch_size, standardize, max_length, bits, hardware)
