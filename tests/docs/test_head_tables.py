"""The hand-written *what | paper | released code | lighthead default | switch* tables of the head
pages agree with the configs: where a row switches one key (or two, written `a / b`) and states
its default as a number or a code span, that is the config's default. (The generated *Settings*
table below each of them lists every key; see test_generated.py.)"""

from __future__ import annotations

import re

import pytest

from tests.docs.pages import DOCS, hand_written, prose, script, split_row

gen = script("gen_pages")
NUMBER = r"[-+]?\d[\d.]*(?:e[-+]?\d+)?"


def rows(text: str) -> list[tuple[str, str, list[str]]]:
    """(row, default cell, keys of the switch cell) of every default-and-switch table."""
    found = []
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if not (line.startswith("|") and re.match(r"^\|[-:| ]+\|$", lines[i + 1])):
            continue
        header = split_row(line)
        if "switch" not in header or "lighthead default" not in header:
            continue
        d, s = header.index("lighthead default"), header.index("switch")
        for row in lines[i + 2:]:
            if not row.startswith("|"):
                break
            cells = split_row(row)
            keys = [span.split("=")[0] for span in re.findall(r"`([^`]+)`", cells[s])]
            found.append((row, cells[d], keys))
    return found


def stated(cell: str, n: int) -> list[str] | None:
    """The n values a default cell states (`9`, `9 / 4`, `` `t2i` ``, `9 (demo: 25)`), or None when it
    states them in words."""
    head = cell.split(" (")[0].strip()
    code = re.fullmatch(r"`([^`]+)`", head)
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


def problems(head: str, text: str) -> list[str]:
    default = gen.resolved(gen.config_class(head))
    found = []
    for row, cell, keys in rows(prose(text)):
        if not keys or len(keys) > 2 or any(k not in default for k in keys):
            continue
        values = stated(cell, len(keys))
        if values is None:
            continue
        for key, value in zip(keys, values):
            if isinstance(default[key], str) and re.fullmatch(NUMBER, value):
                continue  # a feature set's size (`regions` holds 36 boxes), not its name
            if not same(value, default[key]):
                found.append(f"{head}: {row[:50]}...: the table says {key} = {value}, the config "
                             f"{gen.value_text(default[key])}")
    return found


@pytest.mark.parametrize("head", gen.head_names())
def test_stated_defaults_are_the_configs(head):
    assert problems(head, hand_written(DOCS / "heads" / f"{head}.md")) == []


def test_the_check_reads_the_tables():
    checked = sum(stated(cell, len(keys)) is not None
                  for head in gen.head_names()
                  for _, cell, keys in rows(prose(hand_written(DOCS / "heads" / f"{head}.md"))) if keys)
    assert checked >= 8


def test_a_changed_recipe_default_fails_the_check(monkeypatch):
    from lighthead.heads.scan import SCANConfig

    text = hand_written(DOCS / "heads" / "scan.md")
    assert problems("scan", text) == []
    monkeypatch.setitem(SCANConfig.RECIPE_VALUES["code"], "lambda_t2i", 10.0)
    assert any("lambda_t2i = 9" in p for p in problems("scan", text))
