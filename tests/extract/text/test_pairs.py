"""ITM pair construction: (sentence with $T$, target)."""

from __future__ import annotations

import pytest

from lighthead.extract.text import PLACEHOLDER, fill_target, target_pair


def test_sentence_with_placeholder_is_kept():
    assert target_pair("RT @x : $T$ wins again", "Team  Sky") == ("RT @x : $T$ wins again", "Team Sky")


def test_first_occurrence_is_replaced_on_word_boundaries():
    first, second = target_pair("Obama met the obama fans in Obamaville", "obama")
    assert (first, second) == ("$T$ met the obama fans in Obamaville", "obama")
    assert target_pair("I like Paris Hilton", "Paris  Hilton")[0] == "I like $T$"
    assert target_pair("go #NBA finals", "#NBA")[0] == "go $T$ finals"


def test_round_trip():
    sentence = "Safety A . J . Stamps has signed"
    first, target = target_pair(sentence, "A . J . Stamps")
    assert first.count(PLACEHOLDER) == 1
    assert fill_target(first, target) == sentence


def test_absent_or_empty_target_raises():
    with pytest.raises(ValueError, match="does not occur"):
        target_pair("nothing here", "dog")
    with pytest.raises(ValueError, match="does not occur"):
        target_pair("hotdogs", "dog")  # not a word of its own
    with pytest.raises(ValueError, match="empty target"):
        target_pair("$T$", "  ")
