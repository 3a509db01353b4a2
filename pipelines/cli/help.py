"""Readable value names in `--help`: `--batch-size N`, `--set KEY=VALUE`, flags with none.

Recent typer releases print Python type names in the help's value column (`<bool>` beside
every flag, `<list[str]>` beside repeatable options, `<str>` beside arguments, and `--help
<bool>`). `readable_help()` replaces them, for every command: a flag shows nothing, an
option its `metavar` (set where the value has a shape, e.g. `a,b,...`), else a plain name
(N, NUMBER, TEXT, PATH, the choices `a|b`); an argument shows only its name (and its choices).
Older typer versions print click's names (TEXT, INTEGER) already and are left as they are.
"""

from __future__ import annotations

import re
from typing import Any

# typer's names (inside its <...>) -> what the help shows instead.
PLAIN = {
    "str": "TEXT",
    "int": "N",
    "float": "NUMBER",
    "path": "PATH",
    "file": "FILE",
    "directory": "DIR",
    "datetime": "DATETIME",
    "uuid": "UUID",
}


def plain_type(label: str) -> str:
    """`<list[int]>` -> `N`, `<str>` -> `TEXT`, `<a|b>` -> `a|b`, `<int range>` -> `N`."""
    label = label.strip("<>")
    inner = re.fullmatch(r"list\[(.*)\]", label)
    if inner:
        return plain_type(inner.group(1))  # repeatable: the help text says so
    label = label.removesuffix(" range")
    return PLAIN.get(label.lower(), label)


def _option_display(self: Any, ctx: Any) -> str | None:
    if self.is_flag or self.count:
        return None
    if self.metavar is not None:
        return self.metavar
    return plain_type(self.display_type(ctx))


def _argument_display(self: Any, ctx: Any) -> str | None:
    # The argument's name (its metavar) is already in the first column; only choices add to it.
    desc = getattr(self, "type_descriptor", None)
    if desc is not None and desc.is_choice:
        return plain_type(self.display_type(ctx))
    return None


def readable_help() -> None:
    """Install the readable value names into typer's option and argument classes (idempotent)."""
    from typer import core

    option, argument = getattr(core, "TyperOption", None), getattr(core, "TyperArgument", None)
    if option is None or argument is None or not hasattr(option, "display_type_rich"):
        return  # an older typer: click's own names
    option.display_type_rich = _option_display
    argument.display_type_rich = _argument_display
