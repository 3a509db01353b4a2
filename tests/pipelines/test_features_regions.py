"""The region feature jobs on a small demo dataset: every mode, resume, weights, workers, CLI."""

from __future__ import annotations

import os

import numpy as np
import pytest

from lighthead.pipelines.datasets.demo import generate, load
from lighthead.pipelines.features import FEATURES, ExtractOptions, load_all
from lighthead.pipelines.features.regions import JOBS
from lighthead.store import open_store, verify
from lighthead.store.schema import SHARD_RE


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = generate(tmp_path_factory.mktemp("demo") / "demo", n_images=6, size=96)
    return root, load(root)


def _options(**kw):
    base = dict(random_weights=True, batch_size=4, loader_workers=0, progress=False, job_options={"detector": "tiny"})
    base.update(kw)
    return ExtractOptions(**base)


@pytest.mark.parametrize("job", list(JOBS))
def test_each_job_fills_a_feature_set_that_verifies(job, demo, tmp_path):
    load_all()
    _, records = demo
    store = open_store(tmp_path / "store", create=True)
    summary = FEATURES.get(job).run(records, store, _options())
    images = {r.image_id for r in records}
    assert summary.written == len(images) and not summary.skipped and summary.random_weights
    assert verify(tmp_path / "store") == []
    fs = store[JOBS[job][0]]
    assert sorted(fs.ids) == sorted(images)
    item = fs[fs.ids[0]]
    dim = 128  # the tiny preset's feature size
    K = {"regions36": 36, "regions100": 100}.get(job)
    if K:
        assert item["features"].shape == (K, dim) and item["boxes"].shape == (K, 4)
    else:
        assert item["features"].shape[1:] == (dim,) and item["features"].shape[0] == int(item["num_boxes"])
    assert item["features"].dtype == np.float16 and item["boxes"].dtype == np.float32
    assert (int(item["image_w"]), int(item["image_h"])) == (96, 96)
    attrs = fs.attrs
    assert attrs["random_weights"] is True and attrs["weights_sha256"] is None and attrs["detector"] == "butd-tiny"
    assert attrs["mode"] == JOBS[job][1] and attrs["config"]["min_size"] == 96
    if job == "given-boxes":
        rec = next(r for r in records if r.kind == "image" and r.image_id == fs.ids[0])
        assert np.allclose(item["boxes"], np.asarray(rec.extra["boxes"], np.float32).clip(0, 95))
    # a rerun has nothing left to do
    again = FEATURES.get(job).run(records, store, _options())
    assert again.written == 0 and again.already_done == len(images)


def test_weights_file_is_used_and_recorded(demo, tmp_path):
    from lighthead.extract.regions.checkpoints import export_checkpoint, format_config
    from lighthead.extract.regions.config import DetectorConfig
    from lighthead.extract.regions.model import BottomUpDetector, init_random

    load_all()
    _, records = demo
    cfg = format_config("d2-pkl", DetectorConfig.from_name("tiny"), True)
    path = export_checkpoint(
        init_random(BottomUpDetector(cfg), 7), tmp_path / "faster_rcnn_from_caffe_attr.pkl", "d2-pkl"
    )
    store = open_store(tmp_path / "store", create=True)
    FEATURES.get("adaptive").run(records, store, _options(random_weights=False, weights=path))
    attrs = store["regions/butd-r101-vg-adaptive"].attrs
    assert attrs["random_weights"] is False and attrs["weights_format"] == "d2-pkl"
    assert attrs["weights_file"] == path.name and len(attrs["weights_sha256"]) == 64
    assert attrs["config"]["conventions"] == "detectron2"


def test_missing_weights_name_the_file_and_where_to_get_it(demo, tmp_path, monkeypatch):
    load_all()
    _, records = demo
    monkeypatch.delenv("LIGHTHEAD_DETECTOR_WEIGHTS", raising=False)
    store = open_store(tmp_path / "store", create=True)
    with pytest.raises(FileNotFoundError) as e:
        FEATURES.get("regions36").run(records, store, _options(random_weights=False, weights=tmp_path / "w.pkl"))
    msg = str(e.value)
    assert str(tmp_path / "w.pkl") in msg and "faster_rcnn_from_caffe_attr.pkl" in msg and "--weights" in msg
    assert "regions/butd-r101-vg-36" not in store


def test_bad_image_is_listed_not_fatal(demo, tmp_path):
    load_all()
    _, records = demo
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG broken")
    first = records[0]
    bad = type(first).from_json({**first.to_json(), "id": "bad", "image_id": "bad-image", "image_path": str(broken)})
    store = open_store(tmp_path / "store", create=True)
    summary = FEATURES.get("regions36").run(records + [bad], store, _options())
    assert [i for i, _ in summary.skipped] == ["bad-image"] and "broken.png" in summary.skipped[0][1]
    assert summary.written == len({r.image_id for r in records})


def test_workers_write_their_own_shards_and_a_rerun_completes_the_set(demo, tmp_path, monkeypatch):
    import lighthead.pipelines.features.regions as regions

    load_all()
    _, records = demo
    images = sorted({r.image_id for r in records})
    store = open_store(tmp_path / "store", create=True)
    opts = _options(job_options={"detector": "tiny", "shard_items": 1})
    # a first run that "crashed" after two images
    part = [r for r in records if r.image_id in images[:2]]
    FEATURES.get("regions36").run(part, store, opts)
    seen = []
    original = regions._run_parallel
    monkeypatch.setattr(regions, "_run_parallel", lambda *a: seen.extend(original(*a)) or seen)
    summary = FEATURES.get("regions36").run(records, store, _options(workers=2, job_options=opts.job_options))
    assert len(seen) == 2 and len({r["pid"] for r in seen}) == 2 and os.getpid() not in {r["pid"] for r in seen}
    assert summary.written == len(images) - 2 and summary.already_done == 2
    fs = store["regions/butd-r101-vg-36"]
    assert sorted(fs.ids) == images  # every id exactly once
    directory = tmp_path / "store" / "regions" / "butd-r101-vg-36"
    manifest = (directory / "manifest.json").read_text()
    shards = [f for f in os.listdir(directory) if SHARD_RE.match(f)]
    assert len(shards) == len(images) and all(f in manifest for f in shards)  # shard_items=1: a shard per image
    assert verify(tmp_path / "store") == []


def test_cli_extract_then_store_verify(demo, tmp_path):
    from typer.testing import CliRunner

    from lighthead.pipelines.cli import app

    root, _ = demo
    runner = CliRunner()
    out = runner.invoke(
        app,
        [
            "extract",
            "--dataset",
            "demo",
            "--root",
            str(root),
            "--store",
            str(tmp_path / "s"),
            "--features",
            "regions36,given-boxes",
            "--random-weights",
            "-o",
            "detector=tiny",
            "--loader-workers",
            "0",
            "--no-progress",
        ],
    )
    assert out.exit_code == 0, out.output
    check = runner.invoke(app, ["store", "verify", str(tmp_path / "s")])
    assert check.exit_code == 0, check.output
    assert {"regions/butd-r101-vg-36", "regions/butd-r101-vg-given"} <= set(open_store(tmp_path / "s").names())


def test_dask_scheduler_splits_the_images_and_every_id_is_stored_once(demo, tmp_path):
    from dask.distributed import LocalCluster

    load_all()
    _, records = demo
    images = sorted({r.image_id for r in records})
    store = open_store(tmp_path / "store", create=True)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        opts = _options(scheduler=cluster.scheduler_address, job_options={"detector": "tiny", "shard_items": 1})
        summary = FEATURES.get("regions36").run(records, store, opts)
    assert summary.written == len(images)
    fs = store["regions/butd-r101-vg-36"]
    assert sorted(fs.ids) == images
    assert verify(tmp_path / "store") == []


def _extra_image(records, tmp_path, image_id, size):
    from PIL import Image

    path = tmp_path / f"{image_id}.png"
    Image.new("RGB", size, (200, 30, 30)).save(path)
    first = records[0]
    return type(first).from_json({**first.to_json(), "id": image_id, "image_id": image_id, "image_path": str(path)})


@pytest.mark.parametrize("job", ["regions36", "adaptive"])
def test_extreme_aspect_ratio_images_are_stored_with_no_regions(demo, tmp_path, job):
    """1x5000 and 5000x1 images have no proposal that passes the 16 px minimum: stored with
    num_boxes 0 (fixed K: K padding rows, ids -1; variable K: no rows), not skipped, and a rerun
    finds them done."""
    load_all()
    _, records = demo
    thin = [_extra_image(records, tmp_path, name, size) for name, size in (("tall", (1, 5000)), ("wide", (5000, 1)))]
    store = open_store(tmp_path / "store", create=True)
    n = len({r.image_id for r in records})
    for run in range(2):
        summary = FEATURES.get(job).run(records + thin, store, _options())
        assert not summary.skipped
        assert summary.written == (n + 2 if run == 0 else 0) and summary.already_done == (0 if run == 0 else n + 2)
    fs = open_store(tmp_path / "store")[JOBS[job][0]]
    for image_id, (w, h) in (("tall", (1, 5000)), ("wide", (5000, 1))):
        item = fs[image_id]
        assert item["num_boxes"] == 0 and (item["image_w"], item["image_h"]) == (w, h)
        if job == "regions36":
            assert item["features"].shape == (36, 128) and not item["features"].any()
            assert (item["object_ids"] == -1).all() and (item["attr_ids"] == -1).all()
        else:
            assert item["features"].shape == (0, 128) and item["boxes"].shape == (0, 4)
    assert verify(tmp_path / "store") == []


@pytest.mark.parametrize("where", ["detector", "output"])
def test_a_failure_on_one_image_of_a_batch_skips_only_that_image(demo, tmp_path, monkeypatch, where):
    import lighthead.extract.regions.runner as runner
    from lighthead.extract.regions.model import BottomUpDetector

    load_all()
    _, records = demo
    odd = _extra_image(records, tmp_path, "odd", (100, 96))  # landscape: batched with the 96x96 images
    if where == "detector":
        forward = BottomUpDetector.forward

        def failing(self, images, image_sizes, scales, boxes=None):
            if (96, 100) in image_sizes:
                raise RuntimeError("forced failure")
            return forward(self, images, image_sizes, scales, boxes=boxes)

        monkeypatch.setattr(BottomUpDetector, "forward", failing)
    else:
        to_item = runner.to_item

        def failing(region, width, height, *args):
            if width == 100:
                raise ValueError("forced failure")
            return to_item(region, width, height, *args)

        monkeypatch.setattr(runner, "to_item", failing)
    store = open_store(tmp_path / "store", create=True)
    summary = FEATURES.get("regions36").run(records + [odd], store, _options(batch_size=8))
    images = sorted({r.image_id for r in records})
    assert summary.written == len(images) and sorted(store["regions/butd-r101-vg-36"].ids) == images
    ((skipped, reason),) = summary.skipped
    assert skipped == "odd" and "forced failure" in reason


def test_cli_selection_option_writes_the_d2_maxnms_rule_to_its_own_set(demo, tmp_path, capsys):
    """`-o regions36.selection=d2-maxnms` runs py-bottom-up-attention's LXMERT rule, recorded and kept
    apart from the generate_tsv set; names that do not exist or do not fit a job are one-line errors."""
    from lighthead.extract.regions.config import SelectionConfig
    from lighthead.extract.regions.model import BottomUpDetector, init_random
    from lighthead.extract.regions.runner import extract_regions
    from lighthead.pipelines.cli import app
    from lighthead.pipelines.cli.common import run_app
    from lighthead.pipelines.features.regions import detector_config

    root, records = demo
    base = [
        "extract",
        "--dataset",
        "demo",
        "--root",
        str(root),
        "--store",
        str(tmp_path / "s"),
        "--random-weights",
        "-o",
        "detector=tiny",
        "--loader-workers",
        "0",
        "--no-progress",
        "--features",
    ]
    assert run_app(app, base + ["regions36", "-o", "regions36.selection=d2-maxnms"]) == 0
    store = open_store(tmp_path / "s")
    assert "regions/butd-r101-vg-36" not in store
    fs = store["regions/butd-r101-vg-36-d2-maxnms"]
    assert fs.attrs["mode"] == "d2-maxnms" and fs.attrs["selection"]["num_boxes"] == 36
    assert "regressed for its best class" in fs.attrs["box_rule"]
    # the stored items are what the runner gives for that rule on the same random detector
    model = init_random(BottomUpDetector(detector_config("regions36", _options())), 0).optimize_for_inference(
        channels_last=False
    )
    want: dict = {}
    images = [(r.image_id, r.image_path) for r in records if r.kind == "image"][:2]
    extract_regions(
        model,
        images,
        lambda i, item: want.setdefault(i, item),
        SelectionConfig.for_job("fixed", 36, "d2-maxnms"),
        batch_size=4,
        loader_workers=0,
        dtype="float16",
    )
    for image_id, item in want.items():
        assert np.allclose(fs[image_id]["boxes"], item["boxes"], atol=1e-3)
        assert np.array_equal(fs[image_id]["object_ids"], item["object_ids"])
    # the default rule writes its own set beside it: a rerun never mistakes one for the other
    assert run_app(app, base + ["regions36"]) == 0
    plain = open_store(tmp_path / "s")["regions/butd-r101-vg-36"]
    assert plain.attrs["mode"] == "fixed" and sorted(plain.ids) == sorted(fs.ids)
    assert not np.allclose(plain[fs.ids[0]]["boxes"], fs[fs.ids[0]]["boxes"])
    capsys.readouterr()
    for job, opt, words in (
        ("regions100", "selection=nosuch", ["unknown selection 'nosuch'", "d2-maxnms"]),
        ("adaptive", "adaptive.selection=d2-maxnms", ["d2-maxnms", "adaptive"]),
    ):
        assert run_app(app, base + [job, "-o", opt]) == 1
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
        assert len(errors) == 1 and all(w in errors[0] for w in words), errors
        assert not any(n.endswith(("-100", "-adaptive")) for n in open_store(tmp_path / "s").names())


def test_given_boxes_are_stored_as_given_and_the_attrs_say_so(demo, tmp_path):
    load_all()
    _, records = demo
    first = next(r for r in records if r.kind == "image")
    outside = [[-10.0, 5.0, 40.0, 30.0], [50.0, 60.0, 130.0, 140.0]]  # the 96x96 image ends at 96
    rec = type(first).from_json({**first.to_json(), "id": "out", "image_id": "out", "extra": {"boxes": outside}})
    store = open_store(tmp_path / "store", create=True)
    FEATURES.get("given-boxes").run([rec], store, _options())
    fs = store["regions/butd-r101-vg-given"]
    assert np.array_equal(fs["out"]["boxes"], np.asarray(outside, np.float32))
    assert "kept as given" in fs.attrs["box_rule"] and "clipped to the image" not in fs.attrs["box_rule"]


@pytest.mark.parametrize("where", ["detector", "copy out"])
def test_a_failed_device_stops_the_run_with_one_line(demo, tmp_path, monkeypatch, capsys, where):
    """An illegal memory access poisons the CUDA context: every later batch and retry would fail,
    and the run used to "finish" with the rest of the dataset listed as skipped."""
    import torch

    import lighthead.extract.regions.runner as runner
    from lighthead.extract.regions.model import BottomUpDetector
    from lighthead.pipelines.cli import app
    from lighthead.pipelines.cli.common import run_app

    calls = []

    def fail_after_first(original):
        def poisoned(*args, **kwargs):
            calls.append(1)
            if len(calls) > 1:
                raise torch.AcceleratorError(
                    "CUDA error: an illegal memory access was encountered\n"
                    "CUDA kernel errors might be asynchronously reported"
                )
            return original(*args, **kwargs)

        return poisoned

    if where == "detector":
        monkeypatch.setattr(BottomUpDetector, "forward", fail_after_first(BottomUpDetector.forward))
    else:  # the writer thread's device-to-host copy is where an asynchronous failure surfaces
        monkeypatch.setattr(runner, "to_item", fail_after_first(runner.to_item))
    root, records = demo
    store = tmp_path / "s"
    code = run_app(
        app,
        [
            "extract",
            "--dataset",
            "demo",
            "--root",
            str(root),
            "--store",
            str(store),
            "--features",
            "regions36",
            "--random-weights",
            "-o",
            "detector=tiny",
            "--batch-size",
            "2",
            "--loader-workers",
            "0",
            "--no-progress",
        ],
    )
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert "the device failed (AcceleratorError: CUDA error: an illegal memory access" in lines[0]
    assert len(calls) == 2  # nothing was tried after the failure
    assert "skipped" not in err


def test_what_a_resumed_extraction_keeps_bit_for_bit(demo, tmp_path):
    """docs/reliability.md: the same command from scratch stores the same bits, and so does a
    resumed run with `--batch-size 1`; a resumed run with other batches stores values within
    float32 rounding of a single run: float16 features at most one float16 step apart, scores
    within 1e-5, the same boxes and labels."""
    from pathlib import Path

    load_all()
    _, records = demo
    job, name = "given-boxes", "regions/butd-r101-vg-given"
    images = sorted({r.image_id for r in records})
    stores = {}
    for label, first, batch in (
        ("single", None, 4),
        ("again", None, 4),
        ("resumed", images[1:4], 4),
        ("single1", None, 1),
        ("resumed1", images[1:4], 1),
    ):
        store = open_store(tmp_path / label, create=True)
        if first:  # a run killed after three images, then the command again: other batches
            FEATURES.get(job).run([r for r in records if r.image_id in first], store, _options(batch_size=batch))
        FEATURES.get(job).run(records, store, _options(batch_size=batch))
        stores[label] = open_store(tmp_path / label)[name]
    for image_id in images:
        single, again, resumed = (stores[k][image_id] for k in ("single", "again", "resumed"))
        for field in single:
            assert np.array_equal(single[field], again[field]), field  # same batches: the same bits
            assert np.array_equal(stores["single1"][image_id][field], stores["resumed1"][image_id][field]), field
        for field in ("boxes", "object_ids", "attr_ids", "num_boxes"):
            assert np.array_equal(single[field], resumed[field]), field
        a, b = single["features"].astype(np.float32), resumed["features"].astype(np.float32)
        step = np.spacing(np.maximum(np.abs(a), np.abs(b)).astype(np.float16)).astype(np.float32)
        assert np.all(np.abs(a - b) <= step)
        for field in ("object_scores", "attr_scores"):
            np.testing.assert_allclose(single[field], resumed[field], rtol=1e-5, atol=1e-7)
    page = (Path(__file__).resolve().parents[2] / "docs" / "reliability.md").read_text(encoding="utf-8")
    assert "test_what_a_resumed_extraction_keeps_bit_for_bit" in page  # the guarantee is stated there
