"""The sweep engine on a 2-worker LocalCluster, with tiny pure-python training functions."""

from __future__ import annotations

import csv
import json

import pytest

from lighthead.pipelines.sweep import from_args, run_sweep
from tests.pipelines.sweep import fakes

FAKE = "tests.pipelines.sweep.fakes:"


@pytest.fixture
def store(tmp_path):
    # The fakes never read the store; it only has to exist (and collects their call log).
    path = tmp_path / "store"
    path.mkdir()
    return path


def _run(spec, store, out, client, fn="quadratic_train", retries=1):
    return run_sweep(spec, store, out, client=client, train_fn=FAKE + fn, retries=retries, progress=False)


def test_sweep_of_five_trials_ranks_them_and_writes_every_trial_atomically(dask_client, store, tmp_path):
    out = tmp_path / "sweep"
    spec = from_args("itin", ["lr=1e-2,1e-3,1e-4,1e-5,1e-1", "lam=0.3"], ["d=32"])
    res = _run(spec, store, out, dask_client)

    assert res.ran == 5 and res.skipped == 0 and not res.failed
    assert res.metric == "val/macro_f1"  # the validation metric, never the test one
    for t in spec.trials():
        d = out / "trials" / t.id
        assert {"config.json", "metrics.json", "trial.json", "checkpoint.pt"} <= {p.name for p in d.iterdir()}
        assert json.loads((d / "trial.json").read_text())["overrides"] == dict(t.overrides)
    assert not list((out / "trials").glob(".tmp-*"))
    # Both worker processes took trials.
    workers = {json.loads((out / "trials" / t.id / "trial.json").read_text())["worker"] for t in spec.trials()}
    assert len(workers) == 2

    # summary.csv: one row per trial, sorted by the metric the fake computes from its values.
    rows = list(csv.DictReader((out / "summary.csv").open()))
    want = sorted(spec.trials(), key=lambda t: -fakes.score(dict(t.overrides)))
    assert [r["trial"] for r in rows] == [t.id for t in want]
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4", "5"]
    for r, t in zip(rows, want):
        assert (r["lr"], r["lam"]) == (t.params["lr"], t.params["lam"])
        assert float(r["val/macro_f1"]) == pytest.approx(fakes.score(dict(t.overrides)), rel=1e-3)
    best = json.loads((out / "best.json").read_text())
    assert best["overrides"] == {"d": "32", "lam": "0.3", "lr": "1e-3"}
    assert (out / "sweep.png").stat().st_size > 1000


def test_rerun_skips_finished_trials_and_runs_only_new_ones(dask_client, store, tmp_path):
    out = tmp_path / "sweep"
    spec = from_args("itin", ["lr=1e-3,1e-4", "lam=0.2,0.5"])
    first = _run(spec, store, out, dask_client)
    assert first.ran == 4 and len(fakes.calls(store)) == 4
    stamps = {p: p.stat().st_mtime_ns for p in (out / "trials").glob("*/metrics.json")}

    again = _run(spec, store, out, dask_client)
    assert again.ran == 0 and again.skipped == 4
    assert len(fakes.calls(store)) == 4  # no finished trial trained again
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "trials").glob("*/metrics.json")}

    wider = from_args("itin", ["lr=1e-3,1e-4", "lam=0.2,0.5,0.8"])
    third = _run(wider, store, out, dask_client)
    assert third.ran == 2 and third.skipped == 4
    assert sorted(c["lam"] for c in fakes.calls(store)[4:]) == ["0.8", "0.8"]
    assert len(list(csv.DictReader((out / "summary.csv").open()))) == 6


def test_a_trial_whose_worker_is_killed_is_retried_and_the_sweep_completes(dask_client, store, tmp_path):
    out = tmp_path / "sweep"
    spec = from_args("itin", ["lam=0.2,0.5,0.9,0.7"])
    res = _run(spec, store, out, dask_client, fn="killer_train", retries=1)

    assert (store / "killed").exists()  # the worker process really died once
    assert not res.failed and len([r for r in res.rows if r.status == "done"]) == 4
    lams = sorted(c["lam"] for c in fakes.calls(store))
    assert lams == ["0.2", "0.5", "0.7", "0.9", "0.9"]  # the killed trial ran twice, the others once
    assert not list((out / "trials").glob(".tmp-*"))  # the dead attempt's partial folder is gone
    killed = next(t for t in spec.trials() if t.params["lam"] == "0.9")
    assert not (out / "trials" / killed.id / "partial.pt").exists()


def test_a_trial_that_keeps_failing_costs_only_itself(dask_client, store, tmp_path):
    out = tmp_path / "sweep"
    spec = from_args("itin", ["lam=0.2,0.9,0.5"])
    res = _run(spec, store, out, dask_client, fn="failing_train", retries=1)

    bad = next(t for t in spec.trials() if t.params["lam"] == "0.9")
    assert res.failed == [bad.id]
    assert [c["lam"] for c in fakes.calls(store)].count("0.9") == 2  # first try + one retry
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["status"] for r in rows] == ["done", "done", "failed"]
    assert "diverged" in rows[-1]["error"]
    assert not (out / "trials" / bad.id).exists()
    assert "diverged" in json.loads((out / "failed" / f"{bad.id}.json").read_text())["error"]


def test_a_bad_grid_key_names_the_key_and_the_valid_ones_before_anything_runs(store, tmp_path):
    out = tmp_path / "sweep"
    spec = from_args("itin", ["lr=1e-3,1e-4", "nonsense=1,2"])
    with pytest.raises(KeyError) as e:
        run_sweep(spec, store, out, train_fn=FAKE + "quadratic_train", progress=False)
    msg = e.value.args[0]
    assert "'nonsense'" in msg and "keys" in msg and "lr" in msg and "lam" in msg
    assert not out.exists() and not fakes.calls(store)  # no cluster, no trial, no folder
    with pytest.raises(ValueError, match="lam"):  # a value the config rejects, same moment
        run_sweep(from_args("itin", ["lam=0.5,7"]), store, out, train_fn=FAKE + "quadratic_train", progress=False)
    with pytest.raises(KeyError, match="unknown head 'nohead'"):
        run_sweep(from_args("nohead", ["lr=1"]), store, out, train_fn=FAKE + "quadratic_train", progress=False)


def test_dashboard_address_is_reported_only_when_the_scheduler_serves_it(dask_client):
    import importlib.util

    from lighthead.pipelines.cluster.client import dashboard_url as _dashboard

    served = importlib.util.find_spec("bokeh") is not None  # the dashboard pages need bokeh
    assert _dashboard(dask_client) == (dask_client.dashboard_link if served else None)
