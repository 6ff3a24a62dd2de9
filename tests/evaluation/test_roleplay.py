"""Role-play perplexity (assistant tokens only, batch-invariant), and ``eval roleplay --judge``
(the judge itself is tested in test_roleplay_judge.py)."""

from __future__ import annotations

import json
import math

import pytest

from tifa_lite.cli import main
from tifa_lite.errors import DataError
from tifa_lite.evaluation.roleplay import perplexity, read_conversations

CONVERSATIONS = [
    [{"role": "system", "content": "You are Sheldon."}, {"role": "user", "content": "Leonard: Agreed, what's your point?"},
     {"role": "assistant", "content": "There's no point, I just think it's a good idea for a tee-shirt."}],
    [{"role": "user", "content": "Penny: Hi."}, {"role": "assistant", "content": "Hello."},
     {"role": "user", "content": "Penny: What are you doing?"}, {"role": "assistant", "content": "Physics."}],
    [{"role": "user", "content": "Howard: Cuba libre?"}, {"role": "assistant", "content": "Virgin, in a tall glass, with a lime wedge, please."}],
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from tifa_lite.modeling.inference import load_inference_model

    model, tokenizer, *_ = load_inference_model(str(tiny_model_dir))
    return model, tokenizer


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps({"messages": r}) + "\n" for r in rows), encoding="utf-8")
    return path


def test_perplexity_is_loss_on_assistant_tokens_only(tiny):
    import torch

    from tifa_lite.data.tokenize import encode_conversation

    model, tokenizer = tiny
    convs = [(m, f"c{i}") for i, m in enumerate(CONVERSATIONS)]
    result = perplexity(model, tokenizer, convs, batch_size=1)
    # Reference: HF's own loss with labels masked to the assistant spans, token-weighted.
    total, count = 0.0, 0
    for messages, where in convs:
        row = encode_conversation(tokenizer, messages, assistant_only=True, where=where)
        ids = torch.tensor([row["input_ids"]])
        labels = torch.tensor([[t if m else -100 for t, m in zip(row["input_ids"], row["assistant_masks"])]])
        n = int((labels[:, 1:] != -100).sum())
        with torch.no_grad():
            total += float(model(input_ids=ids, labels=labels).loss) * n
        count += n
    assert result.tokens == count and result.n == 3
    assert result.ppl == pytest.approx(math.exp(total / count), rel=1e-4)
    # Padding in a batch must not change the number.
    assert perplexity(model, tokenizer, convs, batch_size=3).ppl == pytest.approx(result.ppl, rel=1e-4)
    # Fewer assistant tokens than the whole sequence: the user/system turns are not scored.
    assert count < sum(len(encode_conversation(tokenizer, m, False, w)["input_ids"]) for m, w in convs) / 2


def test_max_length_keeps_the_end(tiny):
    model, tokenizer = tiny
    convs = [(CONVERSATIONS[0], "c0")]
    full = perplexity(model, tokenizer, convs)
    cut = perplexity(model, tokenizer, convs, max_length=25)
    assert cut.tokens == full.tokens  # the system prompt was cut, not the answer
    with pytest.raises(DataError, match="no conversation has assistant tokens"):
        perplexity(model, tokenizer, convs, max_length=1)


def test_read_conversations_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_conversations(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:1: no assistant message"):
        read_conversations(bad)
    good = write_jsonl(tmp_path / "good.jsonl", CONVERSATIONS)
    assert len(read_conversations(good, limit=2)) == 2


def test_cli_json_last_line(tiny_model_dir, tmp_path, capsys, tiny):
    data = write_jsonl(tmp_path / "held.jsonl", CONVERSATIONS)
    assert main(["eval", "roleplay", "--model", str(tiny_model_dir), "--data", str(data), "--json"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    got = json.loads(last)
    expected = perplexity(*tiny, [(m, "") for m in CONVERSATIONS])
    assert got["n"] == 3 and got["ppl"] == pytest.approx(expected.ppl, rel=1e-4)


def test_cli_with_local_judge(tiny_model_dir, tmp_path, capsys):
    """The whole judge path with a real (tiny, random) local model: it cannot produce a
    rubric answer, which must be counted as unparsable, not scored."""
    data = write_jsonl(tmp_path / "held.jsonl", CONVERSATIONS)
    assert main([
        "eval", "roleplay", "--model", str(tiny_model_dir), "--data", str(data), "--json",
        "--judge", str(tiny_model_dir), "--judge-samples", "2", "--max-new-tokens", "3", "--character", "Sheldon",
    ]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["judge_rated"] + got["judge_unparsed"] == 2
    assert len(got["judge_examples"]) == 2 and got["judge_examples"][0]["where"].endswith("held.jsonl:1")
