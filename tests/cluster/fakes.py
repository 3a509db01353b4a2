"""A training function for the walltime test: it outlives any job's time limit."""

from __future__ import annotations

import time
from pathlib import Path


def sleepy_train(head, store, out, **kw):
    """Marks that it started, then sleeps past the job's time limit."""
    (Path(store) / "started").write_text(str(kw.get("overrides", {})))
    time.sleep(900)
    raise AssertionError("the job's time limit should have ended this trial")
