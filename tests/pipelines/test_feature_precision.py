"""The `precision` option of the model-running feature jobs: resolved per device, recorded in the
feature set's attrs, and a set holding another precision is refused with one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lighthead.extract.precision import resolve
from lighthead.pipelines.cli import app
from lighthead.pipelines.cli.common import run_app
from lighthead.pipelines.datasets import load_records
from lighthead.pipelines.datasets.demo import generate, load
from lighthead.pipelines.features import FEATURES, ExtractOptions, load_all
from lighthead.pipelines.features.options import precision_attrs
from lighthead.store import Field, open_store
from tests.pipelines.datasets import fixtures

# job -> (feature set, records fixture)
JOBS = {"regions36": "regions/butd-r101-vg-36", "resnet18": "global/resnet18", "minilm": "text/all-minilm-l6-v2"}


def test_resolve():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")  # a device object: no CUDA call
    assert resolve("auto", cpu, "bf16") == "fp32" and resolve("auto", "cpu", "fp16") == "fp32"
    assert resolve("bf16", cpu, "fp16") == "bf16"  # asked for: CPU autocast
    assert resolve("auto", gpu, "fp16") == "fp16"
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16, got 'half'"):
        resolve("half", cpu, "bf16")


def test_resolve_without_bf16_on_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve("auto", "cuda:1", "bf16") == "fp16"  # the default falls back
    with pytest.raises(ValueError, match="precision bf16: cuda:1 has no bfloat16 support"):
        resolve("bf16", "cuda:1", "bf16")


def test_a_set_written_before_precision_was_recorded_resumes(tmp_path):
    store = open_store(tmp_path / "s", create=True)
    with store.writer("global/resnet18", [Field("features", (4,))], {"job": "resnet18"}) as w:
        w.add("a", {"features": np.zeros(4, np.float32)})
    assert precision_attrs(store, "global/resnet18", "bf16") == {}  # its attrs stay as they were
    assert precision_attrs(store, "global/resnet152", "bf16") == {"precision": "bf16"}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return load_records("coco", fixtures.karpathy(tmp_path_factory.mktemp("coco"), n_images=3))


def _options(dtype="float16", **job_options):
    return ExtractOptions(
        random_weights=True,
        batch_size=4,
        loader_workers=0,
        progress=False,
        dtype=dtype,
        job_options={"detector": "tiny", "minilm.random_weights": False, **job_options},
    )


@pytest.mark.parametrize("job", list(JOBS))
def test_recorded_and_another_precision_is_refused(job, records, tmp_path):
    """A CPU run records fp32; a later run in bf16 (as a GPU run computes by default) must not
    append to the same set."""
    load_all()
    name = JOBS[job]
    store = open_store(tmp_path / "store", create=True)
    first = FEATURES.get(job).run(records[:2], store, _options())
    assert first.written > 0 and store[name].attrs["precision"] == "fp32"
    with pytest.raises(ValueError) as e:
        FEATURES.get(job).run(records, store, _options(**{f"{job}.precision": "bf16"}))
    assert str(e.value).startswith(f"{name}: the feature set holds fp32 features and this run computes bf16 ones")
    again = FEATURES.get(job).run(records, store, _options(precision="fp32"))  # the bare key: every job
    assert again.written > 0 and again.already_done == first.written


def test_cli_refuses_mixing_in_one_line(tmp_path, capsys):
    load_all()
    root = generate(tmp_path / "demo", n_images=3, size=64)
    store = tmp_path / "s"
    gpu_like = FEATURES.get("resnet18").run(load(root)[:1], open_store(store, create=True), _options(precision="bf16"))
    assert gpu_like.written == 1
    capsys.readouterr()
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
            "resnet18",
            "--random-weights",
            "--loader-workers",
            "0",
            "--no-progress",
        ],
    )
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0] == (
        "error: global/resnet18: the feature set holds bf16 features and this run computes fp32 ones; "
        "rerun with -o precision=bf16 (on a device that supports it) or write to another store"
    )
    assert len(open_store(store)["global/resnet18"].ids) == 1


@pytest.mark.parametrize(
    "job,name",
    [
        ("given-boxes", "regions/butd-r101-vg-given"),
        ("resnet18", "global/resnet18"),
        ("minilm", "text/all-minilm-l6-v2"),
    ],
)
def test_the_option_reaches_the_model(job, name, tmp_path):
    """bf16 autocast (on the CPU here) changes the features a little: the option is applied."""
    load_all()
    records = load(generate(tmp_path / "demo", n_images=2, size=64))
    got = {}
    for precision in ("fp32", "bf16"):
        store = open_store(tmp_path / precision, create=True)
        FEATURES.get(job).run(records, store, _options(precision=precision, dtype="float32"))
        s = store[name]
        assert s.attrs["precision"] == precision
        got[precision] = np.concatenate([np.asarray(s[i]["features"]).ravel() for i in sorted(s.ids)])
    diff = np.abs(got["bf16"] - got["fp32"]).max() / np.abs(got["fp32"]).max()
    assert 0 < diff < 0.1
