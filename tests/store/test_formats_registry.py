"""The format registries are the one list of formats: the CLI's choices, `store_io`'s dispatch and
the store facade all read them, so a format registered there is importable by name everywhere."""

from __future__ import annotations

import numpy as np
import pytest

from lighthead.pipelines.cli import app
from lighthead.pipelines.cli.common import run_app
from lighthead.pipelines.cli.store_cmd import ExportFormat, ImportFormat
from lighthead.pipelines.store_io import export_features, import_features
from lighthead.store import EXPORT_FORMATS, IMPORT_FORMATS, Field, open_store
from lighthead.store.formats import ImportFormat as ImportSpec


def test_the_cli_offers_exactly_the_registered_formats():
    assert [f.value for f in ImportFormat] == IMPORT_FORMATS.names() == ["npz", "precomp", "tsv", "vinvl"]
    assert [f.value for f in ExportFormat] == EXPORT_FORMATS.names() == ["npz", "precomp", "tsv"]


def test_an_unknown_format_names_the_registered_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown import format 'h5'; use npz, precomp, tsv, vinvl"):
        import_features("h5", tmp_path / "x", tmp_path / "st")
    with pytest.raises(ValueError, match="unknown export format 'h5'; use npz, precomp, tsv"):
        export_features("h5", tmp_path / "st", tmp_path / "out")


def test_a_new_format_is_one_registry_entry(tmp_path, monkeypatch):
    """A format registered at run time imports through `store_io` with its own default set name."""
    seen = {}

    def import_lines(src, dest, name, *, dtype, boxes, progress, target, **writer_opts):
        store = open_store(dest, create=True)
        with store.writer(name, [Field("features", (2, 3), dtype)], {"extractor": "lines"}, fsync=False) as w:
            for i, line in enumerate(src.read_text().splitlines()):
                w.add(f"img{i}", {"features": np.full((2, 3), float(line), dtype)})
        seen["name"] = name
        return w.written

    monkeypatch.setitem(
        IMPORT_FORMATS._entries, "lines", ImportSpec(import_lines, "regions/lines", "numbers", ("items", 1))
    )
    src = tmp_path / "numbers.txt"
    src.write_text("1\n2\n")
    summary = import_features("lines", src, tmp_path / "st")
    assert (summary.feature_set, summary.added, seen["name"]) == ("regions/lines", 2, "regions/lines")
    assert open_store(tmp_path / "st")["regions/lines"]["img1"]["features"][0, 0] == 2


def test_help_lists_each_format_with_its_source(capsys):
    assert run_app(app, ["store", "import", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for name in IMPORT_FORMATS.names():
        assert f"{name}: {' '.join(IMPORT_FORMATS.get(name).source.split())[:30]}" in out
