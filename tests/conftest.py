"""Shared fixtures. Real-model fixtures use the embedded SmolLM2-135M-Instruct
(converted once into the tifa_lite cache); unit tests use a tiny random Llama that
shares its tokenizer, so chat templates and token ids are the real ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The full public data sets live beside the checkout in CI (../shared/data); a clone on its
# own has only the samples in data/. TIFA_LITE_SHARED_DATA points elsewhere.
SHARED_DATA = Path(os.environ.get("TIFA_LITE_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")
SAMPLE_DATA = REPO_ROOT / "data"
SHARED_DATA_MISSING = (
    f"integration: {SHARED_DATA} is absent (the full data sets beside the checkout; "
    "set TIFA_LITE_SHARED_DATA to use another folder)"
)

# Two cores: keep torch from oversubscribing when pytest and torch both spawn work.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    from tifa_lite.modeling.embedded import embedded_checkpoint

    return embedded_checkpoint("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_model_dir) -> Path:
    """A 2-layer random Llama with the real SmolLM2 tokenizer (fast unit tests)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(config, items):
    """Every test that reads the shared data sets is in the `integration` group, whether it
    says so or only asks for the `shared_data` fixture; the group is skipped, with its
    reason, where the folder is absent (a fresh clone) and runs where it is present (CI)."""
    skip = pytest.mark.skip(reason=SHARED_DATA_MISSING)
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
        if item.get_closest_marker("integration") and not SHARED_DATA.is_dir():
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(SHARED_DATA_MISSING)
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_data() -> Path:
    return SAMPLE_DATA
