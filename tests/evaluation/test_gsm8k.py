"""GSM8K evaluator: answer extraction, scoring, batched greedy decoding, the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tifa_lite.evaluation import gsm8k
from tifa_lite.evaluation.gsm8k import evaluate_rows, extract_answer, generate_greedy, is_correct, load_eval_rows

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("text, expected", [
    ("<think>\n3+4=7\n</think>\n<answer>\n7\n</answer>", "7"),
    ("<answer>The total is $1,250.</answer> then 99", "1250"),
    ("<answer>12", "12"),                              # unclosed tag at the end of a truncated completion
    ("<answer>seven</answer>", "seven"),               # no number: the text itself, so it scores wrong, not None
    ("48/2 = 24\n#### 72\nextra 5", "72"),             # GSM8K's own marker wins over later numbers
    ("So she has 3 + 4 = 7 apples.", "7"),            # last number
    ("It is -3.50 degrees", "-3.5"),
    ("no digits at all", None),
    ("", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_is_correct():
    assert is_correct("72", "72") and is_correct("72.0", "72") and is_correct("1,000", "1000")
    assert not is_correct(None, "72") and not is_correct("71", "72")


def test_load_eval_rows_uses_the_r1_prompt_by_default(sample_data):
    from tifa_lite.data.gsm8k import R1_ZERO_SYSTEM_PROMPT

    rows = load_eval_rows(sample_data / "arithmetic" / "test.jsonl", limit=3)
    assert len(rows) == 3 and all(r["answer"].lstrip("-").isdigit() for r in rows)
    assert rows[0]["prompt"][0]["content"] == R1_ZERO_SYSTEM_PROMPT
    assert load_eval_rows(sample_data / "arithmetic" / "test.jsonl", limit=1, system_prompt="")[0]["prompt"][0]["role"] == "user"


def test_evaluate_rows_scores_what_the_model_says(monkeypatch):
    said = ["<answer>4</answer>", "the answer is 5", "#### 7", "I don't know"]
    monkeypatch.setattr(gsm8k, "generate_greedy", lambda model, tok, prompts, *a, **k: said[: len(prompts)])
    rows = [{"prompt": [{"role": "user", "content": q}], "answer": a} for q, a in
            [("2+2", "4"), ("2+3", "5"), ("3+3", "6"), ("1+1", "2")]]
    result = evaluate_rows(None, None, rows)
    assert (result["accuracy"], result["n"], result["correct"]) == (0.5, 4, 2)
    assert [s["prediction"] for s in result["samples"]] == ["4", "5", "7", None]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_batched_greedy_equals_one_by_one(tiny, sample_data):
    model, tok = tiny
    rows = load_eval_rows(sample_data / "arithmetic" / "test.jsonl", limit=3, system_prompt="")
    prompts = [r["prompt"] for r in rows]
    batched = generate_greedy(model, tok, prompts, max_new_tokens=6, batch_size=3)
    single = [generate_greedy(model, tok, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts]
    assert batched == single  # left padding must not change what each prompt generates
    assert tok.padding_side == "right"  # restored


def test_cli_json_last_line(tiny_model_dir, sample_data):
    cmd = [sys.executable, "-m", "tifa_lite", "eval", "gsm8k", "--model", str(tiny_model_dir),
           "--data", str(sample_data / "arithmetic" / "test.jsonl"), "--limit", "2", "--max-new-tokens", "4", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["n"] == 2 and 0.0 <= last["accuracy"] <= 1.0
    assert "GSM8K accuracy" in proc.stdout


def test_cli_bad_data_is_a_clean_error(tmp_path, tiny_model_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "no marker"}\n')
    cmd = [sys.executable, "-m", "tifa_lite", "eval", "gsm8k", "--model", str(tiny_model_dir), "--data", str(bad)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 2
    assert "bad.jsonl:1" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_embedded_model_solves_some_easy_problems(sample_data):
    """The real 135M model with the evaluator's defaults: a sanity floor, not a score."""
    result = gsm8k.evaluate_gsm8k("smollm2-135m-instruct", sample_data / "arithmetic" / "test.jsonl", limit=8,
                                  batch_size=8, max_new_tokens=48, system_prompt="")
    assert result["n"] == 8
    assert result["correct"] >= 1, [s["completion"] for s in result["samples"]]
