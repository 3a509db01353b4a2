"""Retrieval and classification metrics (numpy in, plain floats out).

Retrieval follows the protocol of VSE++/SCAN/CASC: every image has `per_image` captions
(5 on COCO and Flickr30K), caption `j` belongs to image `j // per_image`.

- i2t R@K: share of images whose best-ranked correct caption is within the top K;
- t2i R@K: share of captions whose image is within the top K;
- rsum = the six recalls summed, mR = rsum / 6; all in percent.

Tie rule (pessimistic): an item's rank is the number of *wrong* items scoring at least as
high as it. A tie with a wrong item therefore counts against the query, so a constant score
matrix gets R@1 = 0 rather than a lucky 100. Ties among correct captions do not matter.
The computation is vectorised: no Python loop over queries.

Non-finite scores are an error (`NonFiniteScoresError`), never a rank: every comparison with
NaN is false, so a NaN row would count no wrong item above it and rank first. Callers add the
run's name to the message.
"""

from __future__ import annotations

import numpy as np

RECALL_KS = (1, 5, 10)


class NonFiniteScoresError(ValueError):
    """Scores (or logits) that hold NaN or infinity: the weights or the inputs are not finite."""


def check_finite(scores: np.ndarray, what: str = "scores") -> np.ndarray:
    """`scores` itself when every value is finite; else NonFiniteScoresError counting the bad ones."""
    finite = np.isfinite(scores)
    if not finite.all():
        bad, nan = int((~finite).sum()), int(np.isnan(scores).sum())
        raise NonFiniteScoresError(
            f"{bad:,} of {scores.size:,} {what} are not finite ({nan:,} NaN); "
            f"the head's weights or its input features hold NaN or infinity"
        )
    return scores


def retrieval_ranks(sims: np.ndarray, per_image: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """0-based ranks of the best correct caption per image and of the image per caption.

    `sims` is `(n_images, per_image * n_images)`; returns `(i2t_ranks (n_images,),
    t2i_ranks (n_captions,))` under the pessimistic tie rule. NonFiniteScoresError when a
    score is NaN or infinite.
    """
    sims = np.asarray(sims)
    if sims.ndim != 2:
        raise ValueError(f"sims must be 2-d (images, captions), got shape {sims.shape}")
    n_img, n_cap = sims.shape
    if n_cap != per_image * n_img:
        raise ValueError(f"sims has {n_cap} captions for {n_img} images; expected {per_image} per image")
    if n_img == 0:
        raise ValueError("sims is empty")
    check_finite(sims)
    rows = np.arange(n_img)
    owner = np.arange(n_cap) // per_image  # image of each caption
    positive = owner[None, :] == rows[:, None]  # (N, 5N)

    # image -> text: the best correct caption's score, then the wrong captions reaching it.
    by_image = sims.reshape(n_img, n_img, per_image)  # (N, N, 5): [image, caption group, j]
    best_pos = by_image[rows, rows].max(axis=1)  # (N,)
    i2t = ((sims >= best_pos[:, None]) & ~positive).sum(axis=1)

    # text -> image: the true image's score, then the other images reaching it.
    true_score = sims[owner, np.arange(n_cap)]  # (5N,)
    t2i = ((sims >= true_score[None, :]) & ~positive).sum(axis=0)
    return i2t, t2i


def retrieval_metrics(sims: np.ndarray, per_image: int = 5) -> dict[str, float]:
    """R@1/5/10 in both directions, rsum and mR (percent) of one score matrix.

    `sims[i, j]` scores image i against caption j; caption j belongs to image j // per_image.
    Keys: i2t_r1, i2t_r5, i2t_r10, t2i_r1, t2i_r5, t2i_r10, rsum, mr, plus the median ranks
    i2t_medr / t2i_medr (1-based).
    """
    i2t, t2i = retrieval_ranks(sims, per_image)
    out: dict[str, float] = {}
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in RECALL_KS:
            out[f"{name}_r{k}"] = float(100.0 * np.mean(ranks < k))
    out["rsum"] = float(sum(out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in RECALL_KS))
    out["mr"] = out["rsum"] / 6.0
    out["i2t_medr"] = float(np.floor(np.median(i2t)) + 1)
    out["t2i_medr"] = float(np.floor(np.median(t2i)) + 1)
    return out


def mean_metrics(folds: list[dict[str, float]]) -> dict[str, float]:
    """Average metric dicts key by key (COCO 1K: the mean over five 1,000-image folds)."""
    if not folds:
        raise ValueError("no folds to average")
    return {k: float(np.mean([f[k] for f in folds])) for k in folds[0]}


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int | None = None) -> dict[str, float]:
    """Accuracy, macro-F1 and weighted F1 (percent).

    Macro-F1 averages the per-class F1 over the classes present in `y_true` or `y_pred`
    (scikit-learn's default); a class never predicted has precision 0 (F1 0). Pass
    `num_classes` to average over all classes 0..num_classes-1 instead. Weighted F1 weights
    each class's F1 by its number of true samples (scikit-learn's `average="weighted"`), so
    on imbalanced data it sits near the accuracy: the "F1" of ITIN's tables behaves like it,
    ITM's papers report macro-F1.
    """
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    y_pred = np.asarray(y_pred).astype(np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in length")
    if y_true.size == 0:
        raise ValueError("no samples")
    classes = np.arange(num_classes) if num_classes else np.union1d(y_true, y_pred)
    # Confusion counts per class, vectorised over classes.
    t = y_true[None, :] == classes[:, None]  # (C, N)
    p = y_pred[None, :] == classes[:, None]
    tp = (t & p).sum(axis=1).astype(np.float64)
    fp = (~t & p).sum(axis=1)
    fn = (t & ~p).sum(axis=1)
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    support = t.sum(axis=1)  # (C,) true samples per class
    return {
        "accuracy": float(100.0 * np.mean(y_true == y_pred)),
        "macro_f1": float(100.0 * f1.mean()),
        "weighted_f1": float(100.0 * np.sum(f1 * support) / support.sum()),
    }
