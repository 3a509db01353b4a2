"""Dataset adapters, one file each, registered by name in `DATASETS`.

Every adapter module is imported explicitly here so registration never depends on import order.
"""

from lighthead.pipelines.datasets import (  # noqa: F401  (register coco, f30k, itm, mvsa-*, twitter15/17)
    coco,
    demo,  # noqa: F401  (registers "demo")
    f30k,
    images,  # noqa: F401  (registers "images": any folder of images)
    itm,
    mvsa,
    twitter,
)
from lighthead.pipelines.datasets.base import DATASETS, SENTIMENTS, DatasetError, Record, load_records, resolve_root

__all__ = ["DATASETS", "SENTIMENTS", "DatasetError", "Record", "load_records", "resolve_root"]
