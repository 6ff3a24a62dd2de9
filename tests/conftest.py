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


@pytest.fixture
def fake_cuda(monkeypatch):
    """Make the ``torch.cuda`` queries tifa_lite reads answer like a GPU: call the fixture's
    value with the card (default a Colab T4). ``is_bf16_supported`` answers True, as torch
    2.13 does on a T4 through emulation, so code that asks it instead of the capability is
    caught. Nothing is allocated: tests use it for decisions, not tensors."""
    import types

    import torch

    monkeypatch.delenv("TIFA_LITE_NO_BF16", raising=False)

    def set_gpu(capability=(7, 5), name="Tesla T4", memory_gib=14.74, free_gib=None):
        props = types.SimpleNamespace(name=name, total_memory=int(memory_gib * 2**30), major=capability[0],
                                      minor=capability[1])
        free = int((memory_gib if free_gib is None else free_gib) * 2**30)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, props.total_memory))
        monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda device=None: 1.0)
        monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
        return props

    return set_gpu


@pytest.fixture(scope="session")
def zoo_model_dir(tmp_path_factory, embedded_model_dir):
    """``zoo_model_dir(family)``: the family's tiny random model (tifa_lite.modeling.zoo) saved
    with the real SmolLM2 tokenizer, built once per session; a family this transformers lacks
    is skipped with its reason."""
    from tifa_lite.modeling.zoo import build_zoo_model, missing_reason

    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        reason = missing_reason(family)
        if reason:
            pytest.skip(reason)
        if family not in built:
            built[family] = build_zoo_model(family, tmp_path_factory.mktemp(f"zoo_{family}"), embedded_model_dir)
        return built[family]

    return get
