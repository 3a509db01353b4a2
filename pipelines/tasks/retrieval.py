"""The retrieval task (COCO, Flickr30K, demo): image-caption pairs from the store.

Records of kind "image" with at least `per_image` captions (the first `per_image` are used,
as in the Karpathy splits); caption j of a split belongs to image j // per_image.
Training iterates over every caption of the train split (one pair per caption, shuffled per
epoch with a seeded generator); a batch holds the caption's image features (repeated when two
captions of one image meet in a batch; `image_index` says so, and a head's `same_image_positive`
switch then keeps them from being each other's negatives, which the released losses do not).
Semantic labels (CASC) are the union over the image's captions in training and the caption's
own label words when scoring. Evaluation: see `evaluate` (COCO 1K = mean over five
1,000-image folds, 5K = all).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

from lighthead.heads.metrics import mean_metrics, retrieval_metrics
from lighthead.pipelines.datasets.base import Record
from lighthead.pipelines.tasks.base import TASKS, Task, TaskOptions
from lighthead.pipelines.tasks.scoring import score_all
from lighthead.pipelines.tasks.semantic_labels import load_or_build
from lighthead.pipelines.tasks.sources import IMAGE_KINDS, Table, feature_sets_of, multi_hot, region_batch, text_batch

FOLD = 1000  # images per COCO 1K fold


@dataclass
class SplitData:
    """One split: images in record order, their first `per_image` captions flattened."""

    image_ids: list[str]  # key of each image in image feature sets
    record_ids: list[str]  # record id of each image
    text_ids: list[str]  # per_image per image: f"{record.id}#{j}"
    texts: list[str]  # the captions
    image_paths: list[str]  # image files (for example figures)
    dropped: int = 0  # image records skipped for having fewer than per_image captions


@TASKS.register("retrieval")
class RetrievalTask(Task):
    name = "retrieval"
    selection_metric = "rsum"

    def __init__(self, store: Any, cfg: Any, dataset: str, options: TaskOptions | None = None):
        super().__init__(store, cfg, dataset, options)
        records = [Record.from_json(o) for o in store.read_json("records")]
        self.records = [r for r in records if r.kind == "image"]
        if not self.records:
            raise ValueError(f"{store.path}: no image records (kind 'image') to train retrieval on")
        self.sets = feature_sets_of(cfg)
        for kind, name in self.sets.items():
            if name not in store:
                raise KeyError(
                    f"feature set {name!r} ({kind}) is not in {store.path}; it has "
                    f"{', '.join(store.names()) or 'none'} (run `lighthead extract` or --set another)"
                )
        self.labels = None
        wanted = cfg.semantic_labels()  # (label type, count) for heads trained with labels (CASC)
        if wanted is not None:
            self.labels = load_or_build(store, self.records, *wanted)
        self.num_regions = int(cfg.num_regions or 0)
        self._splits: dict[str, SplitData] = {}
        self._tables: dict[tuple[str, str], Table] = {}
        self._image_labels: dict[str, list[list[int]]] = {}

    # -- data ---------------------------------------------------------------------------
    def split(self, name: str) -> SplitData:
        if name not in self._splits:
            k = self.options.per_image
            recs = [r for r in self.records if r.split == name]
            kept = [r for r in recs if len(r.texts) >= k]
            self._splits[name] = SplitData(
                image_ids=[r.image_id for r in kept],
                record_ids=[r.id for r in kept],
                text_ids=[t for r in kept for t in r.text_ids()[:k]],
                texts=[t for r in kept for t in r.texts[:k]],
                image_paths=[r.image_path for r in kept],
                dropped=len(recs) - len(kept),
            )
        return self._splits[name]

    def has_split(self, split: str) -> bool:
        return len(self.split(split).image_ids) > 0

    def _require(self, split: str) -> SplitData:
        data = self.split(split)
        if not data.image_ids:
            have = sorted({r.split for r in self.records})
            raise ValueError(f"no {split!r} images with >= {self.options.per_image} captions; splits: {have}")
        return data

    def table(self, split: str, kind: str) -> Table:
        key = (split, kind)
        if key not in self._tables:
            fs = self.store[self.sets[kind]]
            wanted = {
                "regions": ["features", "boxes", "image_w", "image_h"],
                "global": ["features"],
                "thumbs": ["thumb"],
                "words": ["word_ids", "length"],
                "tokens": ["features", "length"],
            }[kind]
            fields = [f for f in wanted if f in fs.fields]
            data = self.split(split)
            ids = data.image_ids if kind in IMAGE_KINDS else data.text_ids
            self._tables[key] = Table(fs, ids, fields, self.options.preload_mb << 20)
        return self._tables[key]

    def data_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"dataset": self.dataset}
        if "regions" in self.sets:
            f = self.store[self.sets["regions"]].fields["features"]
            info["region_dim"] = f.shape[-1]
            info["num_regions"] = self.num_regions or (None if f.variable else f.shape[0])
        if "global" in self.sets:
            info["global_dim"] = self.store[self.sets["global"]].fields["features"].shape[-1]
        if "thumbs" in self.sets:
            info["thumb_size"] = self.store[self.sets["thumbs"]].fields["thumb"].shape[-1]
        if "words" in self.sets:
            fs = self.store[self.sets["words"]]
            size = fs.attrs.get("vocab_size") or len(self.store.read_json("vocab")["words"])
            info["vocab_size"] = int(size)
        if "tokens" in self.sets:
            info["token_dim"] = self.store[self.sets["tokens"]].fields["features"].shape[-1]
        if self.labels is not None:
            counts = np.zeros(len(self.labels["words"]))
            train = self.image_labels("train")
            for labels in train:
                counts[labels] += 1
            n = max(1, len(train))
            # p_c = #negative / #positive training images (captions share their image's labels).
            info["num_labels"] = len(self.labels["words"])
            info["label_pos_weight"] = [float((n - c) / c) if c > 0 else float(n) for c in counts]
        return info

    def image_labels(self, split: str) -> list[list[int]]:
        """Per image: the union of its captions' labels."""
        if split not in self._image_labels:
            data, k, caps = self.split(split), self.options.per_image, self.labels["captions"]
            self._image_labels[split] = [
                sorted({c for tid in data.text_ids[i * k : (i + 1) * k] for c in caps.get(tid, [])})
                for i in range(len(data.image_ids))
            ]
        return self._image_labels[split]

    def image_batch(self, split: str, positions: np.ndarray, inputs: Iterable[str]) -> dict[str, torch.Tensor]:
        inputs, out = set(inputs), {}
        if inputs & {"regions", "region_mask", "boxes", "image_size"}:
            out.update(region_batch(self.table(split, "regions").take(positions), self.num_regions))
        if "global" in inputs:
            out["global"] = torch.from_numpy(self.table(split, "global").take(positions)["features"])
        if "thumb" in inputs:
            out["thumb"] = torch.from_numpy(self.table(split, "thumbs").take(positions)["thumb"])
        return out

    def text_batch(
        self, split: str, positions: np.ndarray, inputs: Iterable[str], image_labels: bool
    ) -> dict[str, torch.Tensor]:
        inputs, out = set(inputs), {}
        kind = "words" if "word_ids" in inputs else "tokens" if "tokens" in inputs else None
        if kind:
            out.update(text_batch(self.table(split, kind).take(positions), kind))
        if "labels" in inputs:
            c = len(self.labels["words"])
            if image_labels:
                per_image = self.image_labels(split)
                lists = [per_image[p // self.options.per_image] for p in positions]
            else:
                tids = self.split(split).text_ids
                lists = [self.labels["captions"].get(tids[p], []) for p in positions]
            out["labels"] = multi_hot(lists, c)
        return out

    # -- training -----------------------------------------------------------------------
    def num_train_samples(self) -> int:
        return len(self._require("train").text_ids)

    def train_batches(self, inputs: tuple[str, ...], batch_size: int, seed: int, epoch: int) -> DataLoader:
        data = _PairBatches(self, "train", tuple(inputs))
        for kind in self._kinds(inputs):  # build tables (and preload) before workers fork
            self.table("train", kind)
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        sampler = BatchSampler(RandomSampler(data, generator=gen), batch_size, drop_last=False)
        workers = 0 if all(t.preloaded for (s, _), t in self._tables.items() if s == "train") else self.options.workers
        # pinned on a thread of the loader when it has workers, so copies to the GPU do not wait
        return DataLoader(
            data,
            sampler=sampler,
            batch_size=None,
            num_workers=workers,
            persistent_workers=False,
            pin_memory=self.options.pin_memory,
        )

    def _kinds(self, inputs: Iterable[str]) -> list[str]:
        inputs = set(inputs)
        kinds = []
        if inputs & {"regions", "region_mask", "boxes", "image_size"}:
            kinds.append("regions")
        kinds += [
            k
            for k, key in (("global", "global"), ("thumbs", "thumb"), ("words", "word_ids"), ("tokens", "tokens"))
            if key in inputs
        ]
        return kinds

    # -- evaluation ---------------------------------------------------------------------
    def scores(
        self, head: Any, split: str, device: torch.device, start: int = 0, stop: int | None = None
    ) -> np.ndarray:
        """(n, per_image * n) scores of images [start, stop) of `split` against their captions."""
        data, k, bs = self._require(split), self.options.per_image, self.options.eval_batch
        stop = len(data.image_ids) if stop is None else min(stop, len(data.image_ids))
        inputs = tuple(head.inputs)
        image_pos = np.arange(start, stop)
        text_pos = np.arange(start * k, stop * k)
        kind = next((x for x in ("words", "tokens") if x in self._kinds(inputs)), None)
        if kind:  # encode captions by length so blocks carry little padding
            lengths = self._lengths(split, kind, text_pos)
            order = np.argsort(lengths, kind="stable")
        else:
            order = np.arange(len(text_pos))
        images = (self.image_batch(split, image_pos[a : a + bs], inputs) for a in range(0, len(image_pos), bs))
        texts = (
            self.text_batch(split, text_pos[order[a : a + bs]], inputs, image_labels=False)
            for a in range(0, len(text_pos), bs)
        )
        budget = (self.options.eval_budget_mb << 20) or None  # None: the device's default
        return score_all(head, images, texts, device, budget, order, self.options.eval_precision)

    def _lengths(self, split: str, kind: str, positions: np.ndarray) -> np.ndarray:
        table = self.table(split, kind)
        if "length" in table.fields:
            return np.asarray(table.take(positions)["length"]).reshape(-1)
        key = "word_ids" if kind == "words" else "features"
        return np.array([len(x) for x in table.take(positions)[key]])

    def evaluate(
        self, head: Any, split: str, device: torch.device, protocol: str = "1k", limit: int = 0
    ) -> dict[str, Any]:
        """R@1/5/10 both ways, rsum, mR. protocol "1k": a split of 2,000+ images in whole
        thousands (COCO 5K) is scored as 1,000-image folds and the metrics averaged; any other
        split, or "5k", is scored whole. `limit` keeps the first images only."""
        if protocol not in ("1k", "5k"):
            raise ValueError(f"protocol must be 1k or 5k, got {protocol!r}")
        n = len(self._require(split).image_ids)
        if limit:
            n = min(n, limit)
        folds = n // FOLD if protocol == "1k" and n >= 2 * FOLD and n % FOLD == 0 else 1
        size = n // folds
        results = [
            retrieval_metrics(self.scores(head, split, device, f * size, (f + 1) * size), self.options.per_image)
            for f in range(folds)
        ]
        out: dict[str, Any] = mean_metrics(results) if folds > 1 else results[0]
        out.update(split=split, n_images=n, folds=folds, protocol=protocol if folds > 1 or protocol == "5k" else "all")
        if folds > 1:
            out["fold_rsum"] = [r["rsum"] for r in results]
        return out

    def examples(self, head: Any, split: str, device: torch.device, n: int, path: Path) -> Path:
        from lighthead.pipelines.tasks.retrieval_report import draw_examples

        data = self._require(split)
        stop = min(len(data.image_ids), FOLD)
        sims = self.scores(head, split, device, 0, stop)
        return draw_examples(self, split, sims, n, Path(path))

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
        from lighthead.pipelines.tasks.retrieval_report import report

        return report(self, head, split, device, run, metrics, protocol, examples=examples)


class _PairBatches(Dataset):
    """Indexed by a list of caption positions (a BatchSampler batch): returns a whole batch."""

    def __init__(self, task: RetrievalTask, split: str, inputs: tuple[str, ...]):
        self.task, self.split, self.inputs = task, split, inputs
        self.n = len(task.split(split).text_ids)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, positions: list[int]) -> dict[str, torch.Tensor]:
        pos = np.asarray(positions, dtype=np.int64)
        image_pos = pos // self.task.options.per_image
        batch = self.task.image_batch(self.split, image_pos, self.inputs)
        batch.update(self.task.text_batch(self.split, pos, self.inputs, image_labels=True))
        batch["image_index"] = torch.from_numpy(image_pos)
        return batch
