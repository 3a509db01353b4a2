"""Feature jobs: what `lighthead extract --features a,b,...` can run.

Each job turns a dataset's records into one feature set of the store. Jobs are registered by
their CLI name in `FEATURES`; every module defining jobs is imported explicitly below so that
registration never depends on import order.

`base` (the job contract and registry), `options` (the options a job gets, and the helpers
that read them), `runner` (`lighthead extract`: jobs in turn, the summary), one module per
family of jobs (`text`, `global_image`, `words`, `regions`).
"""

from lighthead.pipelines.features.base import FEATURES, FeatureJob, RunSummary
from lighthead.pipelines.features.options import ExtractOptions, JobOption

__all__ = ["FEATURES", "ExtractOptions", "FeatureJob", "JobOption", "RunSummary"]


def load_all() -> None:
    """Import every job module (they register themselves). Heavy imports stay inside the jobs."""
    import importlib

    for module in _JOB_MODULES:
        importlib.import_module(module)


# One line per job module; add yours here.
_JOB_MODULES: list[str] = [
    "lighthead.pipelines.features.text",
    "lighthead.pipelines.features.global_image",
    "lighthead.pipelines.features.words",
    "lighthead.pipelines.features.regions",
]
