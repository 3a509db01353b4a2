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
    assert [r.trial.id for r in report.rank(rows, "val/acc", maximise=False)[:4]] == [r.trial.id for r in ranked[:4]][
        ::-1
    ]

    report.write_csv(ranked, "val/acc", tmp_path / "summary.csv")
    got = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert list(got[0])[:6] == ["rank", "trial", "status", "lam", "lr", "val/acc"]
    assert [(g["lam"], g["lr"], float(g["val/acc"])) for g in got[:4]] == [(*k, values[k]) for k in want]
    assert got[-1]["status"] == "failed" and got[-1]["rank"] == "" and got[-1]["val/acc"] == ""

    best = report.write_best(ranked, "val/acc", tmp_path / "best.json")
    assert best == json.loads((tmp_path / "best.json").read_text())
    assert best["overrides"] == {"lam": "0.5", "lr": "1e-3"} and best["value"] == 7.0


def test_plot_writes_a_png_with_one_panel_per_swept_key(tmp_path):
    rows = [
        _row(lam, lr, {"rsum": float(i)})
        for i, (lam, lr) in enumerate([("0.2", "1e-4"), ("0.5", "1e-3"), ("0.8", "1e-2"), ("0.5", "1e-4")])
    ]
    rows = report.rank(rows, "rsum")
    path = report.plot(rows, "rsum", tmp_path / "sweep.png")
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.shape[1] > img.shape[0] * 1.8  # two panels side by side
    # Categorical values plot too; nothing to plot gives no file.
    cat = [
        report.Row(Trial("itin", (("align", a),), swept=("align",)), "done", {"rsum": v})
        for a, v in (("true", 1.0), ("false", 2.0))
    ]
    assert report.plot(cat, "rsum", tmp_path / "cat.png").exists()
    assert report.plot([], "rsum", tmp_path / "none.png") is None


def test_the_trainers_selection_metric_is_the_default():
    rows = [_row("0.2", "1", {"val": {"rsum": 1.0, "accuracy": 0.3}, "test": {"rsum": 2.0}})]
    rows[0].selection = "accuracy"
    assert report.pick_metric(rows, None) == "val/accuracy"
    rows[0].selection = "missing"  # a name the metrics lack: fall back to the defaults
    assert report.pick_metric(rows, None) == "val/rsum"


def test_csv_keeps_exact_floats_and_the_table_rounds_for_people(tmp_path):
    from rich.console import Console

    metrics = {"val": {"rsum": 412.33333333333337, "loss": 0.012345678901234, "r1": 1 / 3}}
    rows = [_row("0.2", "1e-3", metrics)]
    rows[0].wall_s = 31.41592653589793
    report.write_csv(rows, "val/rsum", tmp_path / "summary.csv")
    got = next(csv.DictReader((tmp_path / "summary.csv").open()))
    assert float(got["val/rsum"]) == 412.33333333333337 and float(got["val/r1"]) == 1 / 3
    assert float(got["val/loss"]) == 0.012345678901234 and float(got["wall_s"]) == 31.41592653589793

    console = Console(record=True, width=160)
    # Other metrics show only where trials differ: a second, worse trial.
    rows.append(_row("0.5", "1e-3", {"val": {"rsum": 100.0, "loss": 1.0, "r1": 0.5}}))
    report.print_table(rows, "val/rsum", console)
    row = next(line for line in console.export_text().splitlines() if rows[0].trial.id in line)
    cells = [c.strip() for c in row.split("│")[1:-1]]
    # #, trial, lam, lr, val/rsum, then val/loss and val/r1 (sorted), train s, status
    assert cells == ["1", rows[0].trial.id, "0.2", "1e-3", "412.33", "0.0123", "0.33", "31.4", "done"]
    assert report.fmt_seconds(30.0) == "30.0" and report.fmt_metric(0.0) == "0.00" and report.fmt_metric(None) == ""


def test_a_damaged_trial_file_is_named(tmp_path):
    from lighthead.pipelines.sweep.trial import trial_dir

    t = Trial("itin", (("lam", "0.2"),), swept=("lam",))
    path = trial_dir(tmp_path, t.id)
    path.mkdir(parents=True)
    (path / "trial.json").write_text(json.dumps({"id": t.id}))
    (path / "metrics.json").write_text('{"val": {"acc": 0.5')  # truncated by a killed disk write
    with pytest.raises(ValueError, match=r"metrics\.json:1: not valid JSON"):
        report.collect(tmp_path, [t])
