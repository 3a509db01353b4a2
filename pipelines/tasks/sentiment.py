"""The sentiment task: ITIN (image-text posts), ITM (image-target pairs), the text-only baseline.

Records: ITIN reads kind "post" (MVSA, demo), ITM kind "target" (Twitter-15/17, ITM, demo), the
text-only head whichever its config names (`records`, "auto": targets when the store has any).
A text's token features are keyed f"{record.id}#0"; image feature sets by `record.image_id`.

ITM's auxiliary data are target records carrying the ITM annotations (`extra["relevance"]`
0/1, `extra["box"]` x1 y1 x2 y2 for related targets), from the same store or from the store
named by `--set aux_store=PATH`. Training then alternates, as the paper does: one auxiliary
batch (`batch["phase"] = "aux"`) before every `aux_every` main batches ("main"). Without
annotations the main task trains alone and a warning says the auxiliary losses are off.

Metrics (percent, except the KL): accuracy, macro-F1 and weighted F1 over the three sentiments
(ITM's paper reports macro-F1, ITIN's "F1" behaves like weighted F1); for heads that predict
them (ITM) on the annotated records of the split: relevance accuracy and macro
precision/recall/F1 over related/unrelated, alignment KL(A || D) and R@1/3/5 (the region with
the most ground-truth mass among the top k of D; ties count against the prediction).

Validation scores every record of the dev split, as the authors' released codes do (ITM's
train.py, ITIN's): the loop's `val_images` caps the *images* of a retrieval split and does not
apply here, so the best epoch is chosen on the whole split.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from lighthead.heads.metrics import check_finite, classification_metrics
from lighthead.pipelines.datasets.base import Record
from lighthead.pipelines.tasks.base import TASKS, Task, TaskOptions
from lighthead.pipelines.tasks.sources import IMAGE_KINDS, Table, feature_sets_of, region_batch, text_batch

DATASETS_OF_KIND = {"post": "mvsa-single, mvsa-multiple, demo", "target": "twitter15, twitter17, itm, demo"}
ALIGN_KS = (1, 3, 5)
NO_BOX = [0.0, 0.0, 0.0, 0.0]  # the target box of a record without one


def load_records(store: Any) -> list[Record]:
    if not store.has_json("records"):
        raise ValueError(
            f"{store.path}: no 'records' artifact; run `lighthead extract --dataset NAME --store {store.path}`"
        )
    return [Record.from_json(o) for o in store.read_json("records")]


def record_kind(cfg: Any, records: list[Record]) -> str:
    """ "post" or "target": the config's `records` (SentimentConfig; "auto" picks targets when the
    store has labelled ones)."""
    kind = cfg.records or "auto"
    if kind == "auto":
        kind = "target" if any(r.kind == "target" and r.label is not None for r in records) else "post"
    if kind not in DATASETS_OF_KIND:
        raise ValueError(f"records must be 'post', 'target' or 'auto', got {kind!r}")
    return kind


def annotated(record: Record) -> bool:
    """The record carries ITM annotations (a relevance label)."""
    return record.kind == "target" and record.extra.get("relevance") is not None


class Part:
    """Records of one split of one store, with their feature tables (built on first use)."""

    def __init__(self, store: Any, records: list[Record], sets: dict[str, str], num_regions: int, preload_bytes: int):
        self.store, self.records, self.sets = store, records, sets
        self.num_regions, self.preload_bytes = num_regions, preload_bytes
        image_ids = list(dict.fromkeys(r.image_id for r in records))  # unique, in record order
        where = {i: p for p, i in enumerate(image_ids)}
        self.image_ids = image_ids
        self.image_pos = np.array([where[r.image_id] for r in records], dtype=np.int64)
        self.text_ids = [f"{r.id}#0" for r in records]
        self._tables: dict[str, Table] = {}

    def __len__(self) -> int:
        return len(self.records)

    def table(self, kind: str, fields: list[str]) -> Table:
        if kind not in self._tables:
            name = self.sets.get(kind)
            if name is None or name not in self.store:
                raise KeyError(
                    f"feature set {name!r} ({kind}) is not in {self.store.path}; it has "
                    f"{', '.join(self.store.names()) or 'none'} (run `lighthead extract` or --set another)"
                )
            fs = self.store[name]
            missing = [f for f in fields if f not in fs.fields]
            if missing:
                raise KeyError(
                    f"feature set {name!r} of {self.store.path} has no field {missing[0]!r} "
                    f"(fields: {', '.join(fs.fields)}); this head needs it"
                )
            ids = self.image_ids if kind in IMAGE_KINDS else self.text_ids
            table = Table(fs, ids, fields, self.preload_bytes)
            if table.preloaded and kind == "regions" and self.num_regions:
                # keep only the regions the head reads (ITIN uses 2 of 36)
                table.data = {
                    n: v[:, : self.num_regions].copy() if isinstance(v, np.ndarray) else v
                    for n, v in table.data.items()
                }
            self._tables[kind] = table
        return self._tables[kind]

    def batch(self, positions: np.ndarray, inputs: Iterable[str]) -> dict[str, Any]:
        """The batch keys `inputs` asks for (see lighthead.heads.base.BATCH_KEYS) of records `positions`."""
        inputs, out = set(inputs), {}
        recs = [self.records[p] for p in positions]
        img = self.image_pos[positions]
        if inputs & {"regions", "boxes", "region_mask"}:
            fields = ["features", "boxes"] if "boxes" in inputs else ["features"]
            out.update(region_batch(self.table("regions", fields).take(img), self.num_regions))
        if "global" in inputs:
            out["global"] = torch.from_numpy(np.asarray(self.table("global", ["features"]).take(img)["features"]))
        if "tokens" in inputs:
            out.update(text_batch(self.table("tokens", ["features"]).take(np.asarray(positions)), "tokens"))
        out["label"] = torch.tensor([r.label if r.label is not None else -1 for r in recs], dtype=torch.long)
        if inputs & {"relevance", "target_box", "has_box"}:
            rel = [r.extra.get("relevance") for r in recs]
            boxes = [r.extra.get("box") for r in recs]
            out["relevance"] = torch.tensor([-1 if v is None else int(v) for v in rel], dtype=torch.long)
            out["has_box"] = torch.tensor([b is not None and v == 1 for b, v in zip(boxes, rel)], dtype=torch.bool)
            out["target_box"] = torch.tensor([list(b) if b is not None else NO_BOX for b in boxes], dtype=torch.float32)
        return out


@TASKS.register("sentiment")
class SentimentTask(Task):
    name = "sentiment"
    selection_metric = "accuracy"  # dev accuracy picks the epoch, as in the ITM authors' code

    def __init__(self, store: Any, cfg: Any, dataset: str, options: TaskOptions | None = None):
        super().__init__(store, cfg, dataset, options)
        records = load_records(store)
        self.kind = record_kind(cfg, records)
        self.records = [r for r in records if r.kind == self.kind and r.label is not None]
        if not self.records:
            raise ValueError(
                f"{store.path} (dataset {dataset!r}) has no labelled {self.kind!r} records; "
                f"this head trains on: {DATASETS_OF_KIND[self.kind]}"
            )
        self.sets = feature_sets_of(cfg)
        if "tokens" not in self.sets:
            raise ValueError("a sentiment head needs a text/... feature set in its config")
        self.num_regions = int(cfg.num_regions or 0)
        self.aux_every = int(cfg.aux_every or 0)
        self.aux_store, self.aux_records = store, [r for r in self.records if annotated(r)]
        if cfg.aux_store:
            from lighthead.store import open_store

            self.aux_store = open_store(cfg.aux_store)
            self.aux_records = [r for r in load_records(self.aux_store) if annotated(r) and r.label is not None]
        self._parts: dict[tuple[str, bool], Part] = {}
        self._warned = False

    # -- data ---------------------------------------------------------------------------
    def part(self, split: str, aux: bool = False) -> Part:
        key = (split, aux)
        if key not in self._parts:
            pool = self.aux_records if aux else self.records
            store = self.aux_store if aux else self.store
            recs = [r for r in pool if r.split == split]
            self._parts[key] = Part(store, recs, self.sets, self.num_regions, self.options.preload_mb << 20)
        return self._parts[key]

    def has_split(self, split: str) -> bool:
        return len(self.part(split)) > 0

    def _require(self, split: str) -> Part:
        part = self.part(split)
        if not len(part):
            have = sorted({r.split for r in self.records})
            raise ValueError(f"no {split!r} {self.kind} records; splits: {have}")
        return part

    def data_info(self) -> dict[str, Any]:
        """Sizes for the head's constructor: feature widths, and the training-set sizes that a
        per-step learning-rate schedule (ITM's) spans (`aux_train_samples`: annotated records
        the auxiliary batches cycle through, 0 when there are none)."""
        info: dict[str, Any] = {"dataset": self.dataset, "num_labels": 3, "records": self.kind}
        info["train_samples"] = len(self.part("train"))
        info["aux_train_samples"] = len(self.part("train", aux=True)) if self.aux_every else 0
        dims = {"regions": "region_dim", "global": "global_dim", "tokens": "token_dim"}
        for kind, key in dims.items():
            if kind in self.sets and self.sets[kind] in self.store:
                info[key] = int(self.store[self.sets[kind]].fields["features"].shape[-1])
        return info

    def num_train_samples(self) -> int:
        return len(self._require("train"))

    def aux_active(self, inputs: Iterable[str]) -> bool:
        """Auxiliary batches run when the head reads ITM annotations and there are some."""
        if not self.aux_every or "relevance" not in set(inputs):
            return False
        if not len(self.part("train", aux=True)):
            if not self._warned:
                warnings.warn(
                    f"no ITM annotations (records with extra['relevance']) in the train split of "
                    f"{self.aux_store.path}: relevance and alignment losses are off, the main task "
                    f"trains alone (add annotations or --set aux_store=PATH)",
                    stacklevel=2,
                )
                self._warned = True
            return False
        return True

    def train_batches(self, inputs: tuple[str, ...], batch_size: int, seed: int, epoch: int) -> EpochBatches:
        """Shuffled main batches; with ITM annotations an auxiliary batch before every
        `aux_every` main ones (the aux set cycles, reshuffled on each pass)."""
        part = self._require("train")
        order = np.random.default_rng([seed, epoch]).permutation(len(part))
        chunks = [order[a : a + batch_size] for a in range(0, len(order), batch_size)]
        aux = self.part("train", aux=True) if self.aux_active(inputs) else None
        return EpochBatches(part, chunks, tuple(inputs), aux, self.aux_every, (seed, epoch, 1))

    # -- evaluation ---------------------------------------------------------------------
    def predict(
        self, head: Any, split: str, device: torch.device, limit: int = 0, aux: bool = False
    ) -> dict[str, np.ndarray]:
        """Per record of the split (the first `limit`): "logits" (N, 3), "label" (N,), and when
        the head gives them "relevance" (N,), "align" (N, K), plus the batch's "relevance_label",
        "align_target" (N, K) and "align_usable" (N,)."""
        part = self.part(split, aux) if aux else self._require(split)
        n = min(len(part), limit) if limit else len(part)
        inputs = tuple(head.inputs)
        chunks: dict[str, list[np.ndarray]] = {}
        was_training = head.training
        head.eval()
        with torch.no_grad():
            for a in range(0, n, self.options.eval_batch):
                batch = part.batch(np.arange(a, min(n, a + self.options.eval_batch)), inputs)
                batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                out = head.explain(batch)  # {"logits"} and what else the head gives (SentimentHead)
                got = {"logits": out["logits"], "label": batch["label"]}
                if "relevance" in out and "relevance" in batch:
                    got.update(relevance=out["relevance"], relevance_label=batch["relevance"])
                aligned = head.alignment_target(batch) if "align" in out else None  # None: no alignment labels
                if aligned is not None:
                    target, usable = aligned
                    got.update(align=out["align"], align_target=target, align_usable=usable)
                for k, v in got.items():
                    v = v.float() if v.is_floating_point() else v
                    chunks.setdefault(k, []).append(v.cpu().numpy())
        head.train(was_training)
        return {k: _concat(v) for k, v in chunks.items()}

    def evaluate(
        self, head: Any, split: str, device: torch.device, protocol: str = "1k", limit: int = 0
    ) -> dict[str, Any]:
        """Metrics of every record of `split`. `limit` is the loop's `val_images`, a count of
        retrieval images: a sentiment split is always scored whole (see the module docstring);
        `predict` takes a record limit for a quick look."""
        pred = self.predict(head, split, device)
        out: dict[str, Any] = sentiment_metrics(pred["label"], pred["logits"])
        if "relevance" in pred:  # the head matches images and targets: score it on the annotations
            aux = self.part(split, aux=True)
            out.update(matching_metrics(self.predict(head, split, device, aux=True) if len(aux) else {}))
        out.update(split=split, records=self.kind)
        return out

    def examples(self, head: Any, split: str, device: torch.device, n: int, path: Path) -> Path:
        from lighthead.pipelines.tasks.sentiment_report import draw_examples

        return draw_examples(self, head, split, device, n, Path(path))

    def report(
        self,
        head: Any,
        split: str,
        device: torch.device,
        run: Path,
        metrics: dict[str, Any],
        protocol: str = "1k",
        examples: int = 0,
    ) -> tuple[dict[str, Any], list[Path]]:
        from lighthead.pipelines.tasks.base import run_title
        from lighthead.pipelines.tasks.sentiment_report import report

        return report(self, head, split, device, run, examples=examples, metrics=metrics, title=run_title(metrics))


class EpochBatches:
    """One epoch of batches: sized (for the progress bar), the same on every pass; "phase" is
    the last key of each batch."""

    def __init__(
        self,
        part: Part,
        chunks: list[np.ndarray],
        inputs: tuple[str, ...],
        aux: Part | None,
        aux_every: int,
        aux_seed: tuple[int, ...],
    ):
        self.part, self.chunks, self.inputs = part, chunks, inputs
        self.aux, self.aux_every, self.aux_seed = aux, aux_every, aux_seed

    def __len__(self) -> int:
        n_aux = 0 if self.aux is None else -(-len(self.chunks) // self.aux_every)
        return len(self.chunks) + n_aux

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # an aux batch never repeats a record, even when the annotations are fewer than a batch
        size = min(len(self.chunks[0]) if self.chunks else 1, len(self.aux) if self.aux is not None else 1)
        rng = np.random.default_rng(list(self.aux_seed))  # each pass over the epoch is the same
        pending: list[int] = []
        for i, chunk in enumerate(self.chunks):
            if self.aux is not None and i % self.aux_every == 0:
                if len(pending) < size:
                    pending = rng.permutation(len(self.aux)).tolist()
                picked, pending = np.array(pending[:size]), pending[size:]
                yield {**self.aux.batch(picked, self.inputs), "phase": "aux"}
            yield {**self.part.batch(chunk, self.inputs), "phase": "main"}


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    """Concatenate batches; (B, K) arrays of variable-K region sets are zero-padded to one K."""
    if arrays[0].ndim == 2 and len({a.shape[1] for a in arrays}) > 1:
        width = max(a.shape[1] for a in arrays)
        arrays = [np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in arrays]
    return np.concatenate(arrays)


# -- metrics ------------------------------------------------------------------------------


def sentiment_metrics(labels: np.ndarray, logits: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro-F1 and weighted F1 over the three sentiments (percent), and the sample
    count. NonFiniteScoresError when a logit is NaN or infinite (argmax would pick a class anyway)."""
    out: dict[str, Any] = classification_metrics(labels, check_finite(logits, "logits").argmax(-1), num_classes=3)
    out["n"] = int(len(labels))
    return out


def matching_metrics(pred: dict[str, np.ndarray]) -> dict[str, Any]:
    """ITM's relevance and alignment metrics from `SentimentTask.predict` on annotated records.
    Keys are always present (None without annotations) so tables line up across runs."""
    keys = ["relevance_accuracy", "relevance_precision", "relevance_recall", "relevance_f1", "alignment_kl"]
    out: dict[str, Any] = {k: None for k in keys + [f"alignment_r{k}" for k in ALIGN_KS]}
    out.update(relevance_n=0, alignment_n=0)
    if "relevance_label" in pred:
        known = pred["relevance_label"] >= 0
        if known.any():
            scores = check_finite(pred["relevance"][known], "relevance scores")
            y, p = pred["relevance_label"][known], (scores > 0.5).astype(np.int64)
            out.update(relevance_metrics(y, p))
    if "align_usable" in pred:
        usable = pred["align_usable"].astype(bool)
        if usable.any():
            out.update(alignment_metrics(pred["align_target"][usable], pred["align"][usable]))
    return out


def relevance_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """Accuracy and macro precision/recall/F1 over related (1) / unrelated (0), percent."""
    base = classification_metrics(y, p, num_classes=2)
    precision, recall = [], []
    for c in (0, 1):
        tp = float(np.sum((p == c) & (y == c)))
        precision.append(tp / max(1, int(np.sum(p == c))))
        recall.append(tp / max(1, int(np.sum(y == c))))
    return {
        "relevance_accuracy": base["accuracy"],
        "relevance_precision": 100.0 * float(np.mean(precision)),
        "relevance_recall": 100.0 * float(np.mean(recall)),
        "relevance_f1": base["macro_f1"],
        "relevance_n": int(len(y)),
    }


def alignment_metrics(target: np.ndarray, dist: np.ndarray) -> dict[str, Any]:
    """KL(A || D) averaged over rows, and R@k: the region with the most mass in A ranks within
    the top k of D (pessimistic on ties: equal scores rank ahead of it)."""
    a, d = target.astype(np.float64), np.clip(dist.astype(np.float64), 1e-12, None)
    safe_a = np.where(a > 0, a, 1.0)
    kl = np.sum(np.where(a > 0, a * (np.log(safe_a) - np.log(d)), 0.0), axis=1)
    gt = a.argmax(1)
    gt_score = d[np.arange(len(d)), gt]
    rank = (d >= gt_score[:, None]).sum(1) - 1  # regions scoring at least as high, itself excluded
    out: dict[str, Any] = {"alignment_kl": float(kl.mean()), "alignment_n": int(len(a))}
    for k in ALIGN_KS:
        out[f"alignment_r{k}"] = float(100.0 * np.mean(rank < k))
    return out
