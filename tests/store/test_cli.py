import json
import re

import numpy as np
from typer.testing import CliRunner

from lighthead.pipelines.cli.store_cmd import app
from tests.store.helpers import FIELDS, item_id, make_item
from tests.store.test_importers import CAPTIONS, make_npz, make_precomp, tsv_rows, write_tsv

runner = CliRunner()


def test_info_and_verify(filled):
    res = runner.invoke(app, ["info", str(filled.path), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["feature_sets"]["test/all"]["items"] == 50
    res = runner.invoke(app, ["info", str(filled.path)])
    assert res.exit_code == 0 and "test/all" in res.stdout
    res = runner.invoke(app, ["verify", str(filled.path)])
    assert res.exit_code == 0 and res.stdout.startswith("ok")


def test_verify_reports_one_line_per_problem(filled):
    shards = sorted((filled.path / "test/all").glob("*.h5"))
    shards[0].unlink()
    shards[1].write_bytes(b"garbage")
    res = runner.invoke(app, ["verify", str(filled.path)])
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines)
    assert shards[0].name in lines[0] and shards[1].name in lines[1]


def test_import_export_precomp(tmp_path):
    make_precomp(tmp_path / "bad")  # one caption line of every five is not UTF-8
    res = runner.invoke(app, ["import", "precomp", str(tmp_path / "bad"), str(tmp_path / "st0")])
    assert res.exit_code == 1 and res.stderr.strip() == (
        f"error: {tmp_path / 'bad' / 'dev_caps.txt'}:5: not UTF-8 text (byte 0xff at column 1); save the file as UTF-8"
    )
    data = make_precomp(tmp_path / "pre", captions=CAPTIONS[:4])
    st, out = tmp_path / "st", tmp_path / "out"
    res = runner.invoke(app, ["import", "precomp", str(tmp_path / "pre"), str(st), "--dtype", "float32"])
    assert res.exit_code == 0, res.output
    assert "imported 7 new items" in res.stdout
    res = runner.invoke(app, ["export", "precomp", str(st), str(out), "--dtype", "int8"])
    assert (
        res.exit_code == 1
        and res.stderr.strip()
        == (
            "error: export dtype 'int8' is not supported: precomp features are written as float16, float32, float64 "
            "(an integer dtype would truncate them)"
        )
        and not out.exists()
    )
    res = runner.invoke(app, ["export", "precomp", str(st), str(out)])
    assert res.exit_code == 0, res.output
    for s, (ims, caps) in data.items():
        assert np.array_equal(np.load(out / f"{s}_ims.npy"), ims)
        assert (out / f"{s}_caps.txt").read_bytes() == caps


def test_import_tsv_and_npz(tmp_path):
    write_tsv(tmp_path / "x.tsv", list(tsv_rows(3)))
    make_npz(tmp_path / "npz", n=2)
    st = tmp_path / "st"
    res = runner.invoke(app, ["import", "tsv", str(tmp_path / "x.tsv"), str(st)])
    assert res.exit_code == 0 and re.fullmatch(
        r"import tsv: 1/1 \(100%\), [\d.,]+ MB/s, done in .*", res.stderr.strip()
    )
    res = runner.invoke(app, ["import", "npz", str(tmp_path / "npz"), str(st), "--name", "regions/other"])
    assert res.exit_code == 0, res.output
    assert re.fullmatch(r"import npz: 2/2 \(100%\), [\d.,]+ files/s, done in .*", res.stderr.strip())
    summary = json.loads(runner.invoke(app, ["info", str(st), "--json"]).stdout)
    assert {k: v["items"] for k, v in summary["feature_sets"].items()} == {"regions/butd-tsv": 3, "regions/other": 2}


def test_errors_are_one_line(tmp_path):
    (tmp_path / "bad.tsv").write_text("1\t2\t3\n")
    res = runner.invoke(app, ["import", "tsv", str(tmp_path / "bad.tsv"), str(tmp_path / "st")])
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'bad.tsv'}:1: 3 tab-separated fields, expected 6 (image_id, image_w, image_h, num_boxes, "
        "boxes, features) or 10 (img_id, img_h, img_w, objects_id, objects_conf, attrs_id, attrs_conf, num_boxes, "
        "boxes, features)"
    )
    res = runner.invoke(app, ["import", "csv", str(tmp_path), str(tmp_path / "st")])
    assert res.exit_code != 0
    res = runner.invoke(app, ["info", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "no such store directory" in res.stderr


def test_export_needs_split_ids(store):
    with store.writer("test/all", FIELDS, fsync=False) as w:
        w.add(item_id(0), make_item(0))
    res = runner.invoke(app, ["export", "precomp", str(store.path), str(store.path / "out"), "--name", "test/all"])
    assert res.exit_code == 1 and "is not '<split>/<index>'" in res.stderr


def test_empty_store_is_reported_as_empty(tmp_path):
    (tmp_path / "st").mkdir()
    for cmd in ("info", "verify"):
        res = runner.invoke(app, [cmd, str(tmp_path / "st")])
        assert res.exit_code == 1, (cmd, res.output)
        assert res.stderr.strip() == f"error: {tmp_path / 'st'}: empty store (no feature sets, no JSON artifacts)"


def test_failed_import_then_info_says_no_store(tmp_path):
    (tmp_path / "bad.tsv").write_text("1\t2\t3\n")
    assert runner.invoke(app, ["import", "tsv", str(tmp_path / "bad.tsv"), str(tmp_path / "st")]).exit_code == 1
    res = runner.invoke(app, ["info", str(tmp_path / "st")])
    assert res.exit_code == 1 and "no such store directory" in res.stderr


def test_import_hint_for_float16_range(tmp_path):
    rows = list(tsv_rows(2))
    feats = np.full((len(rows[1][2]), 8), 1e5, np.float32)
    import base64

    rows[1] = ({**rows[1][0], "features": base64.b64encode(feats).decode()},) + rows[1][1:]
    write_tsv(tmp_path / "x.tsv", rows)
    res = runner.invoke(app, ["import", "tsv", str(tmp_path / "x.tsv"), str(tmp_path / "st")])
    assert res.exit_code == 1 and res.stderr.strip().splitlines()[-1].endswith(
        "overflows float16 (largest 65504); keep float32 with --dtype float32 and a new --name: regions/butd-tsv "
        "keeps the 1 item(s) imported before it as float16, and a feature set keeps its dtype"
    )
    res = runner.invoke(app, ["import", "tsv", str(tmp_path / "x.tsv"), str(tmp_path / "st"), "--dtype", "float32"])
    assert res.exit_code == 1 and res.stderr.strip() == (  # not float16 again, silently
        f"error: {tmp_path / 'st' / 'regions/butd-tsv'}: holds float16 features, not float32; a feature set keeps "
        "its dtype, so import with --dtype float16, or give a new --name for float32 features"
    )
    res = runner.invoke(
        app,
        ["import", "tsv", str(tmp_path / "x.tsv"), str(tmp_path / "st"), "--dtype", "float32", "--name", "regions/f32"],
    )  # what the message says works
    assert res.exit_code == 0 and "imported 2 new items" in res.stdout, res.output
    res = runner.invoke(app, ["import", "tsv", str(tmp_path / "x.tsv"), str(tmp_path / "st2"), "--dtype", "float32"])
    assert res.exit_code == 0 and "imported 2 new items" in res.stdout
    rows[0] = rows[1]  # the first item overflows: nothing is kept, so the same name works with float32
    write_tsv(tmp_path / "y.tsv", rows[:1])
    res = runner.invoke(app, ["import", "tsv", str(tmp_path / "y.tsv"), str(tmp_path / "st3")])
    assert res.exit_code == 1 and res.stderr.strip().endswith("keep float32 with --dtype float32")
    res = runner.invoke(app, ["import", "tsv", str(tmp_path / "y.tsv"), str(tmp_path / "st3"), "--dtype", "float32"])
    assert res.exit_code == 0 and "imported 1 new items" in res.stdout
