"""Flickr30K with the Karpathy split (`dataset_flickr30k.json`).

Expected layout under the root::

    dataset_flickr30k.json     the Karpathy split file
    flickr30k-images/          the images (or images/)

Splits come from the file's "split" field: 29,000 / 1,014 / 1,000 images; five captions each.
"""

from __future__ import annotations

from pathlib import Path

from lighthead.pipelines.datasets.base import DATASETS, Record
from lighthead.pipelines.datasets.coco import expect_file, read_karpathy

_LAYOUT = """  dataset_flickr30k.json     (Karpathy split file)
  flickr30k-images/          (the images; or images/)"""


@DATASETS.register("f30k")
def load(root: Path) -> list[Record]:
    """Flickr30K Karpathy split: one record per image (id = file stem) with its five captions."""
    json_path = expect_file(root, "dataset_flickr30k.json", _LAYOUT)
    return read_karpathy(json_path, [root / "flickr30k-images", root / "images", root], id_field="filename")
