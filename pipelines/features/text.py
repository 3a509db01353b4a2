"""Text feature jobs: frozen transformer token features per text id f"{record.id}#{j}".

`bert` -> text/bert-base-uncased, `roberta` -> text/roberta-base, `minilm` ->
text/all-minilm-l6-v2 (the bundled model; the demo's and the tests' encoder).

Per text the feature set holds (L tokens, special ones included):
  features [L, D] (flat + offsets), input_ids [L], word_ids [L] (word index within its
  segment, -1 for special tokens), segment_ids [L] (0 text, 1 paired target, -1 special),
  length (attention length L), target_span [2] ([start, end) of the target's tokens in the
  pair; [0, 0] without a target).
Its attrs name the encoder and its tokenizer (`tokenizer`, `tokenizer_path`,
`tokenizer_vocab_sha256`), so figures can turn `input_ids` back into words with the same tokenizer.
Records with a target (twitter, itm, demo "target" records) are encoded as ITM's pair
(sentence with `$T$`, target); a head gets the target's tokens as features[start:end].

Settings (`--job-option`, as "<job>.<key>" or "text_<key>" for every text job): model (folder
or cached id; `--text-model` sets text_model), layer (-1 last), max_length, sort_by_length,
lowercase, ascii_only (drop non-ASCII characters), truncate (longest_first, or head: the first
max_length tokens, [SEP] cut off a longer text); "<job>.shard_items" / "shard_items";
"<job>.precision" / "precision" (auto: fp16 autocast on CUDA, fp32 on a CPU; fp32, bf16, fp16;
recorded, and a set holding another is refused). MVSA's defaults are ITIN's release
(`runner.DATASET_JOB_OPTIONS`).
"""

from __future__ import annotations

import time
from typing import Any

from lighthead.pipelines.features.base import FeatureJob, RunSummary, register
from lighthead.pipelines.features.options import (
    PRECISION_OPTION,
    ExtractOptions,
    JobOption,
    job_option,
    job_precision,
    precision_attrs,
    progress_bar,
    random_weights,
)
from lighthead.pipelines.placement import use_device

_MODELS = {"bert": "bert-base-uncased", "roberta": "roberta-base", "minilm": "all-minilm-l6-v2"}
# The `-o` settings of a text job (module docstring): `<job>.<key>`, or `text_<key>` for every text job.
SETTINGS = {
    **{
        key: JobOption(tp, shared=f"text_{key}")
        for key, tp in (
            ("model", str),
            ("layer", int),
            ("max_length", int),
            ("sort_by_length", bool),
            ("lowercase", bool),
            ("ascii_only", bool),
        )
    },
    "truncate": JobOption(str, shared="text_truncate", choices=("longest_first", "head")),
    "shard_items": JobOption(int, shared="shard_items"),
    "random_weights": JobOption(bool),
    "precision": PRECISION_OPTION,
}


def _opt(options: ExtractOptions, job: str, key: str, default: Any) -> Any:
    """`--job-option <job>.<key>=V`, else `text_<key>=V` (all text jobs), else default."""
    opts = options.job_options
    return opts.get(f"{job}.{key}", opts.get(f"text_{key}", default))


def feature_set_name(model: str, layer: int) -> str:
    """text/<model>, with -layer<i> when not the last layer (a different feature set)."""
    return f"text/{model}" + ("" if layer == -1 else f"-layer{layer}")


TOKENIZER_KEYS = ("tokenizer", "tokenizer_path", "tokenizer_vocab_sha256")


def tokenizer_attrs(model: str, path: Any, store: Any, name: str, vocab: str | None = None) -> dict[str, str]:
    """The tokenizer of a text feature set, recorded so its token ids can be shown as words:
    "tokenizer" (the model as given: registered name, cached id or folder), "tokenizer_path"
    (the folder it was read from) and "tokenizer_vocab_sha256" (`vocab`, the digest by which a
    tokenizer found later is checked to be the same). A set that already exists keeps what it
    recorded (or that it recorded nothing, if written before these keys), so a moved model
    folder never blocks a resume."""
    if name in store:
        stored = store[name].attrs
        return {k: stored[k] for k in TOKENIZER_KEYS if k in stored}
    return {"tokenizer": str(model), "tokenizer_path": str(path)} | ({"tokenizer_vocab_sha256": vocab} if vocab else {})


def text_items(
    records: list[Any], done: set[str] | frozenset[str]
) -> tuple[list[tuple[str, str, str | None]], list[tuple[str, str]], int]:
    """(text id, text, paired target or None) to encode, skipped (id, reason), count already done."""
    from lighthead.extract.text import target_pair

    items, skipped, already = [], [], 0
    for r in records:
        for text_id, text in zip(r.text_ids(), r.texts):
            if text_id in done:
                already += 1
                continue
            if r.target:
                try:
                    first, second = target_pair(text, r.target)
                except ValueError as e:
                    skipped.append((text_id, str(e)))
                    continue
                items.append((text_id, first, second))
            else:
                items.append((text_id, text, None))
    return items, skipped, already


def run_text_job(job: str, model_name: str, records: list[Any], store: Any, options: ExtractOptions) -> RunSummary:
    """Encode every text of `records` not yet in the feature set; see the module docstring."""
    from lighthead.extract.text import TextEncoder, TextEncoderConfig, vocab_sha256
    from lighthead.store import Field

    start = time.perf_counter()
    text_jobs = [j for j in options.job_options.get("_jobs", [job]) if j in _MODELS]
    if options.job_options.get("text_model") and len(text_jobs) > 1:
        raise ValueError(
            f"--text-model is ambiguous with several text jobs ({', '.join(text_jobs)}); "
            f"use --job-option JOB.model=PATH for each"
        )
    config = TextEncoderConfig(
        model=str(_opt(options, job, "model", model_name)),
        layer=int(_opt(options, job, "layer", -1)),
        max_length=int(_opt(options, job, "max_length", 512)),
        batch_size=options.batch_size,
        sort_by_length=bool(_opt(options, job, "sort_by_length", True)),
        lowercase=bool(_opt(options, job, "lowercase", False)),
        precision=job_precision(options, job, gpu="fp16"),
        ascii_only=bool(_opt(options, job, "ascii_only", False)),
        truncate=str(_opt(options, job, "truncate", "longest_first")),
    )
    name = feature_set_name(model_name, config.layer)
    random = random_weights(options, job)
    summary = RunSummary(job=job, feature_set=name, random_weights=random)
    done = set(store[name].ids) if name in store else set()
    items, summary.skipped, summary.already_done = text_items(records, done)
    if not items:
        summary.seconds = time.perf_counter() - start
        return summary
    recorded = precision_attrs(store, name, config.precision)  # another precision: refused before the model loads
    # a dask worker's GPU; "cuda:i" made the current device
    encoder = TextEncoder(config, device=use_device(options.device), random_weights=random)
    fields = [
        Field("features", (None, encoder.width), options.dtype),
        Field("input_ids", (None,), "int32"),
        Field("word_ids", (None,), "int32"),
        Field("segment_ids", (None,), "int8"),
        Field("length", (), "int32"),
        Field("target_span", (2,), "int32"),
    ]
    # The registered name, not a --text-model path: the weights hash already pins the exact model.
    attrs = {
        "extractor": "text-encoder",
        "job": job,
        "dtype": options.dtype,
        **encoder.describe(),
        "model": model_name,
        **tokenizer_attrs(config.model, encoder.path, store, name, vocab_sha256(encoder.tokenizer)),
        **recorded,
    }
    shard_items = job_option(options, job, "shard_items", None)
    overrides = {"shard_items": int(shard_items)} if shard_items else {}
    with store.writer(name, fields=fields, attrs=attrs, **overrides) as writer:
        items = [it for it in items if not writer.is_done(it[0])]
        with progress_bar(f"{job} ({config.model})", len(items), options.progress) as advance:
            texts = [t for _, t, _ in items]
            pairs = [p for _, _, p in items] if any(p is not None for _, _, p in items) else None
            for batch in encoder.iter_encode(texts, pairs):
                for i, tf in batch:
                    writer.add(
                        items[i][0],
                        {
                            "features": tf.features,
                            "input_ids": tf.input_ids,
                            "word_ids": tf.word_ids,
                            "segment_ids": tf.segment_ids,
                            "length": tf.length,
                            "target_span": tf.target_span,
                        },
                    )
                advance(len(batch))
    summary.written = writer.written  # what this run committed (a concurrent run may store some first)
    summary.seconds = time.perf_counter() - start
    return summary


def _make(job: str, model_name: str, help: str) -> FeatureJob:
    def run(records: list[Any], store: Any, options: ExtractOptions) -> RunSummary:
        return run_text_job(job, model_name, records, store, options)

    return register(
        FeatureJob(name=job, feature_set=f"text/{model_name}", kind="text", run=run, help=help, settings=SETTINGS)
    )


BERT = _make("bert", _MODELS["bert"], "BERT-base token features (MMCA, ITIN)")
ROBERTA = _make("roberta", _MODELS["roberta"], "RoBERTa-base token features, (sentence with $T$, target) pairs (ITM)")
MINILM = _make("minilm", _MODELS["minilm"], "MiniLM-L6 token features, the bundled small model (demo, tests)")
