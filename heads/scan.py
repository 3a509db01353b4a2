"""`scan`: SCAN's stacked cross attention (Lee et al., ECCV 2018), one direction or both.

The local branch of CASC (Xu et al., IEEE TNNLS 2020, Sec. III-A/B): regions and words attend
to each other; a direction's image-text score aggregates the cosines between each item and
what it attended to; the hardest-negative triplet loss trains it. `direction=t2i` (each word
attends over the regions) or `i2t` (each region over the words) is one SCAN model as SCAN's
code trains it; `direction=both` averages the two scores: CASC-base.

Defaults are the authors' released code (`recipe=code`): SCAN's `train.py` / README
(kuanghuei/SCAN) for one direction, CASC's `train.py` (Wangt-CN/Code_CASC, `--cross_attn=all`)
for both. `recipe=paper` is the CASC paper's text; any field set explicitly wins over either.

| what | paper (CASC text) | released code | lighthead default | switch |
|---|---|---|---|---|
| direction | both, averaged (CASC-base: `direction=both`) | SCAN: one per model (`--cross_attn`, default t2i); CASC: both (`all`) | `direction=t2i` | `direction=t2i\\|i2t\\|both` |
| softmax temperature, word over regions (T2I) | lambda2 = 4 (`lambda_t2i=4`) | 9 (SCAN README, CASC `lambda_softmax_avg`) | `lambda_t2i=9` | `lambda_t2i` |
| softmax temperature, region over words (I2T) | lambda1 = 9 (`lambda_i2t=9`) | 4 (SCAN README, CASC `lambda_softmax_lse`) | `lambda_i2t=4` | `lambda_i2t` |
| cosines normalised before the softmax | none, plain cosine (`attn_norm=no_norm`) | `raw_feature_norm=clipped_l2norm` | `attn_norm=clipped_l2norm` | `attn_norm=clipped_l2norm\\|l2norm\\|softmax\\|clipped\\|no_norm` |
| T2I aggregation | mean (`agg_t2i=mean`) | SCAN: LogSumExp (lambda_lse 6); CASC: mean | LogSumExp 6 (`agg_t2i=lse` `lambda_lse_t2i=6`; mean when both directions train, as CASC's code) | `agg_t2i=lse\\|mean`, `lambda_lse_t2i` |
| I2T aggregation | mean (`agg_i2t=mean`) | LogSumExp (5 Flickr30K, 20 COCO; CASC 5) | LogSumExp 5 (`agg_i2t=lse` `lambda_lse_i2t=5`; COCO 20) | `agg_i2t=lse\\|mean`, `lambda_lse_i2t` |
| negatives in a batch | the hardest other image and caption of the minibatch (M != I, N != T) | `ContrastiveLoss` masks the diagonal only: another caption of a repeated image is a negative | as released (`same_image_positive=false`; demo: true) | `same_image_positive=true` |
| margin, optimiser, sizes | 0.2; Adam 2e-4 (COCO 5e-4), decay not stated; 1024, words 300 | the same; x0.1 after 15 of 30 epochs (COCO: 10 of 20); batch 128; grad clip 2 | as released (`margin=0.2` `lr=2e-4` `lr_decay_epochs=15` `epochs=30` `batch_size=128` `grad_clip=2` `embed_size=1024` `word_dim=300`) | `margin`, `lr`, `lr_decay_epochs`, `epochs`, `batch_size`, `grad_clip`, `embed_size`, `word_dim` |

SCAN README rows: t-i LSE = defaults; t-i AVG = `agg_t2i=mean`; i-t LSE = `direction=i2t`;
i-t AVG = `direction=i2t agg_i2t=mean` (COCO: `--dataset coco` gives lr 5e-4, 20 epochs,
decay after 10, I2T LSE temperature 20).

Image side: K region features (2048) -> Linear(2048, 1024) -> L2 norm.
Text side: word ids -> embedding 300 -> bidirectional GRU (1024, directions averaged) -> L2
norm; or (text = "text/...") cached token features of a frozen encoder -> Linear -> L2 norm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from lighthead.heads.attention import AGGREGATIONS, NORMS, XAttn, l2norm, xattn_all_pairs
from lighthead.heads.base import HEADS, DataInfo, RetrievalConfig, RetrievalHead, source
from lighthead.heads.build import fill_recipe
from lighthead.heads.losses import in_batch_positives, triplet_loss
from lighthead.heads.optim import step_lr
from lighthead.heads.text_encoders import caption_encoder

DIRECTIONS = ("t2i", "i2t", "both")
NORM_ALIASES = {"none": "no_norm", "clipped_l2": "clipped_l2norm"}  # the names of earlier run configs


@dataclass
class SCANConfig(RetrievalConfig):
    """SCAN / CASC-base hyper-parameters. Fields left at None take the value of `recipe`."""

    regions: str = source("regions", default="regions/butd-r101-vg-36")  # feature set of the region features
    # "words/..." = word ids for the GRU; "text/..." = frozen token features
    text: str = source("words", "tokens", default="words/vocab")
    num_regions: int = 0  # keep the first K regions (0 = all; variable-K sets are padded + masked)
    embed_size: int = 1024  # joint space width h
    word_dim: int = 300  # word embedding width
    gru_layers: int = 1  # GRU layers
    bidirectional: bool = True  # bi-GRU with the two directions averaged
    recipe: str = "code"  # "code": the authors' released code; "paper": CASC's text (see the module's table)
    direction: str | None = None  # t2i, i2t or both (their mean = CASC-base); None: code t2i, paper both
    lambda_t2i: float | None = None  # softmax temperature, each word over the regions; None: code 9, paper 4
    lambda_i2t: float | None = None  # softmax temperature, each region over the words; None: code 4, paper 9
    # SCAN's raw_feature_norm: clipped_l2norm, l2norm, softmax, clipped, no_norm; None: code clipped_l2norm, paper no_norm
    attn_norm: str | None = None
    # word cosines -> T2I score: lse or mean; None: code lse (mean with direction=both, as CASC's code), paper mean
    agg_t2i: str | None = None
    agg_i2t: str | None = None  # region cosines -> I2T score: lse or mean; None: code lse, paper mean
    lambda_lse_t2i: float = 6.0  # LogSumExp temperature of T2I (SCAN's README)
    lambda_lse_i2t: float = 5.0  # LogSumExp temperature of I2T (SCAN's README on Flickr30K, CASC's code; COCO 20)
    margin: float = 0.2  # triplet margin sigma
    max_violation: bool = True  # hardest negative in the batch (else sum over all negatives)
    sum_negatives_epochs: int = 0  # first epochs that sum over all negatives before hardest-negative
    # True: captions of one image in a batch are never each other's negatives (released: the diagonal only)
    same_image_positive: bool = False
    lr: float = 2e-4  # Adam learning rate (Flickr30K; 5e-4 on COCO)
    lr_decay_epochs: int = 15  # multiply the lr by 0.1 every this many epochs (0 = never)
    epochs: int = 30  # training epochs
    batch_size: int = 128  # pairs per batch
    grad_clip: float = 2.0  # gradient-norm clipping per optimiser (0 = off)

    # Values of the fields left at None, per recipe.
    RECIPE_VALUES: ClassVar[dict[str, dict[str, Any]]] = {
        "code": {
            "direction": "t2i",
            "lambda_t2i": 9.0,
            "lambda_i2t": 4.0,
            "attn_norm": "clipped_l2norm",
            "agg_t2i": "lse",
            "agg_i2t": "lse",
        },
        "paper": {
            "direction": "both",
            "lambda_t2i": 4.0,
            "lambda_i2t": 9.0,
            "attn_norm": "no_norm",
            "agg_t2i": "mean",
            "agg_i2t": "mean",
        },
    }
    DATASET_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        # SCAN's README, MS-COCO rows (i-t LSE: temperature 20).
        "coco": {"lr": 5e-4, "epochs": 20, "lr_decay_epochs": 10, "lambda_lse_i2t": 20.0},
        # CPU-sized for the ~240 training images of the demo; summing over negatives learns
        # faster from scratch than the hardest negative on so few captions.
        "demo": {
            "embed_size": 256,
            "batch_size": 32,
            "lr": 2e-3,
            "max_violation": False,
            "epochs": 8,
            "regions": "regions/butd-r101-vg-given",
            "same_image_positive": True,
        },
    }

    def __post_init__(self) -> None:
        fill_recipe(self, {name: self._recipe_values(name) for name in self.RECIPE_VALUES})
        for name in ("embed_size", "word_dim", "gru_layers", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 (negatives come from the batch)")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}")
        self.attn_norm = NORM_ALIASES.get(self.attn_norm, self.attn_norm)
        if self.attn_norm not in NORMS:
            raise ValueError(f"attn_norm must be one of {', '.join(NORMS)}, got {self.attn_norm!r}")
        for name in ("agg_t2i", "agg_i2t"):
            if getattr(self, name) not in AGGREGATIONS:
                raise ValueError(f"{name} must be one of {', '.join(AGGREGATIONS)}, got {getattr(self, name)!r}")
        if min(self.lambda_t2i, self.lambda_i2t, self.lambda_lse_t2i, self.lambda_lse_i2t) <= 0:
            raise ValueError("lambda_t2i, lambda_i2t, lambda_lse_t2i and lambda_lse_i2t must be > 0")
        if not self.text.startswith(("words/", "text/")):
            raise ValueError(f"text must name a words/... or text/... feature set, got {self.text!r}")
        if not self.regions.startswith("regions/"):
            raise ValueError(f"regions must name a regions/... feature set, got {self.regions!r}")
        if self.margin < 0 or self.lr <= 0 or self.grad_clip < 0:
            raise ValueError("margin and grad_clip must be >= 0 and lr > 0")
        if self.num_regions < 0 or self.sum_negatives_epochs < 0 or self.lr_decay_epochs < 0:
            raise ValueError("num_regions, sum_negatives_epochs and lr_decay_epochs must be >= 0")

    def _recipe_values(self, recipe: str) -> dict[str, Any]:
        """The values `recipe` gives the fields left at None, given the direction it resolves to."""
        values = dict(self.RECIPE_VALUES[recipe])
        if recipe == "code" and (self.direction or values["direction"]) == "both":
            values["agg_t2i"] = "mean"  # CASC's code (cross_attn=all): T2I mean, I2T LogSumExp
        return values

    @property
    def uses_tokens(self) -> bool:
        return self.text.startswith("text/")

    def xattn(self, directions: tuple[str, ...] | None = None) -> XAttn:
        """The attention options; `directions` default: the ones trained and scored."""
        if directions is None:
            directions = ("t2i", "i2t") if self.direction == "both" else (self.direction,)
        return XAttn(
            self.lambda_t2i,
            self.lambda_i2t,
            self.attn_norm,
            self.agg_t2i,
            self.agg_i2t,
            self.lambda_lse_t2i,
            self.lambda_lse_i2t,
            directions,
        )


def text_inputs(cfg: SCANConfig) -> tuple[str, ...]:
    return ("tokens",) if cfg.uses_tokens else ("word_ids",)


@HEADS.register("scan")
class SCAN(RetrievalHead):
    """Local alignment head. encode_image/encode_text cache each side; score() scores blocks."""

    config_class = SCANConfig

    def __init__(self, cfg: SCANConfig, region_dim: int = 2048, vocab_size: int = 0, token_dim: int = 0):
        super().__init__()
        self.cfg = cfg
        self.inputs = ("regions", "text_mask", "text_len", "image_index") + text_inputs(cfg)
        self.epoch = 0  # set by the training loop (start_epoch), for the negatives warm-up
        self.img_fc = nn.Linear(region_dim, cfg.embed_size)
        # SCAN's Xavier-uniform init of the region projection.
        nn.init.xavier_uniform_(self.img_fc.weight)
        nn.init.zeros_(self.img_fc.bias)
        self.txt_enc = caption_encoder(
            cfg.text,
            cfg.embed_size,
            token_dim=token_dim,
            vocab_size=vocab_size,
            word_dim=cfg.word_dim,
            gru_layers=cfg.gru_layers,
            bidirectional=cfg.bidirectional,
        )

    @classmethod
    def from_config(cls, cfg: SCANConfig, data: DataInfo) -> SCAN:
        """Region width; the vocabulary (words/...) or the token width (text/...)."""
        return cls(
            cfg, region_dim=data.region_dim or 2048, vocab_size=data.vocab_size or 0, token_dim=data.token_dim or 0
        )

    # -- encoders -----------------------------------------------------------------------
    def encode_image(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{"regions": (B, K, h) unit-norm, "mask": (B, K) bool, "gram": (B, K, K) region dot products}."""
        regions = batch["regions"].float()
        mask = batch.get("region_mask")
        if mask is None:
            mask = torch.ones(regions.shape[:2], dtype=torch.bool, device=regions.device)
        v = l2norm(self.img_fc(regions)) * mask[..., None]  # (B, K, h)
        # The region Gram matrix is pair-independent: computed once here, not in every scored block.
        out = {"regions": v, "mask": mask, "gram": v @ v.transpose(1, 2)}  # gram: (B, K, K)
        return self._with_host_mask(out)

    def encode_text(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{"words": (B, L, h) unit-norm, "mask": (B, L) bool, "len": (B,), "gram": (B, L, L)}."""
        mask = batch["text_mask"]
        if self.cfg.uses_tokens:
            states, _ = self.txt_enc(batch["tokens"], mask)
        else:
            states, _ = self.txt_enc(batch["word_ids"], batch["text_len"])
        t = l2norm(states) * mask[..., None]  # (B, L, h)
        out = {"words": t, "mask": mask, "len": batch["text_len"], "gram": t @ t.transpose(1, 2)}  # gram: (B, L, L)
        return self._with_host_mask(out)

    def _with_host_mask(self, enc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """For scoring (eval mode), a host copy of the mask, "host_mask": each scored block then
        learns its longest caption and whether its masks are full without asking the device
        (on a GPU every such question makes the host wait): one copy per encoded batch."""
        if not self.training:
            enc["host_mask"] = enc["mask"].cpu()
        return enc

    # -- scoring ------------------------------------------------------------------------
    def local_scores(
        self,
        img: dict[str, torch.Tensor],
        txt: dict[str, torch.Tensor],
        weights: tuple[str, ...] = (),
        directions: tuple[str, ...] | None = None,
    ) -> dict[str, torch.Tensor]:
        """T2I / I2T scores (I, T) of every pair (the configured directions unless `directions`
        is given); padding beyond the longest caption is dropped."""
        n = self.words_used(txt)
        words, mask = txt["words"][:, :n], txt["mask"][:, :n]
        full = None  # whether every region / word of the block is real: known on the host, or asked later
        if "host_mask" in img and "host_mask" in txt:
            full = (bool(img["host_mask"].numpy().all()), bool(txt["host_mask"][:, :n].numpy().all()))
        return xattn_all_pairs(
            img["regions"],
            img["mask"],
            words,
            mask,
            self.cfg.xattn(directions),
            weights,
            gram_v=img.get("gram"),
            gram_t=txt["gram"][:, :n, :n] if "gram" in txt else None,
            full=full,
        )

    @staticmethod
    def words_used(txt: dict[str, torch.Tensor]) -> int:
        """Length of the longest caption of a block (the words axis beyond it is padding); from
        the host copy of the mask when the encoding has one."""
        if "host_mask" in txt:
            host = txt["host_mask"].numpy()
            return int(host.sum(1).max()) if host.size else 1
        return int(txt["mask"].sum(1).max().item()) if txt["mask"].numel() else 1

    def local_score(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """The trained direction's score, or the mean of the two (CASC-base)."""
        if self.cfg.direction == "both":
            return 0.5 * (out["t2i"] + out["i2t"])
        return out[self.cfg.direction]

    def score(self, img: dict[str, torch.Tensor], txt: dict[str, torch.Tensor]) -> torch.Tensor:
        """(I, T) image-caption scores: the configured direction's, or the mean of both."""
        return self.local_score(self.local_scores(img, txt))

    def pair_bytes(self, img: dict[str, torch.Tensor], txt: dict[str, torch.Tensor]) -> int:
        """Working memory per scored pair (about eight (K, L) float tensors per direction)."""
        per_direction = 4 * 8 * img["regions"].shape[1] * max(1, txt["words"].shape[1])
        return per_direction * (2 if self.cfg.direction == "both" else 1) + 64

    # -- training -----------------------------------------------------------------------
    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def hardest(self) -> bool:
        return self.cfg.max_violation and self.epoch >= self.cfg.sum_negatives_epochs

    def ranking_loss(self, scores: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        positives = in_batch_positives(batch, self.cfg.same_image_positive)  # None: the diagonal, as released
        return triplet_loss(scores, positives, self.cfg.margin, self.hardest)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        scores = self.score(self.encode_image(batch), self.encode_text(batch))  # (B, B)
        loss = self.ranking_loss(scores, batch)
        return {"loss": loss, "triplet": loss.detach()}

    def optimizers(self) -> list[tuple[torch.optim.Optimizer, Any]]:
        opt = torch.optim.Adam(self.parameters(), lr=self.cfg.lr)
        return [(opt, step_lr(opt, self.cfg.lr_decay_epochs))]
