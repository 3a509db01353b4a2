"""Every head's *what | paper | released code | lighthead default | switch* table, in its module
docstring and in its README section, against the code.

What a table states in backticks is checked:
- switch cell: each `key`, `key=value` or `key=a|b` names a field of the head's config (or a
  loop key such as `val_images`) and every value named there is one the config accepts;
  `-o JOB.KEY=VALUE` names an extraction setting of a registered feature job;
- lighthead default cell: each `key=value` is the config's default (the dataclass with its
  recipe resolved), and every key of the row's switch cell is stated there; `-o JOB.KEY=VALUE`
  is what `lighthead extract` sets for the head's datasets;
- paper cell: each `key=value` is what `recipe=paper` gives (heads without a recipe follow the
  paper by default, so there it is the default); on heads with a recipe, every recipe key named
  in a switch cell is stated there, and every recipe key has a row.
The two copies of a table name the same keys, and README's sentence on heads whose defaults are
their released code names exactly the heads whose tables cite released code.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import pytest

from lighthead.heads.base import HEADS
from lighthead.heads.build import config_fields, head_class, parse_value
from lighthead.pipelines.features.runner import DATASET_JOB_OPTIONS
from lighthead.pipelines.features import FEATURES, load_all
from lighthead.pipelines.training.loop import LoopConfig

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
COLUMNS = ("what", "paper", "released code", "lighthead default", "switch")
# the datasets whose extraction defaults (`-o JOB.KEY=VALUE` in a default cell) a head's table states
EXTRACT_DATASETS = {"itin": ("mvsa-single", "mvsa-multiple")}
PLACEHOLDER = re.compile(r"[A-Z]")  # `epochs=N`: any value


@dataclasses.dataclass
class Row:
    where: str  # "heads/x.py" or "README", and the row's "what"
    cells: dict[str, str]  # column -> text, `\|` read as `|`


def split_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [c.strip().replace("\\|", "|") for c in cells]


def tables(text: str) -> list[tuple[int, list[list[str]]]]:
    """(offset, rows) of every table whose header is the fidelity table's."""
    found = []
    lines = text.splitlines(keepends=True)
    offset = 0
    i = 0
    while i < len(lines):
        head = split_row(lines[i]) if lines[i].lstrip().startswith("|") else []
        if len(head) == 5 and head[0] == "what" and head[1].startswith("paper") and tuple(head[2:]) == COLUMNS[2:]:
            rows, j = [], i + 2
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                rows.append(split_row(lines[j]))
                j += 1
            found.append((offset, rows))
            offset += sum(len(x) for x in lines[i:j])
            i = j
            continue
        offset += len(lines[i])
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
    found = tables(doc)
    assert len(found) == 1, f"{head}: its module docstring should hold one table, found {len(found)}"
    return as_rows(found[0][1], f"heads/{Path(module_of(head)).name}")


def readme_rows() -> dict[str, list[Row]]:
    """head -> rows of the table in its README section (the section is the last `### `name``
    heading, or `(`heads/name.py`)` reference, before the table)."""
    files = {Path(module_of(h)).stem: h for h in HEADS.names()}
    marks = [(m.start(), m.group(1)) for m in re.finditer(r"^### `([a-z-]+)`", README, re.M)]
    marks += [(m.start(), files[m.group(1)]) for m in re.finditer(r"\(`heads/([a-z_]+)\.py`\)", README)
              if m.group(1) in files]
    marks.sort()
    out: dict[str, list[Row]] = {}
    for offset, raw in tables(README):
        head = [name for at, name in marks if at < offset][-1]
        assert head not in out, f"README: two tables for {head}"
        out[head] = as_rows(raw, f"README ({head})")
    return out


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
                    assert str(got).lower() == text.lower(), \
                        f"{row.where}: extract --dataset {dataset} sets {job_key}={got}"
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


@pytest.mark.parametrize("head", HEADS.names())
def test_docstring_table_states_the_code(head):
    check_rows(head, docstring_rows(head))


@pytest.mark.parametrize("head", HEADS.names())
def test_readme_table_states_the_code_and_names_the_docstrings_keys(head):
    rows = readme_rows()
    assert head in rows, f"README: no table for {head}"
    assert check_rows(head, rows[head]) == check_rows(head, docstring_rows(head)), head


def test_readme_names_the_heads_whose_defaults_are_released_code():
    sentence = README[README.index("Where the authors released code ("):][:400]
    named = set(re.findall(r"`([a-z-]+)`", sentence[:sentence.index(")")]))
    released = {h for h in HEADS.names()
                if any(row.cells["released code"].lower() not in ("none", "-") for row in docstring_rows(h))}
    assert named == released
    for head in released:  # their defaults are the code's: the recipe, where they have one, is "code"
        cls = head_class(head).config_class
        assert not has_recipe(cls) or cls().recipe == "code", head


def test_the_parser_reads_what_it_checks():
    line = ("| loss | a `max_violation=true` | x | hardest (`max_violation=true` `sum_negatives_epochs=0`) "
            "| `max_violation=false`, `sum_negatives_epochs=N` |")
    row = as_rows([split_row(line)], "t")[0]
    assert claims(row.cells["lighthead default"]) == {"max_violation": "true", "sum_negatives_epochs": "0"}
    assert switch_keys(row.cells["switch"]) == [("max_violation", ["false"]), ("sum_negatives_epochs", ["N"])]
    assert switch_keys("`attn_norm=l2norm\\|softmax`".replace("\\|", "|")) == [("attn_norm", ["l2norm", "softmax"])]
    assert claims("`-o bert.ascii=true`") == {"-o bert.ascii": "true"}
