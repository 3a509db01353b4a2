"""Every transcript a page shows was made by `docs/make_transcripts.py` running its commands: the
pages embed the files (`--8<-- "transcripts/NAME.txt"`), each file holds exactly the commands
listed for it with the date, machine and commit it was made at, and no page carries a pasted
`$ command` transcript of its own."""

from __future__ import annotations

import re

import pytest

from tests.docs.pages import DOCS, PAGES, fenced_blocks, script

made = script("make_transcripts")
gen = script("gen_pages")
FILES = sorted((DOCS / "transcripts").glob("*.txt"))
EMBED = re.compile(r'^--8<-- "transcripts/([^"]+)"$', re.M)


def embedded() -> dict[str, list[str]]:
    """transcript file name -> the pages that embed it."""
    found: dict[str, list[str]] = {}
    for page in PAGES:
        for name in EMBED.findall(page.read_text(encoding="utf-8")):
            found.setdefault(name, []).append(str(page.relative_to(DOCS)))
    return found


def test_every_listed_transcript_has_its_file_and_no_other_file_exists():
    assert {p.stem for p in FILES} == {t.name for t in made.TRANSCRIPTS}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_a_transcript_holds_its_commands_and_says_when_and_where(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    stamp = gen.MADE.match(lines[0])
    assert stamp, f"{path.name}: first line must say when, where and at which commit it was made"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", stamp["date"]) and "CPU cores" in stamp["machine"]
    shown = [line[2:] for line in lines if line.startswith("$ ")]
    assert shown == made.BY_NAME[path.stem].commands
    assert len(lines) > 1 + len(shown) or path.stem == "show", f"{path.name}: the commands printed nothing"


def test_every_transcript_is_embedded_and_every_embed_is_a_transcript():
    assert set(embedded()) == {p.name for p in FILES}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_no_pasted_transcripts(page):
    """A `$ command` line in a code block is only ever an embedded file's."""
    for block in fenced_blocks(page.read_text(encoding="utf-8")):
        pasted = [line for line in block.splitlines() if line.startswith("$ ")]
        assert not pasted, f"{page.relative_to(DOCS)}: {pasted[0]!r}: embed a transcript instead"


def test_the_shown_commands_are_the_ones_that_run():
    import sys

    argv = made.argv_of("lighthead train heads casc --store s --out r")
    assert argv[:2] == [sys.executable, "-c"] and "lighthead.pipelines.cli import main" in argv[2]
    assert argv[3:] == ["train", "heads", "casc", "--store", "s", "--out", "r"]
    assert made.argv_of("python -m bench.store --quick")[1:] == ["-m", "bench.store", "--quick"]
    with pytest.raises(ValueError):
        made.argv_of("rm -rf /")
