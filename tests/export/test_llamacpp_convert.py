"""llama.cpp's own converter and quantiser. What needs nothing fetched runs always (the
refusal without libllama, the outtype choices); conversion itself is in the opt-in
`llamacpp` group (it fetches the pinned llama-cpp-python sdist once; K-quants need the build)."""

from __future__ import annotations

import builtins
import pytest

from tifa_lite.errors import ConfigError
from tifa_lite.export import llamacpp_convert
from tifa_lite.export.gguf import ExportError, export_gguf


@pytest.fixture
def no_libllama(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "llama_cpp":
            raise ImportError("no llama_cpp")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


@pytest.mark.parametrize("outtype", ["q4_k_m", "q5_k_m", "q6_k"])
def test_k_quant_without_the_compiled_library_says_what_to_run(tiny_model_dir, tmp_path, no_libllama, outtype, monkeypatch):
    monkeypatch.setattr(llamacpp_convert, "convert", lambda *a: pytest.fail("converted before finding the quantiser"))
    with pytest.raises(ExportError, match=rf"{outtype} is made by llama.cpp's quantiser .* scripts/install_llama_cpp.sh"):
        export_gguf(tiny_model_dir, tmp_path / "m.gguf", outtype=outtype)
    assert list(tmp_path.iterdir()) == []


def test_outtypes_per_converter(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="builtin writer; llama.cpp's converter makes the K-quants"):
        export_gguf(tiny_model_dir, tmp_path / "m.gguf", outtype="q4_k_m", converter="builtin")
    with pytest.raises(ConfigError, match="--converter"):
        export_gguf(tiny_model_dir, tmp_path / "m.gguf", converter="ollama")
    assert set(llamacpp_convert.OUTTYPES) == {"q4_k_m", "q5_k_m", "q6_k", "q8_0", "f16", "bf16"}


def test_ollama_cli_defaults_to_q4_k_m():
    import argparse

    from tifa_lite.cli import export_ollama

    parser = argparse.ArgumentParser()
    export_ollama.register(parser.add_subparsers())
    args = parser.parse_args(["ollama", "--model", "m", "--output", "o"])
    assert args.outtype == "q4_k_m" and args.converter == "llama.cpp"


@pytest.fixture
def llama_cpp_source(request):
    if "llamacpp" not in (request.config.getoption("-m") or ""):
        pytest.skip("opt-in group (fetches llama-cpp-python's source release once): `pytest -m llamacpp`")
    return llamacpp_convert.converter_dir()


@pytest.mark.llamacpp
@pytest.mark.parametrize("outtype", ["f16", "q8_0"])
def test_llama_cpp_converter_round_trips(llama_cpp_source, tiny_model_dir, tmp_path, outtype):
    """The converter alone (no compile): the file loads back in transformers like the HF folder."""
    import gguf

    report = export_gguf(tiny_model_dir, tmp_path / "m.gguf", outtype=outtype)
    assert report["converter"] == "llama.cpp" and report["round_trip"]["passed"]
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    assert bytes(reader.fields["general.architecture"].parts[-1]).decode() == "llama"
    assert (llama_cpp_source / "convert_hf_to_gguf.py").is_file()


@pytest.mark.llamacpp
@pytest.mark.slow
def test_k_quants_of_the_embedded_model_pass_the_parity_steps(llama_cpp, embedded_model_dir, tmp_path):
    """Every K-quant made by llama.cpp's quantiser, run in llama.cpp against the HF folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tifa_lite.conversation.template_structure import end_of_turn_ids
    from tifa_lite.export.parity import MAX_MEAN_KL, MIN_TOP1, gguf_row, reference_from

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    ids = [list(tok.apply_chat_template([{"role": "user", "content": "Hi! What is your name?"}],
                                        add_generation_prompt=True, return_dict=True)["input_ids"])]
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32).eval()
    ref = reference_from(model, ids, end_of_turn_ids(tok, tok.eos_token_id), 24)
    for outtype in ("q4_k_m", "q5_k_m", "q6_k"):
        out = tmp_path / f"{outtype}.gguf"
        export_gguf(embedded_model_dir, out, outtype=outtype, check=False)
        row = gguf_row(out, embedded_model_dir, ref, ref.replies, 24)
        assert row.runtime == "llama.cpp" and outtype in row.step
        assert row.metrics["mean_kl"] <= MAX_MEAN_KL[outtype] and row.metrics["top1_agreement"] >= MIN_TOP1[outtype], row.metrics


@pytest.mark.llamacpp
@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "qwen3_moe", "qwen3_next", "qwen3_5", "mistral",
                                    "phi3", "gemma3", "glm4", "gpt_oss", "deepseek_v3", "smollm3"])
def test_every_zoo_family_converts_or_is_refused_in_one_line(llama_cpp_source, zoo_model_dir, tmp_path, family):
    """llama.cpp's converter over the model zoo: a file whose round trip passed, or an
    ExportError that says what failed (the converter's refusal, a round trip that differs —
    Mistral's window, which llama.cpp's llama architecture does not have — or a GGUF that
    transformers cannot read back); never another library's exception, never a file left."""
    out = tmp_path / "m.gguf"
    try:
        report = export_gguf(zoo_model_dir(family), out, outtype="f16")
    except ExportError as error:
        assert str(error) and not out.exists()
    else:
        assert report["round_trip"]["passed"] and out.is_file()
