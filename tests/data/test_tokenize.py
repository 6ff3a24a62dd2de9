import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tifa_lite.config.schema import ModelConfig
from tifa_lite.data.tokenize import (
    IGNORE_INDEX,
    PaddingCollator,
    encode_conversation,
    length_grouped_order,
    pack_sequences,
)
from tifa_lite.conversation.templates import apply_chat_template_choice

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "And 3+3?"},
    {"role": "assistant", "content": "6, of course."},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def trained_text(tokenizer, sample):
    return tokenizer.decode([t for t, m in zip(sample["input_ids"], sample["assistant_masks"]) if m])


def test_assistant_mask_covers_replies_and_end_of_turn(tokenizer):
    sample = encode_conversation(tokenizer, MESSAGES, assistant_only=True, where="x")
    # Exactly the two replies and their end-of-turn markers are trained, nothing of the prompts.
    assert trained_text(tokenizer, sample) == "4.<|im_end|>\n6, of course.<|im_end|>\n"


@pytest.mark.parametrize("template", ["chatml", "tifa", "deepseek_r1", "ziya"])
def test_assistant_mask_with_named_templates(tokenizer, template):
    apply_chat_template_choice(tokenizer, ModelConfig(chat_template=template))
    messages = MESSAGES[1:] if template == "ziya" else MESSAGES  # Ziya has no system turn
    try:
        sample = encode_conversation(tokenizer, messages, assistant_only=True, where="x")
        text = trained_text(tokenizer, sample)
        assert "4." in text and "6, of course." in text
        assert "What is" not in text and "Be brief" not in text
    finally:
        tokenizer.chat_template = AutoTokenizer.from_pretrained(tokenizer.name_or_path).chat_template


def test_deepseek_r1_generation_prefix_is_prompt_not_trained(tokenizer):
    """Its generation prompt opens <think>: a reasoning reply's "<think>\n" is prompt (as at
    inference), and a stripped history turn, which does not repeat it, is still found and trained."""
    apply_chat_template_choice(tokenizer, ModelConfig(chat_template="deepseek_r1"))
    messages = [
        {"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And 3+3?"}, {"role": "assistant", "content": "<think>\n3+3=6\n</think>\n6."},
    ]
    try:
        text = trained_text(tokenizer, encode_conversation(tokenizer, messages, assistant_only=True, where="x"))
        # SmolLM2's tokenizer has no DeepSeek special tokens, so a token may straddle "…｜><｜…": compare spans.
        assert text.startswith("4.<｜end▁of▁sentence｜>")
        assert text.endswith("3+3=6\n</think>\n6.<｜end▁of▁sentence｜>")
        assert "think>\n3" not in text and "Assistant" not in text
    finally:
        tokenizer.chat_template = AutoTokenizer.from_pretrained(tokenizer.name_or_path).chat_template


def test_full_sequence_loss_when_not_assistant_only(tokenizer):
    sample = encode_conversation(tokenizer, MESSAGES, assistant_only=False, where="x")
    assert all(sample["assistant_masks"])


def test_packing_fits_rows_and_restarts_positions():
    seqs = [{"input_ids": [i] * n, "assistant_masks": [1] * n} for i, n in enumerate([5, 3, 4, 2, 6])]
    rows = pack_sequences(seqs, max_length=8)
    assert sorted(len(r["input_ids"]) for r in rows) <= [8] * len(rows)
    assert sum(len(r["input_ids"]) for r in rows) == 20
    assert len(rows) == 3  # 20 tokens in rows of 8 is 3 rows, best fit wastes nothing more
    for row in rows:
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0]
        for s in starts:  # no loss on the first token of a sample: it has no in-sample context
            assert row["assistant_masks"][s] == 0


def test_packed_rows_give_the_same_logits_as_separate_sequences(tiny_model_dir, tokenizer):
    """The per-row block-diagonal mask from position_ids: no attention across samples.
    transformers derives it only without a KV cache, as in training (SFTTrainer sets use_cache=False)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    a = encode_conversation(tokenizer, MESSAGES[:3], True, "a")
    b = encode_conversation(tokenizer, MESSAGES[1:5], True, "b")
    [row] = pack_sequences([a, b], max_length=512)
    batch = PaddingCollator(pad_token_id=tokenizer.pad_token_id)([row])
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        offset = 0
        for seq in sorted([a, b], key=lambda s: -len(s["input_ids"])):
            n = len(seq["input_ids"])
            alone = model(input_ids=torch.tensor([seq["input_ids"]])).logits[0]
            torch.testing.assert_close(packed[offset:offset + n], alone, atol=1e-4, rtol=1e-4)
            offset += n


def test_collator_pads_and_masks_labels():
    rows = [
        {"input_ids": [5, 6, 7], "assistant_masks": [0, 1, 1]},
        {"input_ids": [8], "assistant_masks": [1]},
    ]
    batch = PaddingCollator(pad_token_id=0, pad_to_multiple_of=4)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7, IGNORE_INDEX], [8, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]


def test_collator_pads_to_the_longest_row_only_by_default():
    rows = [{"input_ids": [5, 6, 7], "assistant_masks": [1, 1, 1]}, {"input_ids": [8], "assistant_masks": [1]}]
    assert PaddingCollator(pad_token_id=0)(rows)["input_ids"].shape == (2, 3)


def batches_of(order, lengths, size):
    return [[lengths[i] for i in order[k:k + size]] for k in range(0, len(order), size)]


def test_length_grouped_order_cuts_batches_of_neighbouring_lengths():
    lengths = [random.Random(1).randint(5, 500) for _ in range(43)]
    order = length_grouped_order(lengths, batch_size=8, seed=0)
    assert sorted(order) == list(range(43))
    batches = batches_of(order, lengths, 8)
    assert [len(b) for b in batches] == [8] * 5 + [3]  # the one short batch last: a sequential loader cuts the same
    # Each batch is a run of the sorted lengths, so no other grouping pads less.
    ranges = sorted((min(b), max(b)) for b in batches)
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(ranges, ranges[1:]))
    padded = sum(len(b) * max(b) for b in batches)
    descending = sorted(lengths, reverse=True)
    assert padded == sum(len(b) * max(b) for b in batches_of(list(range(43)), descending, 8))
    assert max(batches[0]) == max(lengths) and max(batches[-1]) == sorted(lengths)[2]  # widest first, shortest last


def test_length_grouped_order_is_fixed_by_the_seed_and_shuffles_batches():
    lengths = list(range(64, 0, -1))
    assert length_grouped_order(lengths, 4, seed=3) == length_grouped_order(lengths, 4, seed=3)
    orders = [length_grouped_order(lengths, 4, seed=s) for s in range(5)]
    assert all(sorted(o[:4]) == [0, 1, 2, 3] for o in orders)  # the widest batch first, whatever the seed
    assert len({tuple(o[4:8]) for o in orders}) > 1  # the batches after it come in random order
