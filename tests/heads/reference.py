"""The CASC / SCAN cross-attention equations written out with loops (float64), for tests.

Xu et al., TNNLS 2020, Eq. 3-7 (I2T / T2I attention), Eq. 10 (global attention vectors) and
Eq. 13 (test score); SCAN's clipped L2 normalisation of the raw similarities as an option.
"""

from __future__ import annotations

import math

import numpy as np


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def softmax(xs: list[float]) -> list[float]:
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [x / sum(e) for x in e]


def leaky(x: float) -> float:
    return x if x > 0 else 0.1 * x


def pair(v: np.ndarray, t: np.ndarray, lam1: float, lam2: float, clipped: bool = False) -> dict:
    """One image (K, D) and one caption (L, D), real items only."""
    v, t = v.astype(np.float64), t.astype(np.float64)
    k_n, l_n = len(v), len(t)
    s = [[cos(v[k], t[l]) for l in range(l_n)] for k in range(k_n)]  # Eq. 3
    s_i2t, s_t2i = s, s
    if clipped:
        s_i2t = [[leaky(s[k][l]) / math.sqrt(sum(leaky(s[kk][l]) ** 2 for kk in range(k_n)))
                  for l in range(l_n)] for k in range(k_n)]
        s_t2i = [[leaky(s[k][l]) / math.sqrt(sum(leaky(s[k][ll]) ** 2 for ll in range(l_n)))
                  for l in range(l_n)] for k in range(k_n)]
    # I2T (Eq. 4-5): each region attends over the words.
    attended_words, i2t = [], 0.0
    for k in range(k_n):
        alpha = softmax([lam1 * s_i2t[k][l] for l in range(l_n)])
        a = sum(alpha[l] * t[l] for l in range(l_n))
        attended_words.append(a)
        i2t += cos(v[k], a) / k_n
    # T2I (Eq. 6-7): each word attends over the regions.
    attended_regions, t2i = [], 0.0
    for l in range(l_n):
        alpha = softmax([lam2 * s_t2i[k][l] for k in range(k_n)])
        a = sum(alpha[k] * v[k] for k in range(k_n))
        attended_regions.append(a)
        t2i += cos(t[l], a) / l_n
    # Eq. 10: global vectors.
    a_img = sum(attended_regions) / l_n
    a_txt = sum(attended_words) / k_n
    return {"i2t": i2t, "t2i": t2i, "a_img": a_img, "a_txt": a_txt}


def label_score(a_img: np.ndarray, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray,
                truth: np.ndarray) -> float:
    """cos(sigmoid(W2 tanh(W1 A^I + b1) + b2), y) of Eq. 13 (0 when the caption has no label)."""
    hidden = np.tanh(w1.astype(np.float64) @ a_img + b1)
    probs = 1 / (1 + np.exp(-(w2.astype(np.float64) @ hidden + b2)))
    if not truth.any():
        return 0.0
    return cos(probs, truth.astype(np.float64))
