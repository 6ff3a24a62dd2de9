"""Supervised fine-tuning through TRL's SFTTrainer.

Data is tokenised by :mod:`tifa_lite.data` (assistant-only masks for any template,
optional row-wise packing) and handed over ready, so TRL's own preparation is skipped.
"""

from __future__ import annotations

from datasets import Dataset

from tifa_lite.data.build import BuiltData, build_sft_data
from tifa_lite.data.tokenize import PaddingCollator
from tifa_lite.methods.common import Run, compose_trainer, make_config


def build_trainer(run: Run):
    return trainer_for_data(run, build_sft_data(run.config, run.tokenizer))


def trainer_for_data(run: Run, data: BuiltData):
    from trl import SFTConfig, SFTTrainer

    run.data_report.update(data.report)
    args = make_config(
        SFTConfig,
        run,
        max_length=None,  # lengths were enforced (and counted) when the data was built
        packing=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        # Rows sorted into similar lengths waste less compute on padding.
        train_sampling_strategy="group_by_length" if not run.config.train.packing else "random",
    )
    return compose_trainer(
        SFTTrainer, run, args,
        Dataset.from_list([{**s, "length": len(s["input_ids"])} for s in data.train]),
        Dataset.from_list(data.eval) if data.eval else None,
        data_collator=PaddingCollator(pad_token_id=run.tokenizer.pad_token_id),
    )
