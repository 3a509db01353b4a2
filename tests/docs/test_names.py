"""Every command, option and `--set` key the pages name exists: `lighthead` commands and their
options against the typer app, `--set`/`--grid` keys and the keys of the heads' *switch* and
`--set` table columns against the head's config and the loop's, and `python -m bench.X`
options against the script."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lighthead.heads.build import config_fields
from lighthead.pipelines.training.loop import LoopConfig
from tests.docs.pages import DOCS, PAGES, ROOT, fenced_blocks, hand_written, inline_spans, prose, script, split_row

gen = script("gen_pages")
COMMANDS = {path: gen.cli_options(command) for path, command in gen.cli_commands().items()}
HEAD_KEYS = {head: set(config_fields(gen.config_class(head))) for head in gen.head_names()}
LOOP_KEYS = set(config_fields(LoopConfig))
ALL_KEYS = set().union(*HEAD_KEYS.values()) | LOOP_KEYS
ALL_OPTIONS = set().union(*COMMANDS.values())
BENCH_OPTIONS = {
    p.stem: set(re.findall(r"[\"'](--?[a-z][a-z0-9-]*)[\"']", p.read_text(encoding="utf-8"))) | {"--help"}
    for p in (ROOT / "bench").glob("*.py")
}
PLACEHOLDER_KEYS = {"key", "KEY", "nonsense"}  # `nonsense`: the pages' example of an unknown key
FOREIGN_OPTIONS = {"--gres"}  # a SLURM directive passed through --job-directive
OPTION = re.compile(r"^(--?[a-zA-Z][a-zA-Z0-9-]*)")
KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(=|$)")


def page_head(page: Path) -> str | None:
    """The head a page under docs/heads/ is about."""
    return page.stem if page.parent.name == "heads" and page.stem in HEAD_KEYS else None


def keys_for(head: str | None) -> set[str]:
    return (HEAD_KEYS[head] if head in HEAD_KEYS else ALL_KEYS) | LOOP_KEYS


def options_in(tokens: list[str]) -> list[str]:
    """`[--a N | --b]`, `--slurm/--pbs`, `--x=--y` -> the option names."""
    found = []
    for token in tokens:
        for piece in re.split(r"[|/]", token.strip("[](){},;:")):
            m = OPTION.match(piece.strip("[]"))
            if m:
                found.append(m.group(1))
    return found


def set_keys(tokens: list[str]) -> list[str]:
    """The keys after each `--set` / `--grid` (a placeholder `key=value` is skipped)."""
    keys = []
    for before, token in zip(tokens, tokens[1:]):
        if before.strip("[") in ("--set", "--grid"):
            m = KEY.match(token.strip("[]"))
            if m and m.group(1) not in PLACEHOLDER_KEYS:
                keys.append(m.group(1))
    return keys


def stray_values(tokens: list[str]) -> list[str]:
    """`key=value` words after a `--set`/`--grid` value: each key needs its own `--set`."""
    return [
        t
        for before, t in zip(tokens, tokens[2:])
        if before.strip("[") in ("--set", "--grid") and KEY.match(t.strip("[]")) and "=" in t and not t.startswith("-")
    ]


def commands_in(text: str) -> list[str]:
    """The command lines of fenced blocks (continuations joined, `$ ` and `# comments` dropped)
    and inline spans that are commands."""
    found = []
    for block in fenced_blocks(text):
        current: str | None = None
        for raw in block.splitlines():
            line = re.sub(r"\s#.*$", "", raw).rstrip()
            line = line[2:] if line.startswith("$ ") else line
            if current is not None and (raw.startswith((" ", "\t")) or current.endswith("\\")):
                current = current.rstrip("\\") + " " + line.strip()
                continue
            if current is not None:
                found.append(current)
            current = line if line.startswith(("lighthead ", "python -m bench.")) else None
        if current is not None:
            found.append(current)
    found += [s for s in inline_spans(text) if s.startswith(("lighthead ", "python -m bench."))]
    return found


def check_command(command: str, page_head_name: str | None) -> list[str]:
    tokens = command.split()
    if tokens[0] == "python":  # python -m bench.X ...
        script_name = tokens[2].split(".", 1)[1]
        if script_name.isupper():  # a placeholder: bench.X
            return []
        if script_name not in BENCH_OPTIONS:
            return [f"{command!r}: no bench/{script_name}.py"]
        return [
            f"{command!r}: bench/{script_name}.py takes no {o}"
            for o in options_in(tokens[3:])
            if o not in BENCH_OPTIONS[script_name]
        ]
    words = tokens[1:]
    path = None
    for n in (2, 1):
        candidate = " ".join([words[0]] + [w.split("|")[0] for w in words[1:n]]) if len(words) >= n else None
        if candidate in COMMANDS:
            path = candidate
            break
    if path is None:
        return [] if words and (words[0].startswith("-") or words[0].isupper()) else [f"{command!r}: no such command"]
    rest = tokens[1 + len(path.split()) :]
    problems = [f"{command!r}: lighthead {path} has no option {o}" for o in options_in(rest) if o not in COMMANDS[path]]
    head = rest[0] if path in ("train heads", "sweep") and rest and rest[0] in HEAD_KEYS else page_head_name
    problems += [
        f"{command!r}: no config key {k!r} for {head or 'any head'}" for k in set_keys(rest) if k not in keys_for(head)
    ]
    problems += [f"{command!r}: {t} needs its own --set" for t in stray_values(rest)]
    return problems


def table_key_columns(text: str) -> list[tuple[str, str]]:
    """(row, cell) of every body row's *switch* or `--set` column in the page's tables."""
    cells = []
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if not (line.startswith("|") and re.match(r"^\|[-:| ]+\|$", lines[i + 1])):
            continue
        header = split_row(line)
        columns = [j for j, c in enumerate(header) if c in ("switch", "`--set`")]
        for row in lines[i + 2 :]:
            if not row.startswith("|"):
                break
            values = split_row(row)
            cells += [(row, values[j]) for j in columns if j < len(values)]
    return cells


def check_page(text: str, head: str | None) -> list[str]:
    """Every problem with the names one page's hand-written text uses."""
    problems = []
    for command in commands_in(text):
        problems += check_command(command, head)
    for span in inline_spans(text):
        if span.startswith(("--set ", "--grid ")):
            tokens = span.split()
            problems += [
                f"`{span}`: no config key {k!r} for {head or 'any head'}"
                for k in set_keys(tokens)
                if k not in keys_for(head)
            ]
            problems += [f"`{span}`: {t} needs its own --set" for t in stray_values(tokens)]
        elif span.startswith("--") and "_" not in span.split("=")[0]:  # an option named alone (not another tool's)
            problems += [
                f"`{span}`: no lighthead command or bench script takes {o}"
                for o in options_in(span.split()[:1])
                if o not in ALL_OPTIONS | FOREIGN_OPTIONS and not any(o in opts for opts in BENCH_OPTIONS.values())
            ]
    for row, value in table_key_columns(prose(text)):
        for span in re.findall(r"`([^`]+)`", value):
            for piece in span.split():
                m = KEY.match(piece)
                if m and m.group(1) not in keys_for(head) and piece not in ("-",):
                    problems.append(f"{row[:60]}...: no config key {m.group(1)!r} for {head or 'any head'}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_names_on_the_page_exist(page):
    assert check_page(hand_written(page), page_head(page)) == []


def test_the_pages_show_commands_at_all():
    """The checks above see what they are meant to (a parser that found nothing would pass)."""
    text = "\n".join(hand_written(p) for p in PAGES)
    shown = commands_in(text)
    assert sum(c.startswith("lighthead train heads") for c in shown) >= 5
    assert sum(c.startswith("lighthead store import") for c in shown) >= 3
    assert any(c.startswith("python -m bench.") for c in shown)
    assert len(table_key_columns(prose(hand_written(DOCS / "heads" / "itm.md")))) >= 10


@pytest.mark.parametrize(
    "text, problem",
    [
        ("```\nlighthead train heads casc --store S --out R --set lamda_t2i=1\n```\n", "no config key 'lamda_t2i'"),
        ("```\nlighthead extract --dataset coco --store S \\\n    --bach-size 4\n```\n", "has no option --bach-size"),
        ("```\n$ lighthead evaluate runs/x --presicion bf16\n```\n", "has no option --presicion"),
        ("```\nlighthead frobnicate x\n```\n", "no such command"),
        (
            "Run `lighthead sweep scan --store S --out D --grid lambda_t2i=4,9 --grid alpha=1,2`.",
            "no config key 'alpha' for scan",
        ),
        ("Use `--set recipe=paper --set marign=0.1`.", "no config key 'marign'"),
        ("Use `--no-such-flag`.", "takes --no-such-flag"),
        ("Try `--set m=4 lam=0.5`.", "lam=0.5 needs its own --set"),
        ("```\npython -m bench.store --quik\n```\n", "takes no --quik"),
        (
            "| what | paper | released code | lighthead default | switch |\n|---|---|---|---|---|\n"
            "| x | a | b | c | `lambda_t2i`, `agg=a|b` |\n",
            "no config key 'agg'",
        ),
    ],
)
def test_a_wrong_name_is_found(text, problem):
    problems = check_page(text, "scan")
    assert any(problem in p for p in problems), problems


def test_right_names_pass():
    text = (
        "```\nlighthead train heads itm --store S --out R --set recipe=paper --set lr=1e-4 --set seed=1\n"
        "lighthead store info|verify PATH\nlighthead extract --dataset d --store s --slurm/--pbs "
        "--job-directive=--gres=gpu:1 -o bert.layer=-2\n```\n"
        "| what | switch |\n|---|---|\n| x | `direction=t2i|i2t|both`, `lambda_lse_t2i` |\n"
    )
    assert check_page(text, "scan") == []
