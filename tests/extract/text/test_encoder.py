"""Token features of the bundled MiniLM model against direct `transformers` calls, token by token."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lighthead.extract.text import TextEncoder, TextEncoderConfig, resolve_model

TEXTS = [
    "a red circle left of a blue square",
    "hello",
    "An unbelievably long caption, with punctuation; and SOME capitals too!",
    "two dogs",
    "a man riding a wave on top of a surfboard",
]
PAIRS = [None, None, None, "dogs", "a surfboard"]


@pytest.fixture(scope="module")
def reference():
    from transformers import AutoModel, AutoTokenizer

    path = resolve_model("all-minilm-l6-v2")
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    return tok, model


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(TextEncoderConfig(model="all-minilm-l6-v2", batch_size=2))


def _direct(tok, model, text, pair=None, layer=-1):
    """One text alone, no padding: the features a plain transformers call gives."""
    enc = tok(text, pair, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
    return enc, out.hidden_states[layer][0].numpy()


def test_features_match_direct_calls(encoder, reference):
    tok, model = reference
    got = encoder.encode(TEXTS, PAIRS)  # batches of 2 sorted by length: padding inside batches
    for text, pair, tf in zip(TEXTS, PAIRS, got):
        enc, want = _direct(tok, model, text, pair)
        assert tf.input_ids.tolist() == enc["input_ids"][0].tolist()
        assert tf.length == want.shape[0] == tf.features.shape[0]
        assert tf.features.shape[1] == encoder.width == 384
        for t in range(tf.length):  # token by token
            np.testing.assert_allclose(tf.features[t], want[t], atol=2e-4, rtol=1e-3)


def test_sorted_and_unsorted_batching_agree(encoder):
    assert encoder.batches([3, 9, 5], sort_by_length=False) == [[0, 1], [2]]
    assert encoder.batches([3, 9, 5]) == [[1, 2], [0]]  # longest first
    a, b = encoder.encode(TEXTS), encoder.encode(TEXTS, sort_by_length=False)
    windowed = TextEncoder(
        TextEncoderConfig(model="all-minilm-l6-v2", batch_size=2, sort_window=2)
    )  # sorted 2 at a time
    c = windowed.encode(TEXTS, PAIRS)
    for x, y, z, w in zip(a, b, c, encoder.encode(TEXTS, PAIRS)):
        np.testing.assert_allclose(x.features, y.features, atol=2e-4)
        np.testing.assert_allclose(z.features, w.features, atol=2e-4)
        assert z.input_ids.tolist() == w.input_ids.tolist()


def test_layer_option(reference):
    tok, model = reference
    enc2 = TextEncoder(TextEncoderConfig(model="all-minilm-l6-v2", layer=2, batch_size=4))
    tf = enc2.encode(TEXTS[:3])
    for text, t in zip(TEXTS[:3], tf):
        _, want = _direct(tok, model, text, layer=2)
        np.testing.assert_allclose(t.features, want, atol=2e-4, rtol=1e-3)
    with pytest.raises(ValueError, match="layer 9 out of range"):
        TextEncoder(TextEncoderConfig(model="all-minilm-l6-v2", layer=9))


def test_word_to_token_map(encoder):
    text = "an unbelievably colourful caption, truly"
    (tf,) = encoder.encode([text])
    words = ["an", "unbelievably", "colourful", "caption", ",", "truly"]  # BERT splits punctuation off
    tokens = encoder.tokenizer.convert_ids_to_tokens(tf.input_ids.tolist())
    assert tf.word_ids[0] == -1 and tf.word_ids[-1] == -1  # [CLS], [SEP]
    for j, word in enumerate(words):
        pieces = [tokens[t] for t in np.flatnonzero(tf.word_ids == j)]
        assert encoder.tokenizer.convert_tokens_to_string(pieces).replace(" ", "") == word
    assert set(tf.segment_ids[1:-1].tolist()) == {0} and tf.target_span == (0, 0)


def test_pair_segments_and_target_span(encoder):
    (tf,) = encoder.encode(["we love $T$ so much"], ["golden retrievers"])
    tokens = encoder.tokenizer.convert_ids_to_tokens(tf.input_ids.tolist())
    start, end = tf.target_span
    assert encoder.tokenizer.convert_tokens_to_string(tokens[start:end]) == "golden retrievers"
    assert tokens[end] == "[SEP]" and tokens[start - 1] == "[SEP]"
    assert (tf.segment_ids[start:end] == 1).all() and (tf.word_ids[start:end] >= 0).all()
    assert tf.word_ids[start] == 0  # word ids restart in the second segment


def test_truncation_and_random_weights_are_deterministic():
    cfg = TextEncoderConfig(model="all-minilm-l6-v2", max_length=6)
    a = TextEncoder(cfg, random_weights=True).encode([TEXTS[2]])[0]
    b = TextEncoder(cfg, random_weights=True).encode([TEXTS[2]])[0]
    assert a.length == 6
    np.testing.assert_array_equal(a.features, b.features)
    assert TextEncoder(cfg, random_weights=True).describe()["weights_sha256"] is None


def test_missing_model_says_how_to_get_it(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="huggingface-cli download bert-base-uncased.*--text-model PATH"):
        resolve_model("bert-base-uncased")
    with pytest.raises(FileNotFoundError, match="huggingface-cli download FacebookAI/roberta-large"):
        resolve_model("FacebookAI/roberta-large")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        resolve_model(tmp_path / "empty")


def test_config_validation():
    with pytest.raises(ValueError):
        TextEncoderConfig(batch_size=0)
    with pytest.raises(ValueError):
        TextEncoderConfig(max_length=2)


# A post as MVSA stores some: Latin-1 bytes (not UTF-8), a no-break space, an emoji's UTF-8 bytes.
POST = b"caf\xe9 au lait \xa1\xad so\xa0good \xf0\x9f\x98\x80 at the ocean's edge"


def released_ids(tok, raw: bytes, max_len: int) -> list[int]:
    """ITIN's Demo.py: the file's bytes decoded ascii/ignore, '[CLS] ' + text + ' [SEP]' through
    the tokenizer's tokenize and convert_tokens_to_ids, the first MAX_LEN ids kept (no padding
    here: the cache stores the real positions)."""
    text = raw.decode("ascii", "ignore")
    ids = tok.convert_tokens_to_ids(tok.tokenize("[CLS] " + text + " [SEP]"))
    return ids[:max_len]


def test_ascii_only_and_head_truncation_are_itins_demo(tmp_path, reference):
    from lighthead.pipelines.datasets.mvsa import read_text

    tok, _ = reference
    path = tmp_path / "1.txt"
    path.write_bytes(POST)
    text = read_text(path)  # how the MVSA adapter reads the post (Latin-1: the bytes are not UTF-8)
    for max_len in (100, 8):  # the release's MAX_LEN; and a cut inside the text, [SEP] lost
        enc = TextEncoder(
            TextEncoderConfig(model="all-minilm-l6-v2", ascii_only=True, truncate="head", max_length=max_len)
        )
        got = enc.tokenize([text])[0]
        assert got["input_ids"] == released_ids(tok, POST, max_len)
        assert len(got["word_ids"]) == len(got["segment_ids"]) == len(got["input_ids"])
    assert got["input_ids"][-1] != tok.sep_token_id and len(got["input_ids"]) == 8
    plain = TextEncoder(TextEncoderConfig(model="all-minilm-l6-v2", max_length=8)).tokenize([text])[0]
    assert plain["input_ids"][-1] == tok.sep_token_id  # the default keeps [SEP] at the cut
    kept = TextEncoder(TextEncoderConfig(model="all-minilm-l6-v2")).tokenize([text])[0]["input_ids"]
    assert kept != released_ids(tok, POST, 100)  # keeping the non-ASCII characters reads another text
    assert enc.describe()["ascii_only"] is True and enc.describe()["truncate"] == "head"
    assert "ascii_only" not in TextEncoder(TextEncoderConfig(model="all-minilm-l6-v2")).describe()
    with pytest.raises(ValueError, match="pairs"):
        enc.tokenize(["a sentence with $T$"], ["target"])
    with pytest.raises(ValueError, match="truncate"):
        TextEncoderConfig(truncate="tail")
