"""Ollama export: the Modelfile's TEMPLATE renders a two-turn conversation exactly as the
training chat template does — checked against a golden string, by our interpreter, and by
Go's own text/template (Ollama's engine) when `go` is installed — plus stops, sampling and
the folder written whole or not at all."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tifa_lite.errors import ConfigError
from tifa_lite.export.gguf import ExportError
from tifa_lite.export.gotemplate import ollama_messages, render_go_template
from tifa_lite.export.ollama import CHECK_CONVERSATIONS, export_ollama, modelfile_text
from tifa_lite.conversation.templates import NAMED_TEMPLATES, NO_SYSTEM_TEMPLATES, apply_think_policy, render_named_template

GO_RENDERER = Path(__file__).parent / "go" / "render_ollama_template.go"
TWO_TURNS = CHECK_CONVERSATIONS[0]
# What the SmolLM2 template gives for TWO_TURNS, the earlier <think> block stripped (written out by hand).
GOLDEN_SMOLLM2 = (
    "<|im_start|>system\nYou are Tifa Lockhart, a bartender in Midgar.<|im_end|>\n"
    "<|im_start|>user\nHi! Who are you?<|im_end|>\n"
    "<|im_start|>assistant\nI'm Tifa. What can I get you?<|im_end|>\n"
    "<|im_start|>user\nSomething strong, please.<|im_end|>\n"
    "<|im_start|>assistant\n"
)


@pytest.fixture(scope="module")
def tokenizer(embedded_model_dir):
    return AutoTokenizer.from_pretrained(str(embedded_model_dir))


def _template(modelfile: str) -> str:
    return re.search(r'^TEMPLATE """(.*?)"""$', modelfile, re.S | re.M).group(1)


def _jinja(tokenizer, messages, strip=True) -> str:
    return tokenizer.apply_chat_template(apply_think_policy(messages, strip), tokenize=False, add_generation_prompt=True)


def test_two_turns_render_the_same_in_jinja_and_the_modelfile(tokenizer):
    template = _template(modelfile_text(tokenizer, {"temperature": 0.7}))
    assert _jinja(tokenizer, TWO_TURNS) == GOLDEN_SMOLLM2
    assert render_go_template(template, {"Messages": ollama_messages(TWO_TURNS)}) == GOLDEN_SMOLLM2


@pytest.mark.parametrize("name", sorted(NAMED_TEMPLATES))
@pytest.mark.parametrize("strip", [True, False])
def test_every_named_template_and_think_policy(tokenizer, name, strip):
    tok = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tok.chat_template = render_named_template(name, strip_think=strip)
    template = _template(modelfile_text(tok, {}, strip_think=strip))
    for messages in CHECK_CONVERSATIONS:
        if name in NO_SYSTEM_TEMPLATES and messages[0]["role"] == "system":
            # The Jinja refuses a system turn; the Modelfile drops it, rendering the rest the same.
            with pytest.raises(Exception, match="no system turn"):
                _jinja(tok, messages, strip)
            got = render_go_template(template, {"Messages": ollama_messages(messages)})
            assert got == _jinja(tok, messages[1:], strip)
            continue
        assert render_go_template(template, {"Messages": ollama_messages(messages)}) == _jinja(tok, messages, strip)


def test_a_template_without_a_system_turn_refuses_a_system_prompt(tokenizer):
    tok = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tok.chat_template = render_named_template("ziya")
    with pytest.raises(ExportError, match="no system turn.*without --system"):
        modelfile_text(tok, {}, system="You are Tifa.")


def test_go_text_template_itself_agrees(tokenizer):
    go = shutil.which("go")
    if go is None:
        pytest.skip("Go is not installed (apt-get install -y golang-go; scripts/test.sh does it): Go's own text/template not run")
    template = _template(modelfile_text(tokenizer, {}))
    for messages in CHECK_CONVERSATIONS:
        data = {"Template": template, "Messages": ollama_messages(messages)}
        run = subprocess.run([go, "run", str(GO_RENDERER)], input=json.dumps(data), capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stderr
        assert run.stdout == _jinja(tokenizer, messages)


def test_stops_and_sampling_parameters(tokenizer):
    text = modelfile_text(tokenizer, {"temperature": 0.4, "top_p": 0.6, "top_k": None, "repetition_penalty": 1.17,
                                      "max_new_tokens": 300}, system="You are Tifa.")
    assert 'PARAMETER stop "<|im_end|>"' in text
    assert "PARAMETER temperature 0.4" in text and "PARAMETER top_p 0.6" in text
    assert "PARAMETER repeat_penalty 1.17" in text and "PARAMETER num_predict 300" in text
    assert "top_k" not in text
    assert 'SYSTEM """You are Tifa."""' in text
    greedy = modelfile_text(tokenizer, {"do_sample": False, "temperature": 0.7, "top_p": 0.9})
    assert "PARAMETER temperature 0" in greedy and "top_p" not in greedy


def test_a_bos_the_runtime_adds_is_not_doubled(tokenizer):
    tok = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tok.chat_template = render_named_template("deepseek_r1")  # writes {{ bos_token }} first
    template = _template(modelfile_text(tok, {}, add_bos=True))
    rendered = render_go_template(template, {"Messages": ollama_messages(TWO_TURNS)})
    assert not rendered.startswith(tok.bos_token)
    assert tok.bos_token + rendered == _jinja(tok, TWO_TURNS)


def test_irregular_template_is_refused(tokenizer):
    tok = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    # Numbers each turn: no fixed per-role prefix, so no faithful Go template.
    tok.chat_template = "{% for m in messages %}[{{ loop.index }}]{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(ExportError, match="cannot write an Ollama TEMPLATE"):
        modelfile_text(tok, {})


def test_export_failure_leaves_nothing(tiny_model_dir, tmp_path, monkeypatch):
    from tifa_lite.export import ollama

    def gguf_then_fail(model_dir, path, **kwargs):
        path.write_bytes(b"half a file")
        raise ExportError("simulated")

    monkeypatch.setattr(ollama, "export_gguf", gguf_then_fail)
    with pytest.raises(ExportError, match="simulated"):
        export_ollama(tiny_model_dir, tmp_path / "out", outtype="f16", check=False, converter="builtin")
    assert list(tmp_path.iterdir()) == []


def test_export_refusals(tiny_model_dir, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        export_ollama(tiny_model_dir, busy, check=False)
    with pytest.raises(ConfigError, match="merge"):
        export_ollama(tmp_path, tmp_path / "o", check=False)


def test_cli_writes_the_folder_whole(tiny_model_dir, tmp_path, capsys):
    import gguf

    from tifa_lite.cli import main

    system = tmp_path / "card.txt"
    system.write_text("You are Tifa Lockhart.\n")
    out = tmp_path / "tifa-ollama"
    assert main(["export", "ollama", "--model", str(tiny_model_dir), "--output", str(out), "--outtype", "f16", "--converter", "builtin",
                 "--no-check", "--system-file", str(system), "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "ollama create" in lines[1]
    assert json.loads(lines[-1])["modelfile"] == str(out / "Modelfile")
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "model.gguf"]
    assert not list(tmp_path.glob(".*partial*"))
    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model.gguf\n")
    assert 'SYSTEM """You are Tifa Lockhart."""' in modelfile
    # The runtime must not add a BOS: the SmolLM2 template writes none.
    reader = gguf.GGUFReader(out / "model.gguf")
    assert bool(reader.fields["tokenizer.ggml.add_bos_token"].contents()) is False


@pytest.fixture
def fake_lora_conversion(monkeypatch, tmp_path):
    """llama.cpp's LoRA converter is exercised in the opt-in llamacpp group
    (tests/export/test_llamacpp_lora.py); here it is replaced to test the folder and Modelfiles."""
    from tifa_lite.export import llamacpp_lora

    converted = []

    def convert(folder, base):
        converted.append(folder.name)
        path = tmp_path / f"converted-{folder.name}.gguf"
        path.write_bytes(b"GGUF lora " + folder.name.encode())
        return path

    monkeypatch.setattr(llamacpp_lora, "cached_lora_gguf", convert)
    return converted


def test_characters_get_one_modelfile_each_with_their_adapter_template_and_sampling(
        tiny_model_dir, tmp_path, capsys, fake_lora_conversion, monkeypatch):
    from tests.serving.test_adapters import _make_adapter
    from tifa_lite.cli import main

    tong = _make_adapter(tiny_model_dir, tmp_path / "tong", 1, {}, {"do_sample": False, "max_new_tokens": 5})
    hermione = _make_adapter(tiny_model_dir, tmp_path / "hermione", 2, {"chat_template": "deepseek_r1", "think_policy": "keep"},
                             {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 40})
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ollama").write_text("#!/bin/sh\necho 'ollama version is 0.13.5'\n")
    (bin_dir / "ollama").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    out = tmp_path / "cast"
    assert main(["export", "ollama", "--model", str(tiny_model_dir), "--adapter", f"tong={tong}",
                 "--adapter", f"hermione={hermione}", "--output", str(out), "--outtype", "f16",
                 "--converter", "builtin", "--no-check", "--json"]) == 0
    printed = capsys.readouterr().out
    report = json.loads(printed.strip().splitlines()[-1])
    assert fake_lora_conversion == ["tong", "hermione"]
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile.hermione", "Modelfile.tong", "hermione.lora.gguf",
                                                     "model.gguf", "tong.lora.gguf"]
    assert (out / "tong.lora.gguf").read_bytes() == b"GGUF lora tong"
    assert "ollama create tong -f" in printed and "ollama version is 0.13.5" in printed
    assert report["ollama"]["installed"] == "ollama version is 0.13.5"
    assert any("one ADAPTER per Ollama model" in rule for rule in report["ollama"]["rules"])
    tong_file, hermione_file = (out / "Modelfile.tong").read_text(), (out / "Modelfile.hermione").read_text()
    assert tong_file.startswith("FROM ./model.gguf\nADAPTER ./tong.lora.gguf\n")
    assert hermione_file.startswith("FROM ./model.gguf\nADAPTER ./hermione.lora.gguf\n")
    # each its own run's template and sampling: hermione's DeepSeek-R1 template keeps earlier <think> blocks
    assert _template(tong_file) != _template(hermione_file) and "Thinking" in _template(hermione_file)
    assert "PARAMETER temperature 0" in tong_file and "PARAMETER num_predict 5" in tong_file
    assert "PARAMETER temperature 0.7" in hermione_file and "PARAMETER num_predict 40" in hermione_file


def test_characters_export_refuses_dora_before_writing(tiny_model_dir, tmp_path, fake_lora_conversion):
    from tests.export.test_llamacpp_lora import make_adapter
    from tifa_lite.export.ollama_adapters import export_ollama_characters

    dora = make_adapter(tiny_model_dir, tmp_path / "dora", use_dora=True)
    with pytest.raises(ConfigError, match="DoRA"):
        export_ollama_characters(tiny_model_dir, {"dora": dora}, tmp_path / "out", outtype="f16", converter="builtin")
    assert not (tmp_path / "out").exists() and fake_lora_conversion == []


def test_without_ollama_the_terms_say_so(monkeypatch):
    from tifa_lite.export.ollama_adapters import ollama_terms

    monkeypatch.setattr("shutil.which", lambda name: None)
    terms = ollama_terms()
    assert terms["installed"] is None and "no `ollama` on PATH" in terms["summary"] and len(terms["rules"]) == 3


@pytest.mark.llamacpp
def test_characters_export_runs_in_llama_cpp_as_the_modelfile_says(embedded_model_dir, tmp_path, request):
    """FROM + ADAPTER read the way Ollama's runner loads them: the base GGUF with the LoRA GGUF."""
    if "llamacpp" not in (request.config.getoption("-m") or ""):
        pytest.skip("opt-in group: run `bash scripts/install_llama_cpp.sh` once, then `pytest -m llamacpp`")
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python: bash scripts/install_llama_cpp.sh")
    from tests.export.test_llamacpp_lora import make_adapter
    from tifa_lite.export.ollama_adapters import export_ollama_characters

    tong = make_adapter(embedded_model_dir, tmp_path / "tong", seed=1, b_scale=0.3)
    report = export_ollama_characters("smollm2-135m-instruct", {"tong": tong}, tmp_path / "cast", outtype="q8_0",
                                      check=False)
    modelfile = (tmp_path / "cast" / "Modelfile.tong").read_text()
    base = tmp_path / "cast" / re.search(r"^FROM \./(\S+)$", modelfile, re.M).group(1)
    lora = tmp_path / "cast" / re.search(r"^ADAPTER \./(\S+)$", modelfile, re.M).group(1)
    assert lora == Path(report["characters"]["tong"]["lora_gguf"])
    prompt = "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"
    texts = []
    for adapter in (None, lora):
        llm = llama_cpp.Llama(model_path=str(base), lora_path=str(adapter) if adapter else None, n_ctx=512, verbose=False)
        texts.append(llm.create_completion(prompt, max_tokens=10, temperature=0.0)["choices"][0]["text"])
        llm.close()
    assert texts[0].strip() and texts[1].strip() and texts[0] != texts[1], texts
