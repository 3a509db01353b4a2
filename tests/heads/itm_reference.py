"""ITM as the authors' released code computes it (NUSTM/ITM model.py + modeling_utils.py, and
BertAdam from jefferyYu/TomBERT my_bert/optimization.py with ITM's train.py loop), written out
slowly in float64 for the tests: one sample at a time, one attention head at a time, additive
-10000 masks, BERT's LayerNorm and erf GELU as formulas. The paper's forms of each switch are
written out beside them. The parameters are read from an `Itm` head (its module names), so the
head and this file compute the same function when both are right.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# -- BERT pieces (modeling_utils.py) --------------------------------------------------------


def layer_norm(x: torch.Tensor, norm) -> torch.Tensor:
    """BertLayerNorm: (x - mean) / sqrt(biased variance + eps) * weight + bias, per row."""
    if not isinstance(norm, torch.nn.LayerNorm):
        return x
    u = x.mean(-1, keepdim=True)
    s = ((x - u) ** 2).mean(-1, keepdim=True)
    return (x - u) / torch.sqrt(s + norm.eps) * norm.weight.double() + norm.bias.double()


def gelu(x: torch.Tensor) -> torch.Tensor:
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def linear(x: torch.Tensor, module) -> torch.Tensor:
    return x @ module.weight.double().T + module.bias.double()


def attention(mha, q_in: torch.Tensor, kv_in: torch.Tensor, kv_mask: torch.Tensor) -> dict:
    """BertSelfAttention / BertCoAttention for one sample: q_in (Nq, D), kv_in (Nk, D),
    kv_mask (Nk,) 1 on real keys. Returns the context after the output dense ("out"), the
    released attn_map = mean over heads of the masked scaled scores, and the mean over heads of
    the softmaxes (the paper's D)."""
    d, h = q_in.shape[-1], mha.num_heads
    dh = d // h
    w, b = mha.in_proj_weight.double(), mha.in_proj_bias.double()
    q = q_in @ w[:d].T + b[:d]
    k = kv_in @ w[d : 2 * d].T + b[d : 2 * d]
    v = kv_in @ w[2 * d :].T + b[2 * d :]
    additive = (1.0 - kv_mask.double()) * -10000.0
    contexts, score_sum, prob_sum = [], 0.0, 0.0
    for head in range(h):
        sl = slice(head * dh, (head + 1) * dh)
        scores = q[:, sl] @ k[:, sl].T / math.sqrt(dh) + additive  # (Nq, Nk)
        probs = torch.softmax(scores, -1)
        contexts.append(probs @ v[:, sl])
        score_sum = score_sum + scores
        prob_sum = prob_sum + probs
    context = torch.cat(contexts, -1)
    out = context @ mha.out_proj.weight.double().T + mha.out_proj.bias.double()
    return {"out": out, "attn_map": score_sum / h, "mean_probs": prob_sum / h}


def bert_layer(parts: dict, q_in: torch.Tensor, kv_in: torch.Tensor, kv_mask: torch.Tensor, act) -> dict:
    """BertLayer / BertCrossAttentionLayer: attention, dense, residual + LayerNorm,
    intermediate (act), output dense, residual + LayerNorm."""
    att = attention(parts["attn"], q_in, kv_in, kv_mask)
    attention_output = layer_norm(att["out"] + q_in, parts["norm1"])
    inter = act(linear(attention_output, parts["lin1"]))
    out = layer_norm(linear(inter, parts["lin2"]) + attention_output, parts["norm2"])
    return {"out": out, "attn_map": att["attn_map"], "mean_probs": att["mean_probs"]}


def self_parts(block) -> dict:
    layer = block.layer  # nn.TransformerEncoderLayer
    return {
        "attn": layer.self_attn,
        "norm1": layer.norm1,
        "norm2": layer.norm2,
        "lin1": layer.linear1,
        "lin2": layer.linear2,
    }


def cross_parts(block) -> dict:
    return {"attn": block.attn, "norm1": block.norm1, "norm2": block.norm2, "lin1": block.ff[0], "lin2": block.ff[3]}


# -- the model (model.py Coarse2Fine.forward), one sample -----------------------------------


def forward(head, batch: dict, b: int) -> dict:
    """Logits (3,), P(related), D (K,) of sample `b`. Token features go through the head's
    trained adapter (the released code reads RoBERTa's output there)."""
    cfg = head.cfg
    act = gelu if cfg.layer_type == "bert" else torch.relu
    tokens = batch["tokens"][b].double()  # (L, token_dim), padded
    tmask = batch["text_mask"][b].double()  # (L,)
    regions = batch["regions"][b, : cfg.k].double()  # (K, region_dim)
    if cfg.region_scale == "matrix_norm":  # DataProcessor.read_npz: img_feat / sqrt((img_feat ** 2).sum())
        regions = regions / math.sqrt(sum(float(x) ** 2 for x in regions.flatten()))
    k = regions.shape[0]
    rmask = torch.ones(k, dtype=torch.float64)
    text = layer_norm(linear(tokens, head.token_proj), head.token_norm)  # sentence_output
    img = layer_norm(linear(regions, head.region_proj), head.region_norm)  # feat_linear
    visual = bert_layer(self_parts(head.image_layer), img, img, rmask, act)["out"]  # img_self_attn
    if cfg.coarse:
        sai = bert_layer(cross_parts(head.coarse_layer), visual, text, tmask, act)["out"]  # v2t
        if cfg.relevance_head == "per_region":
            gathered = linear(sai, head.relevance_gather)[:, 0]  # (K,) self.gather
            padded = torch.cat([gathered, torch.zeros(cfg.k - k, dtype=torch.float64)])
            rel_pred = linear(padded, head.relevance_out)  # (2,) self.pred
            gate = float(torch.softmax(rel_pred, -1)[1])
        else:  # the paper's Eq. 2: max-pooling, sigmoid
            pooled = torch.stack([sai[:, c].max() for c in range(sai.shape[1])])
            gate = 1.0 / (1.0 + math.exp(-float(linear(pooled, head.relevance_out)[0])))
        gated = gate * sai
    else:
        gate, gated = 1.0, visual
    if cfg.fine:
        query = text[:1]  # H_T^0
        if cfg.fine_query == "pooler":  # RoBERTa's pooler_output: tanh(dense(first token))
            query = torch.tanh(linear(query, head.query_pooler))
        t2v = bert_layer(cross_parts(head.fine_layer), query, gated, rmask, act)  # t2v
        ias = t2v["out"]
        if cfg.alignment == "mean_scores":  # softmax(Attn_map) as in the ranking loss
            dist = torch.softmax(t2v["attn_map"][0], -1)
        else:
            dist = t2v["mean_probs"][0]
    else:
        dist = torch.full((k,), 1.0 / k, dtype=torch.float64)
        ias = (dist[:, None] * gated).sum(0, keepdim=True)
    mixed = torch.cat([ias, text])  # senti_mixed_feature
    mixed_mask = torch.cat([torch.ones(1, dtype=torch.float64), tmask])
    out = bert_layer(self_parts(head.fusion_layer), mixed, mixed, mixed_mask, act)["out"]  # senti_selfattn
    first = out[0]
    if cfg.classifier == "pooler":  # first_pooler, senti_dropout (off in eval)
        first = torch.tanh(linear(first, head.pooler))
    return {"logits": linear(first, head.classifier), "relevance": gate, "align": dist}


def box_iou(a: list[float], b: list[float]) -> float:
    """torchvision's box_iou for one pair of x1 y1 x2 y2 boxes (no +1 on the sides)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def box_labels(
    boxes: torch.Tensor, gt_boxes: list[list[float]], threshold: float = 0.5, inclusive: bool = True
) -> torch.Tensor:
    """boxes_utils.get_attention_label for one sample: per ground-truth box (max_GT_boxes = 1
    in DataProcessor; an unannotated sample has none), when its best IoU reaches 0.5, the IoUs
    >= 0.5 kept and renormalised; the rows summed and divided by the number of boxes. The
    paper's rule ("larger than 0.5") with inclusive=False."""
    label = [0.0] * len(boxes)
    for gt in gt_boxes:
        ious = [box_iou(box.tolist(), gt) for box in boxes]
        kept = [x if (x >= threshold if inclusive else x > threshold) else 0.0 for x in ious]
        if sum(kept) > 0:
            label = [acc + x / sum(kept) for acc, x in zip(label, kept)]
    return torch.tensor([x / max(len(gt_boxes), 1) for x in label], dtype=torch.float64)


def aux_losses(head, batch: dict, outs: list[dict], targets: torch.Tensor) -> dict:
    """Released: CrossEntropy(rel_pred, relation) over the batch (= the mean binary CE of
    P(related)); KLDivLoss(batchmean)(log D, A) = sum of KL(A_b || D_b) / batch size, A_b = 0
    for unrelated targets. Paper (Eq. 6): the KL averaged over the related samples."""
    n = len(outs)
    re = 0.0
    kls = []
    for b, out in enumerate(outs):
        y, p = int(batch["relevance"][b]), out["relevance"]
        re -= (y * math.log(p) + (1 - y) * math.log(1 - p)) / n
        a = targets[b].double()
        kls.append(sum(float(a[i]) * math.log(float(a[i]) / float(out["align"][i])) for i in range(len(a)) if a[i] > 0))
    related = [kl for b, kl in enumerate(kls) if float(targets[b].sum()) > 0]
    att = sum(kls) / n if head.cfg.att_loss == "batch" else sum(related) / len(related)
    return {"re": re, "att": att}


# -- BertAdam (TomBERT my_bert/optimization.py) and ITM's train.py loop ----------------------


def warmup_linear(x: float, warmup: float) -> float:
    return x / warmup if x < warmup else 1.0 - x


def released_lrs(base: float, total: int, warmup: float, steps: int) -> list[float]:
    """Rate applied at each step: the loop sets lr_this_step = base * warmup_linear(global_step
    / t_total) (global_step from 0), BertAdam then uses lr_this_step * warmup_linear(state step
    / t_total) (its step from 0, counted after the update)."""
    out = []
    for global_step in range(steps):
        lr_this_step = base * warmup_linear(global_step / total, warmup)
        out.append(lr_this_step * warmup_linear(global_step / total, warmup))
    return out


def bertadam_run(
    params: list[np.ndarray],
    grads: list[list[np.ndarray]],
    decay: list[float],
    lrs: list[float],
    b1: float = 0.9,
    b2: float = 0.999,
    e: float = 1e-6,
    max_grad_norm: float = 1.0,
) -> list[np.ndarray]:
    """Parameters after one BertAdam step per entry of `lrs`; grads[step][i] is parameter i's
    gradient at that step, decay[i] its weight decay."""
    params = [p.astype(np.float64).copy() for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for step, lr in enumerate(lrs):
        for i, p in enumerate(params):
            g = grads[step][i].astype(np.float64).copy()
            norm = float(np.sqrt((g**2).sum()))
            coef = max_grad_norm / (norm + 1e-6)
            if coef < 1:
                g = g * coef
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            update = m[i] / (np.sqrt(v[i]) + e)
            if decay[i] > 0:
                update = update + decay[i] * p
            params[i] = p - lr * update
    return params
