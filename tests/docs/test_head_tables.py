"""Every head's *what | paper | released code | lighthead default | switch* table, in its module
docstring and on its page `docs/heads/<head>.md`, against the code.

What a table states in backticks is checked:
- switch cell: each `key`, `key=value` or `key=a|b` names a field of the head's config (or a
  loop key such as `val_images`) and every value named there is one the config accepts;
  `-o JOB.KEY=VALUE` names an extraction setting of a registered feature job;
- lighthead default cell: each `key=value` is the config's default (the dataclass with its
  recipe resolved), and every key of the row's switch cell is stated there; `-o JOB.KEY=VALUE`
  is what `lighthead extract` sets for the head's datasets; a cell that starts with a number or
  a code span (`9`, `9 / 4`, `` `t2i` ``) states the default of the key(s) it switches;
- paper cell: each `key=value` is what `recipe=paper` gives (heads without a recipe follow the
  paper by default, so there it is the default); on heads with a recipe, every recipe key named
  in a switch cell is stated there, and every recipe key has a row.
The two copies of a table name the same keys, and the sentence of *Training heads* on heads whose
defaults are their released code names exactly the heads whose tables cite released code.
(The generated *Settings* table below each page's table lists every key; see test_generated.py.)
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import pytest

from lighthead.heads.base import HEADS
from lighthead.heads.build import config_fields, head_class, parse_value
from lighthead.pipelines.features import FEATURES, load_all
from lighthead.pipelines.features.runner import DATASET_JOB_OPTIONS
from lighthead.pipelines.training.loop import LoopConfig
from tests.docs.pages import DOCS, hand_written, prose, script, split_row

gen = script("gen_pages")
COLUMNS = ("what", "paper", "released code", "lighthead default", "switch")
# the datasets whose extraction defaults (`-o JOB.KEY=VALUE` in a default cell) a head's table states
EXTRACT_DATASETS = {"itin": ("mvsa-single", "mvsa-multiple")}
PLACEHOLDER = re.compile(r"[A-Z]")  # `epochs=N`: any value
NUMBER = r"[-+]?\d[\d.]*(?:e[-+]?\d+)?"


@dataclasses.dataclass
class Row:
    where: str  # "heads/x.py" or "docs/heads/x.md", and the row's "what"
    cells: dict[str, str]  # column -> text, `|` inside code spans kept


def docstring_split(line: str) -> list[str]:
    """A docstring table's cells: there `|` inside a cell is written `\\|`."""
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [c.strip().replace("\\|", "|") for c in cells]


def tables(text: str, split=split_row) -> list[list[list[str]]]:
    """The rows of every table whose header is the fidelity table's."""
    found = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        head = split(lines[i]) if lines[i].lstrip().startswith("|") else []
        if len(head) == 5 and head[0] == "what" and head[1].startswith("paper") and tuple(head[2:]) == COLUMNS[2:]:
            rows, j = [], i + 2
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                rows.append(split(lines[j]))
                j += 1
            found.append(rows)
            i = j
            continue
        i += 1
    return found


def as_rows(raw: list[list[str]], where: str) -> list[Row]:
    out = []
    for cells in raw:
        assert len(cells) == 5, f"{where}: a row has {len(cells)} cells: {cells}"
        out.append(Row(f"{where}: {cells[0]}", dict(zip(COLUMNS, cells))))
    return out


def module_of(head: str) -> str:
    return sys.modules[head_class(head).__module__].__file__


def docstring_rows(head: str) -> list[Row]:
    doc = sys.modules[head_class(head).__module__].__doc__
    found = tables(doc, docstring_split)
    assert len(found) == 1, f"{head}: its module docstring should hold one table, found {len(found)}"
    return as_rows(found[0], f"heads/{Path(module_of(head)).name}")


def page_rows(head: str, text: str | None = None) -> list[Row]:
    """The rows of the one fidelity table on the head's page."""
    page = DOCS / "heads" / f"{head}.md"
    found = tables(prose(hand_written(page) if text is None else text))
    assert len(found) == 1, f"docs/heads/{head}.md should hold one *what | paper | ...* table, found {len(found)}"
    return as_rows(found[0], f"docs/heads/{head}.md")


def items(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def claims(cell: str) -> dict[str, str]:
    """`key=value` items of a cell (`-o JOB.KEY=VALUE` kept under "-o JOB.KEY")."""
    out = {}
    for item in items(cell):
        m = re.fullmatch(r"(-o [a-z0-9_]+\.[a-z_]+|[a-z_0-9]+)=([^|]*)", item)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def switch_keys(cell: str) -> list[tuple[str, list[str]]]:
    """(key, values named) of a switch cell's items; a cell without backticks must be "-"."""
    found = items(cell)
    assert found or cell == "-", f"a switch cell names no key: {cell!r}"
    out = []
    for item in found:
        key, _, values = item.partition("=")
        out.append((key, [v for v in values.split("|") if v] if values else []))
    return out


def has_recipe(cls: type) -> bool:
    return "recipe" in config_fields(cls)


def recipe_keys(cls: type) -> set[str]:
    """Fields on which the two recipes differ (left at None in the dataclass, filled by `recipe`)."""
    if not has_recipe(cls):
        return set()
    code, paper = cls(), cls(recipe="paper")
    unset = {f.name for f in dataclasses.fields(cls) if f.default is None}
    return {k for k in unset if getattr(code, k) != getattr(paper, k)}


def check_value(cls: type, key: str, text: str, where: str) -> object:
    """The typed value of `key=text` for the head's config or the loop's."""
    fields = config_fields(cls)
    if key in fields:
        return parse_value(text, fields[key], key)
    loop = config_fields(LoopConfig)
    assert key in loop, f"{where}: {key!r} is no config key of {cls.__name__} nor a loop key"
    return parse_value(text, loop[key], key)


def default_of(cls: type, key: str) -> object:
    return getattr(cls() if key in config_fields(cls) else LoopConfig(), key)


def check_rows(head: str, rows: list[Row]) -> set[str]:
    """Every stated key and value of `rows` against head's config; returns the keys switched."""
    cls = head_class(head).config_class
    paper = cls(recipe="paper") if has_recipe(cls) else cls()
    load_all()
    switched: set[str] = set()
    recipes = recipe_keys(cls)
    for row in rows:
        stated_default, stated_paper = claims(row.cells["lighthead default"]), claims(row.cells["paper"])
        for key, values in switch_keys(row.cells["switch"]):
            if key.startswith("-o "):
                job = key[3:].partition(".")[0]
                assert job in FEATURES.names(), f"{row.where}: no feature job {job!r}"
                continue
            assert not any(c in key for c in "*?"), f"{row.where}: name the keys, not a pattern ({key})"
            for value in values:
                if not PLACEHOLDER.fullmatch(value):
                    typed = check_value(cls, key, value, row.where)
                    if key in config_fields(cls):
                        cls(**{key: typed})  # accepted by the config's validation
            switched.add(key)
            assert key in stated_default, f"{row.where}: the default cell does not state `{key}=...`"
            if key in recipes:
                assert key in stated_paper, f"{row.where}: the paper cell does not state `{key}=...` (recipe=paper)"
        for key, text in stated_default.items():
            if key.startswith("-o "):
                job_key = key[3:]
                for dataset in EXTRACT_DATASETS.get(head, ()):
                    got = DATASET_JOB_OPTIONS.get(dataset, {}).get(job_key)
                    assert str(got).lower() == text.lower(), (
                        f"{row.where}: extract --dataset {dataset} sets {job_key}={got}"
                    )
                continue
            want = check_value(cls, key, text, row.where)
            got = default_of(cls, key)
            assert got == want, f"{row.where}: the default of {key} is {got!r}, not {text}"
        for key, text in stated_paper.items():
            want = check_value(cls, key, text, row.where)
            got = getattr(paper, key) if key in config_fields(cls) else default_of(cls, key)
            assert got == want, f"{row.where}: recipe=paper gives {key}={got!r}, not {text}"
    missing = recipes - switched
    assert not missing, f"{head}: recipe keys without a row: {sorted(missing)}"
    return switched


# -- the leading value of a default cell ------------------------------------------------------


def stated(cell: str, n: int) -> list[str] | None:
    """The n values a default cell states first (`9`, `9 / 4`, `` `t2i` ``, `` `direction=t2i` ``,
    `9 (demo: 25)`), or None when it states them in words."""
    head = cell.split(" (")[0].strip()
    code = re.fullmatch(r"`(?:[a-z_0-9]+=)?([^`=]+)`", head)
    if code and n == 1:
        return [code.group(1)]
    numbers = re.fullmatch(rf"({NUMBER})(?: / ({NUMBER}))?", head)
    if numbers and len([g for g in numbers.groups() if g]) == n:
        return [g for g in numbers.groups() if g]
    return None


def same(text: str, value: object) -> bool:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(text) == float(value)
        except ValueError:
            return False
    return text == gen.value_text(value)


def leading_value_problems(head: str, rows: list[Row]) -> list[str]:
    """Rows switching one key (or two, `a / b`) whose default cell starts with a value that is not
    the config's default."""
    default = gen.resolved(gen.config_class(head))
    found = []
    for row in rows:
        keys = [k for k, _ in switch_keys(row.cells["switch"])]
        if not keys or len(keys) > 2 or any(k not in default for k in keys):
            continue
        values = stated(row.cells["lighthead default"], len(keys))
        if values is None:
            continue
        for key, value in zip(keys, values):
            if isinstance(default[key], str) and re.fullmatch(NUMBER, value):
                continue  # a feature set's size (`regions` holds 36 boxes), not its name
            if not same(value, default[key]):
                found.append(f"{row.where}: the table says {key} = {value}, the config {gen.value_text(default[key])}")
    return found


# -- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("head", HEADS.names())
def test_docstring_table_states_the_code(head):
    check_rows(head, docstring_rows(head))


@pytest.mark.parametrize("head", HEADS.names())
def test_page_table_states_the_code_and_names_the_docstrings_keys(head):
    assert check_rows(head, page_rows(head)) == check_rows(head, docstring_rows(head)), head


@pytest.mark.parametrize("head", HEADS.names())
def test_leading_values_are_the_configs(head):
    assert leading_value_problems(head, page_rows(head)) == []


def test_the_leading_value_check_reads_the_tables():
    checked = sum(
        stated(row.cells["lighthead default"], len(switch_keys(row.cells["switch"]))) is not None
        for head in HEADS.names()
        for row in page_rows(head)
        if row.cells["switch"] != "-"
    )
    assert checked >= 8


def test_the_page_names_the_heads_whose_defaults_are_released_code():
    text = " ".join((DOCS / "heads" / "index.md").read_text(encoding="utf-8").split())
    sentence = text[text.index("Where the authors released code (") :][:400]
    named = set(re.findall(r"`([a-z-]+)`", sentence[: sentence.index(")")]))
    released = {
        h
        for h in HEADS.names()
        if any(row.cells["released code"].lower() not in ("none", "-") for row in docstring_rows(h))
    }
    assert named == released
    for head in released:  # their defaults are the code's: the recipe, where they have one, is "code"
        cls = head_class(head).config_class
        assert not has_recipe(cls) or cls().recipe == "code", head


def test_a_changed_default_fails_the_page_check(monkeypatch):
    """A default that moves (here the released temperature of SCAN) fails both checks of the page."""
    from lighthead.heads.scan import SCANConfig

    rows = page_rows("scan")
    assert leading_value_problems("scan", rows) == [] and check_rows("scan", rows)
    monkeypatch.setitem(SCANConfig.RECIPE_VALUES["code"], "lambda_t2i", 10.0)
    assert any("lambda_t2i = 9" in p for p in leading_value_problems("scan", rows))
    with pytest.raises(AssertionError, match="the default of lambda_t2i is 10.0, not 9"):
        check_rows("scan", rows)


def test_a_page_row_that_drifts_from_the_code_fails():
    text = (DOCS / "heads" / "vsepp.md").read_text(encoding="utf-8").replace("`grad_clip=2`", "`grad_clip=3`", 1)
    with pytest.raises(AssertionError, match="the default of grad_clip is 2.0, not 3"):
        check_rows("vsepp", page_rows("vsepp", text))


def test_the_parser_reads_what_it_checks():
    line = (
        "| loss | a `max_violation=true` | x | hardest (`max_violation=true` `sum_negatives_epochs=0`) "
        "| `max_violation=false`, `sum_negatives_epochs=N` |"
    )
    row = as_rows([split_row(line)], "t")[0]
    assert claims(row.cells["lighthead default"]) == {"max_violation": "true", "sum_negatives_epochs": "0"}
    assert switch_keys(row.cells["switch"]) == [("max_violation", ["false"]), ("sum_negatives_epochs", ["N"])]
    assert switch_keys("`attn_norm=l2norm|softmax`") == [("attn_norm", ["l2norm", "softmax"])]
    assert docstring_split("| a | `x=l2norm\\|softmax` |") == ["a", "`x=l2norm|softmax`"]
    assert claims("`-o bert.ascii=true`") == {"-o bert.ascii": "true"}
    assert stated("`direction=t2i`", 1) == ["t2i"] and stated("9 / 4 (`lambda_t2i=9`)", 2) == ["9", "4"]
