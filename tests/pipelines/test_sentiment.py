"""The sentiment task layer: batches, the ITM alternating schedule, metrics, training through the
shared loop on demo records (above chance, fixed seeds), and the report files.

The store is built here: the demo generator's records, and features synthesised from its
layout (a region per shape = its colour's and kind's vectors plus noise, a global vector = the
sum of the colours, token features = a fixed vector per word), under the feature-set names a
demo store uses. So the image carries the sentiment (colour valence) that the text lacks.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch

from lighthead.pipelines.datasets import demo
from lighthead.pipelines.tasks.sentiment import SentimentTask, alignment_metrics, relevance_metrics
from lighthead.store import Field, open_store

RD, GD, TD, K = 32, 16, 24, 8  # region, global, token widths; regions per image
REGIONS, GLOBAL, TEXT = "regions/butd-r101-vg-36", "global/resnet18", "text/all-minilm-l6-v2"
TINY = {
    "itin": {"d": 32, "k": 16, "epochs": 6, "batch_size": 16, "dropout": 0.0},
    "itm": {
        "regions": REGIONS,
        "d": 32,
        "heads": 4,
        "ff": 64,
        "epochs": 5,
        "batch_size": 16,
        "lr": 1e-3,
        "aux_lr": 1e-3,
        "dropout": 0.0,
    },
    "text-only": {"d": 32, "heads": 4, "ff": 64, "epochs": 5, "batch_size": 16, "lr": 1e-3, "dropout": 0.0},
}


def vec(key: str, dim: int, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(zlib.crc32(key.encode())).normal(0, scale, dim)


def build_store(root: Path, n_images: int = 200, annotations: bool = True, seed: int = 0, text: bool = True) -> Path:
    """A demo-like store under root/store (records from the real demo generator); without
    `text` no token features (the caller extracts real ones)."""
    data = demo.generate(root / "data", n_images=n_images, size=96, seed=seed)
    layout = {im["image_id"]: im["shapes"] for im in json.loads((data / demo.ANNOTATIONS).read_text())["images"]}
    records = demo.load(data)
    if not annotations:
        for r in records:
            r.extra.pop("relevance", None)
            r.extra.pop("box", None)
    rng = np.random.default_rng(seed)
    s = open_store(root / "store", create=True)
    s.write_json("records", [r.to_json() for r in records])
    s.write_json("dataset", {"name": "demo"})
    with s.writer(REGIONS, [Field("features", (K, RD)), Field("boxes", (K, 4), "float32")]) as w:
        for image_id, shapes in layout.items():
            feats = rng.normal(0, 0.3, (K, RD))
            xy = rng.uniform(0, 70, (K, 2))
            boxes = np.concatenate([xy, xy + rng.uniform(8, 26, (K, 2))], 1)
            for i, sh in enumerate(shapes):  # detection order: the shapes first
                feats[i] += vec(sh["colour"], RD) + vec(sh["kind"], RD)
                boxes[i] = sh["box"]
            w.add(image_id, {"features": feats, "boxes": boxes})
    with s.writer(GLOBAL, [Field("features", (GD,))]) as w:
        for image_id, shapes in layout.items():
            w.add(image_id, {"features": sum(vec(sh["colour"], GD) for sh in shapes) + rng.normal(0, 0.3, GD)})
    if not text:
        return root / "store"
    with s.writer(TEXT, [Field("features", (None, TD)), Field("length", (), "int32")]) as w:
        for r in records:
            if r.kind == "image":
                continue
            words = ["<s>"] + re.findall(r"\$T\$|\w+", r.texts[0]) + ([r.target] if r.target else []) + ["</s>"]
            feats = np.stack([vec(x, TD) + rng.normal(0, 0.1, TD) for x in words])
            w.add(f"{r.id}#0", {"features": feats, "length": len(words)})
    return root / "store"


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    return build_store(tmp_path_factory.mktemp("sentiment"))


def make_task(store_path: Path, head: str, **over) -> tuple[SentimentTask, object]:
    from lighthead.heads.build import head_class, make_config

    cls = head_class(head)
    cfg = make_config(cls.config_class, {**TINY[head], **over}, "demo", what=head)
    return SentimentTask(open_store(store_path), cfg, "demo"), cls


# -- data ----------------------------------------------------------------------------------


def test_batches_carry_what_the_heads_read(store_path):
    task, cls = make_task(store_path, "itm")
    assert task.kind == "target"
    annotated = [r for r in task.part("train").records if r.extra.get("relevance") is not None]
    assert task.data_info() == {
        "dataset": "demo",
        "num_labels": 3,
        "records": "target",
        "region_dim": RD,
        "token_dim": TD,
        "train_samples": len(task.part("train")),
        "aux_train_samples": len(annotated),
    }
    assert 0 < len(annotated) <= len(task.part("train"))
    head = cls(task.cfg, **{k: v for k, v in task.data_info().items() if k.endswith("_dim")})
    part = task.part("train")
    batch = part.batch(np.arange(6), head.inputs)
    assert batch["regions"].shape == (6, K, RD) and batch["boxes"].shape == (6, K, 4)
    assert batch["tokens"].shape[0] == 6 and batch["text_mask"].shape == batch["tokens"].shape[:2]
    for j, r in enumerate(part.records[:6]):
        assert int(batch["label"][j]) == r.label
        assert int(batch["relevance"][j]) == r.extra["relevance"]
        assert bool(batch["has_box"][j]) == (r.extra["box"] is not None)
        if r.extra["box"]:
            assert batch["target_box"][j].tolist() == [float(v) for v in r.extra["box"]]
        n = int(batch["text_mask"][j].sum())
        stored = task.store[TEXT][f"{r.id}#0"]["features"]
        assert n == len(stored) and np.allclose(batch["tokens"][j, :n].numpy(), stored)
    itin, _ = make_task(store_path, "itin")
    assert itin.kind == "post" and itin.data_info()["global_dim"] == GD
    assert itin.part("train").batch(np.arange(3), ("regions", "global"))["regions"].shape == (3, 2, RD)  # m = 2


@pytest.mark.parametrize("every", [1, 2])
def test_itm_alternates_aux_and_main_batches(store_path, every):
    task, cls = make_task(store_path, "itm", aux_every=every)
    batches = task.train_batches(cls.inputs, 16, seed=0, epoch=0)
    phases = [b["phase"] for b in batches]
    n_main = math.ceil(len(task.part("train")) / 16)
    want = [p for i in range(n_main) for p in (["aux"] if i % every == 0 else []) + ["main"]]
    assert phases == want and len(batches) == len(want)
    again = [b["label"].tolist() for b in task.train_batches(cls.inputs, 16, seed=0, epoch=0)]
    other = [b["label"].tolist() for b in task.train_batches(cls.inputs, 16, seed=0, epoch=1)]
    assert again == [b["label"].tolist() for b in batches] and again != other
    aux = next(b for b in batches if b["phase"] == "aux")
    assert (aux["relevance"] >= 0).all()  # auxiliary batches hold annotated records only
    itin, itin_cls = make_task(store_path, "itin")
    assert {b["phase"] for b in itin.train_batches(itin_cls.inputs, 16, 0, 0)} == {"main"}


def test_without_annotations_main_task_trains_alone(tmp_path, store_path):
    bare = build_store(tmp_path, n_images=40, annotations=False)
    task, cls = make_task(bare, "itm")
    with pytest.warns(UserWarning, match="relevance and alignment losses are off"):
        phases = {b["phase"] for b in task.train_batches(cls.inputs, 16, 0, 0)}
    assert phases == {"main"}
    # the annotations may come from another store
    task, cls = make_task(bare, "itm", aux_store=str(store_path))
    phases = [b["phase"] for b in task.train_batches(cls.inputs, 16, 0, 0)]
    assert phases[:2] == ["aux", "main"]


def test_wrong_dataset_kind_is_a_clear_error(tmp_path):
    s = open_store(tmp_path / "s", create=True)
    s.write_json(
        "records",
        [
            {
                "id": "a",
                "image_id": "a",
                "image_path": "a.png",
                "texts": ["x"],
                "split": "train",
                "kind": "image",
                "label": None,
                "target": None,
                "extra": {},
            }
        ],
    )
    with pytest.raises(ValueError, match="no labelled 'post' records"):
        make_task(tmp_path / "s", "itin")


# -- metrics ---------------------------------------------------------------------------------


def test_alignment_metrics_match_loops():
    rng = np.random.default_rng(0)
    a = rng.random((20, 7)) * (rng.random((20, 7)) > 0.6)
    a[:, 0] += 1e-3  # every row has some mass
    a /= a.sum(1, keepdims=True)
    d = rng.dirichlet(np.ones(7), 20)
    d[3] = 1 / 7  # a row of ties: its rank is the worst
    got = alignment_metrics(a, d)
    kl = np.mean([sum(a[i, j] * math.log(a[i, j] / d[i, j]) for j in range(7) if a[i, j] > 0) for i in range(20)])
    assert abs(got["alignment_kl"] - kl) < 1e-9
    for k in (1, 3, 5):
        hits = 0
        for i in range(20):
            gt = int(np.argmax(a[i]))
            better = sum(1 for j in range(7) if j != gt and d[i, j] >= d[i, gt])
            hits += better < k
        assert abs(got[f"alignment_r{k}"] - 100 * hits / 20) < 1e-9
    assert got["alignment_n"] == 20


def test_relevance_metrics_match_counts():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    p = np.array([1, 0, 1, 0, 1, 0, 0, 1])
    got = relevance_metrics(y, p)
    p1, r1 = 3 / 4, 3 / 4  # related: 3 of 4 predicted are right, 3 of 4 found
    p0, r0 = 3 / 4, 3 / 4
    f = (2 * p1 * r1 / (p1 + r1) + 2 * p0 * r0 / (p0 + r0)) / 2
    assert got["relevance_accuracy"] == 75.0 and abs(got["relevance_f1"] - 100 * f) < 1e-9
    assert abs(got["relevance_precision"] - 100 * (p0 + p1) / 2) < 1e-9 and got["relevance_n"] == 8


# -- training through the shared loop ----------------------------------------------------------


def _train(store_path: Path, out: Path, head: str, **over) -> dict:
    from lighthead.pipelines.training.loop import train

    return train(head, store_path, out, overrides={**TINY[head], **over}, progress=False)


def majority_share(task: SentimentTask, split: str) -> float:
    labels = [r.label for r in task.part(split).records]
    return 100.0 * max(labels.count(c) for c in range(3)) / len(labels)


def test_itm_trains_above_chance(store_path, tmp_path):
    metrics = _train(store_path, tmp_path / "itm", "itm")
    test = metrics["test"]
    task, _ = make_task(store_path, "itm")
    assert test["accuracy"] > majority_share(task, "test") + 10, test
    for key in ("accuracy", "macro_f1", "relevance_f1", "alignment_kl", "alignment_r1"):
        assert test[key] is not None
    assert test["alignment_r1"] > 100 / K  # better than a random region
    saved = json.loads((tmp_path / "itm" / "metrics.json").read_text())
    assert saved["test"]["accuracy"] == test["accuracy"]


def test_itin_trains_above_chance_and_is_reproducible(store_path, tmp_path):
    first = _train(store_path, tmp_path / "a", "itin")["test"]
    task, _ = make_task(store_path, "itin")
    assert first["accuracy"] > majority_share(task, "test") + 10, first
    second = _train(store_path, tmp_path / "b", "itin")["test"]
    assert first == second  # fixed seeds: the same run twice gives the same metrics


@pytest.mark.parametrize(
    "head,switch",
    [
        ("itin", {"align": False}),
        ("itin", {"gating": False}),
        ("itin", {"context": False}),
        ("itin", {"context_only": True}),
        ("itm", {"relevance": False, "attention": False}),
        ("itm", {"coarse": False}),
        ("itm", {"fine": False}),
        ("text-only", {"records": "post"}),
    ],
)
def test_every_switch_trains_through_the_loop(store_path, tmp_path, head, switch):
    metrics = _train(store_path, tmp_path / "run", head, epochs=1, **switch)
    assert 0 <= metrics["test"]["accuracy"] <= 100


def test_report_writes_json_table_and_figures(store_path, tmp_path):
    from lighthead.heads.base import DataInfo
    from lighthead.pipelines.tasks.sentiment_report import report

    for head_name in ("itm", "itin", "text-only"):
        task, cls = make_task(store_path, head_name)
        torch.manual_seed(0)
        head = cls.from_config(task.cfg, DataInfo.of(task.data_info()))
        out = tmp_path / head_name
        with pytest.warns(UserWarning, match="stores no input_ids") if head_name == "itin" else nullcontext():
            metrics, files = report(task, head, "test", torch.device("cpu"), out, examples=2)
        assert [f.name for f in files] == ["eval-test.json", "eval-test.md", "confusion-test.png", "examples-test.png"]
        assert sorted(p.name for p in out.iterdir()) == sorted(f.name for f in files)
        saved = json.loads((out / "eval-test.json").read_text())
        assert saved == metrics and sum(map(sum, saved["confusion"])) == metrics["n"] == len(task.part("test"))
        table = (out / "eval-test.md").read_text()
        assert "Macro-F1" in table and ("R@1" in table) == (head_name == "itm")
        for name in ("confusion-test.png", "examples-test.png"):
            assert (out / name).stat().st_size > 1000


def test_cli_train_and_evaluate(store_path, tmp_path):
    from typer.testing import CliRunner

    from lighthead.pipelines.cli import app

    run = tmp_path / "run"
    sets = [x for k, v in {**TINY["itm"], "epochs": 2}.items() for x in ("--set", f"{k}={v}")]
    res = CliRunner().invoke(
        app,
        [
            "train",
            "heads",
            "itm",
            "--store",
            str(store_path),
            "--dataset",
            "demo",
            "--out",
            str(run),
            "--no-progress",
            *sets,
        ],
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    assert {"accuracy", "macro_f1", "relevance_f1", "alignment_kl", "alignment_r1"} <= set(metrics)
    res = CliRunner().invoke(app, ["evaluate", str(run), "--examples", "2"])
    assert res.exit_code == 0, res.output
    for name in ("eval-test.json", "eval-test.md", "confusion-test.png", "examples-test.png", "curves.png"):
        assert (run / name).is_file(), name
    assert not list(run.glob("*1k*")) and not list(run.glob("sentiment-*"))  # no protocol, one set of files
    res = CliRunner().invoke(
        app,
        [
            "train",
            "heads",
            "itin",
            "--store",
            str(store_path),
            "--dataset",
            "demo",
            "--out",
            str(tmp_path / "bad"),
            "--set",
            "align=maybe",
        ],
    )
    assert res.exit_code != 0
