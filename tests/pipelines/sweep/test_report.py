"""Summary pieces: metric flattening and choice, ranking, summary.csv, best.json, the plot."""

from __future__ import annotations

import csv
import json

import pytest

from lighthead.pipelines.sweep import report
from lighthead.pipelines.sweep.spec import Trial


def _row(lam, lr, metrics, status="done"):
    t = Trial("itin", (("lam", lam), ("lr", lr)), swept=("lam", "lr"))
    return report.Row(t, status, report.flatten(metrics), wall_s=1.5 if status == "done" else None)


def test_flatten_keeps_numbers_under_slash_paths():
    flat = report.flatten({"val": {"rsum": 400, "r1": {"i2t": 50.5}}, "name": "x", "ok": True, "epochs": 3})
    assert flat == {"val/rsum": 400.0, "val/r1/i2t": 50.5, "epochs": 3.0}


def test_pick_metric_prefers_validation_and_names_missing_ones():
    rows = [_row("0.2", "1", {"test": {"rsum": 9.0}, "val": {"rsum": 1.0, "loss": 2.0}, "best_rsum": 3.0})]
    assert report.pick_metric(rows, None) == "val/rsum"
    assert report.pick_metric(rows, "loss") == "val/loss"
    assert report.pick_metric([_row("0.2", "1", {"accuracy": 0.5, "macro_f1": 0.4})], None) == "macro_f1"
    with pytest.raises(ValueError, match="no metric 'mAP'.*val/rsum"):
        report.pick_metric(rows, "mAP")
    assert report.pick_metric([_row("0.2", "1", {}, "failed")], None) is None


def test_rank_csv_and_best_agree_with_a_plain_sort(tmp_path):
    values = {("0.2", "1e-3"): 3.0, ("0.5", "1e-3"): 7.0, ("0.8", "1e-3"): 5.0, ("0.2", "1e-2"): 1.0}
    rows = [_row(lam, lr, {"val": {"acc": v}}) for (lam, lr), v in values.items()]
    rows.append(_row("0.5", "1e-2", {}, "failed"))
    ranked = report.rank(rows, "val/acc", maximise=True)
    want = sorted(values, key=lambda k: -values[k])
    assert [(r.trial.params["lam"], r.trial.params["lr"]) for r in ranked[:4]] == want
    assert ranked[-1].status == "failed"
    assert [r.trial.id for r in report.rank(rows, "val/acc", maximise=False)[:4]] == [r.trial.id for r in ranked[:4]][::-1]

    report.write_csv(ranked, "val/acc", tmp_path / "summary.csv")
    got = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert list(got[0])[:6] == ["rank", "trial", "status", "lam", "lr", "val/acc"]
    assert [(g["lam"], g["lr"], float(g["val/acc"])) for g in got[:4]] == [(*k, values[k]) for k in want]
    assert got[-1]["status"] == "failed" and got[-1]["rank"] == "" and got[-1]["val/acc"] == ""

    best = report.write_best(ranked, "val/acc", tmp_path / "best.json")
    assert best == json.loads((tmp_path / "best.json").read_text())
    assert best["overrides"] == {"lam": "0.5", "lr": "1e-3"} and best["value"] == 7.0


def test_plot_writes_a_png_with_one_panel_per_swept_key(tmp_path):
    rows = [_row(lam, lr, {"rsum": float(i)}) for i, (lam, lr) in
            enumerate([("0.2", "1e-4"), ("0.5", "1e-3"), ("0.8", "1e-2"), ("0.5", "1e-4")])]
    rows = report.rank(rows, "rsum")
    path = report.plot(rows, "rsum", tmp_path / "sweep.png")
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.shape[1] > img.shape[0] * 1.8  # two panels side by side
    # Categorical values plot too; nothing to plot gives no file.
    cat = [report.Row(Trial("itin", (("align", a),), swept=("align",)), "done", {"rsum": v})
           for a, v in (("true", 1.0), ("false", 2.0))]
    assert report.plot(cat, "rsum", tmp_path / "cat.png").exists()
    assert report.plot([], "rsum", tmp_path / "none.png") is None


def test_the_trainers_selection_metric_is_the_default():
    rows = [_row("0.2", "1", {"val": {"rsum": 1.0, "accuracy": 0.3}, "test": {"rsum": 2.0}})]
    rows[0].selection = "accuracy"
    assert report.pick_metric(rows, None) == "val/accuracy"
    rows[0].selection = "missing"  # a name the metrics lack: fall back to the defaults
    assert report.pick_metric(rows, None) == "val/rsum"
