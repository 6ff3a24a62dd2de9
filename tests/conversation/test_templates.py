"""Exact rendered text of the named templates and the <think> policy."""

import logging

import pytest
from transformers import AutoTokenizer

from tifa_lite.config.schema import ModelConfig
from tifa_lite.errors import ConfigError, DataError
from tifa_lite.conversation.templates import THINK_BLOCK_RE, ConversationRules, apply_chat_template_choice, apply_think_policy

CONVERSATION = [
    {"role": "system", "content": "S"},
    {"role": "user", "content": "q1"},
    {"role": "assistant", "content": "<think>r1</think>\na1"},
    {"role": "user", "content": "q2"},
    {"role": "assistant", "content": "<think>r2</think>a2"},
]


@pytest.fixture(scope="module")
def tokenizer(embedded_model_dir):
    return AutoTokenizer.from_pretrained(embedded_model_dir)


def render(tokenizer, name, policy="auto", messages=CONVERSATION, **kw):
    apply_chat_template_choice(tokenizer, ModelConfig(chat_template=name, think_policy=policy))
    return tokenizer.apply_chat_template(messages, tokenize=False, **kw)


def test_chatml_strips_think_from_history_by_default_and_keep_keeps_it(tokenizer):
    head = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\n"
    tail = "<|im_end|>\n<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n<think>r2</think>a2<|im_end|>\n"
    assert render(tokenizer, "chatml") == head + "a1" + tail
    assert render(tokenizer, "chatml", policy="keep") == head + "<think>r1</think>\na1" + tail


def test_tifa_strips_think_from_earlier_turns_only(tokenizer):
    assert render(tokenizer, "tifa") == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nq1<|im_end|>\n"
        "<|im_start|>assistant\na1<|im_end|>\n<|im_start|>user\nq2<|im_end|>\n"
        "<|im_start|>assistant\n<think>r2</think>a2<|im_end|>\n"
    )


# Only <think>…</think> blocks go (with the whitespace after them); text before, between and
# after them stays, and a stray </think> without its <think> is not a block.
MIXED = [
    "Sure.<think>a</think> Yes.",
    "<think>a</think>x<think>b\nc</think>\n\ny",
    "before</think>after",
    "lead<think>one<think>two</think>end",
    "<think>never closed",
    "x</think>y<think>z</think>  w",
]


@pytest.mark.parametrize("content", MIXED)
def test_tifa_jinja_strips_only_think_blocks_like_the_python_policy(tokenizer, content):
    messages = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": content}, {"role": "user", "content": "q2"}]
    expected = apply_think_policy(messages, "strip")[1]["content"]
    assert expected == THINK_BLOCK_RE.sub("", content)
    assert render(tokenizer, "tifa", messages=messages) == (
        f"<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\n{expected}<|im_end|>\n<|im_start|>user\nq2<|im_end|>\n"
    )


def test_python_policy_strips_only_blocks():
    assert [THINK_BLOCK_RE.sub("", c) for c in MIXED] == ["Sure.Yes.", "xy", "before</think>after", "leadend",
                                                          "<think>never closed", "x</think>yw"]


def test_generation_prompt_strips_all_history(tokenizer):
    assert render(tokenizer, "tifa", messages=CONVERSATION[:4], add_generation_prompt=True) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nq1<|im_end|>\n"
        "<|im_start|>assistant\na1<|im_end|>\n<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n"
    )


def test_qwen_adds_default_system(tokenizer):
    text = render(tokenizer, "qwen", messages=[{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_deepseek_r1(tokenizer):
    assert render(tokenizer, "deepseek_r1") == (
        f"{tokenizer.bos_token}S<｜User｜>q1<｜Assistant｜>a1<｜end▁of▁sentence｜>"
        "<｜User｜>q2<｜Assistant｜><think>r2</think>a2<｜end▁of▁sentence｜>"
    )
    # Its generation prompt opens the think block, as DeepSeek-R1's own template does.
    assert render(tokenizer, "deepseek_r1", messages=CONVERSATION[:2], add_generation_prompt=True) == (
        f"{tokenizer.bos_token}S<｜User｜>q1<｜Assistant｜><think>\n"
    )


def test_deepseek_r1_keep_policy(tokenizer):
    assert "<think>r1</think>" in render(tokenizer, "deepseek_r1", policy="keep")


def test_ziya_follows_its_model_card(tokenizer):
    eos = tokenizer.eos_token
    messages = [
        {"role": "user", "content": "  q1 \n"}, {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"},
    ]
    # '<human>:' + query.strip() + '\n<bot>:'; the newline before the next query is not after EOS's turn.
    assert render(tokenizer, "ziya", messages=messages) == f"<human>:q1\n<bot>:a1{eos}\n<human>:q2\n<bot>:a2{eos}"
    assert render(tokenizer, "ziya", messages=messages[:1], add_generation_prompt=True) == "<human>:q1\n<bot>:"


def test_ziya_refuses_a_system_turn(tokenizer):
    from jinja2.exceptions import TemplateError

    with pytest.raises(TemplateError, match="no system turn"):
        render(tokenizer, "ziya")


def test_ziya_never_trains_the_newline_after_eos(tokenizer):
    from tifa_lite.data.tokenize import encode_conversation

    apply_chat_template_choice(tokenizer, ModelConfig(chat_template="ziya"))
    messages = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]
    sample = encode_conversation(tokenizer, messages, assistant_only=True, where="x")
    trained = tokenizer.decode([t for t, m in zip(sample["input_ids"], sample["assistant_masks"]) if m])
    assert trained == f"a1{tokenizer.eos_token}a2{tokenizer.eos_token}"


def test_unknown_template_suggests(tokenizer):
    with pytest.raises(ConfigError, match="did you mean 'chatml'"):
        apply_chat_template_choice(tokenizer, ModelConfig(chat_template="chatm"))


def test_think_policy_on_messages_for_a_tokenizers_own_template():
    for policy in ("auto", "strip", True):
        stripped = apply_think_policy(CONVERSATION, policy)
        assert stripped[2]["content"] == "a1"
        assert stripped[4]["content"] == "<think>r2</think>a2"
    assert CONVERSATION[2]["content"] == "<think>r1</think>\na1"  # the input is never modified
    assert apply_think_policy(CONVERSATION, "keep") == CONVERSATION
    assert apply_think_policy(CONVERSATION, False) == CONVERSATION
    with pytest.raises(ConfigError, match="think_policy='sometimes'"):
        apply_think_policy(CONVERSATION, "sometimes")


def test_conversation_rules_count_what_they_strip_and_say_so(caplog):
    rules = ConversationRules(ModelConfig())
    assert rules(CONVERSATION, "f:1")[2]["content"] == "a1"
    assert rules(CONVERSATION[:2], "f:2") == CONVERSATION[:2]
    with caplog.at_level(logging.INFO, logger="tifa_lite.conversation.templates"):
        rules.log("data.path")
    assert (rules.stripped, rules.seen) == (1, 2)
    assert "removed <think>…</think> from earlier assistant turns in 1 of 2 conversations" in caplog.text
    assert ConversationRules(ModelConfig(think_policy="keep"))(CONVERSATION, "f:1") == CONVERSATION


def test_conversation_rules_refuse_a_system_turn_for_ziya():
    with pytest.raises(DataError, match="f:3: a system message, but the ziya template has no system turn"):
        ConversationRules(ModelConfig(chat_template="ziya"))(CONVERSATION, "f:3")
