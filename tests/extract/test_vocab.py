"""The GRU vocabulary: threshold, specials, encoding, JSON round trip."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from lighthead.extract.vocab import SPECIALS, TOKENIZER, VocabConfig, Vocabulary, tokenize

TRAIN = [
    "A dog runs on the grass.",
    "a dog and a man's hat",
    "The dog sleeps; the cat runs",
    "two dogs, one cat",
    "A dog!",
]


def test_tokenize():
    assert tokenize("A man's hat, on-the GRASS.") == ["a", "man", "'s", "hat", ",", "on", "-", "the", "grass", "."]
    assert tokenize("  ") == []


def test_threshold_against_a_plain_count():
    counts = Counter()
    for t in TRAIN:  # the words counted by hand from a whitespace/punctuation split
        counts.update(w for w in tokenize(t))
    for threshold in (1, 2, 3, 5):
        vocab = Vocabulary.build(TRAIN, VocabConfig(threshold=threshold))
        assert set(vocab.words[4:]) == {w for w, c in counts.items() if c >= threshold}
        assert vocab.words[:4] == list(SPECIALS)
    vocab = Vocabulary.build(TRAIN, VocabConfig(threshold=2))
    # by falling count, ties alphabetical: a 5, dog 4, the 3, cat/runs 2
    assert vocab.words[4:] == ["a", "dog", "the", "cat", "runs"]


def test_encode_decode():
    vocab = Vocabulary.build(TRAIN, VocabConfig(threshold=2))
    ids = vocab.encode("The cat and the DOG")
    assert ids[0] == 1 and ids[-1] == 2  # <start>, <end>
    assert vocab.decode(ids) == ["<start>", "the", "cat", "<unk>", "the", "dog", "<end>"]
    assert 0 not in ids  # 0 is padding only
    no_bounds = Vocabulary.build(TRAIN, VocabConfig(threshold=2, add_bounds=False))
    assert no_bounds.encode("cat") == [no_bounds.index["cat"]]


def test_max_size():
    vocab = Vocabulary.build(TRAIN, VocabConfig(threshold=1, max_size=3))
    assert vocab.words[4:] == ["a", "dog", "the"]


def test_json_round_trip():
    vocab = Vocabulary.build(TRAIN, VocabConfig(threshold=2))
    obj = json.loads(json.dumps(vocab.to_json()))
    again = Vocabulary.from_json(obj)
    assert again.words == vocab.words and again.config == vocab.config
    for text in TRAIN + ["unseen words here"]:
        assert again.encode(text) == vocab.encode(text)
    assert obj["tokenizer"] == TOKENIZER


def test_from_json_refuses_another_tokenizer_or_layout():
    obj = Vocabulary.build(TRAIN).to_json()
    with pytest.raises(ValueError, match="tokenizer 'nltk'"):
        Vocabulary.from_json({**obj, "tokenizer": "nltk"})
    with pytest.raises(ValueError, match="must start with"):
        Vocabulary.from_json({**obj, "words": ["x", *obj["words"]]})


def test_config_validation():
    with pytest.raises(ValueError):
        VocabConfig(threshold=0)
    with pytest.raises(ValueError):
        VocabConfig(max_size=0)
