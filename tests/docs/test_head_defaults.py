"""What *Training heads* (`docs/heads/index.md`) states about the configs: the *Defaults and demo
sizes* table against every head's config (defaults and the whole `DATASET_DEFAULTS["demo"]`),
the sentence on the demo's feature sets, the unknown-key error the pages show against the real
error, and `OMP_NUM_THREADS` beside `--threads`. The table is generated (test_generated.py keeps
it current); this checks what it says, independently of the script that writes it."""

from __future__ import annotations

import re

import pytest

from lighthead.heads.base import HEADS, source_kinds
from lighthead.heads.build import config_fields, head_class, make_config, parse_value
from lighthead.pipelines.cli import app
from lighthead.pipelines.cli.common import run_app
from tests.docs.pages import DOCS, PAGES, hand_written, split_row

PAGE = DOCS / "heads" / "index.md"
TEXT = PAGE.read_text(encoding="utf-8")
STATED_ALWAYS = ("epochs", "batch_size", "lr")  # the defaults column names these for every head
TABLE_HEADER = "| head | task | defaults | `--dataset demo` |"
TABLE_SECTION = "## Defaults and demo sizes"


def defaults_table(text: str = TEXT) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """head -> (defaults column, demo column) as {key: value text}."""
    section = text[text.index(TABLE_SECTION) :]
    start = section.index(TABLE_HEADER)
    rows = {}
    for line in section[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = split_row(line)
        assert len(cells) == 4, line
        name = re.fullmatch(r"\[`([a-z0-9-]+)`\]\(([a-z0-9-]+)\.md\)", cells[0])
        assert name and name.group(1) == name.group(2), f"{PAGE.name}: a row that links no head page: {line}"
        rows[name.group(1)] = tuple(dict(re.findall(r"`([a-z_0-9]+)=([^`]*)`", cell)) for cell in cells[2:])
        for cell, parsed in zip(cells[2:], rows[name.group(1)]):  # every word of a cell is a `key=value`
            assert len(re.findall(r"`[^`]*`", cell)) == len(parsed), line
    return rows


def typed(cls: type, stated: dict[str, str]) -> dict:
    fields = config_fields(cls)
    unknown = set(stated) - set(fields)
    assert not unknown, f"{cls.__name__} has no {unknown}"
    return {k: parse_value(v, fields[k], k) for k, v in stated.items()}


def check_defaults(head: str, table: dict[str, tuple[dict[str, str], dict[str, str]]]) -> None:
    """The head's row states its config's defaults (feature sets and STATED_ALWAYS included) and
    its whole DATASET_DEFAULTS["demo"]."""
    cls = head_class(head).config_class
    stated, demo = table[head]
    default = cls()
    for key, value in typed(cls, stated).items():
        assert getattr(default, key) == value, (head, key, getattr(default, key), value)
    feature_sets = {k for k in source_kinds(cls) if getattr(default, k)}  # the feature sets it reads
    missing = (feature_sets | set(STATED_ALWAYS)) - set(stated)
    assert not missing, f"docs/heads/index.md: the defaults of {head} leave out {missing}"
    # the demo column is the whole of DATASET_DEFAULTS["demo"], nothing more, nothing less
    want = dict(cls.DATASET_DEFAULTS.get("demo", {}))
    assert typed(cls, demo) == want, (head, demo, want)
    make_config(cls, {}, "demo")  # and it builds


def test_the_table_lists_every_head():
    rows = defaults_table()
    missing = [h for h in HEADS.names() if h not in rows]
    extra = [h for h in rows if h not in HEADS.names()]
    assert not missing and not extra, (
        f"docs/heads/index.md, {TABLE_SECTION!r}: rows missing for {missing}, "
        f"rows for no head {extra}: run python docs/gen_pages.py"
    )


@pytest.mark.parametrize("head", HEADS.names())
def test_stated_defaults_are_the_configs(head):
    check_defaults(head, defaults_table())


def test_a_changed_demo_value_fails_the_check(monkeypatch):
    cls = head_class("itm").config_class
    check_defaults("itm", defaults_table())
    monkeypatch.setitem(cls.DATASET_DEFAULTS["demo"], "epochs", 26)
    with pytest.raises(AssertionError):
        check_defaults("itm", defaults_table())


def test_demo_feature_sets_the_prose_names():
    """The sentiment section's sentence on the demo's feature sets agrees with the configs."""
    text = " ".join(TEXT.split())
    sentence = text[text.index("On `--dataset demo` the defaults switch to") :][:300]
    found, regions = re.findall(r"`((?:text|regions)/[^`]+)`", sentence)[:2]
    for head in ("itin", "itm", "text-only"):
        assert make_config(head_class(head).config_class, {}, "demo").text == found
    assert make_config(head_class("itm").config_class, {}, "demo").regions == regions


def stated_errors() -> list[str]:
    found = [
        e
        for page in PAGES
        for e in re.findall(r"`(error: unknown config key[^`]*)`", " ".join(hand_written(page).split()))
    ]
    assert len(found) >= 2, "the pages state no unknown-key error"  # Training heads and Sweeps
    return found


def as_pattern(stated: str) -> re.Pattern:
    """The page's text with each `...` standing for any text."""
    return re.compile(".*".join(re.escape(part) for part in stated.split("...")) + r"\Z")


def test_unknown_key_error_is_the_one_the_pages_show(tmp_path, capsys):
    code = run_app(
        app,
        [
            "train",
            "heads",
            "casc",
            "--store",
            str(tmp_path / "store"),
            "--out",
            str(tmp_path / "run"),
            "--set",
            "nonsense=1",
        ],
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    for stated in stated_errors():
        assert as_pattern(stated).match(err), (stated, err)
    from lighthead.store import open_store

    open_store(tmp_path / "store", create=True).write_json("dataset", {"name": "demo"})  # a sweep needs a store
    code = run_app(
        app,
        [
            "sweep",
            "casc",
            "--store",
            str(tmp_path / "store"),
            "--out",
            str(tmp_path / "sweep"),
            "--grid",
            "nonsense=1,2",
        ],
    )
    sweep_err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and sweep_err == err


def test_as_pattern_is_strict():
    assert as_pattern("error: a ...; b ...").match("error: a x, y; b z")
    assert not as_pattern("error: a ...; b ...").match("error: c x; b z")


def test_threads_and_omp_num_threads_are_explained():
    assert "`--threads N`" in TEXT and "OMP_NUM_THREADS" in TEXT
