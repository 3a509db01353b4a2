"""twitter15/17 from the ITM release's pickles (`twitter2015/{train,dev,test}.pkl`), without images:
text jobs run, image jobs list the missing files, and `text-only` trains on the text alone."""

from __future__ import annotations

import os
import pickle

import pytest

from lighthead.pipelines.datasets import DatasetError, load_records
from tests.pipelines.datasets import fixtures

SIZES = (12, 6, 6)


def _expected(folder) -> list[tuple]:
    out = []
    for split, fname in (("train", "train.pkl"), ("val", "dev.pkl"), ("test", "test.pkl")):
        with open(folder / fname, "rb") as fh:
            for key, e in pickle.load(fh).items():  # our own fixture: safe to unpickle here
                out.append((f"{split}-{key}", split, int(e["sentiment"]), e["iid"], e["sentence"], e["aspect"]))
    return out


@pytest.mark.parametrize("name, sub", [("twitter15", "twitter2015"), ("twitter17", "twitter2017"), ("twitter15", "")])
def test_release_pickles_become_target_records(tmp_path, name, sub):
    folder = fixtures.itm_release(tmp_path / sub if sub else tmp_path, SIZES)
    with pytest.warns(UserWarning, match=r"no image folder .*: none of the 24 images is present"):
        records = load_records(name, tmp_path)
    got = [(r.id, r.split, r.label, r.image_id, r.texts[0], r.target) for r in records]
    assert got == _expected(folder)
    images = "twitter2015_images" if name == "twitter15" else "twitter2017_images"
    assert all(r.kind == "target" and r.image_path == str(tmp_path / images / f"{r.image_id}.jpg") for r in records)


def test_images_next_to_the_pickles_are_found(tmp_path):
    fixtures.itm_release(tmp_path / "twitter2015", SIZES)
    iid = fixtures.itm_release_entries("train", SIZES[0], seed=SIZES[0] + 5)["1"]["iid"]
    fixtures.write_image(tmp_path / "images" / f"{iid}.jpg", 0)
    with pytest.warns(UserWarning, match=r"23 of 24 image files not found"):
        records = load_records("twitter15", tmp_path)
    assert os.path.isfile(records[0].image_path)


def test_tsv_files_win_over_pickles(tmp_path):
    fixtures.twitter(tmp_path)
    fixtures.itm_release(tmp_path / "twitter2015", SIZES)
    assert len(load_records("twitter15", tmp_path)) == 9  # the 3 x 3 TSV rows


def test_a_pickled_object_is_refused_and_nothing_runs(tmp_path):
    folder = fixtures.itm_release(tmp_path / "twitter2015", SIZES)
    flag = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {flag}",))

    (folder / "dev.pkl").write_bytes(pickle.dumps({"1": Evil()}, protocol=3))
    with pytest.raises(DatasetError, match=r"dev.pkl: cannot read \(refusing to load (posix|os).system"):
        load_records("twitter15", tmp_path)
    assert not flag.exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"sentiment": ""}, r"entry '2': unknown label ''"),
        ({"sentiment": None}, r"entry '2': unknown label 'none'"),
        ({"sentence": "no placeholder"}, r"entry '2': the sentence has no \$T\$"),
        ({"aspect": " "}, r"entry '2': 'aspect' is ' '; expected a non-empty string"),
        ({"iid": "../up"}, r"entry '2': 'iid' '../up' is not a file name"),
        (None, r"entry '2': missing field 'sentiment'"),
    ],
)
def test_malformed_entries_name_the_file_and_key(tmp_path, change, message):
    folder = fixtures.itm_release(tmp_path / "twitter2015", SIZES)
    entries = fixtures.itm_release_entries("test", SIZES[2], seed=SIZES[2] + 4)
    if change is None:
        del entries["2"]["sentiment"]
    else:
        entries["2"].update(change)
    (folder / "test.pkl").write_bytes(pickle.dumps(entries, protocol=3))
    with pytest.raises(DatasetError, match=f"test.pkl: {message}"):
        load_records("twitter15", tmp_path)


def test_a_missing_split_file_is_named(tmp_path):
    folder = fixtures.itm_release(tmp_path / "twitter2015", SIZES)
    (folder / "dev.pkl").unlink()
    with pytest.raises(DatasetError, match=r"twitter2015/dev.pkl not found"):
        load_records("twitter15", tmp_path)


def test_text_only_trains_on_the_release_text_without_images(tmp_path):
    from lighthead.pipelines.features import ExtractOptions
    from lighthead.pipelines.features.runner import run_extract
    from lighthead.pipelines.training.loop import train
    from lighthead.store import open_store

    fixtures.itm_release(tmp_path / "data" / "twitter2015", SIZES)
    opts = ExtractOptions(batch_size=8, loader_workers=0, progress=False, dtype="float32")
    # No detector weights and no images: the region job needs neither, and stops nothing.
    with pytest.warns(UserWarning, match="none of the 24 images"):
        summaries = run_extract(
            "twitter15", tmp_path / "data", tmp_path / "store", ["regions100", "thumbs", "minilm"], opts
        )
    by_job = {s.job: s for s in summaries}
    for job in ("regions100", "thumbs"):
        assert by_job[job].written == 0 and len(by_job[job].skipped) == 24
        assert all(
            why.startswith("image file not found: ") and why.endswith(f"{image_id}.jpg")
            for image_id, why in by_job[job].skipped
        )
    assert by_job["minilm"].written == sum(SIZES) and not by_job["minilm"].skipped
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
            "epochs": 2,
            "batch_size": 8,
            "lr": 1e-3,
            "dropout": 0.0,
        },
    )
    test = metrics["test"]
    assert test["n"] == SIZES[2] and 0 <= test["accuracy"] <= 100 and test["macro_f1"] is not None
    assert (tmp_path / "run" / "metrics.json").is_file()
