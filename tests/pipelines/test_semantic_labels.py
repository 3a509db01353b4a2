"""CASC's semantic labels: offline tagging (lexicon and fallback) and the label artifact."""

from __future__ import annotations

import pytest

from lighthead.pipelines.tasks import semantic_labels as sl

CAPTIONS = {
    "a#0": "A man riding a horse on a grassy field.",
    "a#1": "Two dogs play in the snow.",
    "a#2": "The little girl is walking her dog.",
    "b#0": "A red circle left of a blue square.",
    "b#1": "People are sitting on benches near the water.",
}


@pytest.fixture(params=["lexicon", "fallback"])
def tagger(request, monkeypatch):
    if request.param == "fallback":
        monkeypatch.setattr(sl, "_lemminflect", lambda: None)
    elif sl._lemminflect() is None:
        pytest.skip("lemminflect is not installed")
    sl.candidates.cache_clear()
    yield request.param
    sl.candidates.cache_clear()


def test_nouns_verbs_adjectives(tagger):
    assert sl.caption_words(CAPTIONS["a#0"], "nouns") == ["man", "horse", "field"]
    assert sl.caption_words(CAPTIONS["a#2"], "nouns") == ["girl", "dog"]
    assert sl.caption_words(CAPTIONS["b#0"], "adjectives") == ["red", "blue"]
    assert "circle" in sl.caption_words(CAPTIONS["b#0"], "nouns")
    assert sl.caption_words(CAPTIONS["b#1"], "nouns") == ["people", "bench", "water"]  # plural -> lemma
    verbs = sl.caption_words(CAPTIONS["a#2"], "verbs")
    assert verbs == (["walk"] if tagger == "lexicon" else ["walking"])
    # closed-class words and numbers never become nouns; numbers count for "all"
    assert "two" not in sl.caption_words(CAPTIONS["a#1"], "nouns")
    assert "two" in sl.caption_words(CAPTIONS["a#1"], "all")
    assert sl.tagger_name().endswith("lemminflect" if tagger == "lexicon" else "suffix-rules")


def test_build_labels_top_k_and_caption_labels():
    train = ["a#0", "a#1", "a#2", "b#0"]
    art = sl.build_labels(CAPTIONS, train, "nouns", num_labels=3)
    # counts over the training captions: dog 2 (dogs, dog), then 1 each, ties alphabetical
    assert art["words"][0] == "dog" and art["counts"][0] == 2
    assert art["words"] == ["dog", "circle", "field"] and len(art["counts"]) == 3
    idx = {w: i for i, w in enumerate(art["words"])}
    assert art["captions"]["a#0"] == [idx["field"]]
    assert art["captions"]["b#1"] == []  # a test caption keeps only its own label words
    with pytest.raises(ValueError, match="label_type"):
        sl.build_labels(CAPTIONS, train, "pronouns", 3)


def test_load_or_build_stores_the_artifact_once(tmp_path):
    from lighthead.pipelines.datasets.base import Record
    from lighthead.store import open_store

    store = open_store(tmp_path / "s", create=True)
    recs = [
        Record(id="a", image_id="a", image_path="", texts=[CAPTIONS[f"a#{j}"] for j in range(3)], split="train"),
        Record(id="b", image_id="b", image_path="", texts=[CAPTIONS["b#0"], CAPTIONS["b#1"]], split="test"),
    ]
    art = sl.load_or_build(store, recs, "nouns", 10)
    assert store.has_json("labels/nouns-10") and store.read_json("labels/nouns-10") == art
    assert set(art["captions"]) == {"a#0", "a#1", "a#2", "b#0", "b#1"}
    recs[0].texts = ["something else entirely"]  # a second call reads the stored artifact
    assert sl.load_or_build(store, recs, "nouns", 10) == art


def test_training_casc_on_a_read_only_store_keeps_its_labels_in_memory(tmp_path, monkeypatch):
    """No write may reach the store (a read-only mount, another user's store): CASC still trains,
    with the same labels a writable store would have saved."""
    import errno
    import os
    from pathlib import Path

    import lighthead.store.api
    import lighthead.store.manifest as manifest
    from lighthead.pipelines.datasets import Record
    from lighthead.pipelines.training.loop import train
    from lighthead.store import open_store
    from tests.conftest_helpers import build_retrieval_store

    store = build_retrieval_store(
        tmp_path / "store",
        n_images=30,
        splits=(20, 5, 5),
        region_dim=32,
        num_regions=6,
        global_dim=32,
        token_dim=8,
        seed=5,
    )
    records = [Record.from_json(r) for r in open_store(store).read_json("records")]
    expected = sl.build_labels(
        {t: x for r in records for t, x in zip(r.text_ids(), r.texts)},
        [t for r in records if r.split == "train" for t in r.text_ids()],
        "nouns",
        5,
    )
    write = manifest.atomic_write

    def read_only(path, data, fsync=True):
        if Path(path).resolve().is_relative_to(store.resolve()):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return write(path, data, fsync)

    for module in (manifest, lighthead.store.api):  # every way the store writes a file
        monkeypatch.setattr(module, "atomic_write", read_only)
    over = {
        "embed_size": "8",
        "word_dim": "8",
        "batch_size": "16",
        "val_images": "0",
        "label_hidden": "8",
        "num_labels": "5",
    }
    with pytest.warns(UserWarning, match=r"cannot save the semantic labels 'labels/nouns-5' \(Read-only file system\)"):
        metrics = train("casc", store, tmp_path / "run", epochs=1, overrides=over, progress=False)
    assert metrics["epochs_done"] == 1 and not open_store(store).has_json("labels/nouns-5")
    monkeypatch.undo()
    saved = sl.load_or_build(open_store(store), records, "nouns", 5)  # writable again: built and saved
    assert saved == expected and open_store(store).has_json("labels/nouns-5")
