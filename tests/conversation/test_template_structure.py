"""Reading a chat template's per-role structure by rendering it."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from tifa_lite.conversation.template_structure import (
    SAMPLE_CONVERSATION,
    TemplateShapeError,
    analyse,
    check_regular,
    end_of_turn_ids,
    end_of_turn_tokens,
)
from tifa_lite.conversation.templates import NAMED_TEMPLATES, render_named_template


@pytest.fixture()
def tokenizer(embedded_model_dir):
    return AutoTokenizer.from_pretrained(str(embedded_model_dir))


def test_smollm2_template_parts(tokenizer):
    s = analyse(tokenizer)
    assert s.prefix["user"] == "<|im_start|>user\n" and s.suffix["assistant"] == "<|im_end|>\n"
    assert s.generation_prompt == "<|im_start|>assistant\n"
    assert "You are a helpful AI assistant named SmolLM" in s.header_without_system  # its default system turn
    assert s.header_with_system == "<|im_start|>system\n"
    check_regular(tokenizer, s)
    assert s.render(SAMPLE_CONVERSATION) == tokenizer.apply_chat_template(SAMPLE_CONVERSATION, tokenize=False,
                                                                          add_generation_prompt=True)


@pytest.mark.parametrize("name", sorted(NAMED_TEMPLATES))
def test_named_templates_are_regular(tokenizer, name):
    tokenizer.chat_template = render_named_template(name)
    check_regular(tokenizer, analyse(tokenizer))


def test_end_of_turn_tokens_and_ids(tokenizer):
    assert end_of_turn_tokens(tokenizer) == ["<|im_end|>"]
    # A base whose EOS is another token still stops at the template's end of turn.
    assert end_of_turn_ids(tokenizer, model_eos=0) == [0, tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_irregular_and_missing_templates_are_refused(tokenizer):
    tokenizer.chat_template = "{% for m in messages %}{{ loop.index }}{{ m['content'] }}{% endfor %}"
    with pytest.raises(TemplateShapeError):
        analyse(tokenizer)
    tokenizer.chat_template = None
    with pytest.raises(TemplateShapeError, match="no chat template"):
        analyse(tokenizer)
    assert end_of_turn_ids(tokenizer, model_eos=[5]) == [5, tokenizer.eos_token_id]
