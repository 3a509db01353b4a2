"""What README.md states about the code matches the code: the *Heads* table against the registered
heads (a row each, with its task, the feature sets it reads by default and its page under
docs/heads/), and the command-line synopsis's `--threads` against the commands that have it.
(The defaults table and the other per-head facts live on the documentation pages now, checked by
tests/docs/.)"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from lighthead.heads.base import HEADS, source_kinds
from lighthead.heads.build import head_class
from lighthead.pipelines.cli import app
from lighthead.pipelines.cli.common import run_app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
TABLE_SECTION = "## Heads"
TABLE_HEADER = "| head | paper | task | reads (by default) | docs |"


def heads_table(readme: str = README) -> dict[str, list[str]]:
    """head -> its row's cells after the name (paper, task, reads, docs)."""
    section = readme[readme.index(f"\n{TABLE_SECTION}\n") :]
    start = section.index(TABLE_HEADER)
    rows = {}
    for line in section[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 5, line
        name = re.fullmatch(r"`([a-z0-9-]+)`", cells[0])
        assert name, f"README.md: a Heads row names no head in backticks: {line}"
        rows[name.group(1)] = cells[1:]
    return rows


def reads(head: str) -> list[str]:
    """The feature sets the head's config reads by default, in field order."""
    cls = head_class(head).config_class
    default = cls()
    return [getattr(default, k) for k in source_kinds(cls) if getattr(default, k)]


def paper_line(head: str) -> str:
    """The first line of the head module's docstring, for a suggested row (edit it to cite the paper)."""
    doc = (sys.modules[head_class(head).__module__].__doc__ or "").strip().splitlines()
    first = re.sub(r"^`[^`]+`: ", "", doc[0] if doc else head).rstrip(".")
    return first.replace("|", "/")


def suggested_row(head: str) -> str:
    """The Heads table's row for `head`, from its class and config."""
    feature_sets = " ".join(f"`{name}`" for name in reads(head))
    return (
        f"| `{head}` | {paper_line(head)} | {head_class(head).task} | {feature_sets} | [{head}](docs/heads/{head}.md) |"
    )


def table_problems(heads: list[str], readme: str = README) -> list[str]:
    """One line per head without a row (saying which row to add), per row that names no registered
    head, and per row whose task, feature sets or page are not the head's."""
    rows = heads_table(readme)
    where = f"README.md: the table under {TABLE_SECTION!r}"
    problems = [
        f"README.md: add a row for head {h!r} to the table under {TABLE_SECTION!r}: {suggested_row(h)}"
        for h in heads
        if h not in rows
    ]
    problems += [f"{where} has a row for {h!r}, which is no registered head" for h in rows if h not in heads]
    for head in (h for h in heads if h in rows):
        paper, task, stated, docs = rows[head]
        if not paper or paper == "-":
            problems.append(f"{where}: the row of {head!r} names no paper")
        if task != head_class(head).task:
            problems.append(f"{where}: {head!r} is a {head_class(head).task} head, the row says {task!r}")
        if re.findall(r"`([^`]+)`", stated) != reads(head):
            problems.append(f"{where}: {head!r} reads {reads(head)} by default, the row says {stated!r}")
        link = re.fullmatch(r"\[[^\]]+\]\(([^)]+)\)", docs)
        if not link or link.group(1) != f"docs/heads/{head}.md" or not (ROOT / link.group(1)).is_file():
            problems.append(f"{where}: the row of {head!r} should link its page docs/heads/{head}.md")
    return problems


def test_the_table_lists_every_head_as_it_is():
    problems = table_problems(HEADS.names())
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("head", HEADS.names())
def test_the_suggested_row_is_the_row_the_table_holds_but_the_paper(head):
    rows = heads_table(f"\n{TABLE_SECTION}\n\n{TABLE_HEADER}\n|---|---|---|---|---|\n{suggested_row(head)}\n")
    assert rows[head][1:] == heads_table()[head][1:]


def test_a_head_without_a_row_is_told_the_row_to_add():
    from tests.heads.toy_fixture import toy_head_registered

    with toy_head_registered():
        row = (
            "| `toy` | the smallest retrieval head, written outside `heads/` the way CONTRIBUTING.md's \"Adding a "
            "| retrieval | `regions/butd-r101-vg-36` `words/vocab` | [toy](docs/heads/toy.md) |"
        )
        assert table_problems(HEADS.names()) == [
            "README.md: add a row for head 'toy' to the table under '## Heads': " + row
        ]
        table = README.index(TABLE_HEADER)
        with_row = README[:table] + README[table:].replace("\n\n", f"\n{row}\n\n", 1)
        # the row it suggests is one the checks accept, once the head has its page
        assert table_problems(HEADS.names(), with_row) == [
            "README.md: the table under '## Heads': the row of 'toy' should link its page docs/heads/toy.md"
        ]
    assert table_problems(HEADS.names(), with_row) == [
        "README.md: the table under '## Heads' has a row for 'toy', which is no registered head"
    ]


def test_a_row_that_drifts_is_named():
    drifted = README.replace(
        "| `itm` | ITM (Yu et al., IJCAI 2022) | sentiment | `regions/butd-r101-vg-100`",
        "| `itm` | ITM (Yu et al., IJCAI 2022) | retrieval | `regions/butd-r101-vg-36`",
        1,
    )
    assert drifted != README
    assert table_problems(HEADS.names(), drifted) == [
        "README.md: the table under '## Heads': 'itm' is a sentiment head, the row says 'retrieval'",
        "README.md: the table under '## Heads': 'itm' reads ['regions/butd-r101-vg-100', 'text/roberta-base'] "
        "by default, the row says '`regions/butd-r101-vg-36` `text/roberta-base`'",
    ]


@pytest.mark.parametrize("page", ["README.md", "docs/getting-started.md"])
@pytest.mark.parametrize("command", [["train", "heads"], ["evaluate"], ["demo"]])
def test_threads_option_is_where_the_synopsis_says(command, page, capsys):
    run_app(app, command + ["--help"])
    assert "--threads" in capsys.readouterr().out
    text = (ROOT / page).read_text(encoding="utf-8")
    section = text[text.index("Command line" if page == "README.md" else "The command line") :]
    section = section[: section.index("\n```\n", section.index("```") + 3)]  # its first code block
    usage = next(line for line in section.splitlines() if line.startswith("lighthead " + " ".join(command)))
    block = section[section.index(usage) :].split("\nlighthead ")[0]  # the usage and its continuation lines
    assert "[--threads N]" in block, usage
    assert "OMP_NUM_THREADS" in text or page != "README.md"
