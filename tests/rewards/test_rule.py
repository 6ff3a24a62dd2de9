"""The R1-Zero rule rewards: the five registered names score exactly as the write-up's own
functions (copied below as the reference) on hand-written and real completions; the
lenient variants differ from them only where they say."""

import json
import re
from pathlib import Path

import pytest

from tifa_lite.data.gsm8k import final_answer
from tifa_lite.rewards import rule

# ---------------------------------------------------------------------------------------------
# The write-up's reward functions, verbatim (willccbb's GRPO demo as the ModelScope write-up ran
# it, <think> in place of <reasoning>); only correctness_reward_func's debugging print is left out.


def ref_extract_xml_answer(text: str) -> str:
    answer = text.split("<answer>")[-1]
    answer = answer.split("</answer>")[0]
    return answer.strip()


def ref_extract_hash_answer(text: str) -> str | None:
    if "####" not in text:
        return None
    return text.split("####")[1].strip()


def ref_correctness_reward_func(prompts, completions, answer, **kwargs) -> list[float]:
    responses = [completion[0]['content'] for completion in completions]
    extracted_responses = [ref_extract_xml_answer(r) for r in responses]
    return [2.0 if r == a else 0.0 for r, a in zip(extracted_responses, answer)]


def ref_int_reward_func(completions, **kwargs) -> list[float]:
    responses = [completion[0]['content'] for completion in completions]
    extracted_responses = [ref_extract_xml_answer(r) for r in responses]
    return [0.5 if r.isdigit() else 0.0 for r in extracted_responses]


def ref_strict_format_reward_func(completions, **kwargs) -> list[float]:
    """Reward function that checks if the completion has a specific format."""
    pattern = r"^<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>\n$"
    responses = [completion[0]["content"] for completion in completions]
    matches = [re.match(pattern, r) for r in responses]
    return [0.5 if match else 0.0 for match in matches]


def ref_soft_format_reward_func(completions, **kwargs) -> list[float]:
    """Reward function that checks if the completion has a specific format."""
    pattern = r"<think>.*?</think>\s*<answer>.*?</answer>"
    responses = [completion[0]["content"] for completion in completions]
    matches = [re.match(pattern, r) for r in responses]
    return [0.5 if match else 0.0 for match in matches]


def ref_count_xml(text) -> float:
    count = 0.0
    if text.count("<think>\n") == 1:
        count += 0.125
    if text.count("\n</think>\n") == 1:
        count += 0.125
    if text.count("\n<answer>\n") == 1:
        count += 0.125
        count -= len(text.split("\n</answer>\n")[-1])*0.001
    if text.count("\n</answer>") == 1:
        count += 0.125
        count -= (len(text.split("\n</answer>")[-1]) - 1)*0.001
    return count


def ref_xmlcount_reward_func(completions, **kwargs) -> list[float]:
    contents = [completion[0]["content"] for completion in completions]
    return [ref_count_xml(c) for c in contents]

# ---------------------------------------------------------------------------------------------

PERFECT = "<think>\n48/2 = 24, 48 + 24 = 72\n</think>\n<answer>\n72\n</answer>\n"
ONE_LINE = "<think>48/2 = 24</think> <answer>72</answer>"
MULTILINE_THINK = "<think>\nfirst 48/2 = 24\nthen 48 + 24 = 72\n</think>\n<answer>\n72\n</answer>\n"
NO_FINAL_NEWLINE = "<think>\nx\n</think>\n<answer>\n72\n</answer>"
TRAILING = "<think>\nx\n</think>\n<answer>\n72\n</answer>\nand some chatter afterwards"
NO_TAGS = "The answer is 72."
UNCLOSED = "<think>\nreasoning that never ends"
ANSWER_FIRST = "<answer>\n72\n</answer>\n<think>\nx\n</think>\n"
DOUBLE_THINK = "<think>\na\n</think>\n<think>\nb\n</think>\n<answer>\n72\n</answer>\n"
LEADING_SPACE = "  <think>x</think><answer>72</answer>"
THOUSANDS = "<think>\n10 * 100 = 1000\n</think>\n<answer>\n1,000\n</answer>\n"

# (completion, raw GSM8K answer): edge cases of every rule, written by hand.
HAND_WRITTEN = [
    (PERFECT, "48/2 = 24\n#### 72"), (PERFECT, "#### 73"), (ONE_LINE, "#### 72"), (MULTILINE_THINK, "#### 72"),
    (NO_FINAL_NEWLINE, "#### 72"), (TRAILING, "#### 72"), (NO_TAGS, "#### 72"), (UNCLOSED, "#### 72"),
    (ANSWER_FIRST, "#### 72"), (DOUBLE_THINK, "#### 72"), (LEADING_SPACE, "#### 72"),
    (THOUSANDS, "#### 1,000"), (THOUSANDS, "#### 1000"), ("<answer>$5</answer>", "#### 5"),
    ("<answer> -3 </answer>", "#### -3"), ("<answer>7.0</answer>", "#### 7"), ("<answer>12", "#### 12"),
    ("<answer></answer>", "#### 0"), ("", "#### 0"), ("72", "#### 72"), ("<answer>1</answer><answer>2</answer>", "#### 2"),
    (PERFECT + "\n", "#### 72"), (PERFECT.replace("\n", "\r\n"), "#### 72"), ("<think>\n\n</think>\n<answer>\n72\n</answer>\n", "#### 72"),
    ("<think>\nx\n</think>\n\n<answer>\n72\n</answer>\n", "#### 72"), ("<answer>\n72 apples\n</answer>", "#### 72"),
]
REAL_COMPLETIONS = Path(__file__).with_name("r1_real_completions.jsonl")


def chat(*texts):
    return [[{"role": "assistant", "content": t}] for t in texts]


def real_completions() -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in REAL_COMPLETIONS.read_text(encoding="utf-8").splitlines()]
    return [(r["completion"], r["gsm8k_answer"]) for r in rows]


@pytest.mark.parametrize("source", ["hand-written", "real"])
def test_the_five_names_score_exactly_as_the_write_up(source):
    cases = HAND_WRITTEN if source == "hand-written" else real_completions()
    completions = chat(*(c for c, _ in cases))
    ours_reference = [final_answer(a, "case") for _, a in cases]
    theirs_reference = [ref_extract_hash_answer(a) for _, a in cases]
    assert ours_reference == theirs_reference  # the data's answer column is the write-up's
    assert rule.xmlcount(completions) == ref_xmlcount_reward_func(completions)
    assert rule.soft_format(completions) == ref_soft_format_reward_func(completions)
    assert rule.strict_format(completions) == ref_strict_format_reward_func(completions)
    assert rule.int_answer(completions) == ref_int_reward_func(completions)
    assert rule.correctness(completions, answer=ours_reference) == ref_correctness_reward_func(
        None, completions, answer=theirs_reference)


def test_real_completions_cover_every_outcome():
    """The real completions (three models of benchmarks/reasoning_cpu_demo.py) are a meaningful
    test set: some earn each format reward, some do not."""
    cases = real_completions()
    completions = chat(*(c for c, _ in cases))
    for reward in (rule.strict_format, rule.int_answer, rule.xmlcount):
        scores = reward(completions)
        assert 0 < sum(s > 0 for s in scores) < len(scores), reward.__name__
    answers = [final_answer(a, "case") for _, a in cases]
    assert 0 < sum(s > 0 for s in rule.correctness(completions, answer=answers)) < len(cases)


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
    assert scores[4] == pytest.approx(0.25)  # duplicated think tags earn nothing


def test_soft_format_exact_needs_one_line_blocks_and_lenient_does_not():
    texts = chat(PERFECT, ONE_LINE, MULTILINE_THINK, NO_TAGS, UNCLOSED, ANSWER_FIRST, LEADING_SPACE)
    # Without DOTALL the write-up's pattern cannot cross a newline: only ONE_LINE matches.
    assert rule.soft_format(texts) == [0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert rule.soft_format_lenient(texts) == [0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.5]


def test_strict_format_exact_needs_one_line_blocks_and_the_final_newline():
    texts = chat(PERFECT, MULTILINE_THINK, NO_FINAL_NEWLINE, ONE_LINE, TRAILING, NO_TAGS, ANSWER_FIRST)
    assert rule.strict_format(texts) == [0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert rule.strict_format_lenient(texts) == [0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0]
    assert rule.strict_format(chat(PERFECT), score=1.0) == [1.0]


def test_int_answer_exact_and_numeric():
    texts = chat(PERFECT, "<answer>7.5</answer>", "<answer> -3 </answer>", "<answer></answer>", NO_TAGS,
                 "<answer>12", THOUSANDS, "<answer>7.0</answer>")
    # The write-up's rule is str.isdigit: negatives, decimals and "1,000" are not integers to it.
    assert rule.int_answer(texts) == [0.5, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0]
    assert rule.int_answer_numeric(texts) == [0.5, 0.0, 0.5, 0.0, 0.0, 0.5, 0.5, 0.5]


def test_correctness_exact_compares_strings_numeric_compares_numbers():
    completions = chat(PERFECT, PERFECT, THOUSANDS, THOUSANDS, "<answer>$5</answer>", NO_TAGS, "<answer>72 apples</answer>")
    answers = ["72", "73", "1,000", "1000", "5", "72", "72"]
    assert rule.correctness(completions, answer=answers) == [2.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0]
    assert rule.correctness_numeric(completions, answer=answers) == [2.0, 0.0, 2.0, 2.0, 2.0, 0.0, 0.0]


@pytest.mark.parametrize("reward", [rule.correctness, rule.correctness_numeric])
def test_correctness_length_mismatch_is_an_error(reward):
    with pytest.raises(ValueError, match="2 completions but 1"):
        reward(chat(PERFECT, PERFECT), answer=["72"])


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
    answers = ["72", "72", "72", "1,072", "72", "72", "72", "72"]
    assert rule.final_number(completions, answer=answers) == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert rule.final_number(chat(PERFECT), answer=["72"], score=0.25) == [0.25]


def test_final_number_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 completions but 1 reference answers"):
        rule.final_number(chat(PERFECT, NO_TAGS), answer=["72"])
