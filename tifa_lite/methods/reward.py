"""``train.method: reward``: a Bradley-Terry reward model (Ziya2-style) with
``trl.RewardTrainer`` on a one-logit sequence-classification head.

:func:`tifa_lite.modeling.load` already loads ``AutoModelForSequenceClassification``
(``num_labels=1``) and gives LoRA ``task_type=SEQ_CLS``, for which PEFT trains the new
``score`` head in full alongside the adapter. TRL logs the preference accuracy
(``eval_accuracy``) whenever an eval split is given (``data.eval_path``/``eval_ratio``).
"""

from __future__ import annotations

from tifa_lite.data.preference import load_preference_splits, to_dataset
from tifa_lite.errors import ConfigError
from tifa_lite.methods.common import Run, compose_trainer, make_config
from tifa_lite.methods.precheck import built_data


def build_trainer(run: Run):
    from trl import RewardConfig, RewardTrainer

    if not getattr(run.model.config, "num_labels", None) == 1:
        raise ConfigError(
            "train.method=reward needs a one-logit sequence-classification model; this one was loaded as "
            f"{type(run.model).__name__}. Load it through tifa_lite.modeling with train.method=reward."
        )
    train_rows, eval_rows, report = built_data(run.config, run.tokenizer, load_preference_splits)
    run.data_report.update(report)
    args = make_config(RewardConfig, run, max_length=run.config.data.max_length)
    # The score head is trainable in full: compose_trainer puts it in the adapter dtype with the LoRA weights.
    return compose_trainer(RewardTrainer, run, args, to_dataset(train_rows), to_dataset(eval_rows) if eval_rows else None)
