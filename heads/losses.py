"""Losses shared by the heads.

- `triplet_loss`: the bidirectional hinge ranking loss of VSE++ (Faghri et al., BMVC 2018),
  used by SCAN, CASC, MMCA, mFSR: for every positive pair, the hardest negative caption of
  its image and the hardest negative image of its caption ("max violation"), margin 0.2;
  or, with `hardest=False`, the sum over all negatives (the warm-up some reference code
  uses for the first epochs). Which pairs of a batch are positives is `in_batch_positives`:
  the pair itself, as every released ranking loss (VSE++, SCAN, CASC `ContrastiveLoss` mask
  the diagonal only, so another caption of the same image is a negative), or every caption of
  the same image (each head's `same_image_positive` switch).
- `weighted_bce`: CASC's multi-label loss with a positive weight per label
  p_c = #negatives / #positives (Xu et al., TNNLS 2020, Eq. 11).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def triplet_loss(
    scores: torch.Tensor, positives: torch.Tensor | None = None, margin: float = 0.2, hardest: bool = True
) -> torch.Tensor:
    """Hinge triplet loss over a batch score matrix, summed over the batch (Eq. 8-9 of CASC).

    scores: (B, B), `scores[i, j]` = S(image of pair i, caption of pair j); the diagonal holds
        the positive pairs.
    positives: (B, B) bool, True where image i and caption j match (the diagonal, plus pairs
        whose captions share an image when a batch holds several captions of one image);
        those are never used as negatives. Default: the diagonal only.
    hardest: hardest negative per query (VSE++ max violation) if True, else sum over all.
    """
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be square (B, B), got {tuple(scores.shape)}")
    b = scores.shape[0]
    eye = torch.eye(b, dtype=torch.bool, device=scores.device)
    if positives is None:
        positives = eye
    diag = scores.diagonal()  # (B,)
    # Row i: caption negatives for image i (image->text); column j: image negatives (text->image).
    cost_caption = (margin + scores - diag[:, None]).clamp(min=0).masked_fill(positives, 0)
    cost_image = (margin + scores - diag[None, :]).clamp(min=0).masked_fill(positives, 0)
    if hardest:
        return cost_caption.max(dim=1).values.sum() + cost_image.max(dim=0).values.sum()
    return cost_caption.sum() + cost_image.sum()


def positives_from_index(image_index: torch.Tensor) -> torch.Tensor:
    """(B, B) bool: pair i's image matches pair j's caption (same source image)."""
    return image_index[:, None] == image_index[None, :]


def in_batch_positives(batch: dict[str, torch.Tensor], same_image: bool) -> torch.Tensor | None:
    """`triplet_loss`'s positives for a training batch: None (the diagonal: the released
    losses) or, with `same_image` and the batch's `image_index`, every caption of the pair's image."""
    if same_image and "image_index" in batch:
        return positives_from_index(batch["image_index"])
    return None


def weighted_bce(logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-label BCE with a positive weight per label, averaged over samples and labels.

    logits, targets: (B, C); pos_weight: (C,) = #neg / #pos per label over the training set.
    Per element: -[p_c y log sigma(x) + (1 - y) log(1 - sigma(x))]. The mean (not the sum of
    Eq. 11) follows the authors' code, where alpha = 10 balances it against the summed
    triplet loss.
    """
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), pos_weight=pos_weight)


def label_pos_weight(label_counts, n_samples: int, max_weight: float = 1e4) -> torch.Tensor:
    """p_c = #negatives / #positives for each label (labels never seen get `max_weight`)."""
    counts = torch.as_tensor(label_counts, dtype=torch.float32)
    neg = float(n_samples) - counts
    return torch.where(counts > 0, neg / counts.clamp(min=1), torch.full_like(counts, max_weight)).clamp(max=max_weight)
