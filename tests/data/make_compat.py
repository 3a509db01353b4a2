"""Write the compatibility data under tests/data/compat/: a tiny store and a tiny run folder.

Both were written by the code of the commit that added this script and are kept as committed
test data, so `tests/test_compat.py` checks that a store and a run written by an earlier
version still verify, read and evaluate to the same numbers. Rerun only to refresh the data
deliberately (the expected numbers in compat/expected.json are rewritten with it):

    PYTHONPATH=$PWD python tests/data/make_compat.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent / "compat"


def main() -> None:
    import torch

    from lighthead.pipelines.evaluate import evaluate_run
    from lighthead.pipelines.train import train
    from lighthead.store import open_store
    from tests.conftest_helpers import TINY, build_retrieval_store

    torch.set_num_threads(1)
    shutil.rmtree(HERE, ignore_errors=True)
    HERE.mkdir(parents=True)
    store = build_retrieval_store(
        HERE / "store", n_images=12, splits=(8, 2, 2), region_dim=8, num_regions=3, global_dim=8, token_dim=4, seed=3
    )
    shutil.rmtree(store / "thumbs")  # 12 KB of random pixels per image: no test here reads them
    run = HERE / "run"
    train("vsepp", store, run, epochs=1, overrides={**TINY, "image": "regions/butd-r101-vg-36"}, progress=False)
    # the train split (8 images, 40 captions) gives finer numbers than the 2 test images
    evaluated = {split: evaluate_run(run, split=split) for split in ("test", "train")}
    fs = open_store(store)["regions/butd-r101-vg-36"]
    expected = {
        "evaluate": {split: {k: v for k, v in m.items() if k != "files"} for split, m in evaluated.items()},
        "regions_first_sum": float(fs[fs.ids[0]]["features"].astype("float64").sum()),
        "ids": fs.ids,
    }
    for p in [*run.glob("eval-*"), run / "curves.png"]:  # evaluation outputs: the test writes its own
        p.unlink()
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main()
