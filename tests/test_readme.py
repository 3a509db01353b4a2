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


def defaults_table() -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """head -> (defaults column, demo column) as {key: value text}."""
    start = README.index("| head | defaults | `--dataset demo` |")
    rows = {}
    for line in README[start:].splitlines()[2:]:
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


def test_the_table_lists_every_head():
    assert set(defaults_table()) == set(HEADS.names())


@pytest.mark.parametrize("head", HEADS.names())
def test_stated_defaults_are_the_configs(head):
    cls = head_class(head).config_class
    stated, demo = defaults_table()[head]
    default = cls()
    for key, value in typed(cls, stated).items():
        assert getattr(default, key) == value, (head, key, getattr(default, key), value)
    feature_sets = {k for k in source_kinds(cls) if getattr(default, k)}  # the feature sets it reads
    missing = (feature_sets | set(STATED_ALWAYS)) - set(stated)
    assert not missing, f"README's defaults for {head} leave out {missing}"
    # the demo column is the whole of DATASET_DEFAULTS["demo"], nothing more, nothing less
    want = dict(getattr(cls, "DATASET_DEFAULTS", {}).get("demo", {}))
    assert typed(cls, demo) == want, (head, demo, want)
    make_config(cls, {}, "demo")  # and it builds


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
