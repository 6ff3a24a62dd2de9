"""Reward lookup: registered names, TRL's rewards, custom references, error wrapping."""

import pytest

from tifa_lite.errors import ConfigError
from tifa_lite.rewards import R1_ZERO_REWARDS, REGISTRY, RewardError, build_rewards, resolve_reward

GOOD = [[{"role": "assistant", "content": "<think>\nx\n</think>\n<answer>\n3\n</answer>\n"}]]
BAD = [[{"role": "assistant", "content": "no tags 3 3 3 3 3 3 3 3"}]]


def call(reward, completions, **kwargs):
    ids = [list(range(5))] * len(completions)
    return reward(prompts=["p"] * len(completions), completions=completions, completion_ids=ids, **kwargs)


def test_r1_zero_defaults_and_their_lenient_variants_are_registered():
    assert R1_ZERO_REWARDS == ["xmlcount", "soft_format", "strict_format", "int_answer", "correctness"]
    lenient = ["soft_format_lenient", "strict_format_lenient", "int_answer_numeric", "correctness_numeric"]
    assert set(R1_ZERO_REWARDS + lenient) <= set(REGISTRY)
    spread = [[{"role": "assistant", "content": "<think>\na\nb\n</think>\n<answer>\n1,000\n</answer>"}]]
    exact = [call(f, spread, answer=["1000"]) for f in build_rewards([{"name": n} for n in R1_ZERO_REWARDS[1:]]).funcs]
    loose = [call(f, spread, answer=["1000"]) for f in build_rewards([{"name": n} for n in lenient]).funcs]
    assert exact == [[0.0], [0.0], [0.0], [0.0]]
    assert loose == [[0.5], [0.5], [0.5], [2.0]]


def test_build_rewards_names_weights_and_scores():
    specs = [{"name": n} for n in R1_ZERO_REWARDS] + [{"name": "correctness", "weight": 0.5}]
    rewards = build_rewards(specs)
    assert rewards.names == R1_ZERO_REWARDS + ["correctness_2"]
    assert rewards.weights == [1.0] * 5 + [0.5]
    scores = [call(f, GOOD + BAD, answer=["3", "3"]) for f in rewards.funcs]
    assert scores[0][0] == pytest.approx(0.5) and scores[0][1] == 0.0
    assert scores[4] == [2.0, 0.0]


def test_kwargs_bind_to_plain_rewards():
    f = build_rewards([{"name": "strict_format", "kwargs": {"score": 3.0}}]).funcs[0]
    assert call(f, GOOD + BAD) == [3.0, 0.0]


def test_kwargs_are_typed_by_the_reward_signature(tmp_path):
    """YAML's 2e-1 is a string; each reward's own annotations say what it becomes."""
    f = build_rewards([{"name": "soft_format_lenient", "kwargs": {"score": "2e-1"}}]).funcs[0]
    assert call(f, GOOD) == [0.2]
    user = tmp_path / "typed.py"
    user.write_text(
        "def over(completions, threshold: float = 0.5, **kw):\n"
        "    assert isinstance(threshold, float)\n"
        "    return [threshold] * len(completions)\n"
        "def make_scaled(path: str, batch_size: int = 8, **context):\n"
        "    assert isinstance(batch_size, int)\n"
        "    return lambda completions, **kw: [float(batch_size)] * len(completions)\n"
    )
    rewards = build_rewards([{"name": f"{user}:over", "kwargs": {"threshold": "5e-1"}},
                             {"name": f"{user}:make_scaled", "kwargs": {"path": "judge", "batch_size": "16"}}])
    assert call(rewards.funcs[0], GOOD) == [0.5] and call(rewards.funcs[1], GOOD) == [16.0]


@pytest.mark.parametrize("spec, message", [
    ({"name": "soft_format", "kwargs": {"scroe": 1.0}},
     r"grpo.rewards\[1\].kwargs.scroe: reward 'soft_format' has no setting 'scroe' \(did you mean 'score'\?\)"),
    ({"name": "length", "kwargs": {"soft_punish_cache": "many"}},
     r"grpo.rewards\[1\].kwargs.soft_punish_cache='many': reward 'length' expects"),
    ({"name": "soft_format", "kwargs": {"completions": ["x"]}},
     r"kwargs.completions: reward 'soft_format' has no setting"),  # TRL passes it on every call
    ({"name": "trl:get_soft_overlong_punishment", "kwargs": {"max_completion_length": 8}},
     r"did you mean 'max_completion_len'"),
])
def test_unknown_or_mistyped_kwargs_name_the_recipe_key(spec, message):
    with pytest.raises(ConfigError, match=message):
        build_rewards([{"name": "xmlcount"}, spec])


def test_repetition_reward_uses_trl_ngrams():
    f = build_rewards([{"name": "repetition", "kwargs": {"ngram_size": 2}}]).funcs[0]
    ids = [[1, 2, 3, 4], [5, 5, 5, 5, 5], [1]]
    scores = f(prompts=["p"] * 3, completions=["a", "b", "c"], completion_ids=ids)
    assert scores == [0.0, pytest.approx(-0.75), 0.0]
    assert f.__name__ == "repetition"


def test_repetition_reward_on_degenerate_completions():
    """Empty, shorter than one n-gram, and a loop of one token: no crash, loop gets the max penalty."""
    f = build_rewards([{"name": "repetition", "kwargs": {"ngram_size": 3, "max_penalty": -2.0}}]).funcs[0]
    ids = [[], [7, 8], [9] * 12]
    scores = f(prompts=["p"] * 3, completions=["", "ab", "zzzz"], completion_ids=ids)
    assert scores[:2] == [0.0, 0.0]
    assert scores[2] == pytest.approx(-2.0 * (1 - 1 / 10))  # 10 trigrams, 1 distinct


def test_length_reward_on_empty_and_overlong_completions():
    f = build_rewards([{"name": "length"}], context={"max_completion_length": 8}).funcs[0]
    scores = f(prompts=["p"] * 2, completions=["", "x"], completion_ids=[[], [0] * 100])
    assert scores == [0.0, -1.0]


def test_length_reward_defaults_to_max_completion_length():
    f = build_rewards([{"name": "length"}], context={"max_completion_length": 8}).funcs[0]
    ids = [[0] * 4, [0] * 7, [0] * 9]  # cache = 8 // 4 = 2 → free up to 6 tokens
    assert f(prompts=["p"] * 3, completions=["a"] * 3, completion_ids=ids) == [0.0, pytest.approx(-0.5), -1.0]


def test_trl_reward_by_name():
    rewards = build_rewards([
        {"name": "trl:think_format_reward"},
        {"name": "trl:get_soft_overlong_punishment", "kwargs": {"max_completion_len": 4, "soft_punish_cache": 1}},
    ])
    assert rewards.names == ["think_format_reward", "soft_overlong_punishment"]
    assert call(rewards.funcs[0], GOOD + BAD) == [1.0, 0.0]
    assert call(rewards.funcs[1], GOOD) == [-1.0]


def test_unknown_trl_reward_lists_the_real_ones():
    with pytest.raises(ConfigError, match="think_format_reward"):
        resolve_reward("trl:nope")


def test_custom_reward_from_file(tmp_path):
    f = tmp_path / "my_rewards.py"
    f.write_text(
        "def shout(completions, bonus=1.0, **kw):\n"
        "    return [bonus if '!' in c[0]['content'] else 0.0 for c in completions]\n"
        "def make_const(value):\n"
        "    def const(completions, **kw):\n"
        "        return [value] * len(completions)\n"
        "    return const\n"
    )
    rewards = build_rewards([
        {"name": f"{f}:shout", "kwargs": {"bonus": 2.0}, "weight": 0.25},
        {"name": f"{f}:make_const", "kwargs": {"value": 7}},
    ])
    assert rewards.names == ["shout", "const"]
    assert rewards.weights == [0.25, 1.0]
    yell = [[{"role": "assistant", "content": "hi!"}]]
    assert call(rewards.funcs[0], yell + GOOD) == [2.0, 0.0]
    assert call(rewards.funcs[1], GOOD) == [7.0]


def test_custom_reward_from_module():
    # Any importable module works; the rule module itself is one.
    f = build_rewards([{"name": "tifa_lite.rewards.rule:strict_format"}]).funcs[0]
    assert f.__name__ == "strict_format"
    assert call(f, GOOD) == [0.5]


@pytest.mark.parametrize("ref, message", [
    ("not_a_reward", "not a known reward"),
    ("no/such/file.py:f", "no such file"),
    ("no_such_module_xyz:f", "cannot import module"),
    ("tifa_lite.rewards.rule:missing", "has no 'missing'"),
])
def test_bad_references_fail_at_build_time(ref, message):
    with pytest.raises(ConfigError, match=message):
        build_rewards([{"name": ref}])


def test_broken_factory_names_the_reward():
    with pytest.raises(ConfigError, match="repetition"):
        build_rewards([{"name": "repetition", "kwargs": {"max_penalty": 2.0}}])


def test_reward_that_raises_is_named(tmp_path):
    f = tmp_path / "boom.py"
    f.write_text("def boom(completions, **kw):\n    raise KeyError('answer')\n")
    reward = build_rewards([{"name": f"{f}:boom"}]).funcs[0]
    with pytest.raises(RewardError, match=r"reward 'boom' .*boom\.py:boom.* raised KeyError: 'answer' at .*boom\.py:2"):
        call(reward, GOOD)


def test_reward_with_wrong_count_is_named(tmp_path):
    f = tmp_path / "short.py"
    f.write_text("def short(completions, **kw):\n    return [1.0]\n")
    reward = build_rewards([{"name": f"{f}:short"}]).funcs[0]
    with pytest.raises(RewardError, match="reward 'short' .* returned 1 scores for 2 completions"):
        call(reward, GOOD + BAD)


def test_reward_with_non_numbers_or_non_list_is_named(tmp_path):
    f = tmp_path / "odd.py"
    f.write_text(
        "def words(completions, **kw):\n    return ['high'] * len(completions)\n"
        "def scalar(completions, **kw):\n    return 1.0\n"
        "def maybe(completions, **kw):\n    return [None] * len(completions)\n"
    )
    words, scalar, maybe = build_rewards([{"name": f"{f}:{n}"} for n in ("words", "scalar", "maybe")]).funcs
    with pytest.raises(RewardError, match="reward 'words' .*returned 'high' for completion 0"):
        call(words, GOOD)
    with pytest.raises(RewardError, match="reward 'scalar' .*returned float"):
        call(scalar, GOOD)
    assert call(maybe, GOOD) == [None]


def test_correctness_without_answer_column_is_named():
    reward = build_rewards([{"name": "correctness"}]).funcs[0]
    with pytest.raises(RewardError, match="reward 'correctness'.*TypeError.*answer"):
        call(reward, GOOD)


def test_named_reward_pickles():
    import pickle

    reward = build_rewards([{"name": "xmlcount"}]).funcs[0]
    clone = pickle.loads(pickle.dumps(reward))
    assert clone.__name__ == "xmlcount" and call(clone, GOOD) == call(reward, GOOD)


def test_async_reward_stays_async_and_is_checked(tmp_path):
    import asyncio

    from trl.trainer.utils import is_async_callable

    f = tmp_path / "remote.py"
    f.write_text(
        "async def judge(completions, **kw):\n    return [0.25] * len(completions)\n"
        "async def broken(completions, **kw):\n    return []\n"
    )
    judge, broken = build_rewards([{"name": f"{f}:judge"}, {"name": f"{f}:broken"}]).funcs
    assert is_async_callable(judge)  # so TRL awaits it instead of receiving a coroutine
    assert asyncio.run(call(judge, GOOD + BAD)) == [0.25, 0.25]
    with pytest.raises(RewardError, match="reward 'broken' .*returned 0 scores for 1"):
        asyncio.run(call(broken, GOOD))
