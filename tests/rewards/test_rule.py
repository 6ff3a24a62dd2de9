"""The R1-Zero rule rewards on hand-written completions, well-formed and malformed."""

import pytest

from tifa_lite.rewards import rule

PERFECT = "<think>\n48/2 = 24, 48 + 24 = 72\n</think>\n<answer>\n72\n</answer>\n"
ONE_LINE = "<think>48/2 = 24</think> <answer>72</answer>"
MULTILINE_THINK = "<think>\nfirst 48/2 = 24\nthen 48 + 24 = 72\n</think>\n<answer>\n72\n</answer>\n"
TRAILING = "<think>\nx\n</think>\n<answer>\n72\n</answer>\nand some chatter afterwards"
NO_TAGS = "The answer is 72."
UNCLOSED = "<think>\nreasoning that never ends"
ANSWER_FIRST = "<answer>\n72\n</answer>\n<think>\nx\n</think>\n"
DOUBLE_THINK = "<think>\na\n</think>\n<think>\nb\n</think>\n<answer>\n72\n</answer>\n"


def chat(*texts):
    return [[{"role": "assistant", "content": t}] for t in texts]


def test_completion_texts_accepts_strings_and_messages():
    assert rule.completion_texts(["a", [{"role": "assistant", "content": "b"}]]) == ["a", "b"]
    assert rule.completion_texts([[{"role": "assistant", "content": None}]]) == [""]
    with pytest.raises(TypeError):
        rule.completion_texts([42])


def test_xmlcount_full_marks_and_penalties():
    scores = rule.xmlcount(chat(PERFECT, NO_TAGS, UNCLOSED, TRAILING, DOUBLE_THINK))
    assert scores[0] == pytest.approx(0.5)
    assert scores[1] == 0.0
    assert scores[2] == pytest.approx(0.125)  # only the opening tag is well placed
    tail = "and some chatter afterwards"
    # Both closing-tag rules charge 0.001 per trailing character.
    assert scores[3] == pytest.approx(0.5 - len(tail) * 0.001 - len("\n" + tail) * 0.001 + 0.001)
    assert scores[3] < scores[0]
    assert scores[4] == pytest.approx(0.25)  # duplicated think tags earn nothing


def test_soft_format():
    scores = rule.soft_format(chat(PERFECT, ONE_LINE, MULTILINE_THINK, NO_TAGS, UNCLOSED, ANSWER_FIRST))
    assert scores == [0.5, 0.5, 0.5, 0.0, 0.0, 0.0]


def test_strict_format_needs_tags_on_own_lines():
    scores = rule.strict_format(chat(PERFECT, MULTILINE_THINK, ONE_LINE, TRAILING, NO_TAGS, ANSWER_FIRST))
    assert scores == [0.5, 0.5, 0.0, 0.0, 0.0, 0.0]
    assert rule.strict_format(chat(PERFECT), score=1.0) == [1.0]


def test_int_answer():
    texts = [PERFECT, "<answer>7.5</answer>", "<answer> -3 </answer>", "<answer></answer>", NO_TAGS, "<answer>12"]
    # The original rule is str.isdigit: negatives and decimals are not integers to it.
    assert rule.int_answer(chat(*texts)) == [0.5, 0.0, 0.0, 0.0, 0.0, 0.5]


def test_correctness():
    completions = chat(PERFECT, PERFECT, "<answer>1,000</answer>", "<answer>$5</answer>", NO_TAGS, "<answer>72 apples</answer>")
    answers = ["72", "73", "1000", "5", "72", "72"]
    assert rule.correctness(completions, answer=answers) == [2.0, 0.0, 2.0, 2.0, 0.0, 0.0]


def test_correctness_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 completions but 1"):
        rule.correctness(chat(PERFECT, PERFECT), answer=["72"])


def test_extract_xml_answer_and_normalize():
    assert rule.extract_xml_answer("<think>x</think><answer> 42 </answer>tail") == "42"
    assert rule.extract_xml_answer("<answer>1</answer><answer>2</answer>") == "2"
    assert rule.normalize_number("1,234.50") == "1234.5"
    assert rule.normalize_number(" 7.0 ") == "7"
    assert rule.normalize_number("-0") == "0"
    assert rule.normalize_number("seven") == "seven"


def test_final_number_reads_the_answer_as_the_evaluator_does():
    completions = chat(
        PERFECT,                                   # <answer> block
        "48 + 24 = 72\n#### 72",                   # GSM8K's own form
        "So she sold 48 + 24 = 72 clips.",          # last number
        "The total is $1,072.00.",                # currency, thousands separator, decimals
        "<answer>\n70\n</answer> although 72 appears later",  # the tagged answer wins over the last number
        NO_TAGS.replace("72", "seventy-two"),      # no number at all
        "",                                        # empty completion
        UNCLOSED,                                  # unclosed think, no answer
    )
    answers = ["72", "72", "72", "1072", "72", "72", "72", "72"]
    assert rule.final_number(completions, answer=answers) == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert rule.final_number(chat(PERFECT), answer=["72"], score=0.25) == [0.25]


def test_final_number_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 completions but 1 reference answers"):
        rule.final_number(chat(PERFECT, NO_TAGS), answer=["72"])
