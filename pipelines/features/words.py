"""`words` -> words/vocab: word ids per text for the GRU text encoders (CASC, mFSR, VSE++).

The vocabulary is built from the texts of the records with split "train" (words seen at
least `vocab_threshold` times, 4 by default) and saved in the store as the JSON artifact
"vocab"; every text of every split is then encoded with it (`<start> ... <end>`, unknown
words -> `<unk>`). A rerun reuses the stored vocabulary, so resumed and later runs agree.
Per text: word_ids [L] int32 and length (L). Target records are encoded with their target
put back in place of `$T$`.

Settings (`--job-option`): vocab_threshold (4), vocab_max_size (none), shard_items.
"""

from __future__ import annotations

import time
from typing import Any

from lighthead.pipelines.features.base import FeatureJob, RunSummary, register
from lighthead.pipelines.features.options import ExtractOptions, JobOption, job_option, progress_bar

FEATURE_SET = "words/vocab"
VOCAB_ARTIFACT = "vocab"


def record_texts(record: Any) -> list[str]:
    """The texts of a record as words are counted: the target restored in target records."""
    from lighthead.extract.text import fill_target

    if record.target:
        return [fill_target(t, record.target) for t in record.texts]
    return list(record.texts)


def load_or_build_vocab(records: list[Any], store: Any, options: ExtractOptions) -> Any:
    """The store's vocabulary, or one built from the training texts (then saved)."""
    from lighthead.extract.vocab import VocabConfig, Vocabulary

    max_size = job_option(options, "words", "vocab_max_size", None)
    config = VocabConfig(
        threshold=int(job_option(options, "words", "vocab_threshold", 4)),
        max_size=None if max_size in (None, "", "none") else int(max_size),
    )
    if store.has_json(VOCAB_ARTIFACT):
        vocab = Vocabulary.from_json(store.read_json(VOCAB_ARTIFACT))
        if (vocab.config.threshold, vocab.config.max_size) != (config.threshold, config.max_size):
            raise ValueError(
                f"{store.path} already holds a vocabulary with threshold {vocab.config.threshold}, "
                f"max size {vocab.config.max_size}; word ids must come from one vocabulary: use a new store"
            )
        return vocab
    train = [t for r in records if r.split == "train" for t in record_texts(r)]
    if not train:
        raise ValueError("no training texts to build the vocabulary from (no record has split 'train')")
    vocab = Vocabulary.build(train, config)
    store.write_json(VOCAB_ARTIFACT, vocab.to_json())
    return vocab


def run_words(records: list[Any], store: Any, options: ExtractOptions) -> RunSummary:
    """Word ids of every text not yet in words/vocab."""
    import numpy as np

    from lighthead.extract.vocab import TOKENIZER
    from lighthead.store import Field

    start = time.perf_counter()
    summary = RunSummary(job="words", feature_set=FEATURE_SET)
    vocab = load_or_build_vocab(records, store, options)
    done = set(store[FEATURE_SET].ids) if FEATURE_SET in store else set()
    items = []
    for r in records:
        for text_id, text in zip(r.text_ids(), record_texts(r)):
            if text_id in done:
                summary.already_done += 1
            else:
                items.append((text_id, text))
    if not items:
        summary.seconds = time.perf_counter() - start
        return summary
    fields = [Field("word_ids", (None,), "int32"), Field("length", (), "int32")]
    attrs = {
        "extractor": "vocabulary",
        "job": "words",
        "tokenizer": TOKENIZER,
        "vocab_artifact": VOCAB_ARTIFACT,
        "vocab_size": len(vocab),
        "threshold": vocab.config.threshold,
        "add_bounds": vocab.config.add_bounds,
        "random_weights": False,
    }
    shard_items = job_option(options, "words", "shard_items", None)
    overrides = {"shard_items": int(shard_items)} if shard_items else {}
    with store.writer(FEATURE_SET, fields=fields, attrs=attrs, **overrides) as writer:
        with progress_bar("words", len(items), options.progress) as advance:
            for k, (text_id, text) in enumerate(items):
                ids = np.asarray(vocab.encode(text), dtype=np.int32)
                writer.add(text_id, {"word_ids": ids, "length": len(ids)})
                if k % 1000 == 999 or k == len(items) - 1:
                    advance(k % 1000 + 1)
    summary.written = writer.written  # what this run committed (a concurrent run may store some first)
    summary.seconds = time.perf_counter() - start
    return summary


SETTINGS = {
    "vocab_threshold": JobOption(int, shared="vocab_threshold"),
    "vocab_max_size": JobOption(int | None, shared="vocab_max_size"),
    "shard_items": JobOption(int, shared="shard_items"),
}
register(
    FeatureJob(
        "words", FEATURE_SET, "text", run_words, "word ids + vocabulary from the training split (GRU heads)", SETTINGS
    )
)
