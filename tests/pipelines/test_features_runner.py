"""`run_extract` / `lighthead extract` on small generated datasets: features, resume, skips, kills."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lighthead.extract.global_cnn import ThumbConfig
from lighthead.extract.vocab import Vocabulary
from lighthead.pipelines.datasets import load_records
from lighthead.pipelines.features import FEATURES, ExtractOptions, load_all
from lighthead.pipelines.features.runner import DEFAULT_FEATURES, run_extract
from lighthead.store import open_store
from tests.pipelines.datasets import fixtures

ROOT = Path(__file__).resolve().parents[2]


def _options(**kw):
    base = dict(
        random_weights=True,
        batch_size=4,
        loader_workers=0,
        progress=False,
        dtype="float32",
        job_options={"minilm.random_weights": False},
    )
    base.update(kw)
    return ExtractOptions(**base)


@pytest.fixture()
def coco(tmp_path):
    root = fixtures.karpathy(tmp_path / "coco", n_images=6)
    path = root / "dataset_coco.json"
    obj = json.loads(path.read_text())
    obj["images"][3]["sentences"][0]["raw"] = "zebra zebra zebra zebra"  # image 3 is a test image
    path.write_text(json.dumps(obj))
    return root


def test_extract_writes_every_feature_set(coco, tmp_path, capsys):
    store_path = tmp_path / "store"
    summaries = run_extract("coco", coco, store_path, ["minilm", "words", "resnet18", "thumbs"], _options())
    records = load_records("coco", coco)
    s = open_store(store_path)
    assert s.read_json("dataset")["name"] == "coco"
    assert s.read_json("records") == [r.to_json() for r in records]
    text_ids = [t for r in records for t in r.text_ids()]

    text = s["text/all-minilm-l6-v2"]
    assert sorted(text.ids) == sorted(text_ids)
    assert text.attrs["random_weights"] is False and text.attrs["weights_sha256"]
    from transformers import AutoModel, AutoTokenizer

    from lighthead.extract.text import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("all-minilm-l6-v2"))
    model = AutoModel.from_pretrained(resolve_model("all-minilm-l6-v2")).eval()
    for r in records[:2]:
        item = text[f"{r.id}#1"]
        enc = tok(r.texts[1], return_tensors="pt")
        with torch.no_grad():
            want = model(**enc).last_hidden_state[0].numpy()
        np.testing.assert_allclose(item["features"], want, atol=2e-4, rtol=1e-3)
        assert item["input_ids"].tolist() == enc["input_ids"][0].tolist() and int(item["length"]) == want.shape[0]
        assert item["word_ids"].tolist() == [-1 if w is None else w for w in enc.word_ids(0)]

    vocab = Vocabulary.from_json(s.read_json("vocab"))
    assert "zebra" not in vocab  # only in a test caption: the vocabulary comes from the train split
    assert "zebra" not in Vocabulary.build([t for r in records if r.split == "train" for t in r.texts]).index
    words = s["words/vocab"]
    assert sorted(words.ids) == sorted(text_ids)
    first = records[0]
    assert words[f"{first.id}#0"]["word_ids"].tolist() == vocab.encode(first.texts[0])

    glob = s["global/resnet18"]
    assert sorted(glob.ids) == sorted(r.image_id for r in records)
    assert glob[records[0].image_id]["features"].shape == (512,) and glob.attrs["random_weights"] is True
    thumbs = s["thumbs/64"]
    want = ThumbConfig().transform()(Image.open(records[2].image_path).convert("RGB")).numpy()
    np.testing.assert_array_equal(thumbs[records[2].image_id]["thumb"], want)

    by_job = {x.job: x for x in summaries}
    assert by_job["minilm"].written == 30 and by_job["resnet18"].written == 6
    assert by_job["resnet18"].random_weights and not by_job["minilm"].random_weights
    out = capsys.readouterr()
    assert "RANDOM" in out.out and (out.out + out.err).count("UNTRAINED") == 1  # the warning once per command

    again = run_extract("coco", coco, store_path, ["minilm", "words", "resnet18", "thumbs"], _options())
    assert [(x.written, x.already_done) for x in again] == [(0, 30), (0, 30), (0, 6), (0, 6)]


def test_unreadable_images_are_skipped_with_reasons(coco, tmp_path, capsys):
    records = load_records("coco", coco)
    Path(records[1].image_path).write_bytes(b"garbage")
    (summary,) = run_extract("coco", coco, tmp_path / "st", ["thumbs"], _options())
    assert summary.written == 5
    assert summary.skipped == [(records[1].image_id, f"not a readable image: {records[1].image_path}")]
    out = capsys.readouterr().out
    assert "1 skipped input" in out and records[1].image_id in out
    s = open_store(tmp_path / "st")
    assert s.read_json("extract_summary")[-1]["jobs"][0]["skipped"][0][0] == records[1].image_id


def test_target_records_are_encoded_as_pairs(tmp_path):
    root = fixtures.twitter(tmp_path / "tw", rows=2)
    run_extract("twitter15", root, tmp_path / "st", ["minilm"], _options())
    s = open_store(tmp_path / "st")
    fs = s["text/all-minilm-l6-v2"]
    records = load_records("twitter15", root)
    from transformers import AutoTokenizer

    from lighthead.extract.text import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("all-minilm-l6-v2"))
    for r in records:
        item = fs[f"{r.id}#0"]
        assert item["input_ids"].tolist() == tok(r.texts[0], r.target)["input_ids"]
        start, end = item["target_span"].tolist()
        assert tok.decode(item["input_ids"][start:end]) == r.target.lower()


def test_unknown_feature_dataset_and_store_mismatch(coco, tmp_path):
    with pytest.raises(KeyError, match=r"unknown feature 'bogus'; valid: .*minilm.*resnet18"):
        run_extract("coco", coco, tmp_path / "st", ["bogus"], _options())
    with pytest.raises(KeyError, match=r"unknown dataset 'mine'; known: .*coco"):
        run_extract("mine", coco, tmp_path / "st", None, _options())
    run_extract("coco", coco, tmp_path / "st", ["thumbs"], _options())
    fixtures.karpathy(tmp_path / "f30k", n_images=4, coco=False)
    with pytest.raises(Exception, match="holds dataset 'coco', not 'f30k'"):
        run_extract("f30k", tmp_path / "f30k", tmp_path / "st", ["thumbs"], _options())
    with pytest.raises(ValueError, match="--text-model is ambiguous"):
        run_extract("coco", coco, tmp_path / "st", ["minilm", "bert"], _options(job_options={"text_model": "x"}))


def test_default_features_are_registered_jobs_or_region_jobs():
    load_all()
    region_jobs = {"regions36", "regions100", "adaptive", "given-boxes"}  # pipelines/features/regions.py
    for dataset, names in DEFAULT_FEATURES.items():
        for name in names:
            assert name in FEATURES or name in region_jobs, (dataset, name)


_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from lighthead.extract.text import encoder
    from lighthead.pipelines.features.runner import run_extract
    from lighthead.pipelines.features import ExtractOptions

    calls = {"n": 0}
    forward = encoder.TextEncoder.forward

    def dying_forward(self, items):
        calls["n"] += 1
        if calls["n"] == 4:  # after three batches (six shards of two texts), die like a killed job
            os.kill(os.getpid(), signal.SIGKILL)
        return forward(self, items)

    encoder.TextEncoder.forward = dying_forward
    options = ExtractOptions(batch_size=2, loader_workers=0, progress=False, dtype="float32",
                             job_options={"shard_items": 2})
    run_extract("coco", sys.argv[1], sys.argv[2], ["minilm"], options)
    """
)


def test_killed_extraction_resumes(coco, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _KILLER, str(coco), str(tmp_path / "st")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    partial = open_store(tmp_path / "st")["text/all-minilm-l6-v2"]
    assert len(partial) == 6  # three batches of two made it to disk

    options = ExtractOptions(
        batch_size=2, loader_workers=0, progress=False, dtype="float32", job_options={"shard_items": 2}
    )
    (summary,) = run_extract("coco", coco, tmp_path / "st", ["minilm"], options)
    assert (summary.already_done, summary.written) == (6, 24)
    (clean,) = run_extract("coco", coco, tmp_path / "clean", ["minilm"], options)
    resumed, fresh = (
        open_store(tmp_path / "st")["text/all-minilm-l6-v2"],
        open_store(tmp_path / "clean")["text/all-minilm-l6-v2"],
    )
    assert sorted(resumed.ids) == sorted(fresh.ids) and len(set(resumed.ids)) == 30
    for i in fresh.ids:
        a, b = resumed[i], fresh[i]
        assert a["input_ids"].tolist() == b["input_ids"].tolist()
        np.testing.assert_allclose(a["features"], b["features"], atol=1e-4)


def test_cli_extract_in_a_log(coco, tmp_path, monkeypatch):
    """Through the CLI with stdout and stderr not terminals: the warning once, plain progress
    lines, a summary table no wider than the log width."""
    from typer.testing import CliRunner

    from lighthead.pipelines.cli import app
    from lighthead.pipelines.console import LOG_WIDTH

    monkeypatch.delenv("COLUMNS", raising=False)
    args = [
        "extract",
        "--dataset",
        "coco",
        "--root",
        str(coco),
        "--store",
        str(tmp_path / "st"),
        "--features",
        "thumbs,resnet18",
        "--random-weights",
        "--loader-workers",
        "0",
        "-o",
        "thumbs.size=32",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.count("UNTRAINED") == 1  # stdout and stderr together
    err = result.stderr.splitlines()
    assert err[0].startswith("WARNING: --random-weights: every model runs UNTRAINED")
    # No bar glyphs or cursor codes: the start line, then one final line per job (each under 5 s).
    assert [re.sub(r"[\d.,]+ items/s, done in \d:\d\d:\d\d$", "RATE", line) for line in err[1:]] == [
        f"coco: 6 records -> {tmp_path / 'st'}; jobs: thumbs, resnet18",
        "thumbs: 6/6 (100%), RATE",
        "resnet18: 6/6 (100%), RATE",
    ]
    out = result.stdout.splitlines()
    assert max(map(len, out)) <= LOG_WIDTH and "" not in out
    assert any("thumbs/32" in line for line in out)
    assert any("resnet18" in line and "global/resnet18" in line and "RANDOM" in line for line in out)
    assert open_store(tmp_path / "st")["thumbs/32"][load_records("coco", coco)[0].image_id]["thumb"].shape == (
        3,
        32,
        32,
    )


def test_cli_errors_are_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-c",
        "from lighthead.pipelines.cli import main; main()",
        "extract",
        "--dataset",
        "coco",
        "--store",
        str(tmp_path / "st"),
        "--features",
        "thumbs",
    ]
    bad = subprocess.run(cmd + ["--root", str(tmp_path / "none")], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0 and "does not exist" in bad.stderr
    (tmp_path / "coco").mkdir()
    bad = subprocess.run(
        cmd + ["--root", str(tmp_path / "coco"), "--weights", "w.pth", "--random-weights"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and "exclude each other" in bad.stderr


def test_an_image_path_that_is_a_folder_is_listed_as_one(tmp_path):
    from lighthead.pipelines.datasets.base import Record
    from lighthead.pipelines.features.runner import missing_images

    fixtures.write_image(tmp_path / "a.jpg", 0)
    (tmp_path / "b.jpg").mkdir()
    records = [
        Record(id=i, image_id=i, image_path=str(tmp_path / f"{i}.jpg"), texts=[], split="train")
        for i in ("a", "b", "c")
    ]
    present, missing = missing_images(records)
    assert [r.id for r in present] == ["a"]
    assert missing == [
        ("b", f"image is a directory, not a file: {tmp_path / 'b.jpg'}"),
        ("c", f"image file not found: {tmp_path / 'c.jpg'}"),
    ]


@pytest.mark.parametrize("dtype", ["float64", "int8", "bfloat16"])
def test_a_feature_dtype_the_store_should_not_hold_is_refused(dtype, capsys, tmp_path):
    from lighthead.pipelines.cli import app
    from lighthead.pipelines.cli.common import run_app

    with pytest.raises(ValueError, match=rf"--dtype '{dtype}': feature fields are stored as float16 or float32"):
        ExtractOptions(dtype=dtype)
    assert run_app(app, ["extract", "--dataset", "demo", "--store", str(tmp_path / "st"), "--dtype", dtype]) == 1
    err = capsys.readouterr().err
    assert err == f"error: --dtype '{dtype}': feature fields are stored as float16 or float32\n"
    assert not (tmp_path / "st").exists()
