"""Exact rendered text of the named templates and the <think> policy."""

import pytest
from transformers import AutoTokenizer

from tifa_lite.config.schema import ModelConfig
from tifa_lite.errors import ConfigError
from tifa_lite.templates import apply_chat_template_choice, apply_think_policy

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


def test_chatml_keeps_think_by_default(tokenizer):
    assert render(tokenizer, "chatml") == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nq1<|im_end|>\n"
        "<|im_start|>assistant\n<think>r1</think>\na1<|im_end|>\n<|im_start|>user\nq2<|im_end|>\n"
        "<|im_start|>assistant\n<think>r2</think>a2<|im_end|>\n"
    )


def test_tifa_strips_think_from_earlier_turns_only(tokenizer):
    assert render(tokenizer, "tifa") == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nq1<|im_end|>\n"
        "<|im_start|>assistant\na1<|im_end|>\n<|im_start|>user\nq2<|im_end|>\n"
        "<|im_start|>assistant\n<think>r2</think>a2<|im_end|>\n"
    )


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


def test_deepseek_r1_keep_policy(tokenizer):
    assert "<think>r1</think>" in render(tokenizer, "deepseek_r1", policy="keep")


def test_ziya(tokenizer):
    eos = tokenizer.eos_token
    assert render(tokenizer, "ziya", policy="keep") == (
        f"S\n<human>:q1\n<bot>:<think>r1</think>\na1{eos}\n<human>:q2\n<bot>:<think>r2</think>a2{eos}\n"
    )
    assert render(tokenizer, "ziya", messages=CONVERSATION[:2], add_generation_prompt=True) == "S\n<human>:q1\n<bot>:"


def test_unknown_template_suggests(tokenizer):
    with pytest.raises(ConfigError, match="did you mean 'chatml'"):
        apply_chat_template_choice(tokenizer, ModelConfig(chat_template="chatm"))


def test_think_policy_on_messages_for_a_tokenizers_own_template():
    stripped = apply_think_policy(CONVERSATION, strip=True)
    assert stripped[2]["content"] == "a1"
    assert stripped[4]["content"] == "<think>r2</think>a2"
    assert apply_think_policy(CONVERSATION, strip=False) == CONVERSATION
