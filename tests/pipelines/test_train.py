"""The training loop: learning signal, determinism and resume, run files, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lighthead.heads.metrics import retrieval_metrics
from lighthead.pipelines.training.loop import train
from tests.conftest_helpers import TINY, build_retrieval_store, build_small_retrieval_store

# Small widths and a sum over negatives (hardest negatives learn slowly from scratch on a few
# hundred captions): what the demo passes too.
FAST = {"embed_size": "32", "word_dim": "16", "batch_size": "32", "lr": "2e-3", "max_violation": "false"}


@pytest.fixture(scope="module")
def learning_store(tmp_path_factory):
    """The store the learning-signal tests train on (synthetic; the demo store can replace it)."""
    return build_retrieval_store(
        tmp_path_factory.mktemp("learn") / "store",
        n_images=120,
        splits=(90, 10, 20),
        region_dim=64,
        num_regions=12,
        global_dim=48,
        token_dim=16,
        seed=1,
    )


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    return build_small_retrieval_store(tmp_path_factory.mktemp("small") / "store", seed=2)


def random_r1(n_images: int, seed: int = 0) -> tuple[float, float]:
    """R@1 of random scores on a test split of this size (averaged over a few draws)."""
    rng = np.random.default_rng(seed)
    ms = [retrieval_metrics(rng.standard_normal((n_images, 5 * n_images))) for _ in range(5)]
    return float(np.mean([m["i2t_r1"] for m in ms])), float(np.mean([m["t2i_r1"] for m in ms]))


# casc: plain cosines before the softmax (attn_norm=no_norm) learn from scratch in these 4 epochs;
# the released clipped_l2norm needs more on 90 images.
@pytest.mark.parametrize(
    "head,epochs,extra",
    [("casc", 4, {"label_hidden": "16", "attn_norm": "no_norm"}), ("vsepp", 8, {"image": "regions/butd-r101-vg-36"})],
)
def test_training_beats_random_scores(head, epochs, extra, learning_store, tmp_path):
    metrics = train(head, learning_store, tmp_path / head, epochs=epochs, overrides={**FAST, **extra}, progress=False)
    test = metrics["test"]
    rand_i2t, rand_t2i = random_r1(test["n_images"])
    assert test["i2t_r1"] >= max(3 * rand_i2t, rand_i2t + 15), (test, rand_i2t)
    assert test["t2i_r1"] >= max(3 * rand_t2i, rand_t2i + 15), (test, rand_t2i)
    assert metrics["history"][-1]["loss"] < metrics["history"][0]["loss"]


def test_resume_equals_uninterrupted_run(small_store, tmp_path):
    straight = train("scan", small_store, tmp_path / "a", epochs=2, overrides=TINY, progress=False)
    train("scan", small_store, tmp_path / "b", epochs=1, overrides=TINY, progress=False)
    resumed = train("scan", small_store, tmp_path / "b", epochs=2, overrides=TINY, resume=True, progress=False)
    again = train("scan", small_store, tmp_path / "b", resume=True, progress=False)  # the run's own settings
    assert again["epochs_done"] == 2 and again["test"]["rsum"] == resumed["test"]["rsum"]
    for a, b in zip(straight["history"], resumed["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
        assert a["val"]["rsum"] == b["val"]["rsum"]
    assert straight["test"]["rsum"] == resumed["test"]["rsum"]
    assert resumed["epochs_done"] == 2


def test_run_files_and_selection(small_store, tmp_path):
    out = tmp_path / "run"
    metrics = train(
        "casc", small_store, out, epochs=2, overrides={**TINY, "label_hidden": "8", "num_labels": "5"}, progress=False
    )
    assert (out / "checkpoints" / "best.safetensors").is_file() and (out / "checkpoints" / "last.safetensors").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["head"] == "casc" and config["config"]["embed_size"] == 8 and config["config"]["epochs"] == 2
    assert config["loop"]["seed"] == 0 and config["dataset"] == "synthetic"
    assert json.loads((out / "metrics.json").read_text())["best_epoch"] == metrics["best_epoch"]
    best = max(metrics["history"], key=lambda h: h["val"]["rsum"])
    assert metrics["best_epoch"] == best["epoch"] and metrics["val"]["rsum"] == best["val"]["rsum"]
    assert json.loads((out / "data_info.json").read_text())["num_labels"] == 5
    # the label vocabulary was built once and stored in the store
    from lighthead.store import open_store

    labels = open_store(small_store).read_json("labels/nouns-5")
    assert len(labels["words"]) == 5 and labels["tagger"].startswith("lexicon-rules")


def test_refuses_to_overwrite_and_names_unknown_keys(small_store, tmp_path):
    train("vsepp", small_store, tmp_path / "r", epochs=1, overrides=TINY, progress=False)
    with pytest.raises(ValueError, match="--resume"):
        train("vsepp", small_store, tmp_path / "r", epochs=1, overrides=TINY, progress=False)
    with pytest.raises(KeyError, match="loop keys: .*seed"):
        train("vsepp", small_store, tmp_path / "x", overrides={"sed": "1"}, progress=False)
    with pytest.raises(ValueError, match="different setup"):
        train(
            "vsepp",
            small_store,
            tmp_path / "r",
            epochs=2,
            overrides={**TINY, "lr": "1e-2"},
            resume=True,
            progress=False,
        )
    with pytest.raises(KeyError, match="regions/missing"):
        train("scan", small_store, tmp_path / "y", overrides={"regions": "regions/missing"}, progress=False)
