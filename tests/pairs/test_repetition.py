import pytest

from tifa_lite.pairs.repetition import repetition_rate, units


def test_no_repeat_is_zero():
    assert repetition_rate("the quick brown fox jumps over the lazy dog") == 0.0


def test_loop_is_high_and_ordered():
    loop = "I am here. " * 10
    some = "I am here and I am there, and then I am here again today."
    assert repetition_rate(loop) > 0.8
    assert 0.0 < repetition_rate(some) < repetition_rate(loop)


def test_exact_value_rep2():
    # units a b a b a → bigrams ab ba ab ba: 2 unique of 4
    assert repetition_rate("a b a b a", n=2) == pytest.approx(0.5)


def test_cjk_characters_are_units():
    assert units("我爱你 ok") == ["我", "爱", "你", "ok"]
    assert repetition_rate("我爱你我爱你我爱你", n=3) == pytest.approx(1 - 3 / 7)


def test_short_text_scores_zero():
    assert repetition_rate("hi", n=3) == 0.0
    assert repetition_rate("", n=3) == 0.0
