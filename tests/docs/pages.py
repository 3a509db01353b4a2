"""What the documentation tests share: the docs folder, its pages and its two scripts."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
GENERATED = re.compile(r"<!-- generated: .*? -->\n.*?<!-- end generated -->", re.S)
FENCE = re.compile(r"^(`{3,})[^\n]*\n(.*?)^\1\s*$", re.S | re.M)


def script(name: str) -> ModuleType:
    """docs/<name>.py as a module (docs/ is not a package)."""
    key = f"docs_{name}"
    if key not in sys.modules:  # registered before it runs: its dataclasses look their module up
        spec = importlib.util.spec_from_file_location(key, DOCS / f"{name}.py")
        sys.modules[key] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[key])
    return sys.modules[key]


def hand_written(page: Path) -> str:
    """The page without its generated blocks (those come from the code itself)."""
    return GENERATED.sub("", page.read_text(encoding="utf-8"))


def fenced_blocks(text: str) -> list[str]:
    return [m.group(2) for m in FENCE.finditer(text)]


def prose(text: str) -> str:
    """The text outside fenced blocks."""
    return FENCE.sub("", text)


def inline_spans(text: str) -> list[str]:
    """Inline code spans outside fenced blocks (single backticks)."""
    return re.findall(r"(?<!`)`([^`\n]+)`(?!`)", prose(text))


def split_row(line: str) -> list[str]:
    """A table row's cells: `|` separates them except escaped or inside a code span."""
    cells, current, in_code = [], "", False
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    for i, char in enumerate(body):
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code and (i == 0 or body[i - 1] != "\\"):
            cells.append(current.strip())
            current = ""
        else:
            current += char
    return cells + [current.strip()]
