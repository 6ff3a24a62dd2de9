"""Supervised fine-tuning through TRL's SFTTrainer.

Data is tokenised by :mod:`tifa_lite.data` (assistant-only masks for any template,
optional row-wise packing) and handed over ready, so TRL's own preparation is skipped.
"""

from __future__ import annotations

from datasets import Dataset

from tifa_lite.data.build import BuiltData, build_sft_data
from tifa_lite.data.tokenize import PaddingCollator, length_grouped_order
from tifa_lite.methods.common import Run, compose_trainer, make_config
from tifa_lite.methods.precheck import built_data


def build_trainer(run: Run):
    return trainer_for_data(run, built_data(run.config, run.tokenizer, build_sft_data))


def trainer_for_data(run: Run, data: BuiltData):
    from trl import SFTConfig, SFTTrainer

    run.data_report.update(data.report)
    rows = data.train
    lengths = [len(r["input_ids"]) for r in rows]
    # CPT blocks are all of one length: nothing to group. Packed rows are not (a row holds
    # what fitted), so they are grouped too.
    grouped = len(set(lengths)) > 1
    if grouped:
        # Batches of similar length, cut in this order by a sequential sampler (resumable:
        # the order is fixed by the seed). Every epoch repeats it.
        order = length_grouped_order(lengths, run.config.train.per_device_batch_size, run.config.train.seed)
        rows = [rows[i] for i in order]
    args = make_config(
        SFTConfig,
        run,
        max_length=None,  # lengths were enforced (and counted) when the data was built
        packing=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        train_sampling_strategy="sequential" if grouped else "random",
    )
    return compose_trainer(
        SFTTrainer, run, args,
        Dataset.from_list(rows),
        Dataset.from_list(data.eval) if data.eval else None,
        data_collator=PaddingCollator(pad_token_id=run.tokenizer.pad_token_id),
    )
