"""`vsepp`: VSE++, a joint embedding trained with the hardest-negative triplet loss.

Faghri, Fleet, Kiros, Fidler, "VSE++: Improving Visual-Semantic Embeddings with Hard
Negatives", BMVC 2018. It is also mFSR's baseline (the "semantic" loss alone on plain encoders,
Pattern Recognition 2021).

Image side: one CNN vector per image (`image = "global/..."`, ResNet-152 pooled in the paper)
or the mean of the region features (`image = "regions/..."`) -> L2 norm -> Linear(D, 1024) ->
L2 norm. Text side: word ids -> embedding 300 -> GRU(1024), last real step -> L2 norm; or cached
token features of a frozen encoder, mean-pooled -> Linear -> L2 norm. Score = cosine.

Checked against the released code (fartashf/vsepp: train.py, model.py, data.py, README):

| what | paper | released code | lighthead default | switch |
|---|---|---|---|---|
| loss | hinge, hardest negative per query, summed over the batch | `ContrastiveLoss(max_violation)`, summed; the README trains VSE++ with `--max_violation` (the flag's default, off, is VSE0) | hardest negative, summed (`max_violation=true` `sum_negatives_epochs=0`) | `max_violation=false`, `sum_negatives_epochs=N` |
| negatives in a batch | the other captions and images of the mini-batch | `ContrastiveLoss` masks the diagonal only: another caption of a repeated image is a negative | as released (`same_image_positive=false`) | `same_image_positive=true` |
| margin | 0.2 | 0.2 | `margin=0.2` | `margin` |
| optimiser, rate | Adam 2e-4, x0.1 after 15 epochs, 30 epochs | Adam 2e-4, `lr_update` 15, 30 epochs | the same (`lr=2e-4` `lr_decay_epochs=15` `epochs=30`) | `lr`, `lr_decay_epochs`, `epochs` |
| batch, widths | 128, 1024, words 300, one GRU layer | the same | the same (`batch_size=128` `embed_size=1024` `word_dim=300` `gru_layers=1`) | `batch_size`, `embed_size`, `word_dim`, `gru_layers` |
| gradient clipping | 2 | `clip_grad_norm` 2 over all parameters | `grad_clip=2` | `grad_clip` |
| image vector before the Linear | not stated | L2-normalised (`EncoderImageFull`; the precomputed-feature loader assumes unit-norm vectors) | L2-normalised (`image_norm=true`) | `image_norm=false` |
| image Linear init | not stated | Xavier uniform, bias 0 | the same | - |
| word embedding init | not stated | uniform [-0.1, 0.1] | the same | - |
| validation | rsum on the dev split | rsum on the first 5,000 dev captions (1,000 images), best epoch kept | rsum on the first 1,000 images (`val_images=1000`) | `val_images` |
| image encoder | fine-tuned CNN (RN, 1 crop) or precomputed | either | precomputed, frozen | - |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from lighthead.heads.attention import l2norm, masked_mean
from lighthead.heads.base import HEADS, DataInfo, RetrievalConfig, RetrievalHead, source
from lighthead.heads.losses import in_batch_positives, triplet_loss
from lighthead.heads.optim import step_lr
from lighthead.heads.text_encoders import caption_encoder


@dataclass
class VSEPPConfig(RetrievalConfig):
    """VSE++ hyper-parameters (Faghri et al., BMVC 2018)."""

    # "global/..." CNN vector per image, or "regions/..." mean-pooled
    image: str = source("global", "regions", default="global/resnet152")
    # "words/..." word ids for the GRU; "text/..." frozen token features
    text: str = source("words", "tokens", default="words/vocab")
    embed_size: int = 1024  # joint space width (= GRU hidden size)
    word_dim: int = 300  # word embedding width
    gru_layers: int = 1  # GRU layers
    margin: float = 0.2  # triplet margin
    max_violation: bool = True  # hardest negative (VSE++) instead of the sum over negatives (VSE0)
    sum_negatives_epochs: int = 0  # first epochs that sum over all negatives
    lr: float = 2e-4  # Adam learning rate
    lr_decay_epochs: int = 15  # x0.1 every this many epochs (0 = never)
    epochs: int = 30  # training epochs
    batch_size: int = 128  # pairs per batch
    grad_clip: float = 2.0  # gradient-norm clipping (0 = off)
    image_norm: bool = True  # L2-normalise the image vector before the Linear (the released EncoderImageFull)
    # True: captions of one image in a batch are never each other's negatives (released: the diagonal only)
    same_image_positive: bool = False

    DATASET_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        # a store imported from a SCAN precomp folder holds region features only: mean-pool them
        "precomp": {"image": "regions/butd-r101-vg-36"},
        # CPU-sized for the demo store, whose global features are the (random) ResNet-18's
        "demo": {
            "image": "global/resnet18",
            "embed_size": 256,
            "batch_size": 32,
            "lr": 2e-3,
            "max_violation": False,
            "epochs": 8,
            "same_image_positive": True,
        },
    }

    def __post_init__(self) -> None:
        if not self.image.startswith(("global/", "regions/")):
            raise ValueError(f"image must name a global/... or regions/... feature set, got {self.image!r}")
        if not self.text.startswith(("words/", "text/")):
            raise ValueError(f"text must name a words/... or text/... feature set, got {self.text!r}")
        for name in ("embed_size", "word_dim", "gru_layers", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 (negatives come from the batch)")
        if self.margin < 0 or self.lr <= 0 or self.grad_clip < 0 or self.lr_decay_epochs < 0:
            raise ValueError("margin, grad_clip, lr_decay_epochs must be >= 0 and lr > 0")

    @property
    def uses_regions(self) -> bool:
        return self.image.startswith("regions/")

    @property
    def uses_tokens(self) -> bool:
        return self.text.startswith("text/")


@HEADS.register("vsepp")
class VSEPP(RetrievalHead):
    """Two encoders into one space; score = dot product of unit vectors."""

    config_class = VSEPPConfig

    def __init__(
        self, cfg: VSEPPConfig, region_dim: int = 2048, global_dim: int = 2048, vocab_size: int = 0, token_dim: int = 0
    ):
        super().__init__()
        self.cfg = cfg
        self.epoch = 0
        image_key = "regions" if cfg.uses_regions else "global"
        text_key = "tokens" if cfg.uses_tokens else "word_ids"
        self.inputs = (image_key, text_key, "text_mask", "text_len", "image_index")
        self.img_fc = nn.Linear(region_dim if cfg.uses_regions else global_dim, cfg.embed_size)
        nn.init.xavier_uniform_(self.img_fc.weight)
        nn.init.zeros_(self.img_fc.bias)
        self.txt_enc = caption_encoder(
            cfg.text,
            cfg.embed_size,
            token_dim=token_dim,
            vocab_size=vocab_size,
            word_dim=cfg.word_dim,
            gru_layers=cfg.gru_layers,
        )

    @classmethod
    def from_config(cls, cfg: VSEPPConfig, data: DataInfo) -> VSEPP:
        """The image vector's width (regions/... or global/...); the vocabulary or token width."""
        return cls(
            cfg,
            region_dim=data.region_dim or 2048,
            global_dim=data.global_dim or 2048,
            vocab_size=data.vocab_size or 0,
            token_dim=data.token_dim or 0,
        )

    def encode_image(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{"emb": (B, h)} unit-norm."""
        if self.cfg.uses_regions:
            regions = batch["regions"].float()
            mask = batch.get("region_mask")
            if mask is None:
                mask = torch.ones(regions.shape[:2], dtype=torch.bool, device=regions.device)
            x = masked_mean(regions, mask[..., None], dim=1)  # (B, D)
        else:
            x = batch["global"].float()  # (B, D)
        if self.cfg.image_norm:
            x = l2norm(x)
        return {"emb": l2norm(self.img_fc(x))}

    def encode_text(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{"emb": (B, h)} unit-norm."""
        if self.cfg.uses_tokens:
            _, sentence = self.txt_enc(batch["tokens"], batch["text_mask"])
        else:
            _, sentence = self.txt_enc(batch["word_ids"], batch["text_len"])
        return {"emb": l2norm(sentence)}

    def score(self, img: dict[str, torch.Tensor], txt: dict[str, torch.Tensor]) -> torch.Tensor:
        return img["emb"] @ txt["emb"].T  # (I, T)

    def pair_bytes(self, img: dict[str, torch.Tensor], txt: dict[str, torch.Tensor]) -> int:
        return 8

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        scores = self.score(self.encode_image(batch), self.encode_text(batch))  # (B, B)
        positives = in_batch_positives(batch, self.cfg.same_image_positive)  # None: the diagonal, as released
        hardest = self.cfg.max_violation and self.epoch >= self.cfg.sum_negatives_epochs
        loss = triplet_loss(scores, positives, self.cfg.margin, hardest)
        return {"loss": loss, "triplet": loss.detach()}

    def optimizers(self) -> list[tuple[torch.optim.Optimizer, Any]]:
        opt = torch.optim.Adam(self.parameters(), lr=self.cfg.lr)
        return [(opt, step_lr(opt, self.cfg.lr_decay_epochs))]
