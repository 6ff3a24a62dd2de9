from pathlib import Path

import pytest

from tifa_lite.config.schema import ModelConfig
from tifa_lite.errors import ConfigError
from tifa_lite.modeling.embedded import CONVERSION_MARKER, gguf_path
from tifa_lite.modeling.resolve import resolve_model


def test_embedded_default_resolves_to_converted_checkpoint(embedded_model_dir):
    resolved = resolve_model(ModelConfig(name_or_path="smollm2-135m-instruct"))
    assert Path(resolved.path) == embedded_model_dir
    assert (embedded_model_dir / CONVERSION_MARKER).is_file()
    assert (embedded_model_dir / "model.safetensors").is_file()
    assert resolved.origin == "embedded:smollm2-135m-instruct"


def test_converted_checkpoint_has_no_gguf_quantisation_record(embedded_model_dir):
    import json

    # A leftover GgufConfig would make every bitsandbytes load fail.
    assert "quantization_config" not in json.loads((embedded_model_dir / "config.json").read_text())


def test_local_folder(tiny_model_dir):
    resolved = resolve_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    assert resolved.path == str(tiny_model_dir.resolve()) and resolved.origin.startswith("local:")


def test_gguf_file_is_loaded_through_transformers():
    gguf = gguf_path("smollm2-135m-instruct")
    resolved = resolve_model(ModelConfig(name_or_path=str(gguf)))
    assert resolved.gguf_file == gguf.name and resolved.path == str(gguf.parent)


def test_adapter_folder_is_not_a_model(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="LoRA adapter; set model.name_or_path to its base"):
        resolve_model(ModelConfig(name_or_path=str(tmp_path)))


def test_missing_local_path(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_model(ModelConfig(name_or_path=str(tmp_path / "nope"), source="local"))
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_model(ModelConfig(name_or_path="./nope-model"))


def test_hub_id_passes_through_without_network():
    resolved = resolve_model(ModelConfig(name_or_path="Qwen/Qwen2.5-0.5B-Instruct"))
    assert resolved.path == "Qwen/Qwen2.5-0.5B-Instruct" and resolved.origin == "hf:Qwen/Qwen2.5-0.5B-Instruct"


@pytest.fixture
def modelscope_online(monkeypatch):
    """ModelScope answering (tests never touch the network: the probe is replaced)."""
    from tifa_lite import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "reachable", lambda host, port=443: True)


def test_modelscope_source_uses_snapshot_download(monkeypatch, tmp_path, modelscope_online):
    import sys
    import types

    calls = []
    fake = types.ModuleType("modelscope")
    fake.snapshot_download = lambda name, revision=None: calls.append((name, revision)) or str(tmp_path)
    monkeypatch.setitem(sys.modules, "modelscope", fake)
    resolved = resolve_model(ModelConfig(name_or_path="qwen/Qwen2.5-0.5B-Instruct", source="modelscope"))
    assert calls == [("qwen/Qwen2.5-0.5B-Instruct", None)] and resolved.path == str(tmp_path)


def test_modelscope_without_package_is_a_clear_error(monkeypatch, modelscope_online):
    import sys

    monkeypatch.setitem(sys.modules, "modelscope", None)
    with pytest.raises(ConfigError, match="pip install modelscope"):
        resolve_model(ModelConfig(name_or_path="qwen/Qwen2.5-0.5B-Instruct", source="modelscope"))


def test_unreachable_modelscope_uses_its_cache_or_says_so_in_one_line(monkeypatch, tmp_path):
    """Offline: a cached copy (newer ModelScope escapes dots as ___) is used; another id is refused."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path))
    cached = tmp_path / "models" / "qwen" / "Qwen2___5-0___5B-Instruct"
    cached.mkdir(parents=True)
    (cached / "config.json").write_text("{}")
    resolved = resolve_model(ModelConfig(name_or_path="qwen/Qwen2.5-0.5B-Instruct", source="modelscope"))
    assert resolved.path == str(cached)
    with pytest.raises(ConfigError, match="ModelScope hub is unreachable .HF_HUB_OFFLINE is set.. Did you mean") as info:
        resolve_model(ModelConfig(name_or_path="qwen/Qwen2.5-0.5B-Instruc", source="modelscope"))
    assert "qwen/Qwen2___5-0___5B-Instruct" in str(info.value) or "Qwen/Qwen2.5-0.5B-Instruct" in str(info.value)


def test_missing_local_folder_suggests_the_one_beside_it(tmp_path):
    (tmp_path / "qwen2.5-7b-merged").mkdir()
    with pytest.raises(ConfigError, match=f"does not exist. Did you mean {tmp_path / 'qwen2.5-7b-merged'}"):
        resolve_model(ModelConfig(name_or_path=str(tmp_path / "qwen2.5-7b-merge")))
