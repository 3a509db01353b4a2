"""Sweeps over cached features: a grid or random search over a head's config on dask.

`spec` (what to try), `trial` (one dask task: train one config into its own folder),
`engine` (submission, retries, skipping finished trials), `report` (summary.csv, best.json,
sweep.png). The clusters trials run on are `lighthead.pipelines.cluster`'s, re-exported here.
"""

from lighthead.pipelines.cluster import ClusterOptions, connect
from lighthead.pipelines.sweep.engine import SweepResult, check_spec, print_result, run_sweep
from lighthead.pipelines.sweep.spec import Range, SweepSpec, Trial, from_args, load_sweep_file
from lighthead.pipelines.sweep.trial import DEFAULT_TRAIN, run_trial

__all__ = [
    "ClusterOptions",
    "DEFAULT_TRAIN",
    "Range",
    "SweepResult",
    "SweepSpec",
    "Trial",
    "check_spec",
    "connect",
    "from_args",
    "load_sweep_file",
    "print_result",
    "run_sweep",
    "run_trial",
]
