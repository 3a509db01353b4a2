"""The Visual Genome class names: the release's lists, and stored ids indexing their lines under
each checkpoint format's own class layout."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from lighthead.extract.regions import vocab
from lighthead.extract.regions.checkpoints import format_config, load_checkpoint, state_for_export
from lighthead.extract.regions.config import SelectionConfig
from lighthead.extract.regions.model import BottomUpDetector, init_random
from tests.extract.regions.conftest import noise_images

DATA = Path(vocab.__file__).parent / "data"
# sha256 of MILVLG/bottom-up-attention.pytorch's evaluation/*_vocab.txt as released (CRLF lines,
# no final newline); the shipped copies hold the same lines with LF endings.
RELEASE_SHA256 = {
    "objects_vocab.txt": "fe6070ce5b5406de3755f24afcc41251b77203674e1e9753244d40f75e53dace",
    "attributes_vocab.txt": "4d64f448c402d986e8671f328d092185ca2e559fb391ef86369f478ac1d90f20",
}


@pytest.mark.parametrize("name", sorted(RELEASE_SHA256))
def test_shipped_lists_are_the_release_lines(name):
    text = (DATA / name).read_text("utf-8")
    assert text.endswith("\n") and "\r" not in text
    release_bytes = "\r\n".join(text.splitlines()).encode()
    assert hashlib.sha256(release_bytes).hexdigest() == RELEASE_SHA256[name]


def test_display_names_are_the_first_synonym():
    objects, attributes = vocab.objects(), vocab.attributes()
    assert len(objects) == 1600 and len(attributes) == 400
    assert objects[0] == "yolk" and objects[-1] == "buoy" and attributes[0] == "gray" and attributes[-1] == "leaning"
    assert objects[16] == "stop sign" and vocab.synonyms("objects")[16] == ("stop sign", "stopsign")
    assert "tshirt" in objects and "t-shirt" not in objects
    assert vocab.object_names(np.array([0, 50, -1], np.int32)) == ["yolk", "man", ""]
    assert vocab.attribute_names([4, 1]) == ["red", "multi colored"]
    with pytest.raises(ValueError, match="object id 1600 is outside"):
        vocab.object_names([1600])


def test_labels_are_attribute_object_score_most_confident_first():
    item = {
        "object_ids": np.array([50, 16, -1]),
        "object_scores": np.array([0.4, 0.9, 0.0]),
        "attr_ids": np.array([4, 7, -1]),
        "attr_scores": np.array([0.05, 0.6, 0.0]),
        "num_boxes": np.int32(2),
    }
    # the attribute of the first region is below the demos' 0.1 threshold: its object alone
    assert vocab.region_labels(item) == ["white stop sign 0.90", "man 0.40"]
    assert vocab.region_labels(item, top=1) == ["white stop sign 0.90"]
    assert vocab.top_objects([item["object_ids"], np.array([50])]) == [("man", 2), ("stop sign", 1)]
    assert vocab.uses_vg_vocab({"config": {"num_classes": 1601, "num_attributes": 401}})
    assert not vocab.uses_vg_vocab({"config": {"num_classes": 21, "num_attributes": 11}})


def _source_state(cfg, fmt: str, obj: int, attr: int) -> dict[str, np.ndarray]:
    """A checkpoint in `fmt`'s own names and class layout whose classifier always picks VG object
    line `obj` and attribute line `attr`, written the way that format lays classes out:
    d2-pkl (py-bottom-up-attention): class j at row j, background / "no attribute" last;
    bua-pth (Caffe): background / "no attribute" at row 0, class j at row j + 1."""
    model = init_random(BottomUpDetector(format_config(fmt, cfg, True)), seed=3)
    state = state_for_export(model, fmt)
    attr_key = "attr_score" if fmt == "d2-pkl" else "attr_linear2"
    for key, row in (("roi_heads.box_predictor.cls_score", obj), (f"roi_heads.box_predictor.{attr_key}", attr)):
        state[key + ".weight"] = np.zeros_like(state[key + ".weight"])
        bias = np.zeros_like(state[key + ".bias"])
        bias[row if fmt == "d2-pkl" else row + 1] = 20.0
        state[key + ".bias"] = bias
    return state


@pytest.mark.parametrize("fmt,ext", [("d2-pkl", "pkl"), ("bua-pth", "pth")])
def test_stored_ids_index_the_vocab_lines_in_each_checkpoint_layout(tmp_path, tiny_cfg, fmt, ext):
    obj, attr = 7, 3  # the tiny preset has 20 objects and 10 attributes
    state = _source_state(tiny_cfg, fmt, obj, attr)
    path = tmp_path / f"w.{ext}"
    if fmt == "d2-pkl":
        with open(path, "wb") as fh:
            pickle.dump({"model": state}, fh, protocol=2)
    else:
        torch.save({"model": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}}, path)
    model, _ = load_checkpoint(path, tiny_cfg)
    x = noise_images([(96, 120)])[0]
    region = model.regions(model(x[None], [(96, 120)], [1.0]), SelectionConfig(num_boxes=5))[0]
    assert region["object_ids"].tolist() == [obj] * 5 and region["attr_ids"].tolist() == [attr] * 5
    assert vocab.object_names(region["object_ids"][:1]) == [vocab.objects()[obj]]
