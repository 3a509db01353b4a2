"""mFSR: multi-task feature separation and reconstruction for cross-modal retrieval.

Paper: Zhang & Wu, "Multi-task framework based on feature separation and reconstruction for
cross-modal retrieval", Pattern Recognition 2021. Defaults are the paper's (Sec. 3.5).

Letters: B batch, L words, d joint width (3072), P width of one separated part.
- text: word embedding (300) -> GRU (4 layers, d hidden), last real step = l (Eq. 2);
  image: cached ResNet-152 pooled feature (2048) -> Linear = v (Eq. 1).
- separation (Eq. 3): MLP_v(v), MLP_l(l) -> [modal; semantic; specific], each L2-normalised.
  The paper "cuts" d into three parts; the part width P is a config value (default d / 3).
- losses (Eq. 6): modal (Eq. 7), semantic = hardest-negative triplet (Eq. 8-9), specific
  (Eq. 10), image reconstruction = DCGAN G from [v_mo; v_se; v_sp] -> thumbnail with D1
  real/fake and D2 matched/mismatched (Eq. 11-13), caption reconstruction = GRU decoder from
  [l_mo; l_se; l_sp] with cross-entropy (Eq. 14). Every term has a switch, so the ablation
  table (Table 3) is a sweep; retrieval scores only the semantic parts.
- images are reconstructed at the stored thumbnails' side unless `recon_size` asks for a
  smaller one (the thumbnails are then average-pooled to it): the GAN's cost grows with the
  pixels, and it is most of a training step.
- the paper's baseline is VSE++ (the registered `vsepp` head); the variant "mfsr-base"
  (`MFSRConfig.from_name`) is the same on mFSR's encoders: no separation, semantic loss only.

One backward per step for the GAN. The loop calls `loss(batch)` once and back-propagates its
"loss" once, then steps every optimizer from `optimizers()`. The adversarial game still
works because the two players' gradients are kept apart inside that one graph:
- the discriminator losses read the generated images detached, so they reach D1/D2 only;
- the generator's adversarial terms call D1/D2 through `torch.func.functional_call` with
  detached copies of their parameters, so they reach G (and the encoders) but never D1/D2.
The parameter sets of the two optimizers (encoders + G + decoder vs D1 + D2) are disjoint,
so each optimizer sees exactly its player's gradient; the step is the simultaneous-update
variant of the alternating scheme (both players update from the same batch).

Deviations, on purpose:
- the losses use BCE on logits (the usual DCGAN form, non-saturating for G) rather than the
  log(1 - D) forms as printed in Eqs. 11-13;
- Eq. 13's D2 terms as printed would push G to make its own reconstruction look mismatched,
  which contradicts D2's stated job (keep the generated image consistent with its ground
  truth in content); G here wants D2 to call (x', x) matched and (x'', x) mismatched;
- the ResNet-152 is not fine-tuned (features are cached); the paper's main results use a
  fixed image encoder too.

No released code is known (none is linked from the paper; searches of public code found
none), so the paper is followed and every choice it leaves open is listed:

| what | paper | released code | lighthead default | switch |
|---|---|---|---|---|
| widths | words 300, GRU 4 x 3072, joint d 3072 (Sec. 3.5) | none | the same (`word_dim=300` `gru_layers=4` `embed_dim=3072`) | `word_dim`, `gru_layers`, `embed_dim` |
| training | Adam 2e-4 for 15 epochs, 2e-5 for 15, batch 24, best rsum on validation | none | the same (`lr=2e-4` `lr_decay_epochs=15` `epochs=30` `batch_size=24`) | `lr`, `lr_decay_epochs`, `epochs`, `batch_size` |
| word embedding | "a word2vec embedding matrix" (pre-trained or not is not said) | none | trained from scratch, uniform [-0.1, 0.1] (VSE++) | - |
| MLP_v, MLP_l | "multilayer perceptron layers" / "fully connected layer" | none | one Linear (`mlp_layers=1`) | `mlp_layers` |
| part width P | "cut" d into three parts, widths not given | none | d / 3 (`part_dim=1024`) | `part_dim` |
| normalisation (Eq. 3) | the whole MLP output divided by its norm; the text says the three parts are normalised | none | each part on its own | - |
| modal loss (Eq. 7) | means over the N training pairs; the exp term's placement is garbled | none | batch means; exp(-norm(v_bar - l_bar)) once per batch (`modal_weight=1`) | `modal_weight` |
| specific loss (Eq. 10) | mean over N | none | batch mean (`specific_weight=1`) | `specific_weight` |
| semantic margin alpha | a margin, value not given | none | 0.2, VSE++'s (`margin=0.2`) | `margin` |
| semantic loss (Eq. 8) | hardest negative, mean over the batch | none | the same (`max_violation=true`) | `max_violation` |
| negatives in a batch (Eq. 8) | the hardest k in B \\ j: every other pair of the batch | none | the same, a caption of a repeated image included (`same_image_positive=false`; demo: true) | `same_image_positive=true` |
| loss weights (Eq. 6) | unweighted sum | none | 1 each (`img_weight=1` `cap_weight=1`) | `img_weight`, `cap_weight` |
| image size for the GAN | not given | none | 64 x 64 thumbnails (`thumbs=thumbs/64` `recon_size=0`: the stored side) | `thumbs`, `recon_size` |
| G, D1, D2 layouts | DCGAN's G and D; D2 reads [x'; x] | none | DCGAN at 64 x 64, D2 on the channel stack (`gen_width=64` `disc_width=64`) | `gen_width`, `disc_width` |
| GAN losses | log forms of Eqs. 11-13 | none | BCE on logits; G wants D2 to call (x', x) matched (see above) | - |
| GAN optimiser and schedule | not given | none | Adam 2e-4, beta1 0.5 (DCGAN), simultaneous updates (`disc_lr=2e-4` `disc_beta1=0.5`) | `disc_lr`, `disc_beta1` |
| caption decoder input | [l_mo; l_se; l_sp] conditions an RNN (how not said) | none | tanh(Linear(code)) as every layer's initial state, a learned start vector, teacher forcing | - |
| caption loss reduction | sum over words (Eq. 14) | none | sum per caption, mean over captions (`cap_per_token=false`) | `cap_per_token` |
| gradient clipping | not stated | none | norm 2, VSE++'s code (`grad_clip=2`) | `grad_clip` |
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lighthead.heads.base import HEADS, DataInfo, RetrievalConfig, RetrievalHead, source
from lighthead.heads.losses import in_batch_positives, triplet_loss
from lighthead.heads.optim import step_lr
from lighthead.heads.rnn import FP32GRU
from lighthead.heads.text_encoders import GRUTextEncoder

LOSS_TERMS = ("modal", "semantic", "specific", "img_re", "cap_re")


@dataclass
class MFSRConfig(RetrievalConfig):
    """mFSR head (Zhang & Wu, Pattern Recognition 2021); defaults are the paper's values."""

    # feature set of the global image vectors (ResNet-152 pooled)
    image: str = source("global", default="global/resnet152")
    # feature set of the thumbnails to reconstruct ("" without img_re)
    thumbs: str = source("thumbs", default="thumbs/64")
    text: str = source("words", default="words/vocab")  # feature set of the caption word ids
    word_dim: int = 300  # word embedding width (Sec. 3.5)
    embed_dim: int = 3072  # d: width of v, l and of the GRU hidden states (Sec. 3.5)
    gru_layers: int = 4  # stacked GRU layers of the encoder and of the decoder (Sec. 3.5)
    part_dim: int | None = None  # P: width of each separated part; None = d // 3
    mlp_layers: int = 1  # layers of MLP_v / MLP_l (the paper's is one fully connected layer)
    separation: bool = True  # the feature separation module; False = VSE++ (semantic = whole vector)
    modal: bool = True  # modal loss, Eq. 7
    semantic: bool = True  # semantic triplet loss, Eqs. 8-9
    specific: bool = True  # specific loss, Eq. 10
    img_re: bool = True  # image reconstruction (GAN), Eqs. 11-13
    cap_re: bool = True  # caption reconstruction, Eq. 14
    modal_weight: float = 1.0  # weight of the modal loss (Eq. 6 sums the terms unweighted)
    specific_weight: float = 1.0  # weight of the specific loss
    img_weight: float = 1.0  # weight of the generator's loss
    cap_weight: float = 1.0  # weight of the caption loss
    cap_per_token: bool = False  # average the caption loss over words (False: Eq. 14's sum per caption)
    recon_size: int = 0  # side of the reconstructed images (0 = the stored thumbnails'; smaller = them average-pooled)
    gen_width: int = 64  # DCGAN generator base width (ngf)
    disc_width: int = 64  # DCGAN discriminator base width (ndf)
    margin: float = 0.2  # triplet margin alpha (Eq. 9)
    max_violation: bool = True  # hardest negative (Eq. 8); False sums over negatives
    # True: captions of one image in a batch are never each other's negatives (Eq. 8: every other pair is)
    same_image_positive: bool = False
    lr: float = 2e-4  # Adam learning rate of encoders, separation, generator and decoder
    lr_decay_epochs: int = 15  # x0.1 every this many epochs (0 = never)
    epochs: int = 30  # training epochs
    batch_size: int = 24  # pairs per batch (the paper's, set by its GPU memory)
    disc_lr: float = 2e-4  # Adam learning rate of D1/D2 (DCGAN's)
    disc_beta1: float = 0.5  # Adam beta1 of D1/D2 (DCGAN's)
    grad_clip: float = 2.0  # gradient-norm clipping per optimiser (VSE++ practice; 0 = off)

    DATASET_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        # CPU-sized for the demo store, whose global features are the (random) ResNet-18's. The GAN
        # dominates a step (a generator and seven discriminator passes per batch), so the demo
        # reconstructs 32x32 images (a quarter of the 64x64 pixels) with a narrower GRU: a step
        # takes a third of the CPU time of 64x64 and d=384, and 6 epochs reach a higher rsum.
        "demo": {
            "image": "global/resnet18",
            "embed_dim": 192,
            "gru_layers": 1,
            "recon_size": 32,
            "gen_width": 16,
            "disc_width": 16,
            "batch_size": 32,
            "lr": 1e-3,
            "max_violation": False,
            "epochs": 6,
            "same_image_positive": True,
        },
    }

    def __post_init__(self) -> None:
        if self.part_dim is None:
            self.part_dim = self.embed_dim // 3
        for name in (
            "word_dim",
            "embed_dim",
            "gru_layers",
            "part_dim",
            "mlp_layers",
            "gen_width",
            "disc_width",
            "epochs",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"mfsr: {name} must be >= 1, got {getattr(self, name)}")
        if self.recon_size < 0:
            raise ValueError(f"mfsr: recon_size must be >= 0, got {self.recon_size}")
        if not self.image.startswith("global/") or not self.text.startswith("words/"):
            raise ValueError(f"mfsr: needs a global/... and a words/... feature set, got {self.image!r}, {self.text!r}")
        if self.img_re and not self.thumbs.startswith("thumbs/"):
            raise ValueError(f"mfsr: img_re needs a thumbs/... feature set, got {self.thumbs!r}")
        if not self.img_re:
            self.thumbs = ""  # nothing reads thumbnails, so the store need not hold them
        if not any(getattr(self, t) for t in LOSS_TERMS):
            raise ValueError(f"mfsr: at least one loss term must be on ({', '.join(LOSS_TERMS)})")
        if not self.separation and any(getattr(self, t) for t in ("modal", "specific", "img_re", "cap_re")):
            raise ValueError("mfsr: separation=false (VSE++) leaves only the semantic loss; turn the others off")
        if min(self.modal_weight, self.specific_weight, self.img_weight, self.cap_weight, self.margin) < 0:
            raise ValueError("mfsr: loss weights and margin must be >= 0")
        if self.lr <= 0 or self.disc_lr <= 0 or not 0 <= self.disc_beta1 < 1 or self.batch_size < 2:
            raise ValueError("mfsr: need lr, disc_lr > 0, 0 <= disc_beta1 < 1 and batch_size >= 2")
        if self.lr_decay_epochs < 0 or self.grad_clip < 0:
            raise ValueError("mfsr: lr_decay_epochs and grad_clip must be >= 0")

    @property
    def inputs(self) -> tuple[str, ...]:
        """Batch keys this configuration reads (thumbnails only with image reconstruction)."""
        return ("global", "word_ids", "text_len", "image_index") + (("thumb",) if self.img_re else ())

    @classmethod
    def from_name(cls, name: str = "mfsr", **overrides: Any) -> MFSRConfig:
        """Variants: "mfsr" (all terms), "mfsr-base" (no separation, semantic loss only: VSE++
        on mFSR's encoders) and the rows of Table 3: "mfsr-mo", "mfsr-sp", "mfsr-mo-sp",
        "mfsr-mo-sp-img", "mfsr-mo-sp-cap"."""
        off = {"modal": False, "specific": False, "img_re": False, "cap_re": False}
        variants = {
            "mfsr": {},
            "mfsr-base": {**off, "separation": False},
            "mfsr-mo": {**off, "modal": True},
            "mfsr-sp": {**off, "specific": True},
            "mfsr-mo-sp": {**off, "modal": True, "specific": True},
            "mfsr-mo-sp-img": {**off, "modal": True, "specific": True, "img_re": True},
            "mfsr-mo-sp-cap": {**off, "modal": True, "specific": True, "cap_re": True},
        }
        if name not in variants:
            raise KeyError(f"unknown mfsr variant {name!r}; known: {', '.join(variants)}")
        return cls(**{**variants[name], **overrides})


def mlp(n_in: int, n_out: int, layers: int) -> nn.Sequential:
    """MLP_v / MLP_l of Eq. 3: `layers` linear layers, ReLU between them."""
    mods: list[nn.Module] = []
    for _ in range(layers - 1):
        mods += [nn.Linear(n_in, n_in), nn.ReLU()]
    mods.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*mods)


# ---- building blocks: the DCGAN generator and discriminators of the image reconstruction, the GRU
# caption decoder, and the loss terms (Eqs. 7, 10, 14, and the BCE form of Eqs. 11-13). Letters: B
# batch, P width of one separated part, S thumbnail side, L caption length, V vocabulary.


def _stages(size: int) -> int:
    """Stride-2 stages between a 4x4 map and a size x size image (DCGAN layout)."""
    n = int(round(math.log2(size))) - 2
    if size < 8 or 2 ** (n + 2) != size:
        raise ValueError(f"thumbnail side must be a power of two >= 8, got {size}")
    return n


class Generator(nn.Module):
    """DCGAN generator (Radford et al. 2016): code (B, Z) -> image (B, 3, S, S) in [-1, 1].

    A 4x4 transposed convolution from the code, then stride-2 transposed convolutions that
    halve the channels and double the side, BatchNorm + ReLU between, tanh at the end.
    """

    def __init__(self, code_dim: int, size: int = 64, width: int = 64):
        super().__init__()
        n = _stages(size)
        ch = width * 2 ** (n - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(code_dim, ch, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ch),
            nn.ReLU(True),  # (B, ch, 4, 4)
        ]
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.net(code[:, :, None, None])  # (B, Z, 1, 1) -> (B, 3, S, S)


class Discriminator(nn.Module):
    """DCGAN discriminator: image(s) (B, C, S, S) -> one logit per sample (B,).

    D1 reads one image (C = 3, real vs generated); D2 reads a generated image stacked on the
    real one along channels (C = 6, matched vs mismatched).
    """

    def __init__(self, in_channels: int = 3, size: int = 64, width: int = 64):
        super().__init__()
        n = _stages(size)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        ch = width
        for _ in range(n - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2, True)]
            ch *= 2
        layers += [nn.Conv2d(ch, 1, 4, 1, 0, bias=False)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()  # (B, 1, 1, 1) -> (B,)


class CaptionDecoder(nn.Module):
    """GRU caption decoder conditioned on the separated text code (Eq. 5).

    The code sets the initial hidden state of every layer; step t reads the embedding of word
    t-1 (a learned start vector at t = 0) and predicts word t (teacher forcing).
    """

    def __init__(self, embedding: nn.Embedding, code_dim: int, hidden: int, layers: int):
        super().__init__()
        self.embedding = embedding  # W_e, shared with the text encoder (Eq. 5 reuses it)
        self.layers = layers
        self.init = nn.Linear(code_dim, hidden)
        self.start = nn.Parameter(torch.zeros(embedding.embedding_dim))
        self.gru = FP32GRU(embedding.embedding_dim, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, embedding.num_embeddings)  # FC_2

    def forward(self, code: torch.Tensor, word_ids: torch.Tensor) -> torch.Tensor:
        """code (B, Z), word_ids (B, L) -> logits (B, L, V) of word t given words < t."""
        b = word_ids.shape[0]
        prev = self.embedding(word_ids[:, :-1])  # (B, L-1, E)
        inputs = torch.cat([self.start.expand(b, 1, -1), prev], dim=1)  # (B, L, E)
        h0 = torch.tanh(self.init(code)).unsqueeze(0).expand(self.layers, -1, -1).contiguous()  # (layers, B, H)
        out, _ = self.gru(inputs, h0)  # (B, L, H)
        return self.out(out)  # (B, L, V)


def caption_loss(
    logits: torch.Tensor, word_ids: torch.Tensor, lengths: torch.Tensor, per_token: bool = False
) -> torch.Tensor:
    """Eq. 14: -sum_t log p(w_t | w_<t) over each caption's real words, averaged over captions.

    logits (B, L, V), word_ids (B, L), lengths (B,). `per_token` averages over words instead.
    """
    mask = torch.arange(word_ids.shape[1], device=word_ids.device)[None, :] < lengths[:, None]  # (B, L)
    nll = F.cross_entropy(logits.transpose(1, 2), word_ids, reduction="none")  # (B, L)
    nll = (nll * mask).sum()
    return nll / mask.sum().clamp(min=1) if per_token else nll / word_ids.shape[0]


def modal_loss(v_mo: torch.Tensor, l_mo: torch.Tensor) -> torch.Tensor:
    """Eq. 7: each modal part close to its modality's batch mean, the two means pushed apart.

    mean_i (||v_i - v_bar|| + ||l_i - l_bar||) + exp(-||v_bar - l_bar||); v_mo, l_mo (B, P).
    """
    v_bar, l_bar = v_mo.mean(dim=0), l_mo.mean(dim=0)  # (P,)
    spread = (v_mo - v_bar).norm(dim=1) + (l_mo - l_bar).norm(dim=1)  # (B,)
    return spread.mean() + torch.exp(-(v_bar - l_bar).norm())


def specific_loss(v_se: torch.Tensor, v_sp: torch.Tensor, l_se: torch.Tensor, l_sp: torch.Tensor) -> torch.Tensor:
    """Eq. 10: mean_i exp(v_sp_i . v_se_i) + exp(l_sp_i . l_se_i); all (B, P)."""
    return (torch.exp((v_sp * v_se).sum(dim=1)) + torch.exp((l_sp * l_se).sum(dim=1))).mean()


def bce(logit: torch.Tensor, target: float, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Mean binary cross-entropy of logits against a constant target, over `rows` if given."""
    if rows is not None:
        logit = logit[rows]
        if logit.numel() == 0:
            return logit.sum()  # no valid row: a zero that keeps the graph
    return F.binary_cross_entropy_with_logits(logit, torch.full_like(logit, target))


def to_image(thumb: torch.Tensor) -> torch.Tensor:
    """uint8 thumbnail (B, 3, S, S) in [0, 255] -> float in [-1, 1], the generator's range."""
    return thumb.float() / 127.5 - 1.0


@HEADS.register("mfsr")
class MFSR(RetrievalHead):
    """Feature separation and reconstruction head (Zhang & Wu, 2021). See the module docstring.

    `vocab_size`, `global_dim` and `thumb_size` (side of the square thumbnails) come from the
    data: the store's vocabulary, feature width and thumbnail size. Images are reconstructed at
    `cfg.recon_size` (default: `thumb_size`), a power of two >= 8 that divides `thumb_size`.
    """

    inputs = ("global", "thumb", "word_ids", "text_len", "image_index")
    config_class = MFSRConfig

    def __init__(
        self, cfg: MFSRConfig | None = None, vocab_size: int = 0, global_dim: int = 2048, thumb_size: int = 64
    ):
        super().__init__()
        self.cfg = cfg = cfg or MFSRConfig()
        self.thumb_size = thumb_size
        self.recon_size = cfg.recon_size or thumb_size
        if cfg.img_re and thumb_size % self.recon_size:
            raise ValueError(f"mfsr: recon_size {self.recon_size} does not divide the thumbnails' side {thumb_size}")
        self.inputs = cfg.inputs
        d, p = cfg.embed_dim, int(cfg.part_dim)
        # multi-modal feature extraction (Eqs. 1-2)
        self.image_fc = nn.Linear(global_dim, d)  # FC_1
        self.text = GRUTextEncoder(vocab_size, cfg.word_dim, d, cfg.gru_layers)  # W_e + GRU
        # feature separation (Eq. 3)
        if cfg.separation:
            self.sep_v = mlp(d, 3 * p, cfg.mlp_layers)  # MLP_v
            self.sep_l = mlp(d, 3 * p, cfg.mlp_layers)  # MLP_l
        # reconstruction (Eqs. 4-5), built only when switched on, so no parameter lacks a gradient
        if cfg.img_re:
            side = self.recon_size
            self.generator = Generator(3 * p, side, cfg.gen_width)
            self.d1 = Discriminator(3, side, cfg.disc_width)  # real vs generated
            self.d2 = Discriminator(6, side, cfg.disc_width)  # [generated; real]: matched?
        if cfg.cap_re:
            self.decoder = CaptionDecoder(self.text.embed, 3 * p, d, cfg.gru_layers)

    @classmethod
    def from_config(cls, cfg: MFSRConfig, data: DataInfo) -> MFSR:
        """The vocabulary, the global vectors' width and the thumbnails' side."""
        return cls(
            cfg, vocab_size=data.vocab_size or 0, global_dim=data.global_dim or 2048, thumb_size=data.thumb_size or 64
        )

    # ---- encoders -------------------------------------------------------------------------
    def split(self, x: torch.Tensor, sep: str) -> dict[str, torch.Tensor]:
        """Eq. 3: (B, d) -> {"mo", "se", "sp"} each (B, P), L2-normalised part by part."""
        if not self.cfg.separation:
            return {"se": F.normalize(x, dim=-1)}
        parts = getattr(self, sep)(x).view(x.shape[0], 3, int(self.cfg.part_dim))  # (B, 3, P)
        mo, se, sp = F.normalize(parts, dim=-1).unbind(dim=1)  # 3 x (B, P)
        return {"mo": mo, "se": se, "sp": sp}

    def image_parts(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Eqs. 1, 3: global (B, 2048) -> v (B, d) -> separated parts."""
        return self.split(self.image_fc(batch["global"].to(self.image_fc.weight.dtype)), "sep_v")

    def text_parts(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Eqs. 2-3: word_ids (B, L), text_len (B,) -> l = last real GRU step (B, d) -> parts."""
        _, l = self.text(batch["word_ids"], batch["text_len"])
        return self.split(l, "sep_l")

    def encode_image(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{"se": (B, P)}: the image's semantic part, unit norm (retrieval uses only it)."""
        return {"se": self.image_parts(batch)["se"]}

    def encode_text(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{"se": (B, P)}: the caption's semantic part, unit norm."""
        return {"se": self.text_parts(batch)["se"]}

    def score(self, img: dict[str, torch.Tensor], txt: dict[str, torch.Tensor]) -> torch.Tensor:
        """<v_se, l_se> for every image x caption -> (n_images, n_texts)."""
        return img["se"] @ txt["se"].to(img["se"].device).t()

    def pair_bytes(self, img: dict[str, torch.Tensor], txt: dict[str, torch.Tensor]) -> int:
        return 8  # one dot product per pair

    # ---- training -------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Eq. 6 with the switched-on terms; "loss" also carries D1/D2's losses (module doc)."""
        cfg = self.cfg
        v, l = self.image_parts(batch), self.text_parts(batch)
        parts: dict[str, torch.Tensor] = {}
        if cfg.semantic:
            positives = in_batch_positives(batch, cfg.same_image_positive)  # None: k in B \ j (Eq. 8)
            scores = v["se"] @ l["se"].t()  # (B, B): row b's caption matches image b
            # Eq. 8 averages over the batch; the shared loss sums (as VSE++'s code does)
            parts["semantic"] = triplet_loss(scores, positives, cfg.margin, cfg.max_violation) / scores.shape[0]
        if cfg.modal:
            parts["modal"] = cfg.modal_weight * modal_loss(v["mo"], l["mo"])
        if cfg.specific:
            parts["specific"] = cfg.specific_weight * specific_loss(v["se"], v["sp"], l["se"], l["sp"])
        if cfg.img_re:
            gen, disc = self.gan_losses(torch.cat([v["mo"], v["se"], v["sp"]], dim=1), batch)  # code (B, 3P)
            parts["generator"] = cfg.img_weight * gen
            parts["discriminator"] = disc  # reaches D1/D2 only
        if cfg.cap_re:
            code = torch.cat([l["mo"], l["se"], l["sp"]], dim=1)  # (B, 3P)
            logits = self.decoder(code, batch["word_ids"])  # (B, L, V)
            cap = caption_loss(logits, batch["word_ids"], batch["text_len"].to(logits.device), cfg.cap_per_token)
            parts["caption"] = cfg.cap_weight * cap
        total = torch.stack(list(parts.values())).sum()
        return {"loss": total, **{k: t.detach() for k, t in parts.items()}}

    def gan_losses(self, code: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Eqs. 11-13 -> (generator loss, discriminator loss); see the module docstring.

        x: real thumbnails; x' = G(code): their reconstructions; x'': the reconstruction of
        another sample of the batch (the batch rolled by one).
        """
        size = self.thumb_size
        real = to_image(batch["thumb"].to(code.device))  # (B, 3, S, S)
        if tuple(real.shape[-2:]) != (size, size):
            raise ValueError(
                f"mfsr: thumbnails are {tuple(real.shape[-2:])}, the head was built for "
                f"{size}x{size} (thumb_size from the data)"
            )
        if self.recon_size != size:
            real = F.avg_pool2d(real, size // self.recon_size)  # (B, 3, s, s), s = recon_size
        fake = self.generator(code)  # (B, 3, S, S)
        other = fake.roll(1, dims=0)  # x''
        keep = None  # rows whose x'' comes from a different image
        if batch.get("image_index") is not None:
            idx = batch["image_index"].to(fake.device)
            keep = idx != idx.roll(1, dims=0)
        # discriminators read the generated images detached: these terms reach D1/D2 only
        d_loss = (
            bce(self.d1(real), 1.0)
            + bce(self.d1(fake.detach()), 0.0)
            + bce(self.d2(torch.cat([fake.detach(), real], 1)), 1.0)
            + bce(self.d2(torch.cat([other.detach(), real], 1)), 0.0, keep)
        )
        # the generator's terms run D1/D2 on detached parameters: they reach G's side only
        d1 = {k: t.detach() for k, t in self.d1.named_parameters()}
        d2 = {k: t.detach() for k, t in self.d2.named_parameters()}
        g_loss = 0.5 * (
            bce(functional_call(self.d1, d1, (fake,)), 1.0)
            + bce(functional_call(self.d2, d2, (torch.cat([fake, real], 1),)), 1.0)
            + bce(functional_call(self.d2, d2, (torch.cat([other, real], 1),)), 0.0, keep)
        )
        return g_loss, d_loss

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """D1 and D2's parameters (empty without image reconstruction)."""
        return list(self.d1.parameters()) + list(self.d2.parameters()) if self.cfg.img_re else []

    def optimizers(self) -> list[tuple[torch.optim.Optimizer, Any]]:
        """Adam for encoders, separation, G and decoder (x0.1 every `lr_decay_epochs` epochs,
        stepped once per epoch by the loop) and, with image reconstruction, a DCGAN-style Adam
        for D1 + D2. The two parameter sets are disjoint (see the module docstring)."""
        cfg = self.cfg
        disc = {id(t) for t in self.discriminator_parameters()}
        main = [t for t in self.parameters() if id(t) not in disc]
        opt = torch.optim.Adam(main, lr=cfg.lr)
        pairs: list[tuple[torch.optim.Optimizer, Any]] = [(opt, step_lr(opt, cfg.lr_decay_epochs))]
        if disc:
            d_opt = torch.optim.Adam(self.discriminator_parameters(), lr=cfg.disc_lr, betas=(cfg.disc_beta1, 0.999))
            pairs.append((d_opt, step_lr(d_opt, cfg.lr_decay_epochs)))
        return pairs
