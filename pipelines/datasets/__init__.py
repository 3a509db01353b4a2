"""Dataset adapters, one file each, registered by name in `DATASETS`.

Every adapter module is imported explicitly here so registration never depends on import order.
"""

from lighthead.pipelines.datasets.base import DATASETS, SENTIMENTS, DatasetError, Record, load_records, resolve_root
from lighthead.pipelines.datasets import demo  # noqa: F401  (registers "demo")
from lighthead.pipelines.datasets import coco, f30k, itm, mvsa, twitter  # noqa: F401  (register coco, f30k, itm, mvsa-*, twitter15/17)
from lighthead.pipelines.datasets import images  # noqa: F401  (registers "images": any folder of images)

__all__ = ["DATASETS", "SENTIMENTS", "DatasetError", "Record", "load_records", "resolve_root"]
