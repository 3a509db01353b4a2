"""The released code's cross-attention formulas written out with loops (float64), for tests.

From SCAN's `model.py` (kuanghuei/SCAN: `func_attention`, `xattn_score_t2i`,
`xattn_score_i2t`, `cosine_similarity`, `l2norm`, the `raw_feature_norm` and `agg_func`
options) and CASC's (Wangt-CN/Code_CASC: the attended vectors averaged into A^I / A^T, `FC1`,
and `evaluation.shard_xattn_all`'s test score); the paper's Eq. 13 as the other test score.
Our own loops over single items: no tensor code of the heads is reused.
"""

from __future__ import annotations

import math

import numpy as np

EPS = 1e-8


def cos(a: np.ndarray, b: np.ndarray) -> float:
    """SCAN's cosine_similarity: w12 / max(|a| |b|, eps)."""
    return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), EPS))


def softmax(xs: list[float]) -> list[float]:
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [x / sum(e) for x in e]


def leaky(x: float) -> float:
    return x if x > 0 else 0.1 * x


def normalise(row: list[float], norm: str) -> list[float]:
    """One context item's cosines with every query item, normalised over the queries."""
    if norm == "softmax":
        return softmax(row)
    if norm in ("clipped", "clipped_l2norm"):
        row = [leaky(x) for x in row]
    if norm in ("l2norm", "clipped_l2norm"):
        size = math.sqrt(sum(x * x for x in row)) + EPS  # SCAN's l2norm adds eps
        row = [x / size for x in row]
    return row


def attend(query: np.ndarray, context: np.ndarray, norm: str, smooth: float) -> list[np.ndarray]:
    """func_attention: each query item attends over the context items; returns the attended
    context vector of every query item."""
    raw = [normalise([float(np.dot(c, q)) for q in query], norm) for c in context]  # [source][query]
    out = []
    for j in range(len(query)):
        w = softmax([smooth * raw[i][j] for i in range(len(context))])
        out.append(sum(w[i] * context[i] for i in range(len(context))))
    return out


def aggregate(r: list[float], agg: str, lam: float) -> float:
    if agg == "mean":
        return sum(r) / len(r)
    return math.log(sum(math.exp(lam * x) for x in r)) / lam  # LogSumExp: a sum, not a mean


def options(cfg) -> dict:
    """`pair`'s keyword options from a SCAN / CASC config."""
    return {
        "lambda_t2i": cfg.lambda_t2i,
        "lambda_i2t": cfg.lambda_i2t,
        "norm": cfg.attn_norm,
        "agg_t2i": cfg.agg_t2i,
        "agg_i2t": cfg.agg_i2t,
        "lse_t2i": cfg.lambda_lse_t2i,
        "lse_i2t": cfg.lambda_lse_i2t,
    }


def pair(
    v: np.ndarray,
    t: np.ndarray,
    lambda_t2i: float = 9.0,
    lambda_i2t: float = 4.0,
    norm: str = "clipped_l2norm",
    agg_t2i: str = "lse",
    agg_i2t: str = "lse",
    lse_t2i: float = 6.0,
    lse_i2t: float = 5.0,
) -> dict:
    """One image (K, D) and one caption (L, D), real items only: both directions' scores and
    the global vectors A^I (mean of the T2I attended regions), A^T (mean of the I2T attended words)."""
    v, t = v.astype(np.float64), t.astype(np.float64)
    attended_regions = attend(t, v, norm, lambda_t2i)  # xattn_score_t2i: query = words
    t2i = aggregate([cos(t[j], a) for j, a in enumerate(attended_regions)], agg_t2i, lse_t2i)
    attended_words = attend(v, t, norm, lambda_i2t)  # xattn_score_i2t: query = regions
    i2t = aggregate([cos(v[k], a) for k, a in enumerate(attended_words)], agg_i2t, lse_i2t)
    return {"t2i": t2i, "i2t": i2t, "a_img": sum(attended_regions) / len(t), "a_txt": sum(attended_words) / len(v)}


def label_probs(a: np.ndarray, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """sigmoid(FC1(a)): FC1 = Linear - tanh - Linear."""
    hidden = np.tanh(w1.astype(np.float64) @ a + b1)
    return 1 / (1 + np.exp(-(w2.astype(np.float64) @ hidden + b2)))


def casc_score(p: dict, fc: tuple, beta: float = 0.8, form: str = "code", truth: np.ndarray | None = None) -> float:
    """CASC's test score of one pair. "code": shard_xattn_all, beta 0.5 (t2i + i2t) +
    (1 - beta) cos(sigmoid(FC1(A^I)), sigmoid(FC1(A^T))); "paper": Eq. 13, beta (i2t + t2i) +
    (1 - beta) cos(sigmoid(FC1(A^I)), the caption's labels) (0 for a caption with none)."""
    probs = label_probs(p["a_img"], *fc)
    if form == "code":
        return beta * 0.5 * (p["t2i"] + p["i2t"]) + (1 - beta) * cos(probs, label_probs(p["a_txt"], *fc))
    s_g = cos(probs, truth.astype(np.float64)) if truth.any() else 0.0
    return beta * (p["t2i"] + p["i2t"]) + (1 - beta) * s_g
