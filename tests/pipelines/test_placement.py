"""Which GPU a worker uses: pure functions of the worker's index and the visible GPUs, the
current device set for "cuda:i", and the callers (extraction parts, sweep trials) using them."""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch

from lighthead.pipelines import placement
from lighthead.pipelines.placement import device_for_worker, use_device, worker_index


def test_worker_index_from_dask_names():
    assert [worker_index(n) for n in (0, 3, "7", "SLURMCluster-12", "PBSCluster-2")] == [0, 3, 7, 12, 2]
    assert worker_index("tcp://10.0.0.5:40331") is None and worker_index("gpu-node") is None
    assert worker_index(True) is None


@pytest.mark.parametrize(
    "device,index,gpus,want",
    [
        ("cuda", 0, 2, "cuda:0"),
        ("cuda", 1, 2, "cuda:1"),
        ("cuda", 3, 2, "cuda:1"),  # more workers than GPUs: wrap
        ("cuda", 5, 1, "cuda"),  # one visible GPU (a batch job's, CUDA_VISIBLE_DEVICES=3): every worker takes it
        ("cuda", None, 4, "cuda"),  # not in a worker: the current device
        ("cuda:1", 0, 4, "cuda:1"),
        ("cpu", 2, 4, "cpu"),
        (None, 2, 4, None),  # asked for: kept
    ],
)
def test_device_for_worker(device, index, gpus, want):
    assert device_for_worker(device, index, gpus) == want


@pytest.fixture()
def fake_gpus(monkeypatch):
    """Two visible GPUs out of four (CUDA_VISIBLE_DEVICES), this code in dask worker 3; records set_device."""
    calls = []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(d))
    monkeypatch.setattr(placement, "current_worker_index", lambda: 3)
    return calls


def test_use_device_takes_the_workers_gpu_and_makes_it_current(fake_gpus):
    assert use_device("cuda") == "cuda:1"
    assert use_device("cuda:0") == "cuda:0"
    assert use_device("cpu") == "cpu" and use_device(None) is None
    assert fake_gpus == [1, 0]  # once per "cuda:i", never for the CPU


def _record_device(head, store, out, device=None, **kw):
    (out / "device.txt").write_text(str(device))
    return {"val/rsum": 1.0}


def test_sweep_trials_spread_over_the_visible_gpus(fake_gpus, tmp_path):
    """With CUDA_VISIBLE_DEVICES set (as on many GPU machines) worker 3 of a "cuda" sweep trains on
    its own GPU (cuda:1 of the two visible), made current; it used to take GPU 0 like every worker."""
    from lighthead.pipelines.sweep import from_args, run_trial

    trial = from_args("vsepp", ["lr=1e-3"]).trials()[0]
    record = run_trial(trial.to_json(), str(tmp_path / "store"), str(tmp_path), _record_device, device="cuda")
    assert record["status"] == "done"
    assert (tmp_path / "trials" / trial.id / "device.txt").read_text() == "cuda:1"
    assert fake_gpus == [1]


def test_cluster_extraction_leaves_the_gpu_to_the_worker(monkeypatch):
    """Parts on a dask cluster get the plain "cuda": each worker takes its GPU when a part starts
    there; a GPU fixed per part index put two running parts on cuda:0 while cuda:1 idled."""
    import lighthead.pipelines.cluster as cluster
    import lighthead.pipelines.features.regions as regions
    from lighthead.pipelines.features import ExtractOptions

    seen = {}

    @contextmanager
    def fake_connect(cluster, gpu=False, retries=1):
        client = SimpleNamespace(scheduler_info=lambda: {"workers": {}})
        yield SimpleNamespace(client=client, threads=1, resources={"GPU": 1}, ended=None)

    monkeypatch.setattr(cluster, "connect", fake_connect)
    monkeypatch.setattr(regions, "_local_devices", lambda options: ["cuda:0", "cuda:1"])  # two GPUs here
    monkeypatch.setattr(
        regions, "submit_parts", lambda client, job, specs, res, progress, ended: seen.update(specs=specs)
    )
    options = ExtractOptions(device="cuda", workers=3, progress=False)
    items = [(f"im{i}", f"/x/{i}.jpg") for i in range(6)]
    regions._run_on_cluster(
        "regions36", "/store", items, None, options, cluster.ClusterOptions(workers=3, dashboard=None)
    )
    assert [spec[5] for spec in seen["specs"]] == ["cuda", "cuda", "cuda"]


def test_an_extraction_part_resolves_its_device_first(monkeypatch):
    import lighthead.pipelines.features.regions as regions
    from lighthead.pipelines.features import ExtractOptions

    class Stop(Exception):
        pass

    asked = []

    def fake_use_device(device):
        asked.append(device)
        raise Stop

    monkeypatch.setattr(placement, "use_device", fake_use_device)
    with pytest.raises(Stop):
        regions.run_part("regions36", "/store", [], None, ExtractOptions(device="cuda:1"), "cuda:1")
    assert asked == ["cuda:1"]


def test_training_makes_a_given_gpu_current(fake_gpus):
    """`train heads --device cuda:1` (one process) makes GPU 1 current, as parts and trials do."""
    from lighthead.pipelines.training.loop import pick_device

    assert pick_device("cuda:0") == torch.device("cuda:0")
    assert pick_device("cpu") == torch.device("cpu")
    assert fake_gpus == [0]


@pytest.mark.parametrize("job", ["minilm", "resnet18"])
def test_text_and_global_jobs_resolve_their_device_first(job, monkeypatch, tmp_path):
    """The text and global-CNN jobs hand their device to `use_device` (and run on what it
    returns) like the region jobs, so "cuda:i" becomes the current device there too."""
    import lighthead.pipelines.features.global_image as global_image
    import lighthead.pipelines.features.text as text
    from lighthead.pipelines.datasets.demo import generate, load
    from lighthead.pipelines.features import FEATURES, ExtractOptions, load_all
    from lighthead.store import open_store

    asked = []

    def fake_use_device(device):
        asked.append(device)
        return "cpu"  # the machine running the test has no GPU

    monkeypatch.setattr(text, "use_device", fake_use_device)
    monkeypatch.setattr(global_image, "use_device", fake_use_device)
    load_all()
    records = load(generate(tmp_path / "demo", n_images=2, size=64))
    options = ExtractOptions(
        device="cuda:1",
        random_weights=True,
        batch_size=2,
        loader_workers=0,
        progress=False,
        job_options={"precision": "fp32", "minilm.random_weights": False},
    )
    summary = FEATURES.get(job).run(records, open_store(tmp_path / "store", create=True), options)
    assert asked == ["cuda:1"] and summary.written > 0
