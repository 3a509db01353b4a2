"""Dataset adapters, one file each, registered by name in `DATASETS`.

Every adapter module is imported explicitly here so registration never depends on import order.
"""

from pipelines.datasets.base import DATASETS, SENTIMENTS, DatasetError, Record, load_records, resolve_root
from pipelines.datasets import demo  # noqa: F401  (registers "demo")

__all__ = ["DATASETS", "SENTIMENTS", "DatasetError", "Record", "load_records", "resolve_root"]
