"""ITM: coarse-to-fine grained Image-Target Matching for targeted sentiment.

Yu, Wang, Xia, Li, "Targeted Multimodal Sentiment Classification based on Coarse-to-Fine Grained
Image-Target Matching", IJCAI 2022 (seeds/000). Equation numbers below are the paper's.

Defaults are the authors' released code (NUSTM/ITM: model.py, modeling_utils.py, train.py; its
`optimization.BertAdam` is not in that repository, and is read from the first author's TomBERT,
my_bert/optimization.py, whose training loop ITM's follows line for line). `recipe=paper` gives
the paper's text instead; each row below also has its own key, which wins over the recipe.

| what | paper | released code | lighthead default | switch |
|---|---|---|---|---|
| region features | the stored features (no scaling stated: `region_scale=stored`) | each image's (100, 2048) matrix divided by its overall (Frobenius) norm (`DataProcessor.read_npz`) | as code, over the k regions read (`region_scale=matrix_norm`) | `region_scale=matrix_norm\\|stored` |
| Transformer layers | "Transformer", "CM-Transformer", activation not stated (`layer_type=transformer`) | BERT layers: GELU (erf), no dropout between the feed-forward Linears | as code (`layer_type=bert`) | `layer_type=bert\\|transformer` (ReLU, PyTorch's inner dropout) |
| relevance head | max-pool H'_V, sigmoid(W_r h + b_r), BCE (Eq. 2-3; `relevance_head=max_pool`) | Linear(d, 1) per region -> Linear(K, 2), dropout 0.3 before each; P(r) = softmax[related]; 2-class CE | as code (`relevance_head=per_region` `relevance_dropout=0.3`; demo: no dropout) | `relevance_head=per_region\\|max_pool`, `relevance_dropout` |
| alignment D | mean over heads of the attention weights (`alignment=mean_probs`) | softmax of the head-averaged scaled scores | as code (`alignment=mean_scores`) | `alignment=mean_scores\\|mean_probs` |
| alignment target A (Fig. 3b) | IoU kept when "larger than 0.5" (`iou_inclusive=false`), renormalised | IoU kept when >= 0.5 (`boxes_utils.get_attention_label`), renormalised | as code (`iou_threshold=0.5` `iou_inclusive=true`) | `iou_inclusive=true\\|false`, `iou_threshold` |
| fine layer's query | H_T^0, the first token (Eq. 5; `fine_query=first`) | RoBERTa's pooler output tanh(W h_<s> + b) | tanh(Linear(first token)), trained (`fine_query=pooler`) | `fine_query=pooler\\|first` |
| classifier | softmax(W_T H_0 + b) (Eq. 8; `classifier=linear`) | BertPooler tanh(Linear(H_0)), dropout 0.1, Linear | as code (`classifier=pooler` `dropout=0.1`) | `classifier=pooler\\|linear` |
| L_ATT normaliser | 1 / C, C related samples (Eq. 6; `att_loss=related`) | KLDivLoss batchmean: 1 / auxiliary batch size | as code (`att_loss=batch`) | `att_loss=batch\\|related` |
| optimiser | AdamW (`optimizer=adamw`) | BertAdam: no bias correction, eps 1e-6, each tensor's gradient clipped to norm 1, decay 0.01 except biases and LayerNorms | as code (`optimizer=bertadam` `weight_decay=0.01`) | `optimizer=bertadam\\|adamw` |
| learning-rate schedule | not stated (`schedule=constant`) | 10% linear warm-up, then 1 - x; set by the loop and applied again by BertAdam: rate = lr * f(x)^2, x = step / T, T = int(max(main, aux samples) / 32 * 9) | as code (`schedule=warmup_linear_twice` `warmup=0.1`) | `schedule=warmup_linear_twice\\|warmup_linear\\|constant`, `warmup` |
| epochs | 10 (`epochs=10`) | 9 | `epochs=9` (demo: 25) | `epochs=N` |
| initialisation | not stated (`init=torch`) | BERT's: Linear weights N(0, 0.02), biases 0 | as code (`init=bert`; demo: torch) | `init=bert\\|torch` |
| rates, batch, lambdas | 1e-5 / 1e-6, 32, 1 / 0.5 | the same | the same (`lr=1e-5` `aux_lr=1e-6` `batch_size=32` `lambda_re=1` `lambda_att=0.5`; demo: 3e-4 / 3e-4) | `lr`, `aux_lr`, `batch_size`, `lambda_re`, `lambda_att` |
| LayerNorm after the input projections | none | none | none (`input_norm=false`; demo: on) | `input_norm=true` |
| text encoder | RoBERTa-base, fine-tuned | fine-tuned | frozen, cached tokens + a trained Linear | - |
| best epoch | not stated | dev accuracy on the whole dev split, the later epoch on ties | dev accuracy on the whole dev split, the earlier epoch on ties | - |
| alignment metrics | KL, R@1/3/5 of A's top box among D's top k | dev log: D's top box with IoU >= 0.5 | the paper's | - |

Other differences, on purpose: RoBERTa is frozen and its token features of the contextualised
target input (the sentence with `$T$`, paired with the target) are cached in the store; a
trainable Linear maps them to the model width. Its rates (1e-5 main, 1e-6 auxiliary) were for
fine-tuning; with a frozen encoder larger rates train better: sweep `lr` and `aux_lr`. The
pooler of `fine_query=pooler` starts from BERT's initialisation, not RoBERTa's trained pooler.
Ablations (Table 6) work with either recipe: `relevance=false` / `attention=false` drop the RE /
ATT supervision; `coarse=false` removes the coarse module (no relevance score, so no RE loss and
no filter: the fine module reads H_V); `fine=false` removes the fine module (no alignment, so
no ATT loss): the image enters the fusion as the mean of the (filtered) regions instead.
`input_norm=true` puts a LayerNorm after each input projection (LXMERT / ViLBERT style): region
and token features from different extractors can differ in scale by an order of magnitude.

Layers are the shared post-norm `TransformerBlock` / `CrossAttentionBlock` (torch
MultiheadAttention). Shapes: B batch, K regions, L tokens, D = d, H heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import box_iou

from lighthead.heads.attention import CrossAttentionBlock, TransformerBlock
from lighthead.heads.base import HEADS, DataInfo, SentimentConfig, SentimentHead, source
from lighthead.heads.build import fill_recipe
from lighthead.heads.optim import BertAdam, attach_schedule, schedule_factor, schedule_total

# The two readings; a key left unset (None) takes its recipe's value.
RECIPES: dict[str, dict[str, Any]] = {
    "code": {
        "layer_type": "bert",
        "relevance_head": "per_region",
        "alignment": "mean_scores",
        "fine_query": "pooler",
        "classifier": "pooler",
        "att_loss": "batch",
        "optimizer": "bertadam",
        "schedule": "warmup_linear_twice",
        "init": "bert",
        "epochs": 9,
        "region_scale": "matrix_norm",
        "iou_inclusive": True,
    },
    "paper": {
        "layer_type": "transformer",
        "relevance_head": "max_pool",
        "alignment": "mean_probs",
        "fine_query": "first",
        "classifier": "linear",
        "att_loss": "related",
        "optimizer": "adamw",
        "schedule": "constant",
        "init": "torch",
        "epochs": 10,
        "region_scale": "stored",
        "iou_inclusive": False,
    },
}
CHOICES = {
    "layer_type": ("bert", "transformer"),
    "relevance_head": ("per_region", "max_pool"),
    "alignment": ("mean_scores", "mean_probs"),
    "fine_query": ("pooler", "first"),
    "classifier": ("pooler", "linear"),
    "att_loss": ("batch", "related"),
    "optimizer": ("bertadam", "adamw"),
    "schedule": ("warmup_linear_twice", "warmup_linear", "constant"),
    "init": ("bert", "torch"),
    "region_scale": ("matrix_norm", "stored"),
    "iou_inclusive": (True, False),
}


@dataclass
class ItmConfig(SentimentConfig):
    """ITM hyper-parameters: the released code's by default, `recipe=paper` for the paper's."""

    regions: str = source("regions", default="regions/butd-r101-vg-100")  # feature set of the region features and boxes
    # feature set of the frozen (sentence with $T$, target) token features
    text: str = source("tokens", default="text/roberta-base")
    recipe: str = "code"  # "code": the authors' released code; "paper": the paper's text (keys left unset)
    layer_type: str | None = None  # "bert" (GELU, no inner FFN dropout) or "transformer" (ReLU)
    relevance_head: str | None = None  # "per_region" (Linear(d,1) -> Linear(k,2)) or "max_pool" (Eq. 2)
    alignment: str | None = None  # D: "mean_scores" (softmax of head-mean scores) or "mean_probs"
    fine_query: str | None = None  # query of the fine layer: "pooler" (tanh Linear of H_T^0) or "first"
    classifier: str | None = None  # "pooler" (tanh Linear, dropout, Linear) or "linear" (Eq. 8)
    att_loss: str | None = None  # L_ATT divided by the aux batch size ("batch") or the related rows
    optimizer: str | None = None  # "bertadam" or "adamw"
    schedule: str | None = None  # "warmup_linear_twice", "warmup_linear" or "constant"
    init: str | None = None  # "bert" (N(0, 0.02) weights, zero biases) or "torch" (PyTorch's defaults)
    epochs: int | None = None  # passes over the main (sentiment) training set (code 9, paper 10)
    # "matrix_norm": each image's (K, region_dim) region matrix divided by its Frobenius norm before W_R
    # (the release's read_npz); "stored": the features as stored (the paper says nothing)
    region_scale: str | None = None
    warmup: float = 0.1  # share of the schedule's steps spent warming up
    d: int = 768  # model width (RoBERTa-base hidden size)
    heads: int = 12  # attention heads of every Transformer layer
    ff: int = 3072  # feed-forward width of every Transformer layer
    dropout: float = 0.1  # dropout inside the Transformer layers and before the pooler classifier
    relevance_dropout: float = 0.3  # dropout before each Linear of the per-region relevance head
    k: int = 100  # regions used: the first k of the store's (confidence order)
    lambda_re: float = 1.0  # lambda_1 of Eq. 10: relevance (RE) loss weight
    lambda_att: float = 0.5  # lambda_2 of Eq. 10: attention (ATT) loss weight
    iou_threshold: float = 0.5  # IoU below which a region gets no alignment mass (Fig. 3b)
    iou_inclusive: bool | None = None  # keep IoU == threshold too: code True (boxes_utils: >= 0.5), paper False (> 0.5)
    relevance: bool = True  # RE supervision, Eq. 3 (Table 6 "w/o RE")
    attention: bool = True  # ATT supervision, Eq. 6 (Table 6 "w/o ATT")
    coarse: bool = True  # coarse-grained matching module, Eq. 1-4 (Table 6 "w/o Coarse")
    fine: bool = True  # fine-grained matching module, Eq. 5 (Table 6 "w/o Fine")
    lr: float = 1e-5  # learning rate of the main (sentiment) batches
    aux_lr: float = 1e-6  # learning rate of the auxiliary (ITM annotation) batches
    weight_decay: float = 0.01  # decoupled weight decay (BertAdam: not on biases and LayerNorms)
    batch_size: int = 32  # samples per batch, main and auxiliary
    aux_every: int = 1  # one auxiliary batch before every `aux_every` main batches (0: none)
    grad_clip: float = 0.0  # global gradient-norm clipping by the loop (0 = off; BertAdam clips per tensor)
    aux_store: str = ""  # store holding the ITM annotations ("" = the training store's own records)
    input_norm: bool = False  # LayerNorm on the projected regions and tokens (not in the paper or code)

    RECORD_KIND: ClassVar[str] = "target"  # trains on (sentence, target, image) records
    DATASET_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        # the bundled small encoder; the shapes' own boxes (the random-weight detector's ROIs carry too
        # little); the input LayerNorm evens out MiniLM tokens (~0.3) and random-detector regions (~0.03).
        # A 64-wide model on a few hundred steps: BERT's N(0, 0.02) init and the dropout on a handful of
        # region scores keep it at the majority class; BertAdam's missing bias correction makes its early
        # steps 2-6x AdamW's, hence the lower rates
        "demo": {
            "text": "text/all-minilm-l6-v2",
            "regions": "regions/butd-r101-vg-given",
            "d": 64,
            "heads": 4,
            "ff": 128,
            "epochs": 25,
            "batch_size": 32,
            "lr": 3e-4,
            "aux_lr": 3e-4,
            "input_norm": True,
            "init": "torch",
            "relevance_dropout": 0.0,
        },
    }

    def __post_init__(self) -> None:
        fill_recipe(self, RECIPES, "itm", CHOICES)
        for name in ("d", "heads", "ff", "k", "batch_size", "epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"itm: {name} must be >= 1, got {getattr(self, name)}")
        if self.d % self.heads:
            raise ValueError(f"itm: d={self.d} must be divisible by heads={self.heads}")
        for name in ("dropout", "relevance_dropout", "iou_threshold", "warmup"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"itm: {name} must be in [0, 1), got {getattr(self, name)}")
        if min(self.lambda_re, self.lambda_att, self.weight_decay) < 0 or min(self.lr, self.aux_lr) <= 0:
            raise ValueError("itm: need lambda_re, lambda_att, weight_decay >= 0 and lr, aux_lr > 0")
        if self.aux_every < 0 or self.grad_clip < 0:
            raise ValueError("itm: aux_every and grad_clip must be >= 0")
        if not self.regions.startswith("regions/") or not self.text.startswith("text/"):
            raise ValueError(
                f"itm: needs a regions/... and a text/... feature set, got {self.regions!r}, {self.text!r}"
            )

    @property
    def num_regions(self) -> int:
        """Regions the task reads per image."""
        return self.k

    @property
    def use_relevance_loss(self) -> bool:
        """RE supervision needs the relevance score of the coarse module."""
        return self.relevance and self.coarse and self.lambda_re > 0

    @property
    def use_attention_loss(self) -> bool:
        """ATT supervision needs the alignment distribution of the fine module."""
        return self.attention and self.fine and self.lambda_att > 0


# ---- building blocks: the IoU alignment target of the paper's Fig. 3b, the released code's
# head-averaged attention scores, and BERT's initialisation.


def alignment_target(
    boxes: torch.Tensor, target_box: torch.Tensor, threshold: float = 0.5, inclusive: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's Fig. 3b: IoU of every region with the annotated box, zero below `threshold`
    (and at it unless `inclusive`: the release's boxes_utils keeps IoU >= 0.5, the paper's text
    "larger than 0.5"), renormalised to sum to 1.

    boxes (B, K, 4), target_box (B, 4), both x1 y1 x2 y2 -> A (B, K) and nonzero (B,) bool.
    A row with no region kept stays all-zero and is flagged False.
    """
    b, k = boxes.shape[:2]
    iou = box_iou(boxes.reshape(b * k, 4), target_box)  # (B * K, B): every region vs every target box
    iou = torch.diagonal(iou.view(b, k, b), dim1=0, dim2=2).T  # (B, K): each region vs its own box
    keep = iou >= threshold if inclusive else iou > threshold
    kept = torch.where(keep, iou, torch.zeros_like(iou))
    total = kept.sum(-1, keepdim=True)  # (B, 1)
    nonzero = total.squeeze(-1) > 0
    return kept / total.clamp_min(1e-12), nonzero


def head_mean_scores(
    mha: nn.MultiheadAttention, q: torch.Tensor, kv: torch.Tensor, kv_mask: torch.Tensor
) -> torch.Tensor:
    """Scaled dot-product scores q_h . k_h / sqrt(d_h) averaged over the heads, -inf on padded
    keys: q (B, Nq, D), kv (B, Nk, D), kv_mask (B, Nk) -> (B, Nq, Nk). The released code's
    `attn_map`, whose softmax is its alignment distribution."""
    (b, nq, d), nk, h = q.shape, kv.shape[1], mha.num_heads
    wq, wk, _ = mha.in_proj_weight.split(d)
    bq, bk, _ = mha.in_proj_bias.split(d)
    qh = F.linear(q, wq, bq).view(b, nq, h, d // h).transpose(1, 2)  # (B, H, Nq, D/H)
    kh = F.linear(kv, wk, bk).view(b, nk, h, d // h).transpose(1, 2)  # (B, H, Nk, D/H)
    scores = (qh @ kh.transpose(-1, -2)).mean(1) / math.sqrt(d // h)  # (B, Nq, Nk)
    return scores.masked_fill(~kv_mask[:, None, :], float("-inf"))


def bert_init(module: nn.Module) -> None:
    """BERT's initialisation (the released `init_weight`): Linear weights N(0, 0.02), biases 0,
    LayerNorm 1 and 0; the attention's packed q/k/v projection likewise."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
        nn.init.normal_(module.in_proj_weight, 0.0, 0.02)
        nn.init.zeros_(module.in_proj_bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


@HEADS.register("itm")
class Itm(SentimentHead):
    """Regions + boxes + cached RoBERTa tokens of (sentence with $T$, target) -> 3 logits,
    a relevance probability and an alignment distribution over the regions.

    Batches are "main" (sentiment loss) or "aux" (relevance + alignment losses), told apart
    by `batch["phase"]` ("main" when absent); each phase has its own optimiser, as in the paper.
    `train_samples` / `aux_train_samples` (from the task's data_info) size the schedule.
    """

    inputs: ClassVar[tuple[str, ...]] = (
        "regions",
        "boxes",
        "tokens",
        "text_mask",
        "label",
        "relevance",
        "target_box",
        "has_box",
    )
    config_class: ClassVar[type] = ItmConfig

    def __init__(
        self,
        cfg: ItmConfig | None = None,
        region_dim: int = 2048,
        token_dim: int = 768,
        train_samples: int = 0,
        aux_train_samples: int = 0,
    ):
        super().__init__()
        self.cfg = cfg = cfg or ItmConfig()
        self.train_samples, self.aux_train_samples = int(train_samples), int(aux_train_samples)
        d = cfg.d
        bert = cfg.layer_type == "bert"
        act = "gelu" if bert else "relu"

        def self_layer() -> TransformerBlock:
            block = TransformerBlock(d, cfg.heads, cfg.ff, cfg.dropout, activation=act)
            if bert:  # BERT drops out after the feed-forward's output only
                block.layer.dropout = nn.Identity()
            return block

        def cross_layer() -> CrossAttentionBlock:
            block = CrossAttentionBlock(d, cfg.heads, cfg.ff, cfg.dropout, activation=act)
            if bert:
                block.ff[2] = nn.Identity()
            return block

        self.region_proj = nn.Linear(region_dim, d)  # W_R
        self.token_proj = nn.Linear(token_dim, d)  # adapter on the frozen RoBERTa output
        self.region_norm = nn.LayerNorm(d) if cfg.input_norm else nn.Identity()
        self.token_norm = nn.LayerNorm(d) if cfg.input_norm else nn.Identity()
        self.image_layer = self_layer()  # H_V = Transformer(W_R^T R)
        if cfg.coarse:
            self.coarse_layer = cross_layer()  # CM-Transformer of Eq. 1
            if cfg.relevance_head == "per_region":
                self.relevance_drop = nn.Dropout(cfg.relevance_dropout)
                self.relevance_gather = nn.Linear(d, 1)  # one score per region
                self.relevance_out = nn.Linear(cfg.k, 2)  # over the k region scores: unrelated, related
            else:
                self.relevance_out = nn.Linear(d, 1)  # W_r, b_r (Eq. 2)
        if cfg.fine:
            if cfg.fine_query == "pooler":
                self.query_pooler = nn.Linear(d, d)  # stands for RoBERTa's pooler (tanh)
            self.fine_layer = cross_layer()  # CM-Transformer of Eq. 5
            if cfg.alignment == "mean_probs":  # the returned weights are D: no dropout on them
                self.fine_layer.attn.dropout = 0.0
        self.fusion_layer = self_layer()  # MM-Transformer (Eq. 7)
        if cfg.classifier == "pooler":
            self.pooler = nn.Linear(d, d)  # BertPooler: tanh(W H_0 + b)
            self.pooler_drop = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(d, 3)  # W_T, b (Eq. 8)
        if cfg.init == "bert":
            self.apply(bert_init)

    @classmethod
    def from_config(cls, cfg: ItmConfig, data: DataInfo) -> Itm:
        """The region and token widths, and the training-set sizes the schedule spans."""
        return cls(
            cfg,
            region_dim=data.region_dim or 2048,
            token_dim=data.token_dim or 768,
            train_samples=data.train_samples or 0,
            aux_train_samples=data.aux_train_samples or 0,
        )

    def explain(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Everything the head computes: "logits" (B, 3), "relevance" P(r) (B,) and its logit
        "relevance_logit" (P(r) = 1 without the coarse module), "align" D (B, K) (uniform over
        the real regions without the fine module)."""
        cfg = self.cfg
        regions = batch["regions"][:, : cfg.k].float()  # (B, K, region_dim)
        mask = batch["text_mask"].bool()  # (B, L)
        rmask = batch.get("region_mask")  # (B, K) True on real regions (padded variable-K sets)
        if rmask is None:
            rmask = torch.ones(regions.shape[:2], dtype=torch.bool, device=regions.device)
        rmask = rmask[:, : cfg.k].bool()
        if cfg.region_scale == "matrix_norm":  # the real regions read, as one matrix per image
            regions = regions * rmask[..., None]
            regions = regions / regions.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]  # (B, K, region_dim)
        h_t = self.token_norm(self.token_proj(batch["tokens"].float()))  # (B, L, D)
        h_v = self.image_layer(self.region_norm(self.region_proj(regions)), rmask)  # (B, K, D)
        b, k = h_v.shape[:2]
        if cfg.coarse:
            h_v1, _ = self.coarse_layer(h_v, h_t, mask)  # H'_V (B, K, D), Eq. 1
            rel_logit = self.relevance_logit(h_v1, rmask)  # (B,)
            p_r = torch.sigmoid(rel_logit)  # (B,), Eq. 2 (= softmax over the two classes)
            h_v2 = p_r[:, None, None] * h_v1  # H''_V (B, K, D), Eq. 4
        else:
            p_r = torch.ones(b, dtype=h_v.dtype, device=h_v.device)
            rel_logit = torch.full_like(p_r, float("inf"))  # P(r) = 1: nothing is filtered
            h_v2 = h_v
        if cfg.fine:
            query = h_t[:, :1]  # (B, 1, D): H_T^0
            if cfg.fine_query == "pooler":
                query = torch.tanh(self.query_pooler(query))
            h_t1, probs = self.fine_layer(query, h_v2, rmask)  # H'_T (B, 1, D), Eq. 5
            if cfg.alignment == "mean_scores":
                align = head_mean_scores(self.fine_layer.attn, query, h_v2, rmask).softmax(-1)[:, 0]  # (B, K)
            else:
                align = probs[:, 0]  # (B, K): the heads' softmaxes averaged
        else:
            align = rmask.to(h_v.dtype) / rmask.sum(1, keepdim=True).clamp(min=1)  # (B, K), uniform on real regions
            h_t1 = (align[..., None] * h_v2).sum(1, keepdim=True)  # (B, 1, D)
        h_m = torch.cat([h_t1, h_t], 1)  # (B, 1 + L, D), H_M = H'_T (+) H_T
        real = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=mask.device), mask], 1)  # (B, 1 + L)
        first = self.fusion_layer(h_m, real)[:, 0]  # (B, D), Eq. 7
        if cfg.classifier == "pooler":
            first = self.pooler_drop(torch.tanh(self.pooler(first)))
        logits = self.classifier(first)  # (B, 3), Eq. 8 before the softmax
        return {"logits": logits, "relevance": p_r, "relevance_logit": rel_logit, "align": align}

    def relevance_logit(self, h_v1: torch.Tensor, rmask: torch.Tensor) -> torch.Tensor:
        """log P(related) - log P(unrelated) (B,) from H'_V (B, K, D)."""
        if self.cfg.relevance_head == "max_pool":
            pooled = h_v1.masked_fill(~rmask[..., None], float("-inf")).max(1).values  # (B, D), real regions
            return self.relevance_out(pooled).squeeze(-1)
        per_region = self.relevance_gather(self.relevance_drop(h_v1)).squeeze(-1)  # (B, K)
        per_region = per_region.masked_fill(~rmask, 0.0)
        per_region = F.pad(per_region, (0, self.cfg.k - per_region.shape[1]))  # (B, k): fewer stored regions read as 0
        two = self.relevance_out(self.relevance_drop(per_region))  # (B, 2)
        return two[:, 1] - two[:, 0]

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, 3) sentiment logits (0 negative, 1 neutral, 2 positive)."""
        return self.explain(batch)["logits"]

    def alignment_target(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Ground-truth alignment A (B, K) from the IoU with the annotated box, and which rows
        are usable (B,): related samples with a box and at least one region above the threshold."""
        boxes = batch["boxes"][:, : self.cfg.k].float()  # (B, K, 4)
        a, nonzero = alignment_target(
            boxes, batch["target_box"].float(), self.cfg.iou_threshold, self.cfg.iou_inclusive
        )
        return a, nonzero & batch["has_box"].bool()

    def aux_losses(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """L_RE (Eq. 3; two-class CE = BCE on the logit difference) over annotated samples and
        L_ATT = KL(A || D) (Eq. 6) summed over usable rows, divided by the annotated rows
        (`att_loss=batch`) or by the usable ones (`related`)."""
        zero = out["logits"].sum() * 0.0  # keeps the graph when a batch has nothing to supervise
        rel = batch["relevance"].long()
        known = rel >= 0
        if self.cfg.use_relevance_loss and known.any():
            # from the logit: stable, and allowed under autocast (binary_cross_entropy is not)
            logit = out["relevance_logit"][known].float()
            l_re = F.binary_cross_entropy_with_logits(logit, rel[known].float())
        else:
            l_re = zero
        a, usable = self.alignment_target(batch)
        if self.cfg.use_attention_loss and usable.any():
            a, d = a[usable], out["align"][usable].float()
            kl = (a * (a.clamp_min(1e-12).log() - d.clamp_min(1e-12).log())).sum()
            l_att = kl / (known.sum() if self.cfg.att_loss == "batch" else usable.sum())
        else:
            l_att = zero
        return {"re": l_re, "att": l_att}

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Main batches: L_TMSC (Eq. 9). Aux batches: lambda_1 L_RE + lambda_2 L_ATT (Eq. 10)."""
        out = self.explain(batch)
        if batch.get("phase", "main") == "aux":
            parts = self.aux_losses(out, batch)
            total = self.cfg.lambda_re * parts["re"] + self.cfg.lambda_att * parts["att"]
            return {"loss": total, "re": parts["re"].detach(), "att": parts["att"].detach()}
        ce = F.cross_entropy(out["logits"], batch["label"].long())
        return {"loss": ce, "ce": ce.detach()}

    def schedule_steps(self) -> tuple[int, int]:
        """Steps over which the (main, auxiliary) schedules run: the released code's count for
        the main optimiser; the auxiliary one steps once every `aux_every` main steps."""
        cfg = self.cfg
        if self.train_samples < 1:
            raise ValueError(
                f"itm: schedule={cfg.schedule} needs the training-set size: build the head with "
                f"train_samples (the task's data_info has it) or --set schedule=constant"
            )
        main = schedule_total(self.train_samples, self.aux_train_samples, cfg.batch_size, cfg.epochs)
        return main, max(1, math.ceil(main / max(1, cfg.aux_every)))

    def optimizers(self) -> list[tuple[torch.optim.Optimizer, Any]]:
        """[main, auxiliary] optimisers over the same parameters; `optimizer_for(batch)` says
        which one a batch steps. The schedule is applied by the optimiser, every step."""
        cfg = self.cfg
        totals = self.schedule_steps() if cfg.schedule != "constant" else (1, 1)
        out = []
        for lr, total in zip((cfg.lr, cfg.aux_lr), totals):
            if cfg.optimizer == "bertadam":
                opt = BertAdam(self._decay_groups(), lr=lr, weight_decay=cfg.weight_decay)
            else:
                opt = torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=cfg.weight_decay)
            if cfg.schedule != "constant":
                attach_schedule(opt, schedule_factor(cfg.schedule, cfg.warmup), total)
            out.append((opt, None))
        return out

    def _decay_groups(self) -> list[dict[str, Any]]:
        """BertAdam's groups: weight decay on everything but biases and LayerNorm parameters."""
        exempt = {id(p) for m in self.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
        exempt |= {id(p) for n, p in self.named_parameters() if n.endswith("bias")}
        params = list(self.parameters())
        return [
            {"params": [p for p in params if id(p) not in exempt], "weight_decay": self.cfg.weight_decay},
            {"params": [p for p in params if id(p) in exempt], "weight_decay": 0.0},
        ]

    def optimizer_for(self, batch: dict[str, Any]) -> int:
        """Index into `optimizers()` of the one that steps on this batch (0 main, 1 aux)."""
        return 1 if batch.get("phase", "main") == "aux" else 0
