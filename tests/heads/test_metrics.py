"""Retrieval and classification metrics on hand-made inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from lighthead.heads.metrics import classification_metrics, mean_metrics, retrieval_metrics, retrieval_ranks


def _loop_ranks(sims: np.ndarray, per: int) -> tuple[list[int], list[int]]:
    """The definition written out: count wrong items scoring >= the (best) correct one."""
    n_img, n_cap = sims.shape
    i2t, t2i = [], []
    for i in range(n_img):
        best = max(sims[i, j] for j in range(n_cap) if j // per == i)
        i2t.append(sum(1 for j in range(n_cap) if j // per != i and sims[i, j] >= best))
    for j in range(n_cap):
        true = sims[j // per, j]
        t2i.append(sum(1 for i in range(n_img) if i != j // per and sims[i, j] >= true))
    return i2t, t2i


def test_perfect_scores_give_100():
    sims = np.kron(np.eye(4), np.ones((1, 5)))  # image i scores 1 on its own 5 captions
    m = retrieval_metrics(sims)
    assert all(m[k] == 100.0 for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"))
    assert m["rsum"] == 600.0 and m["mr"] == 100.0
    assert m["i2t_medr"] == 1.0 and m["t2i_medr"] == 1.0


def test_best_of_five_captions_counts_for_i2t():
    # 2 images, 10 captions. Image 0: only its 5th caption (index 4) beats everything.
    sims = np.zeros((2, 10))
    sims[0, 4] = 1.0  # one good caption is enough for image 0
    sims[0, 5:] = 0.5  # image 1's captions rank above image 0's other four
    sims[1, 5:] = 0.9
    sims[1, 0] = 0.95  # image 1 prefers a wrong caption first
    i2t, t2i = retrieval_ranks(sims, 5)
    assert list(i2t) == [0, 1]
    m = retrieval_metrics(sims)
    assert m["i2t_r1"] == 50.0 and m["i2t_r5"] == 100.0
    # t2i: caption 0 (image 0) has 0.0 vs image 1's 0.95 -> rank 1; captions 1-3 tie 0 vs 0 -> rank 1
    # (pessimistic); caption 4 rank 0; captions 5-9 (image 1): 0.9 vs 0.5 -> rank 0.
    assert list(t2i) == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert m["t2i_r1"] == 60.0


def test_ties_count_against_the_query():
    m = retrieval_metrics(np.zeros((3, 15)))
    assert m["i2t_r1"] == 0.0 and m["t2i_r1"] == 0.0
    # with 3 images, every wrong item tied: rank = number of wrong items
    i2t, t2i = retrieval_ranks(np.zeros((3, 15)), 5)
    assert set(i2t) == {10} and set(t2i) == {2}
    assert m["i2t_r10"] == 0.0 and m["t2i_r5"] == 100.0


def test_random_matrices_match_the_loop_definition():
    rng = np.random.default_rng(0)
    for per in (1, 5):
        # rounded scores produce many ties
        sims = np.round(rng.standard_normal((13, 13 * per)), 1)
        i2t, t2i = retrieval_ranks(sims, per)
        ref_i2t, ref_t2i = _loop_ranks(sims, per)
        assert list(i2t) == ref_i2t and list(t2i) == ref_t2i
        m = retrieval_metrics(sims, per)
        assert m["i2t_r5"] == pytest.approx(100 * np.mean(np.array(ref_i2t) < 5))
        assert m["t2i_r10"] == pytest.approx(100 * np.mean(np.array(ref_t2i) < 10))
        assert m["rsum"] == pytest.approx(sum(m[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10)))


def test_shape_is_checked():
    with pytest.raises(ValueError, match="5 per image"):
        retrieval_metrics(np.zeros((3, 14)))


def test_mean_metrics_averages_folds():
    assert mean_metrics([{"rsum": 100.0}, {"rsum": 200.0}]) == {"rsum": 150.0}


def test_classification_metrics_by_hand():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    m = classification_metrics(y_true, y_pred)
    # class 0: tp1 fp1 fn1 -> F1 .5; class 1: tp2 fp1 fn0 -> .8; class 2: tp1 fp0 fn1 -> 2/3
    assert m["accuracy"] == pytest.approx(100 * 4 / 6)
    assert m["macro_f1"] == pytest.approx(100 * (0.5 + 0.8 + 2 / 3) / 3)


def test_macro_f1_class_set():
    # class 2 never occurs: by default it is ignored; with num_classes=3 it counts as F1 0.
    m = classification_metrics([0, 1, 1], [0, 1, 1])
    assert m["macro_f1"] == 100.0
    assert classification_metrics([0, 1, 1], [0, 1, 1], num_classes=3)["macro_f1"] == pytest.approx(200 / 3)


def sklearn_weighted_f1(y_true, y_pred) -> float:
    """scikit-learn's f1_score(average="weighted") written out: per class precision, recall,
    F1 (0 where undefined), averaged with the class's count in y_true as weight."""
    labels = sorted(set(y_true) | set(y_pred))
    total, weighted = 0, 0.0
    for c in labels:
        tp = sum(1 for t, p in zip(y_true, y_pred) if t == c and p == c)
        predicted = sum(1 for p in y_pred if p == c)
        actual = sum(1 for t in y_true if t == c)
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        weighted += actual * f1
        total += actual
    return 100.0 * weighted / total


def test_weighted_f1_by_hand():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    # supports 2, 2, 2: the weighted mean equals the macro mean here
    assert classification_metrics(y_true, y_pred)["weighted_f1"] == pytest.approx(100 * (0.5 + 0.8 + 2 / 3) / 3)
    # imbalanced (MVSA-like): 6 positive, 3 neutral, 1 negative; the big class dominates
    y_true = [2, 2, 2, 2, 2, 2, 1, 1, 1, 0]
    y_pred = [2, 2, 2, 2, 2, 1, 1, 2, 2, 2]
    f1 = {2: 2 * 5 / (2 * 5 + 3 + 1), 1: 2 * 1 / (2 * 1 + 1 + 2), 0: 0.0}
    want = 100 * (6 * f1[2] + 3 * f1[1] + 1 * f1[0]) / 10
    m = classification_metrics(y_true, y_pred, num_classes=3)
    assert m["weighted_f1"] == pytest.approx(want)
    assert m["macro_f1"] == pytest.approx(100 * sum(f1.values()) / 3)
    assert m["weighted_f1"] > m["macro_f1"]


def test_weighted_f1_matches_the_written_out_formula_on_random_labels():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 40))
        y_true = rng.choice(3, n, p=[0.6, 0.3, 0.1]).tolist()
        y_pred = rng.choice(3, n).tolist()
        got = classification_metrics(y_true, y_pred, num_classes=3)["weighted_f1"]
        assert got == pytest.approx(sklearn_weighted_f1(y_true, y_pred), abs=1e-9)
