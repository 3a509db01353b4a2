"""`--dataset images`: any folder of images, nested folders and odd names, optional captions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lighthead.pipelines.datasets import DatasetError, load_records
from lighthead.pipelines.features import ExtractOptions
from lighthead.pipelines.features.runner import DEFAULT_FEATURES, run_extract
from lighthead.store import open_store
from tests.pipelines.datasets import fixtures

# file under the root -> the id it must get (path without the last extension, '/' separators)
FILES = {
    "a b.jpg": "a b",
    "UPPER.JPG": "UPPER",
    "x.y.z.jpeg": "x.y.z",
    "ünï cödé/фото 1.png": "ünï cödé/фото 1",
    "deep/er/nest.Png": "deep/er/nest",
    "deep/er/v2.0/shot.webp": "deep/er/v2.0/shot",
}


def photos(root: Path) -> Path:
    for k, name in enumerate(FILES):
        fixtures.write_image(root / name, k, size=(48 + 8 * k, 40))
    (root / "notes.txt").write_text("not an image")
    (root / "deep" / "README").write_text("no extension")
    fixtures.write_image(root / ".thumbs" / "cache.jpg", 99)  # hidden folder: skipped
    fixtures.write_image(root / ".hidden.jpg", 98)
    return root


def test_ids_are_relative_paths_without_the_extension(tmp_path):
    root = photos(tmp_path / "photos")
    with pytest.warns(UserWarning, match=r"2 file\(s\) without an image extension ignored: deep/README, notes.txt"):
        records = load_records("images", root)
    assert sorted(r.id for r in records) == sorted(FILES.values())
    for r in records:
        assert r.image_id == r.id and r.kind == "image" and r.texts == [] and r.split == "train"
        assert Path(r.image_path).is_file() and Path(r.image_path) == (root / r.extra["file"]).absolute()
        assert FILES[r.extra["file"]] == r.id


def test_two_files_with_one_id_name_both(tmp_path):
    fixtures.write_image(tmp_path / "sub" / "a.jpg", 0)
    fixtures.write_image(tmp_path / "sub" / "a.PNG", 1)
    with pytest.raises(DatasetError, match=r"image id 'sub/a' names two files: .*sub/a.PNG and .*sub/a.jpg"):
        load_records("images", tmp_path)


def test_links_outside_the_root_and_undecodable_names_are_skipped_and_reported(tmp_path):
    root = tmp_path / "photos"
    fixtures.write_image(root / "ok.jpg", 0)
    fixtures.write_image(tmp_path / "secret.jpg", 1)
    os.symlink(tmp_path / "secret.jpg", root / "link.jpg")
    os.symlink(root / "ok.jpg", root / "inside.jpg")  # a link inside the root is an image like any other
    try:
        with open(os.path.join(os.fsencode(root), b"bad\xff.jpg"), "wb") as fh:
            fh.write((root / "ok.jpg").read_bytes())
    except OSError:  # a file system that refuses non-UTF-8 names
        pass
    with pytest.warns(UserWarning, match=r"skipped: .*link.jpg \(a link to .*secret.jpg, outside"):
        records = load_records("images", root)
    assert sorted(r.id for r in records) == ["inside", "ok"]


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="no image files found"), pytest.warns(UserWarning):
        load_records("images", tmp_path)


def _captions(root: Path, lines: list) -> None:
    (root / "captions.jsonl").write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in lines) + "\n",
        encoding="utf-8",
    )


def test_captions_by_path_or_id_with_splits(tmp_path):
    root = photos(tmp_path / "photos")
    _captions(
        root,
        [
            {"image": "a b.jpg", "caption": "a  dog\ton grass", "split": "val"},
            {"image": "a b", "caption": "a second one"},
            "",
            {"image": "./ünï cödé/фото 1.png", "caption": "unicode", "split": "test"},
            {"image": "deep/er/nest", "caption": "nested"},
        ],
    )
    with pytest.warns(UserWarning):
        records = {r.id: r for r in load_records("images", root)}
    assert records["a b"].texts == ["a dog on grass", "a second one"] and records["a b"].split == "val"
    assert records["ünï cödé/фото 1"].texts == ["unicode"] and records["ünï cödé/фото 1"].split == "test"
    assert records["deep/er/nest"].texts == ["nested"] and records["deep/er/nest"].split == "train"
    assert records["UPPER"].texts == []


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", r"captions.jsonl:2: not valid JSON"),
        ('["a b.jpg", "x"]', r"captions.jsonl:2: a JSON list, not an object"),
        ('{"image": "a b.jpg"}', r"captions.jsonl:2: 'caption' is missing"),
        ('{"image": "a b.jpg", "caption": 3}', r"captions.jsonl:2: 'caption' is 3"),
        ('{"image": "nowhere.jpg", "caption": "x"}', r"captions.jsonl:2: image 'nowhere.jpg' is not an image under"),
        ('{"image": "a b", "caption": "x", "split": "dev"}', r"captions.jsonl:2: unknown split 'dev'"),
        (
            '{"image": "a b", "caption": "x", "split": "test"}',
            r"captions.jsonl:2: image 'a b' is in split 'test' here "
            r"but 'val' on line 1",
        ),
    ],
)
def test_a_malformed_caption_line_names_file_and_line(tmp_path, line, message):
    root = photos(tmp_path / "photos")
    _captions(root, [{"image": "a b.jpg", "caption": "fine", "split": "val"}, line])
    with pytest.raises(DatasetError, match=message), pytest.warns(UserWarning):
        load_records("images", root)


def test_default_jobs_are_the_image_jobs_and_text_jobs_only_with_captions(tmp_path, monkeypatch):
    monkeypatch.setitem(DEFAULT_FEATURES, "images", ["thumbs", "words"])
    opts = ExtractOptions(batch_size=4, loader_workers=0, progress=False, dtype="float32")
    root = photos(tmp_path / "photos")
    with pytest.warns(UserWarning):
        plain = run_extract("images", root, tmp_path / "plain", None, opts)
    assert [s.job for s in plain] == ["thumbs"] and plain[0].written == len(FILES)
    _captions(root, [{"image": "x.y.z.jpeg", "caption": "dots in the name"}])
    with pytest.warns(UserWarning):
        both = run_extract("images", root, tmp_path / "both", None, opts)
    assert [s.job for s in both] == ["thumbs", "words"]
    assert open_store(tmp_path / "both")["words/vocab"].ids == ["x.y.z#0"]


def test_cli_extracts_regions_of_a_folder(tmp_path):
    from typer.testing import CliRunner

    from lighthead.pipelines.cli import app

    root = photos(tmp_path / "photos")
    with pytest.warns(UserWarning, match="without an image extension ignored"):
        out = CliRunner().invoke(
            app,
            [
                "extract",
                "--dataset",
                "images",
                "--root",
                str(root),
                "--store",
                str(tmp_path / "s"),
                "--features",
                "regions36",
                "--random-weights",
                "-o",
                "detector=tiny",
                "--loader-workers",
                "0",
                "--no-progress",
            ],
        )
    assert out.exit_code == 0, out.output
    fs = open_store(tmp_path / "s")["regions/butd-r101-vg-36"]
    assert sorted(fs.ids) == sorted(FILES.values())
    item = fs["ünï cödé/фото 1"]
    assert (int(item["image_w"]), int(item["image_h"])) == (48 + 8 * 3, 40)


def test_a_folder_that_cannot_be_read_is_named_in_a_warning(tmp_path, monkeypatch):
    for name in ("ok.jpg", "locked/a.jpg", "locked/b.jpg", "deep/locked2/c.jpg", "deep/d.jpg"):
        fixtures.write_image(tmp_path / name, 0)
    real = os.scandir

    def scandir(path="."):  # as for a folder without read permission (the tests may run as root)
        if Path(path).name in ("locked", "locked2"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.warns(
        UserWarning,
        match=r"2 folder\(s\) could not be read, their images are left out: "
        r"deep/locked2/ \(Permission denied\), locked/ \(Permission denied\)$",
    ):
        records = load_records("images", tmp_path)
    assert sorted(r.id for r in records) == ["deep/d", "ok"]

    def locked_root(path="."):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "scandir", locked_root)
    with pytest.raises(DatasetError, match=rf"{tmp_path}: cannot list the folder \(Permission denied\)"):
        load_records("images", tmp_path)
