"""Write the generated parts of the documentation from the code, so they cannot drift.

A page marks each generated block::

    <!-- generated: head-settings casc -->
    ...  (rewritten by this script)
    <!-- end generated -->

Kinds:
- `head-settings HEAD`: every config key of a head with its default, its `recipe=paper` value
  and the values each `DATASET_DEFAULTS` entry sets, and the field's comment in the code;
- `loop-settings`: the training loop's keys (`LoopConfig`), set with `--set` like head keys;
- `head-defaults`: one row per registered head: its feature sets, epochs, batch size, rate and
  everything `--dataset demo` changes;
- `registries`: the entries of every registry;
- `cli`: every command of the `lighthead` app with its arguments and options;
- `bench-figures`: the figures the `bench-*` transcripts end with, with their command, date,
  machine and commit.

    python docs/gen_pages.py            # rewrite the blocks of every page under docs/
    python docs/gen_pages.py --check    # exit 1 naming each page whose blocks are stale

`tests/docs/test_generated.py` runs the check.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import io
import re
import sys
import textwrap
import tokenize
from pathlib import Path
from typing import Any, Callable

DOCS = Path(__file__).resolve().parent
BLOCK = re.compile(
    r"(<!-- generated: (?P<kind>[a-z-]+)(?: (?P<arg>[^ ]+))? -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S
)
FEATURE_SET_PREFIXES = ("regions/", "global/", "thumbs/", "words/", "text/")

# Registries shown on the reference page: (title, "module:ATTRIBUTE", module whose import fills it).
REGISTRIES = [
    ("Heads", "lighthead.heads.base:HEADS", "lighthead.heads"),
    ("Datasets", "lighthead.pipelines.datasets:DATASETS", "lighthead.pipelines.datasets"),
    ("Feature jobs", "lighthead.pipelines.features:FEATURES", "lighthead.pipelines.features"),
    ("Tasks", "lighthead.pipelines.tasks:TASKS", "lighthead.pipelines.tasks"),
    ("Text models", "lighthead.extract.text.models:TEXT_MODELS", "lighthead.extract.text.models"),
    ("Global CNNs", "lighthead.extract.global_cnn.resnet:RESNETS", "lighthead.extract.global_cnn.resnet"),
]


# ---------------------------------------------------------------------------------------------
# Formatting


def value_text(value: Any) -> str:
    """A config value as `--set` would take it: true/false, 2e-4, a,b for tuples."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != 0 and abs(value) < 1e-2:
            mantissa, exponent = f"{value:e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return ",".join(value_text(v) for v in value)
    if value == "":
        return '""'
    return str(value)


def code(value: Any) -> str:
    return "`" + value_text(value) + "`"  # a `|` inside a code span does not split a table cell


def cell(text: str) -> str:
    """Text for a table cell: `|` and `<` (which would open an HTML tag) escaped outside code spans."""
    parts = text.split("`")
    return "`".join(p if i % 2 else p.replace("|", "\\|").replace("<", "&lt;") for i, p in enumerate(parts))


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Head configs


def config_class(head: str) -> type:
    """The config dataclass of a registered head (the one place that knows where it lives)."""
    from lighthead.heads.build import head_class

    return head_class(head).config_class


def head_names() -> list[str]:
    import lighthead.heads  # noqa: F401  (registers every head)
    from lighthead.heads.base import HEADS

    return HEADS.names()


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment beside it (or the comment lines just above it) in the source."""
    comments: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):  # subclasses win
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # a class made at run time has no source
            continue
        lines = source.splitlines()
        by_row = {
            tok.start[0]: tok.string.lstrip("#").strip()
            for tok in tokenize.generate_tokens(io.StringIO(source).readline)
            if tok.type == tokenize.COMMENT
        }
        body = ast.parse(source).body[0]
        for node in body.body:
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            text = by_row.get(node.lineno) or by_row.get(node.end_lineno or node.lineno)
            if text is None or lines[node.lineno - 1].lstrip().startswith("#"):
                above, row = [], node.lineno - 1
                while row >= 1 and lines[row - 1].lstrip().startswith("#"):
                    above.insert(0, by_row[row])
                    row -= 1
                text = " ".join(above)
            comments[node.target.id] = text or comments.get(node.target.id, "")
    return comments


def resolved(cls: type, overrides: dict[str, Any] | None = None, dataset: str | None = None) -> dict[str, Any]:
    """The config's field values after recipe and dataset defaults, as training resolves them."""
    from lighthead.heads.build import make_config

    cfg = make_config(cls, overrides or {}, dataset)
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)}


def dataset_defaults(cls: type) -> dict[str, dict[str, Any]]:
    return dict(getattr(cls, "DATASET_DEFAULTS", {}) or {})  # optional, as make_config reads it


def head_settings(head: str) -> str:
    cls = config_class(head)
    default = resolved(cls)
    columns: list[tuple[str, dict[str, Any]]] = []
    if "recipe" in default:
        columns.append(("`recipe=paper`", resolved(cls, {"recipe": "paper"})))
    for name in sorted(dataset_defaults(cls), key=lambda n: (n == "demo", n)):
        title = "precomp store" if name == "precomp" else f"`--dataset {name}`"
        columns.append((title, resolved(cls, dataset=name)))
    comments = field_comments(cls)
    rows = []
    for key, value in default.items():
        row = [f"`{key}`", code(value)]
        row += [code(values[key]) if values[key] != value else "" for _, values in columns]
        rows.append(row + [cell(comments.get(key, ""))])
    header = ["`--set` key", "default"] + [title for title, _ in columns] + ["what"]
    note = (
        f"Generated from `{cls.__module__}.{cls.__qualname__}`: the default column is what runs without "
        "`--set`; the other columns show only the values that differ from it.\n\n"
    )
    return note + table(header, rows)


def loop_settings() -> str:
    from lighthead.pipelines.training.loop import LoopConfig

    comments = field_comments(LoopConfig)
    rows = [
        [f"`{f.name}`", code(getattr(LoopConfig(), f.name)), cell(comments.get(f.name, ""))]
        for f in dataclasses.fields(LoopConfig)
    ]
    return f"Generated from `{LoopConfig.__module__}.LoopConfig`.\n\n" + table(["`--set` key", "default", "what"], rows)


def head_defaults() -> str:
    from lighthead.heads.build import head_class

    rows = []
    for head in head_names():
        cls = config_class(head)
        default = resolved(cls)
        stated = [k for k, v in default.items() if isinstance(v, str) and v.startswith(FEATURE_SET_PREFIXES)]
        stated += [k for k in ("epochs", "batch_size", "lr") if k in default]
        demo = dataset_defaults(cls).get("demo", {})
        rows.append(
            [
                f"[`{head}`]({head}.md)",
                head_class(head).task,
                " ".join(f"`{k}={value_text(default[k])}`" for k in stated),
                " ".join(f"`{k}={value_text(v)}`" for k, v in demo.items()),
            ]
        )
    return table(["head", "task", "defaults", "`--dataset demo`"], rows)


# ---------------------------------------------------------------------------------------------
# Registries


def entry_text(obj: Any) -> str:
    if inspect.isclass(obj) or inspect.isfunction(obj):
        doc = (inspect.getdoc(obj) or "").split("\n\n")[0].replace("\n", " ")
        return f"`{obj.__module__}.{obj.__qualname__}`" + (f": {doc}" if doc else "")
    if dataclasses.is_dataclass(obj):
        shown = [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]
        return " ".join(
            f"{k}=`{value_text(v)}`" for k, v in shown if isinstance(v, (str, int, float, tuple)) and v not in ("", ())
        )
    return f"`{type(obj).__name__}`"


def registries() -> str:
    from lighthead.pipelines.features import load_all

    load_all()  # the feature jobs register when their modules are imported
    out = []
    for title, where, package in REGISTRIES:
        importlib.import_module(package)
        module, attr = where.split(":")
        registry = getattr(importlib.import_module(module), attr)
        rows = [[f"`{name}`", cell(entry_text(registry.get(name)))] for name in registry.names()]
        out.append(
            f"### {title}\n\n`{module}.{attr}` ({registry.kind}, {len(registry)} entries)\n\n"
            + table(["name", "entry"], rows)
        )
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Command line


def cli_commands() -> dict[str, Any]:
    """'train heads' -> its command object, for every command of the app."""
    import typer.core
    import typer.main

    from lighthead.pipelines.cli import app

    found: dict[str, Any] = {}

    def walk(command: Any, path: list[str]) -> None:
        if isinstance(command, typer.core.TyperGroup):
            for name, sub in command.commands.items():
                walk(sub, path + [name])
        else:
            found[" ".join(path)] = command

    walk(typer.main.get_command(app), [])
    return found


def cli_options(command: Any) -> set[str]:
    """Every option spelling of a command, `--help` included."""
    names = {"--help"}
    for param in command.params:
        names.update(o for o in [*param.opts, *param.secondary_opts] if o.startswith("-"))
    return names


def cli() -> str:
    out = []
    for path, command in sorted(cli_commands().items()):
        args = [p for p in command.params if not any(o.startswith("-") for o in p.opts)]
        usage = " ".join(["lighthead", path] + [(p.metavar or p.name.upper()) for p in args])
        rows = []
        for p in command.params:
            if p.hidden:
                continue
            if p in args:
                spell = f"`{p.metavar or p.name.upper()}`"
            else:
                spell = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
            default = p.default if not callable(p.default) else None
            shown = "" if default in (None, False, (), []) or p in args else code(getattr(default, "value", default))
            rows.append([spell, shown, cell((p.help or "").replace("\n", " "))])
        doc = (inspect.getdoc(command.callback) or "").split("\n\n")[0].replace("\n", " ")
        out.append(
            f"### `lighthead {path}`\n\n{cell(doc)}\n\n```\n{usage} [OPTIONS]\n```\n\n"
            + table(["argument or option", "default", "what"], rows)
        )
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Benchmark figures, read from the benchmark transcripts

FIGURE = re.compile(r"^([a-z0-9]+(?:_[a-z0-9-]+)+): ([-+]?[0-9][0-9,]*(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?|nan)$")
SPREAD = re.compile(r"^\s+([a-z0-9_-]+)\s+\S+ \((\S+-\S+), (\d+) pairs\)$")  # `  name  0.79 (0.54-1.01, 38 pairs)`
MADE = re.compile(r"^# made (?P<date>\S+) by \S+ on (?P<machine>.*); code (?P<code>\S+)$")


def bench_figures() -> str:
    """One row per figure a `bench-*` transcript ends with: its value, its spread over the interleaved
    rounds (when the script prints one), command, date, load and code."""
    rows, machines = [], {}
    for path in sorted((DOCS / "transcripts").glob("bench-*.txt")):
        lines = path.read_text(encoding="utf-8").splitlines()
        made = MADE.match(lines[0])
        if not made:
            raise ValueError(f"{path.relative_to(DOCS.parent)}: the first line does not say when and where it was made")
        command = next(line[2:] for line in lines if line.startswith("$ "))
        load = re.search(r", load average ([0-9.]+)", made["machine"])
        machine = made["machine"].replace(load.group(0), "") if load else made["machine"]
        machines.setdefault(machine, []).append(path.stem)
        spread = {m[1]: f"{m[2]} ({m[3]} pairs)" for m in map(SPREAD.match, lines) if m}
        for line in lines:
            m = FIGURE.match(line)
            if m:
                rows.append(
                    [
                        f"`{m[1]}`",
                        m[2],
                        spread.get(m[1], ""),
                        f"`{command}`",
                        made["date"],
                        load.group(1) if load else "",
                        f"`{made['code']}`",
                        f"[{path.stem}](#{path.stem})",
                    ]
                )
    out = table(["figure", "median", "min-max", "command", "date", "load", "code", "transcript"], rows)
    for machine, names in machines.items():
        out += f"\nMachine ({', '.join(names)}): {cell(machine)}. *load*: its load average when the run began.\n"
    return out


# ---------------------------------------------------------------------------------------------

KINDS: dict[str, Callable[..., str]] = {
    "head-settings": head_settings,
    "head-defaults": head_defaults,
    "loop-settings": loop_settings,
    "registries": registries,
    "cli": cli,
    "bench-figures": bench_figures,
}


def render(text: str) -> str:
    """The page with every generated block rewritten."""

    def replace(m: re.Match) -> str:
        kind, arg = m["kind"], m["arg"]
        if kind not in KINDS:
            raise ValueError(f"unknown generated block {kind!r}; known: {', '.join(KINDS)}")
        body = KINDS[kind](arg) if arg else KINDS[kind]()
        return m.group(1) + body + m.group(5)

    return BLOCK.sub(replace, text)


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "<!-- generated:" in p.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report pages whose blocks are stale")
    args = parser.parse_args(argv)
    stale = []
    for page in pages():
        old = page.read_text(encoding="utf-8")
        try:
            new = render(old)
        except (ValueError, KeyError) as e:
            print(f"error: {page.relative_to(DOCS.parent)}: {e}", file=sys.stderr)
            return 1
        if new != old:
            stale.append(page)
            if not args.check:
                page.write_text(new, encoding="utf-8")
    for page in stale:
        verb = "stale" if args.check else "rewrote"
        print(f"{verb}: {page.relative_to(DOCS.parent)}", file=sys.stderr)
    if args.check and stale:
        print("error: generated documentation is stale; run: python docs/gen_pages.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
