"""mvsa-single / mvsa-multiple: label merging (ITIN), majority vote, seeded 8:1:1 split."""

from __future__ import annotations

import itertools

import pytest

from lighthead.pipelines.datasets import SENTIMENTS, DatasetError, load_records
from lighthead.pipelines.datasets.mvsa import merge_labels, split_ids
from tests.pipelines.datasets import fixtures

# ITIN Sec. IV-A written out as a table: (text, image) -> merged label, None = removed
RULE = {
    ("positive", "positive"): "positive",
    ("negative", "negative"): "negative",
    ("neutral", "neutral"): "neutral",
    ("positive", "neutral"): "positive",
    ("neutral", "positive"): "positive",
    ("negative", "neutral"): "negative",
    ("neutral", "negative"): "negative",
    ("positive", "negative"): None,
    ("negative", "positive"): None,
}


def test_merge_rule_table():
    for text, image in itertools.product(SENTIMENTS, SENTIMENTS):
        assert merge_labels(text, image) == RULE[(text, image)]


def test_single_keeps_merged_posts(tmp_path):
    cells = [f"{t},{i}" for t, i in RULE]
    fixtures.mvsa(tmp_path, cells)
    records = load_records("mvsa-single", tmp_path)
    expected = {str(k): RULE[pair] for k, pair in enumerate(RULE, start=1) if RULE[pair]}
    assert {r.id: SENTIMENTS[r.label] for r in records} == expected
    r2 = next(r for r in records if r.id == "2")
    assert r2.texts == ["post number 2 été"]  # a Latin-1 file read without error
    assert r2.kind == "post" and r2.image_path.endswith("data/2.jpg")


def test_multiple_majority_per_modality(tmp_path):
    cells = [
        "positive,neutral\tpositive,negative\tneutral,neutral",  # text: positive (2 of 3); image: neutral -> positive
        "negative,negative\tpositive,negative\tneutral,positive",  # text: no majority -> removed
        "positive,negative\tpositive,negative\tpositive,neutral",  # positive vs negative -> removed
        "neutral,neutral\tneutral,positive\tnegative,neutral",  # neutral, neutral -> neutral
    ]
    fixtures.mvsa(tmp_path, cells, multiple=True)
    records = load_records("mvsa-multiple", tmp_path)
    assert {r.id: SENTIMENTS[r.label] for r in records} == {"1": "positive", "4": "neutral"}
    assert records[0].extra == {"text_label": "positive", "image_label": "neutral"}


def test_split_is_seeded_8_1_1():
    ids = [str(i) for i in range(1, 101)]
    splits = split_ids(ids)
    assert [sum(s == x for s in splits.values()) for x in ("train", "val", "test")] == [80, 10, 10]
    assert split_ids(list(reversed(ids))) == splits  # file order does not matter
    assert split_ids(ids, seed=1) != splits


@pytest.mark.parametrize(
    "cell, message",
    [
        ("positive", r"labelResultAll.txt:3: expected 'text,image' labels"),
        ("positive,happy", r"labelResultAll.txt:3: unknown label 'happy'"),
        ("positive,neutral\tneutral,neutral", r"labelResultAll.txt:3: expected ID and 1 text,image column"),
    ],
)
def test_malformed_label_lines(tmp_path, cell, message):
    fixtures.mvsa(tmp_path, ["positive,positive", cell])
    with pytest.raises(DatasetError, match=message):
        load_records("mvsa-single", tmp_path)


def test_missing_post_files_and_layout(tmp_path):
    with pytest.raises(DatasetError, match=r"labelResultAll.txt not found(.|\n)*data/<ID>.jpg"):
        load_records("mvsa-single", tmp_path)
    fixtures.mvsa(tmp_path, ["positive,positive", "neutral,neutral"])
    (tmp_path / "data" / "2.txt").unlink()
    with pytest.raises(DatasetError, match=r"labelResultAll.txt:3: .*2.txt not found"):
        load_records("mvsa-single", tmp_path)


def test_posts_without_images_load_with_one_warning(tmp_path):
    """MVSA text circulates without its images: as for twitter15/17, one warning, records kept."""
    fixtures.mvsa(tmp_path, ["positive,positive", "neutral,neutral", "negative,neutral"])
    (tmp_path / "data" / "2.jpg").unlink()
    with pytest.warns(
        UserWarning, match=r"1 of 3 image files not found \(first: .*data/2.jpg\); text feature jobs run"
    ):
        records = load_records("mvsa-single", tmp_path)
    assert [r.id for r in sorted(records, key=lambda r: r.id)] == ["1", "2", "3"]
    for path in (tmp_path / "data").glob("*.jpg"):
        path.unlink()
    with pytest.warns(UserWarning, match=r"3 of 3 image files not found"):
        assert len(load_records("mvsa-single", tmp_path)) == 3


def test_text_jobs_and_the_text_only_head_run_without_images(tmp_path):
    from lighthead.pipelines.features import ExtractOptions
    from lighthead.pipelines.features.runner import run_extract
    from lighthead.pipelines.training.loop import train
    from lighthead.store import open_store

    root = tmp_path / "data"
    labels = ["positive,positive", "neutral,neutral", "negative,negative", "positive,neutral"] * 5
    fixtures.mvsa(root, labels)
    for path in (root / "data").glob("*.jpg"):
        path.unlink()
    opts = ExtractOptions(batch_size=8, loader_workers=0, progress=False, dtype="float32")
    with pytest.warns(UserWarning, match="20 of 20 image files not found"):
        summaries = run_extract("mvsa-single", root, tmp_path / "store", ["thumbs", "minilm"], opts)
    by_job = {s.job: s for s in summaries}
    assert by_job["thumbs"].written == 0 and len(by_job["thumbs"].skipped) == 20
    assert by_job["minilm"].written == 20 and not by_job["minilm"].skipped
    assert open_store(tmp_path / "store").names() == ["text/all-minilm-l6-v2"]
    metrics = train(
        "text-only",
        tmp_path / "store",
        tmp_path / "run",
        progress=False,
        overrides={
            "text": "text/all-minilm-l6-v2",
            "d": 32,
            "heads": 4,
            "ff": 64,
            "epochs": 1,
            "batch_size": 8,
            "lr": 1e-3,
            "dropout": 0.0,
        },
    )
    assert metrics["test"]["n"] == 2 and metrics["test"]["macro_f1"] is not None
