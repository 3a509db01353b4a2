"""What an earlier version wrote still loads and gives the same numbers.

The fixture builds a tiny store and a one-epoch vsepp run with a fixed recipe, then takes the
`/sums` chunk checksums out of the store's shards, as every writer before them left shards.
`tests/data/compat/expected.json` holds the numbers that recipe gave when it was first measured
(an earlier commit): the ids, a feature sum, and what `lighthead evaluate` wrote for the test and
train splits. A change to the store format, the readers, training or evaluation that moves them
fails here; a deliberate change rewrites that file with the new numbers, said in its commit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

EXPECTED = json.loads((Path(__file__).resolve().parent / "data" / "compat" / "expected.json").read_text())
REGIONS = "regions/butd-r101-vg-36"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The recipe's store (shards without XXH3 sums) and one-epoch run, built once."""
    import torch

    from lighthead.pipelines.training.loop import train
    from tests.conftest_helpers import TINY, build_retrieval_store
    from tests.store.helpers import strip_sums

    root = tmp_path_factory.mktemp("compat")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the numbers were measured
    try:
        store = build_retrieval_store(
            root / "store",
            n_images=12,
            splits=(8, 2, 2),
            region_dim=8,
            num_regions=3,
            global_dim=8,
            token_dim=4,
            seed=3,
        )
        shutil.rmtree(store / "thumbs")
        for name in (REGIONS, "global/resnet152", "text/all-minilm-l6-v2", "words/vocab"):
            strip_sums(store / name)
        train("vsepp", store, root / "run", epochs=1, overrides={**TINY, "image": REGIONS}, progress=False)
    finally:
        torch.set_num_threads(threads)
    return store, root / "run"


@pytest.fixture()
def compat(built, tmp_path):
    """A copy of the built store and run (tests write into runs), the run pointing at the copy."""
    store, run = tmp_path / "store", tmp_path / "run"
    shutil.copytree(built[0], store)
    shutil.copytree(built[1], run)
    config = json.loads((run / "config.json").read_text())
    config["store"] = str(store)
    (run / "config.json").write_text(json.dumps(config, indent=1))
    return store, run


def test_old_store_verifies_and_reads(compat):
    from lighthead.pipelines.cli import app
    from lighthead.store import open_store

    store, _ = compat
    res = CliRunner().invoke(app, ["store", "verify", str(store)])
    assert res.exit_code == 0, res.output
    assert f"note: {REGIONS}: 1 shard(s) written before the XXH3 chunk sums" in res.output  # upgrade would
    fs = open_store(store)[REGIONS]
    assert fs._readers[0].raw["features"].sums is None  # checked with Fletcher-32, as old shards are
    assert fs.ids == EXPECTED["ids"]
    assert float(fs[fs.ids[0]]["features"].astype("float64").sum()) == EXPECTED["regions_first_sum"]
    res = CliRunner().invoke(app, ["store", "info", str(store)])
    assert res.exit_code == 0 and REGIONS in res.output, res.output


@pytest.mark.parametrize("split", ["test", "train"])
def test_a_run_evaluates_to_the_recorded_numbers(compat, split):
    from lighthead.pipelines.cli import app

    _, run = compat
    res = CliRunner().invoke(app, ["evaluate", str(run), "--split", split, "--threads", "1"])
    assert res.exit_code == 0, res.output
    written = json.loads((run / f"eval-{split}-1k.json").read_text())
    assert written == EXPECTED["evaluate"][split]


def test_the_run_resumes(compat):
    """The last checkpoint (weights, optimiser and RNG states) continues training; the first
    epoch's record stays as it was."""
    from lighthead.pipelines.training.loop import train

    store, run = compat
    first = json.loads((run / "metrics.json").read_text())["history"][0]
    metrics = train("vsepp", store, run, epochs=2, resume=True, progress=False)
    assert metrics["epochs_done"] == 2 and len(metrics["history"]) == 2
    assert metrics["history"][0] == first
