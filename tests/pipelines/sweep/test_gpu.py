"""Sweeps on a GPU: trials ask for the GPU resource and leave no CUDA memory behind."""

from __future__ import annotations

import json

import pytest

from lighthead.pipelines.sweep import ClusterOptions, connect, from_args, run_sweep

pytestmark = pytest.mark.gpu


def _reserved() -> int:
    import torch

    return torch.cuda.memory_reserved()


def test_gpu_sweep_frees_cuda_memory_between_trials(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from tests.conftest_helpers import build_retrieval_store

    store = build_retrieval_store(tmp_path / "store")
    with connect(ClusterOptions(workers=1, dashboard=None), gpu=True) as conn:
        workers = conn.client.scheduler_info()["workers"].values()
        assert all(w["resources"].get("GPU") == 1 for w in workers)

        hog = from_args("vsepp", ["lr=1e-3,1e-2"])
        res = run_sweep(
            hog,
            store,
            tmp_path / "hog",
            client=conn.client,
            device="cuda",
            progress=False,
            train_fn="tests.pipelines.sweep.fakes:gpu_hog_train",
        )
        assert not res.failed and res.ran == 2
        # Each trial left 1 GiB in a reference cycle; the trial's clean-up gave it back.
        assert all(v < 256 * 1024 * 1024 for v in conn.client.run(_reserved).values())

        real = from_args(
            "vsepp", ["lr=1e-3,1e-2"], ["embed_size=32", "word_dim=32", "batch_size=16", "test=false"], epochs=1
        )
        res = run_sweep(real, store, tmp_path / "real", client=conn.client, device="cuda", progress=False)
        assert not res.failed and res.ran == 2
        assert all(r.metrics["val/rsum"] > 0 for r in res.rows)
    for t in real.trials():
        config = json.loads((tmp_path / "real" / "trials" / t.id / "config.json").read_text())
        assert config["device"].startswith("cuda")
