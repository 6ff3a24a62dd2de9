"""The parity report on a tiny QLoRA run: the honest chain passes; each injected break
(wrong LoRA scaling, the base exported unchanged, a missing stop token) fails it, naming
the step."""

from __future__ import annotations

import json
import re
import shutil

import pytest

import tifa_lite
from tifa_lite.export.ollama import export_ollama
from tifa_lite.export.parity import ParityError, check_chain, load_prompts
from tifa_lite.errors import DataError

# tests/ is not a package: pytest puts it on sys.path, so the merge tests' helpers import as `merge`.
from merge.conftest import as_qlora_run, train_adapter

PROMPTS = [
    {"messages": [{"role": "user", "content": "Hi! Who are you?"}, {"role": "assistant", "content": "A bartender."}]},
    {"messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 12 * 7?"}]},
]


@pytest.fixture(scope="module")
def chain(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    run = as_qlora_run(train_adapter(tiny_model_dir, root / "adapter", qlora=True), tiny_model_dir, root / "run")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS), encoding="utf-8")
    tifa_lite.merge(run, root / "merged", dtype="fp32")
    export_ollama(root / "merged", root / "ollama", outtype="f16", check=False, converter="builtin")
    return {"root": root, "run": run, "prompts": prompts, "merged": root / "merged", "ollama": root / "ollama"}


def _check(chain, **overrides):
    kwargs = dict(ollama=chain["ollama"], prompts=chain["prompts"], tokens=8)
    kwargs.update(overrides)
    return check_chain(chain["run"], overrides.pop("merged", chain["merged"]), **{k: v for k, v in kwargs.items() if k != "merged"})


def test_the_honest_chain_passes_and_saves_one_table(chain, tmp_path):
    report = _check(chain, output=tmp_path / "parity.json")
    assert report["passed"]
    merged, gguf, ollama = report["rows"]
    assert merged["step"].startswith("trained: 4-bit base") and merged["status"] == "ok"
    assert merged["metrics"]["top1_agreement"] == 1.0 and merged["metrics"]["mean_kl"] < 1e-6
    assert "dequantized" in merged["note"]
    assert gguf["metrics"]["positions"] == merged["metrics"]["positions"] > 0
    assert ollama["metrics"]["conversations_identical"] == "2/2" and ollama["metrics"]["think_policy_applied"]
    assert json.loads((tmp_path / "parity.json").read_text())["table"] == report["table"]
    assert report["table"].count("| ok |") == 3


def test_wrong_scaling_fails_the_merge_step(chain, tmp_path):
    adapter = tmp_path / "rescaled"
    shutil.copytree(chain["run"], adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["lora_alpha"] *= 4  # the merge a kit does with alpha/r of another convention
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    tifa_lite.merge(adapter, tmp_path / "merged", dtype="fp32", check=False)
    with pytest.raises(ParityError, match=r"→ merged merged: (mean KL|top-1 agreement) .* < 0\.97|→ merged merged: mean KL") as err:
        _check(chain, merged=tmp_path / "merged", ollama=None)
    assert not err.value.report["passed"] and err.value.report["rows"][0]["status"] == "FAIL"


def test_base_exported_unchanged_fails_the_merge_step(chain, tiny_model_dir, tmp_path):
    shutil.copytree(tiny_model_dir, tmp_path / "just-the-base")
    with pytest.raises(ParityError, match=r"just-the-base: mean KL .* top-1 agreement"):
        _check(chain, merged=tmp_path / "just-the-base", ollama=None)


def test_missing_stop_token_fails(chain, tmp_path):
    broken = tmp_path / "ollama"
    shutil.copytree(chain["ollama"], broken)
    text = (broken / "Modelfile").read_text()
    (broken / "Modelfile").write_text(re.sub(r"PARAMETER stop .*\n", "", text))
    with pytest.raises(ParityError, match=r"end-of-turn token\(s\) \['<\|im_end\|>'\] are not a PARAMETER stop"):
        _check(chain, ollama=broken)

    merged = tmp_path / "merged"
    shutil.copytree(chain["merged"], merged)
    gen = json.loads((merged / "generation_config.json").read_text())
    gen["eos_token_id"] = 0  # not the end-of-turn token: generation runs past the turn
    (merged / "generation_config.json").write_text(json.dumps(gen))
    with pytest.raises(ParityError, match=r"end-of-turn token\(s\) \[2\] do not stop generation"):
        _check(chain, merged=merged, ollama=None)


def test_prompts_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n')
    with pytest.raises(DataError, match=r"p.jsonl:2"):
        load_prompts(bad, limit=5)
    assert load_prompts(bad, limit=1) == [[{"role": "user", "content": "hi"}]]


def test_cli_exits_1_and_prints_the_failing_step(chain, tiny_model_dir, tmp_path, capsys):
    from tifa_lite.cli import main

    shutil.copytree(tiny_model_dir, tmp_path / "base-copy")
    rc = main(["export", "check", "--run", str(chain["run"]), "--merged", str(tmp_path / "base-copy"),
               "--prompts", str(chain["prompts"]), "--tokens", "4"])
    out = capsys.readouterr().out
    assert rc == 1 and "parity check failed" in out and "| FAIL |" in out
    assert (tmp_path / "base-copy" / "parity_report.json").is_file()
