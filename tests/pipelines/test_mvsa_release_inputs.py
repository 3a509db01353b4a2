"""`lighthead extract --dataset mvsa-*` prepares ITIN's inputs as its released Demo.py does: the
post's bytes read as ASCII, [CLS] text [SEP] cut to its first 100 BERT tokens, the image as
PIL's convert("RGB") before Resize 256 -> CenterCrop 224 -> ImageNet normalisation."""

from __future__ import annotations

import numpy as np
from PIL import Image

from lighthead.extract.global_cnn import GlobalCNNConfig
from lighthead.extract.text import resolve_model
from lighthead.pipelines.features import ExtractOptions
from lighthead.pipelines.features.runner import run_extract
from lighthead.store import open_store
from tests.pipelines.datasets import fixtures

LONG = b"\xa1\xad caf\xe9 so\xa0good " + b"waves crash on the rocks " * 30  # Latin-1 bytes, > 100 tokens


def released_ids(tok, raw: bytes) -> list[int]:
    """Demo.py: decode('ascii', 'ignore'), '[CLS] ' + text + ' [SEP]', tokenize, the first MAX_LEN = 100."""
    return tok.convert_tokens_to_ids(tok.tokenize("[CLS] " + raw.decode("ascii", "ignore") + " [SEP]"))[:100]


def test_mvsa_extraction_follows_itins_release(tmp_path):
    from transformers import AutoTokenizer

    root = fixtures.mvsa(tmp_path / "mvsa", ["positive,positive", "negative,neutral"])
    (root / "data" / "1.txt").write_bytes(LONG)
    model = resolve_model("all-minilm-l6-v2")  # a BERT-uncased WordPiece model, standing in for BERT-base
    options = ExtractOptions(
        random_weights=True, loader_workers=0, progress=False, job_options={"text_model": str(model)}
    )
    run_extract("mvsa-single", root, tmp_path / "store", ["bert", "resnet18"], options)
    store = open_store(tmp_path / "store")
    text = store["text/bert-base-uncased"]
    tok = AutoTokenizer.from_pretrained(model, local_files_only=True)
    for post in ("1", "2"):
        got = text.get(f"{post}#0")["input_ids"].tolist()
        assert got == released_ids(tok, (root / "data" / f"{post}.txt").read_bytes()), post
    assert len(text.get("1#0")["input_ids"]) == 100  # cut at 100: [SEP] is gone, as in the release
    assert (text.attrs["ascii_only"], text.attrs["truncate"], text.attrs["max_length"]) == (True, "head", 100)
    # the global image: the release's transform on PIL's plain RGB conversion
    assert store["global/resnet18"].attrs["decode"] == "plain"
    cfg = GlobalCNNConfig(arch="resnet18")
    assert (cfg.resize, cfg.crop, cfg.mean, cfg.std) == (256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    from torchvision import transforms as tfs

    released = tfs.Compose(
        [
            tfs.Resize(256),
            tfs.CenterCrop(224),
            tfs.ToTensor(),
            tfs.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )
    with Image.open(root / "data" / "1.jpg") as im:
        rgb = im.convert("RGB")
    np.testing.assert_array_equal(cfg.transform()(rgb).numpy(), released(rgb).numpy())
