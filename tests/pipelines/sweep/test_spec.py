"""Sweep specs: grid expansion, random sampling, trial ids, sweep files."""

from __future__ import annotations

import hashlib
import math

import pytest

from lighthead.pipelines.sweep.spec import Range, SweepSpec, Trial, from_args, load_sweep_file, parse_grid_arg


def test_grid_is_the_cartesian_product_in_order():
    spec = from_args("itin", ["lr=1e-3,1e-4", "lam=0.2,0.5,0.8"], ["d=64"])
    got = [t.params for t in spec.trials()]
    want = []
    for lr in ("1e-3", "1e-4"):  # written out with loops: first key slowest
        for lam in ("0.2", "0.5", "0.8"):
            want.append({"lr": lr, "lam": lam})
    assert got == want
    assert all(dict(t.overrides)["d"] == "64" for t in spec.trials())
    assert spec.trials()[0].swept == ("lr", "lam")


def test_trial_id_is_stable_and_depends_on_head_overrides_epochs():
    a = Trial("itin", (("lam", "0.2"), ("lr", "1e-3")))
    b = Trial.from_json({"head": "itin", "overrides": {"lr": "1e-3", "lam": "0.2"}})  # other key order
    assert a.id == b.id == "itin-" + a.id.split("-", 1)[1]
    assert Trial("itin", (("lam", "0.3"), ("lr", "1e-3"))).id != a.id
    assert Trial("mmca", a.overrides).id != a.id
    assert Trial("itin", a.overrides, epochs=2).id != a.id
    # Fixed across processes and releases: a sha1 of the JSON, not Python's salted hash().
    canonical = b'{"head": "itin", "overrides": {"lam": "0.2", "lr": "1e-3"}}'
    assert a.id == "itin-" + hashlib.sha1(canonical).hexdigest()[:10]


def test_random_search_samples_the_grid_without_replacement_and_is_seeded():
    spec = from_args("itin", ["lr=1,2,3,4", "lam=a,b,c"], random=5, seed=3)
    trials = spec.trials()
    pairs = [(t.params["lr"], t.params["lam"]) for t in trials]
    assert len(pairs) == len(set(pairs)) == 5
    assert all(lr in "1234" and lam in "abc" for lr, lam in pairs)
    assert [t.id for t in from_args("itin", ["lr=1,2,3,4", "lam=a,b,c"], random=5, seed=3).trials()] == [
        t.id for t in trials
    ]
    assert [t.id for t in from_args("itin", ["lr=1,2,3,4", "lam=a,b,c"], random=5, seed=4).trials()] != [
        t.id for t in trials
    ]
    # More samples than grid points: the whole grid once.
    assert len(from_args("itin", ["lr=1,2"], random=9).trials()) == 2


def test_ranges_sample_inside_bounds_log_uniformly():
    spec = from_args("itin", ["lr=log:1e-5..1e-1", "m=1..4"], random=400, seed=0)
    lrs = [float(t.params["lr"]) for t in spec.trials()]
    ms = {t.params["m"] for t in spec.trials()}
    assert all(1e-5 <= x <= 1e-1 * 1.001 for x in lrs)
    # Log-uniform: about a quarter of the draws fall in each decade.
    frac = sum(1e-5 <= x < 1e-4 for x in lrs) / len(lrs)
    assert 0.17 < frac < 0.33
    assert ms <= {"1", "2", "3", "4"} and len(ms) == 4
    assert parse_grid_arg("lr=log:1e-5..1e-1") == ("lr", Range(1e-5, 1e-1, log=True))
    with pytest.raises(ValueError, match="random"):
        from_args("itin", ["lr=1e-5..1e-1"])


def test_bad_grid_args_are_named():
    with pytest.raises(ValueError, match="key=v1,v2"):
        parse_grid_arg("lr")
    with pytest.raises(ValueError, match="both swept and fixed: lr"):
        from_args("itin", ["lr=1,2"], ["lr=3"])


YAML = """
head: itin
metric: macro_f1
epochs: 2
random: 3
seed: 7
grid:
  lr: {low: 1.0e-4, high: 1.0e-2, log: true}
  lam: [0.2, 0.8]
  align: [true, false]
set:
  d: 32
"""

TOML = """
head = "itin"
metric = "macro_f1"
epochs = 2
random = 3
seed = 7
[grid]
lr = {low = 1.0e-4, high = 1.0e-2, log = true}
lam = [0.2, 0.8]
align = [true, false]
[set]
d = 32
"""


def test_yaml_and_toml_files_give_the_same_trials(tmp_path):
    (tmp_path / "s.yaml").write_text(YAML)
    (tmp_path / "s.toml").write_text(TOML)
    y, t = load_sweep_file(tmp_path / "s.yaml"), load_sweep_file(tmp_path / "s.toml")
    assert y == t
    assert y.grid["align"] == ["true", "false"] and y.fixed == {"d": "32"} and y.epochs == 2
    ids = [tr.id for tr in y.trials()]
    assert ids == [tr.id for tr in t.trials()] and len(ids) == 3
    for tr in y.trials():
        assert 1e-4 <= float(tr.params["lr"]) <= 1e-2 and tr.params["lam"] in ("0.2", "0.8")


def test_sweep_file_errors_name_the_problem(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("head: itin\ngrids: {lr: [1]}\n")
    with pytest.raises(ValueError, match="unknown keys grids"):
        load_sweep_file(p)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_sweep_file(tmp_path / "nope.yaml")


def test_metric_direction():
    spec = SweepSpec("itin", {"lr": [1]})
    assert spec.maximise("val/rsum") and spec.maximise("macro_f1")
    assert not spec.maximise("val/loss") and not spec.maximise("alignment_kl")
    assert not SweepSpec("itin", {"lr": [1]}, mode="min").maximise("rsum")
    assert math.isfinite(float(Range(1, 2).sample(__import__("random").Random(0))))
