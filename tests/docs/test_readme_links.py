"""Every link in README.md resolves: a file of the repository, and an anchor to one of the headings
of README.md or of the page it names (GitHub's and MkDocs' slugs agree on our headings)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.docs.pages import ROOT, prose

LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """A heading's anchor: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def anchors(path: Path) -> set[str]:
    text = prose(path.read_text(encoding="utf-8"))
    found = {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+?)\s*$", text, re.M)}
    found |= set(re.findall(r"\{#([\w-]+)\}", text))  # explicit ids: `## Title {#id}`
    return found | {slug(h) for h in re.findall(r"^#{1,6} (.+?) \{#[\w-]+\}$", text, re.M)}


def broken_links(page: Path) -> list[str]:
    problems = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+://", target):
            continue  # another site
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            problems.append(f"{target}: no file {path}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            problems.append(f"{target}: no heading #{anchor} in {file.name}")
    return problems


def test_readme_links_resolve():
    assert broken_links(ROOT / "README.md") == []


def test_a_broken_link_is_found(tmp_path):
    page = tmp_path / "README.md"
    page.write_text("# Top\n\n## Set-up: two commands\n\n[a](#set-up-two-commands) [b](#nope) [c](missing.md)\n")
    assert broken_links(page) == ["#nope: no heading #nope in README.md", "missing.md: no file missing.md"]
