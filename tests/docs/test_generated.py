"""Every generated block of the pages is what `docs/gen_pages.py` writes from the code now, so
a changed default, recipe value, registry entry or command-line option fails until the pages
are regenerated (`python docs/gen_pages.py`)."""

from __future__ import annotations

import dataclasses

import pytest

from lighthead.heads.build import head_class
from tests.docs.pages import DOCS, script

gen = script("gen_pages")


@pytest.mark.parametrize("page", gen.pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_generated_blocks_are_current(page):
    text = page.read_text(encoding="utf-8")
    assert gen.render(text) == text, f"{page.relative_to(DOCS)} is stale: run python docs/gen_pages.py"


def test_every_head_has_a_page_with_its_settings():
    for head in gen.head_names():
        text = (DOCS / "heads" / f"{head}.md").read_text(encoding="utf-8")
        assert f"<!-- generated: head-settings {head} -->" in text, head


def test_a_changed_default_fails_the_check(monkeypatch):
    page = (DOCS / "heads" / "scan.md").read_text(encoding="utf-8")
    assert "| `margin` | `0.2` |" in page
    cls = head_class("scan").config_class
    patched = dataclasses.make_dataclass(
        cls.__name__, [("margin", float, dataclasses.field(default=0.3))], bases=(cls,)
    )
    monkeypatch.setattr(head_class("scan"), "config_class", patched)
    new = gen.render(page)
    assert new != page and "| `margin` | `0.3` |" in new


def test_a_changed_recipe_or_dataset_value_fails_the_check(monkeypatch):
    from lighthead.heads import itm

    page = (DOCS / "heads" / "itm.md").read_text(encoding="utf-8")
    monkeypatch.setitem(itm.RECIPES["paper"], "epochs", 11)  # recipe=paper's epochs
    assert gen.render(page) != page
    monkeypatch.undo()
    assert gen.render(page) == page
    cls = head_class("itm").config_class
    monkeypatch.setitem(cls.DATASET_DEFAULTS["demo"], "epochs", 26)
    assert gen.render(page) != page
    overview = (DOCS / "heads" / "index.md").read_text(encoding="utf-8")
    assert gen.render(overview) != overview  # the demo column of *Defaults and demo sizes*


def test_value_text_is_what_set_parses():
    from lighthead.heads.build import parse_value

    for value in (2e-4, 1e-5, 0.2, 5.0, 0.0, True, False, 128, "regions/x"):
        assert parse_value(gen.value_text(value), type(value)) == value, value


def test_every_bench_figure_is_in_the_table_with_its_spread():
    """Each `name: value` line a bench transcript ends with is a row, with the spread its block gives."""
    import re

    table = gen.bench_figures()
    names = 0
    for path in sorted((DOCS / "transcripts").glob("bench-*.txt")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for line in lines:
            m = re.match(r"^([a-z0-9-]+(?:_[a-z0-9-]+)+): (\S+)$", line)
            if m:
                names += 1
                spread = next(
                    (s.split("(")[1].split(",")[0] for s in lines if s.split()[:1] == [m[1]] and s.startswith(" ")),
                    None,
                )
                row = next((r for r in table.splitlines() if r.startswith(f"| `{m[1]}` | {m[2]} |")), None)
                assert row, f"{path.name}: {m[1]} is not in the figures table"
                assert spread is None or f"| {spread} (" in row, (m[1], spread, row)
    assert names >= 10
