"""What README.md states about the code matches the code: the *Defaults and demo sizes* table
against every head's config (defaults and `DATASET_DEFAULTS["demo"]`), the unknown-key error
text against the real error, and the `--threads` option against the commands that have it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lighthead.heads.base import HEADS, source_kinds
from lighthead.heads.build import config_fields, head_class, make_config, parse_value
from lighthead.pipelines.cli import app
from lighthead.pipelines.cli.common import run_app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
STATED_ALWAYS = ("epochs", "batch_size", "lr")  # the defaults column names these for every head


TABLE_HEADER = "| head | defaults | `--dataset demo` |"
TABLE_SECTION = "### Defaults and demo sizes"


def defaults_table(readme: str = README) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """head -> (defaults column, demo column) as {key: value text}."""
    start = readme.index(TABLE_HEADER)
    rows = {}
    for line in readme[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 3, line
        name = cells[0].strip("`")
        rows[name] = tuple(dict(re.findall(r"`([a-z_0-9]+)=([^`]*)`", cell)) for cell in cells[1:])
        for cell, parsed in zip(cells[1:], rows[name]):  # every word of a cell is a `key=value`
            assert len(re.findall(r"`[^`]*`", cell)) == len(parsed), line
    return rows


def typed(cls: type, stated: dict[str, str]) -> dict:
    fields = config_fields(cls)
    unknown = set(stated) - set(fields)
    assert not unknown, f"{cls.__name__} has no {unknown}"
    return {k: parse_value(v, fields[k], k) for k, v in stated.items()}


def as_stated(value) -> str:
    """A config value as the table writes it: `true`, `2e-4`, `0.2`, `30`, `1,2,3`."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value and abs(value) < 1e-2:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return ",".join(as_stated(v) for v in value)
    return str(value)


def suggested_row(head: str) -> str:
    """The defaults table's row for `head`, from its config: the feature sets it reads, then
    `STATED_ALWAYS`; the demo column is its DATASET_DEFAULTS["demo"]."""
    cls = head_class(head).config_class
    default = cls()
    keys = [k for k in source_kinds(cls) if getattr(default, k)]
    keys += [k for k in STATED_ALWAYS if k in config_fields(cls)]
    defaults = " ".join(f"`{k}={as_stated(getattr(default, k))}`" for k in keys)
    demo = " ".join(f"`{k}={as_stated(v)}`" for k, v in cls.DATASET_DEFAULTS.get("demo", {}).items())
    return f"| `{head}` | {defaults} | {demo} |"


def table_problems(heads: list[str], readme: str = README) -> list[str]:
    """One line per head without a row in the defaults table, saying which row to add, and per
    row that names no registered head."""
    rows = defaults_table(readme)
    missing = [f"README.md: add a row for head {h!r} to the defaults table under {TABLE_SECTION!r}: "
               f"{suggested_row(h)}" for h in heads if h not in rows]
    extra = [f"README.md: the defaults table under {TABLE_SECTION!r} has a row for {h!r}, which is no registered "
             f"head" for h in rows if h not in heads]
    return missing + extra


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
    assert not missing, f"README's defaults for {head} leave out {missing}"
    # the demo column is the whole of DATASET_DEFAULTS["demo"], nothing more, nothing less
    want = dict(cls.DATASET_DEFAULTS.get("demo", {}))
    assert typed(cls, demo) == want, (head, demo, want)
    make_config(cls, {}, "demo")  # and it builds


def test_the_table_lists_every_head():
    problems = table_problems(HEADS.names())
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("head", HEADS.names())
def test_stated_defaults_are_the_configs(head):
    check_defaults(head, defaults_table())


@pytest.mark.parametrize("head", HEADS.names())
def test_the_suggested_row_is_the_row_the_table_holds(head):
    stated, demo = defaults_table()[head]
    row = suggested_row(head)
    assert defaults_table(f"{TABLE_HEADER}\n|---|---|---|\n{row}\n")[head] == (stated, demo), row


def test_a_head_without_a_row_is_told_the_row_to_add():
    from tests.heads.toy_fixture import toy_head_registered

    with toy_head_registered():
        row = ("| `toy` | `regions=regions/butd-r101-vg-36` `text=words/vocab` `epochs=2` `batch_size=16` `lr=2e-3` "
               "| `regions=regions/butd-r101-vg-given` |")
        assert table_problems(HEADS.names()) == [
            "README.md: add a row for head 'toy' to the defaults table under '### Defaults and demo sizes': " + row]
        # the row it suggests is one the checks accept
        table = README.index(TABLE_HEADER)
        with_row = README[:table] + README[table:].replace("\n\n", f"\n{row}\n\n", 1)
        assert not table_problems(HEADS.names(), with_row)
        check_defaults("toy", defaults_table(with_row))
    assert table_problems(HEADS.names(), with_row) == [
        "README.md: the defaults table under '### Defaults and demo sizes' has a row for 'toy', which is no "
        "registered head"]


def test_demo_feature_sets_the_prose_names():
    """The sentiment section's sentence on the demo's feature sets agrees with the configs."""
    sentence = README[README.index("On `--dataset demo` the defaults switch to"):][:300]
    text, regions = re.findall(r"`((?:text|regions)/[^`]+)`", sentence)[:2]
    for head in ("itin", "itm", "text-only"):
        assert make_config(head_class(head).config_class, {}, "demo").text == text
    assert make_config(head_class("itm").config_class, {}, "demo").regions == regions


def stated_errors() -> list[str]:
    found = re.findall(r"`(error: unknown config key[^`]*)`", README)
    assert found, "README states no unknown-key error"
    return found


def as_pattern(stated: str) -> re.Pattern:
    """README's text with each `...` standing for any text."""
    return re.compile(".*".join(re.escape(part) for part in stated.split("...")) + r"\Z")


def test_unknown_key_error_is_the_one_readme_shows(tmp_path, capsys):
    code = run_app(app, ["train", "heads", "casc", "--store", str(tmp_path / "store"), "--out",
                         str(tmp_path / "run"), "--set", "nonsense=1"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    for stated in stated_errors():
        assert as_pattern(stated).match(err), (stated, err)
    from lighthead.store import open_store

    open_store(tmp_path / "store", create=True).write_json("dataset", {"name": "demo"})  # a sweep needs a store
    code = run_app(app, ["sweep", "casc", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "sweep"),
                         "--grid", "nonsense=1,2"])
    sweep_err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and sweep_err == err


def test_as_pattern_is_strict():
    assert as_pattern("error: a ...; b ...").match("error: a x, y; b z")
    assert not as_pattern("error: a ...; b ...").match("error: c x; b z")


@pytest.mark.parametrize("command", [["train", "heads"], ["evaluate"], ["demo"]])
def test_threads_option_is_where_readme_says(command, capsys):
    run_app(app, command + ["--help"])
    assert "--threads" in capsys.readouterr().out
    section = README[README.index("## Command line"):]
    section = section[:section.index("\n```\n", section.index("```") + 3)]  # its first code block
    usage = next(line for line in section.splitlines() if line.startswith("lighthead " + " ".join(command)))
    block = section[section.index(usage):].split("\nlighthead ")[0]  # the usage and its continuation lines
    assert "[--threads N]" in block, usage
    assert "OMP_NUM_THREADS" in README
