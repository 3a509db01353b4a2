"""ITIN: Image-Text Interaction Network for image-text sentiment.

Zhu, Li, Yang, Zhao, Liu, Qian, "Multimodal Sentiment Analysis With Image-Text Interaction
Network", IEEE Transactions on Multimedia 25, 2023 (seeds/001). Equation numbers below are the
paper's.

The defaults follow the authors' released code (zhutong0219/ITIN: Demo.py and opt.py), an
inference demo for a trained checkpoint: it has the model but no training loop, so the training
settings are the paper's. `recipe=paper` gives the paper's text instead; each row below also has
its own key, which wins over the recipe (None = the recipe's value; config.json records the
resolved values).

Choices made either way:
- BERT is frozen and its token features are cached in the store (the release runs BERT under
  `no_grad`; the paper does not say). The bidirectional GRUs on top are trained.
- The gate (Eq. 8) is written `sigma(r_i * u_i)` with an elementwise product, but it is used as a
  scalar per region-word pair (Fig. 7 shows one value); the release takes the dot product, and so
  do we: `g_i = sigma(r_i . u_i)`.
- Ablations (Table III) work with either recipe: "w/o Align" replaces the attention of Eq. 6 by a
  uniform one (`u_i` = the word mean); "w/o Gating" sets `g_i = 1`; "w/o Context" classifies
  `MLP(C)`; "only Context" classifies `lambda MLP(V) + (1 - lambda) MLP(S)`.
  With `sentence_encoder=separate`, "w/o Context" has no S and builds no second GRU, and "only
  Context" takes S from the one GRU it has.
- The release pads BERT ids to 100 and runs BERT on the [PAD] ids without a mask; cached stores
  have no features for those positions, so `text_positions=padded` feeds zero vectors there.
- The inputs are prepared by `lighthead extract` as the release's Demo.py prepares them (MVSA's
  job defaults, `features.runner.DATASET_JOB_OPTIONS`): the post's bytes read as ASCII, the others
  dropped; `[CLS] text [SEP]` for bert-base-uncased cut to its first 100 tokens; the image as
  PIL's convert("RGB") -> Resize 256 -> CenterCrop 224 -> ImageNet normalisation.
- Regions missing from an image (adaptive sets) are masked out of the second attention and the
  pooling (the release always has a full set).
- The paper does not give d, k, the MLP sizes or dropout; d = k = 1024 is the release's
  `embed_size`.

| what | paper | released code | lighthead default | switch |
|---|---|---|---|---|
| post text | BERT-base on the post; cleaning not said | the file's bytes decoded as ASCII, errors ignored (`Demo.py`): every non-ASCII byte dropped | as released: `lighthead extract --dataset mvsa-*` drops the non-ASCII characters (`-o bert.ascii_only=true`) | `-o bert.ascii_only=false` |
| BERT input | not said | `[CLS] text [SEP]` for bert-base-uncased, the first 100 ids (MAX_LEN; a longer post loses its [SEP]) | as released (`-o bert.max_length=100` `-o bert.truncate=head`) | `-o bert.truncate=longest_first`, `-o bert.max_length=N` |
| region features | r_i = W_r f_i + b_r (Eq. 1), top m regions (`region_norm=false`) | Linear(2048, d), then L2-normalised | released; m = 2, the paper's best (`region_norm=true` `m=2`) | `region_norm`, `m` |
| initialisation | not said (`init=torch`) | Xavier-uniform, zero bias for W_r, the key projections and W_o | released (`init=xavier`) | `init=xavier\\|torch` |
| word features | BERT-base -> bi-GRU, directions averaged (Eq. 2-4); layers not said (`gru_layers=1` `gru_dropout=0`) | frozen BERT -> 2-layer bi-GRU (d, dropout 0.25 between layers), directions averaged | released (`gru_layers=2` `gru_dropout=0.25`) | `gru_layers`, `gru_dropout` |
| text positions | the n words (`text_positions=real`) | all 100 zero-padded positions, no mask (GRU, attention, S) | released, zeros at the padding (`text_positions=padded` `max_len=100`) | `text_positions=padded\\|real`, `max_len` |
| S (Eq. 15) | mean of the word features w_i (`sentence_encoder=shared`) | mean of the outputs of a second, separate BERT-GRU (own weights) | released (`sentence_encoder=separate`) | `sentence_encoder=separate\\|shared` |
| alignment (Eq. 5-7) | softmax(W^_r R (W^_t W)^T / sqrt(k)) W | the same, bias-free d x d projections (k = d) | the same, k = d (`align=true` `d=1024` `k=1024`) | `align=false`, `d`, `k` |
| second attention | none (`second_attention=false`) | self-attention among the M attended vectors u_i (bias-free d x d query/key, / sqrt(d)) | released (`second_attention=true`) | `second_attention` |
| attended vector norm | none (`attended_norm=false`) | u_i L2-normalised before the gate | released (`attended_norm=true`) | `attended_norm` |
| gate (Eq. 8) | sigma(r_i * u_i), one value per region (Fig. 7) | sigma(r_i . u_i) | sigma(r_i . u_i) in both recipes (`gating=true`) | `gating=false` |
| fusion (Eq. 10-11) | ReLU(W_o c_i + b_o) + r_i (`fuse_bias=true`) | bias-free Linear, ReLU, + r_i | released (`fuse_bias=false`) | `fuse_bias` |
| pooling (Eq. 12-13) | softmax(Tran_z(Z)), Tran_z "linear layers and a non-linearity" (`pooling=tanh`) | 4 maps from Linear(d, d)-ReLU-Linear(d, 4), pooled vectors averaged | released (`pooling=summary` `pool_maps=4`) | `pooling=summary\\|tanh` (tanh: Linear(d, d/2)-tanh-Linear(d/2, 1)), `pool_maps` |
| C norm | none (`pooled_norm=false`) | C L2-normalised | released (`pooled_norm=true`) | `pooled_norm` |
| MLPs (Eq. 16-17), classifier (Eq. 19) | sizes not given (`mlp=double`) | Linear(., 64) + ReLU per branch, no dropout; one Linear(64, 3) after the mix (equal to Eq. 18-19) | released (`mlp=single` `mlp_hidden=64`; with double, `dropout=0.1`) | `mlp=single\\|double` (double: Linear-ReLU-Dropout-Linear to d, Linear(d, 3)), `mlp_hidden`, `dropout` |
| lambda (Eq. 18) | 0.2 (`lam=0.2`) | 0.2 | `lam=0.2` | `lam` |
| visual context V (Eq. 14) | ImageNet ResNet-18, 224 x 224, 512-d | ResNet-18 in the checkpoint (trained with the model); the image as PIL's convert("RGB"), resize 256, centre crop 224, ImageNet normalisation | cached, frozen ImageNet ResNet-18 on the released preprocessing (`global_features=global/resnet18` `-o resnet18.decode=plain`) | `global_features`, `-o resnet18.decode=upright` |
| optimiser | Adam 1e-3, x0.1 every 10 epochs, decay 1e-5, batch 64 / 128 (`lr=1e-3` `lr_step=10` `lr_gamma=0.1` `weight_decay=1e-5` `batch_size=64`) | not released (inference only); lr 1e-3, decay 1e-5, 200 epochs named | the paper's, 30 epochs (`lr=1e-3` `lr_step=10` `lr_gamma=0.1` `weight_decay=1e-5` `batch_size=64` `epochs=30`; mvsa-multiple: batch 128) | `lr`, `lr_step`, `lr_gamma`, `weight_decay`, `batch_size`, `epochs` |
| gradient clipping | not said | not released (inference only); grad_clip 2 in opt.py | off (`grad_clip=0`) | `grad_clip` |
| reported "F1" | Eq. 21-23; averaging not said; the numbers sit within ~0.5 of accuracy on imbalanced MVSA, as weighted F1 does | accuracy only | `accuracy`, `macro_f1` and `weighted_f1` | - |
| splits, selection | random 8:1:1; selection not said | not released (inference only) | the store's splits; best validation accuracy on the whole dev split | - |
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lighthead.heads.base import HEADS, DataInfo, SentimentConfig, SentimentHead, source
from lighthead.heads.build import fill_recipe
from lighthead.heads.rnn import FP32GRU

# The two readings; a key left unset (None) takes its recipe's value.
RECIPES: dict[str, dict[str, Any]] = {
    "code": {
        "region_norm": True,
        "init": "xavier",
        "gru_layers": 2,
        "gru_dropout": 0.25,
        "text_positions": "padded",
        "sentence_encoder": "separate",
        "second_attention": True,
        "attended_norm": True,
        "fuse_bias": False,
        "pooling": "summary",
        "pooled_norm": True,
        "mlp": "single",
    },
    "paper": {
        "region_norm": False,
        "init": "torch",
        "gru_layers": 1,
        "gru_dropout": 0.0,
        "text_positions": "real",
        "sentence_encoder": "shared",
        "second_attention": False,
        "attended_norm": False,
        "fuse_bias": True,
        "pooling": "tanh",
        "pooled_norm": False,
        "mlp": "double",
    },
}
CHOICES = {
    "init": ("xavier", "torch"),
    "text_positions": ("padded", "real"),
    "sentence_encoder": ("separate", "shared"),
    "pooling": ("summary", "tanh"),
    "mlp": ("single", "double"),
}


@dataclass
class ItinConfig(SentimentConfig):
    """ITIN hyper-parameters: the released model by default, `recipe=paper` for the paper's text."""

    # feature set of the region features (the first m are used)
    regions: str = source("regions", default="regions/butd-r101-vg-36")
    text: str = source("tokens", default="text/bert-base-uncased")  # feature set of the frozen token features
    global_features: str = source("global", default="global/resnet18")  # feature set of the visual context V (Eq. 14)
    recipe: str = "code"  # "code": the authors' released model; "paper": the paper's text (keys left unset)
    region_norm: bool | None = None  # L2-normalise r_i after Eq. 1 (code)
    init: str | None = None  # "xavier" (uniform, zero bias on W_r, key projections, W_o) or "torch"
    gru_layers: int | None = None  # layers of each bi-GRU (code 2, paper 1)
    gru_dropout: float | None = None  # dropout between GRU layers (code 0.25)
    text_positions: str | None = None  # "padded": all max_len positions, no mask; "real": the real tokens
    max_len: int = 100  # token positions with text_positions=padded (the release pads BERT ids to 100)
    sentence_encoder: str | None = None  # S from a "separate" bi-GRU (code) or the "shared" word GRU (Eq. 15)
    second_attention: bool | None = None  # self-attention among the M attended vectors (code)
    attended_norm: bool | None = None  # L2-normalise u_i before the gate (code)
    fuse_bias: bool | None = None  # bias b_o in Eq. 10 (paper)
    pooling: str | None = None  # "summary" (pool_maps ReLU maps, averaged; code) or "tanh" (one map)
    pool_maps: int = 4  # attention maps of the summary pooling (the release's num_attn)
    pooled_norm: bool | None = None  # L2-normalise C (code)
    mlp: str | None = None  # "single": Linear-ReLU to mlp_hidden (code); "double": Linear-ReLU-Dropout-Linear to d
    mlp_hidden: int = 64  # width of the single-layer MLPs (the release's 64)
    d: int = 1024  # width of regions r_i and words w_i (Eq. 1-4)
    k: int = 1024  # width of the affinity projections W^_r, W^_t (Eq. 5)
    m: int = 2  # regions used: the first m of the store's (confidence order); paper's best
    lam: float = 0.2  # lambda of Eq. 18: weight of the visual-context branch F1
    dropout: float = 0.1  # dropout inside the double MLPs (not given in the paper)
    align: bool = True  # cross-modal alignment, Eq. 5-7 (false: uniform attention, "w/o Align")
    gating: bool = True  # cross-modal gating, Eq. 8-9 (false: g_i = 1, "w/o Gating")
    context: bool = True  # visual/textual context, Eq. 14-18 (false: F = MLP(C), "w/o Context")
    context_only: bool = False  # F from V and S alone, no region-word interaction ("only Context")
    lr: float = 1e-3  # Adam learning rate
    lr_step: int = 10  # epochs between learning-rate decays
    lr_gamma: float = 0.1  # decay factor
    weight_decay: float = 1e-5  # Adam weight decay
    batch_size: int = 64  # 64 on MVSA-Single, 128 on MVSA-Multiple
    epochs: int = 30  # not given in the paper (the release has no training loop); three decay steps
    grad_clip: float = 0.0  # gradient-norm clipping (0 = off; the paper does not clip)

    RECORD_KIND: ClassVar[str] = "post"  # trains on image-text posts (MVSA, demo)
    DATASET_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "mvsa-multiple": {"batch_size": 128},
        # the bundled small encoder; CPU-sized; demo texts have at most 20 tokens, so 32 positions
        # keep the released zero padding at a third of the GRU steps
        "demo": {"text": "text/all-minilm-l6-v2", "d": 128, "k": 128, "epochs": 10, "batch_size": 32, "max_len": 32},
    }

    def __post_init__(self) -> None:
        fill_recipe(self, RECIPES, "itin", CHOICES)
        for name in (
            "d",
            "k",
            "m",
            "lr_step",
            "batch_size",
            "epochs",
            "gru_layers",
            "max_len",
            "pool_maps",
            "mlp_hidden",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"itin: {name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"itin: lam must be in [0, 1], got {self.lam}")
        for name in ("dropout", "gru_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"itin: {name} must be in [0, 1), got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 < self.lr_gamma <= 1:
            raise ValueError("itin: need lr > 0, weight_decay >= 0, 0 < lr_gamma <= 1")
        if self.context_only and not self.context:
            raise ValueError("itin: context_only=true needs context=true (it keeps only the context)")
        if self.grad_clip < 0:
            raise ValueError(f"itin: grad_clip must be >= 0, got {self.grad_clip}")
        prefixes = {"regions": "regions/", "text": "text/", "global_features": "global/"}
        for name, prefix in prefixes.items():
            if not getattr(self, name).startswith(prefix):
                raise ValueError(f"itin: {name} must name a {prefix}... feature set, got {getattr(self, name)!r}")

    @property
    def num_regions(self) -> int:
        """Regions the task reads per image."""
        return self.m


def mlp(n_in: int, cfg: ItinConfig) -> nn.Sequential:
    """The MLP of Eq. 16-17: Linear-ReLU to mlp_hidden (single) or Linear-ReLU-Dropout-Linear to d."""
    if cfg.mlp == "single":
        return nn.Sequential(nn.Linear(n_in, cfg.mlp_hidden), nn.ReLU())
    return nn.Sequential(nn.Linear(n_in, cfg.d), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.d, cfg.d))


def l2norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """x / (||x|| + eps) over the last axis (the release's form of the norm)."""
    return x / (x.norm(dim=-1, keepdim=True) + eps)


def xavier_(layer: nn.Linear) -> None:
    """Uniform in +-sqrt(6 / (in + out)), zero bias."""
    bound = math.sqrt(6.0 / (layer.in_features + layer.out_features))
    nn.init.uniform_(layer.weight, -bound, bound)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


@HEADS.register("itin")
class Itin(SentimentHead):
    """Regions (first m) + cached BERT tokens + a global CNN feature -> 3 sentiment logits.

    Shapes: B batch, M regions used, L tokens, D = d.
    """

    inputs: ClassVar[tuple[str, ...]] = ("regions", "tokens", "text_mask", "global", "label")  # narrowed per config
    config_class: ClassVar[type] = ItinConfig

    def __init__(
        self, cfg: ItinConfig | None = None, region_dim: int = 2048, token_dim: int = 768, global_dim: int = 512
    ):
        super().__init__()
        self.cfg = cfg = cfg or ItinConfig()
        d, k = cfg.d, cfg.k

        def gru() -> nn.GRU:  # Eq. 2-3; float32 under autocast (heads/rnn.py)
            return FP32GRU(
                token_dim,
                d,
                num_layers=cfg.gru_layers,
                batch_first=True,
                bidirectional=True,
                dropout=cfg.gru_dropout if cfg.gru_layers > 1 else 0.0,
            )

        self.gru = gru()
        if not cfg.context_only:
            self.region_proj = nn.Linear(region_dim, d)  # W_r, b_r (Eq. 1)
            if cfg.align:
                self.aff_r = nn.Linear(d, k, bias=False)  # W^_r (Eq. 5)
                self.aff_t = nn.Linear(d, k, bias=False)  # W^_t (Eq. 5)
            self.fuse = nn.Linear(2 * d, d, bias=cfg.fuse_bias)  # W_o, b_o (Eq. 10)
            if cfg.pooling == "tanh":
                # Tran_z of Eq. 12; no bias on the score layer (a softmax ignores a shared shift)
                half = max(d // 2, 1)
                self.tran_z = nn.Sequential(nn.Linear(d, half), nn.Tanh(), nn.Linear(half, 1, bias=False))
            else:
                self.tran_z = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, cfg.pool_maps))
            if cfg.second_attention:
                self.second_q = nn.Linear(d, d, bias=False)
                self.second_k = nn.Linear(d, d, bias=False)
        c_dim = 0 if cfg.context_only else d  # C is absent in the "only Context" ablation
        if cfg.context:
            self.mlp_v = mlp(global_dim + c_dim, cfg)  # Eq. 16
            self.mlp_s = mlp(d + c_dim, cfg)  # Eq. 17
        else:
            self.mlp_c = mlp(d, cfg)
        self.classifier = nn.Linear(cfg.mlp_hidden if cfg.mlp == "single" else d, 3)  # W_f, b_f (Eq. 19)
        # the release's second BERT-GRU, used only for S (with context_only the word GRU feeds S alone)
        self.separate_s = cfg.sentence_encoder == "separate" and cfg.context and not cfg.context_only
        if self.separate_s:
            self.sentence_gru = gru()
        if cfg.init == "xavier" and not cfg.context_only:
            for layer in [self.region_proj, self.fuse] + ([self.aff_t] if cfg.align else []):
                xavier_(layer)  # the release's key projection of the words is Xavier, its query is not
        inputs = ["tokens", "text_mask", "label"]
        inputs += [] if cfg.context_only else ["regions"]
        inputs += ["global"] if cfg.context else []
        self.inputs = tuple(inputs)

    @classmethod
    def from_config(cls, cfg: ItinConfig, data: DataInfo) -> Itin:
        """The region, token and global (visual context) widths."""
        return cls(
            cfg, region_dim=data.region_dim or 2048, token_dim=data.token_dim or 768, global_dim=data.global_dim or 512
        )

    # -- pieces (each one equation group, so tests can check them separately) --

    def text_inputs(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The token positions the model reads: (B, L, T), (B, L) -> the same, or zero-padded to max_len."""
        if self.cfg.text_positions == "real":
            return tokens, mask
        n = self.cfg.max_len
        tokens = (tokens * mask[..., None])[:, :n]  # (B, <=n, T), padding is zeros
        tokens = F.pad(tokens, (0, 0, 0, n - tokens.shape[1]))  # (B, n, T)
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)

    def encode_words(self, tokens: torch.Tensor, mask: torch.Tensor, gru: nn.GRU | None = None) -> torch.Tensor:
        """Eq. 2-4: (B, L, token_dim), (B, L) -> w_i = mean of the two GRU directions (B, L, D).

        Sequences are packed so the backward direction starts at each text's last real token.
        """
        gru = gru or self.gru
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = pack_padded_sequence(tokens, lengths, batch_first=True, enforce_sorted=False)
        out, _ = gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])  # (B, L, 2D)
        out = out.view(out.shape[0], out.shape[1], 2, -1)  # (B, L, 2, D)
        return out.mean(2)  # (B, L, D)

    def interact(
        self, r: torch.Tensor, w: torch.Tensor, mask: torch.Tensor, region_mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Eq. 5-13: regions r (B, M, D), words w (B, L, D) -> C (B, D) and what explains it.

        Returns "C", "attn" (B, M, L) word weights per region, "gate" (B, M), "alpha" (B, M)
        region pooling weights (averaged over the maps of the summary pooling).
        """
        cfg = self.cfg
        if cfg.align:
            a = self.aff_r(r) @ self.aff_t(w).transpose(1, 2)  # (B, M, L), Eq. 5
            a = a / math.sqrt(cfg.k)
        else:  # uniform attention over the real words
            a = torch.zeros(r.shape[0], r.shape[1], w.shape[1], dtype=r.dtype, device=r.device)
        a = a.masked_fill(~mask[:, None, :], float("-inf"))
        attn = a.softmax(-1)  # (B, M, L), Eq. 6
        u = attn @ w  # (B, M, D), Eq. 7
        if cfg.second_attention:  # the attended vectors attend over each other
            s2 = self.second_q(u) @ self.second_k(u).transpose(1, 2) / math.sqrt(cfg.d)  # (B, M, M)
            if region_mask is not None:
                s2 = s2.masked_fill(~region_mask[:, None, :], float("-inf"))
            u = s2.softmax(-1) @ u  # (B, M, D)
        if cfg.attended_norm:
            u = l2norm(u)
        if cfg.gating:
            gate = torch.sigmoid((r * u).sum(-1))  # (B, M), Eq. 8 (dot product, see module doc)
        else:
            gate = torch.ones(r.shape[:2], dtype=r.dtype, device=r.device)
        c = gate[..., None] * torch.cat([r, u], -1)  # (B, M, 2D), Eq. 9
        z = F.relu(self.fuse(c)) + r  # (B, M, D), Eq. 10-11
        scores = self.tran_z(z)  # (B, M, maps)
        if region_mask is not None:  # an image with fewer than m regions (adaptive sets)
            scores = scores.masked_fill(~region_mask[..., None], float("-inf"))
        alpha = scores.softmax(1)  # (B, M, maps), Eq. 12
        big_c = (alpha.transpose(1, 2) @ z).mean(1)  # (B, D), Eq. 13, maps averaged
        if cfg.pooled_norm:
            big_c = l2norm(big_c)
        return {"C": big_c, "attn": attn, "gate": gate, "alpha": alpha.mean(-1)}

    def fuse_context(self, big_c: torch.Tensor | None, v: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Eq. 16-18: C (B, D) or None, V (B, global_dim), S (B, D) -> F (B, D or mlp_hidden)."""
        if not self.cfg.context:
            return self.mlp_c(big_c)
        parts_v = [v] if big_c is None else [v, big_c]
        parts_s = [s] if big_c is None else [s, big_c]
        f1 = self.mlp_v(torch.cat(parts_v, -1))  # Eq. 16
        f2 = self.mlp_s(torch.cat(parts_s, -1))  # Eq. 17
        return self.cfg.lam * f1 + (1 - self.cfg.lam) * f2  # Eq. 18

    def explain(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Logits plus the alignment, gates and pooling weights (for figures like the paper's Fig. 7)."""
        dtype = self.classifier.weight.dtype  # float32, or float64 for reference checks
        tokens, mask = self.text_inputs(batch["tokens"].to(dtype), batch["text_mask"].bool())
        w = self.encode_words(tokens, mask)  # (B, L, D)
        if self.separate_s:
            w_s = self.encode_words(tokens, mask, self.sentence_gru)  # (B, L, D)
        else:
            w_s = w
        n = mask.sum(1, keepdim=True).clamp(min=1)
        s = (w_s * mask[..., None]).sum(1) / n  # (B, D), Eq. 15
        out: dict[str, torch.Tensor] = {}
        big_c = None
        if not self.cfg.context_only:
            r = self.region_proj(batch["regions"][:, : self.cfg.m].to(dtype))  # (B, M, D), Eq. 1
            if self.cfg.region_norm:
                r = l2norm(r)
            rmask = batch.get("region_mask")
            out = self.interact(r, w, mask, None if rmask is None else rmask[:, : self.cfg.m].bool())
            big_c = out["C"]
        feat = self.fuse_context(big_c, batch["global"].to(dtype) if self.cfg.context else None, s)
        out["logits"] = self.classifier(feat)  # (B, 3), Eq. 19 before the softmax
        return out

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, 3) sentiment logits (0 negative, 1 neutral, 2 positive)."""
        return self.explain(batch)["logits"]

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Cross-entropy of Eq. 20."""
        ce = F.cross_entropy(self(batch), batch["label"].long())
        return {"loss": ce, "ce": ce.detach()}

    def optimizers(self) -> list[tuple[torch.optim.Optimizer, Any]]:
        """Adam, lr x0.1 every `lr_step` epochs (the scheduler is stepped once per epoch)."""
        cfg = self.cfg
        opt = torch.optim.Adam(self.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        return [(opt, torch.optim.lr_scheduler.StepLR(opt, cfg.lr_step, cfg.lr_gamma))]
