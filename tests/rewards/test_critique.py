"""The critique sentences MGRPO's revision prompt is built from."""

import math

from tifa_lite.rewards import REGISTRY
from tifa_lite.rewards.critique import CRITIQUES, NOTHING_FAILED, critique, critique_for


def test_every_registered_reward_has_a_sentence():
    assert set(REGISTRY) <= set(CRITIQUES)


def test_each_failed_reward_adds_its_sentence_once():
    scores = {"xmlcount": 0.25, "correctness": 0.0, "final_number": 0.0, "repetition": -0.2, "length": 0.0}
    groups = {name: [value, 1.0] for name, value in scores.items()}
    assert critique(scores, groups) == (
        "Put <think>, </think>, <answer> and </answer> each on a line of its own, and write nothing after </answer>. "
        "The final number is wrong. The reply repeats itself."
    )  # correctness and final_number share one sentence; length 0.0 is no penalty


def test_pass_marks_follow_each_rewards_scale():
    group = [0.0, 2.0]
    assert critique({"correctness": 2.0}, {"correctness": group}) == NOTHING_FAILED
    assert critique({"xmlcount": 0.5}, {"xmlcount": [0.5]}) == NOTHING_FAILED
    # A learned score has no fixed pass mark: below its group's mean fails.
    assert "judge of quality" in critique({"reward_model": -0.3}, {"reward_model": [-0.3, 0.1, 0.5]})
    assert critique({"reward_model": 0.5}, {"reward_model": [-0.3, 0.1, 0.5]}) == NOTHING_FAILED


def test_unknown_and_renamed_rewards():
    assert critique_for("correctness_2").sentence == "The final number is wrong."
    assert critique_for("answer_sentence").sentence == "It scored low on the 'answer_sentence' check."
    own = critique_for("answer_sentence", {"answer_sentence": "End with: The answer is N."})
    assert own.sentence == "End with: The answer is N." and own.failed(0.0, [0.0]) and not own.failed(0.5, [0.5])
    # A recipe may reword a known reward; its pass mark stays the reward's own.
    reworded = critique_for("repetition", {"repetition": "Do not loop."})
    assert reworded.sentence == "Do not loop." and not reworded.failed(0.0, [0.0])


def test_abstaining_rewards_are_skipped():
    nan = math.nan
    assert critique({"final_number": nan, "length": -1.0}, {"final_number": [nan, 1.0], "length": [-1.0, 0.0]}) == (
        "The reply is too long; say it in fewer words."
    )
