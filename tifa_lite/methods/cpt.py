"""Continued pre-training on raw text (novels): full-sequence loss over packed blocks,
through the same SFTTrainer path as SFT."""

from __future__ import annotations

from tifa_lite.data.build import build_cpt_data
from tifa_lite.methods.common import Run
from tifa_lite.methods.precheck import built_data
from tifa_lite.methods.sft import trainer_for_data


def build_trainer(run: Run):
    return trainer_for_data(run, built_data(run.config, run.tokenizer, build_cpt_data))
