"""The site builds with `mkdocs build --strict`, and strict mode fails on what we rely on it for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.docs.pages import DOCS, ROOT


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "NO_MKDOCS_2_WARNING": "1",
    }  # the theme's end-of-life notice
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_site_builds_in_strict_mode(tmp_path):
    proc = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not [line for line in proc.stderr.splitlines() if line.startswith("WARNING")], proc.stderr[-4000:]
    for page in DOCS.rglob("*.md"):  # every page was built
        html = tmp_path / "site" / page.relative_to(DOCS).with_suffix("") / "index.html"
        if page.name == "index.md":
            html = tmp_path / "site" / page.relative_to(DOCS).parent / "index.html"
        assert html.exists(), page
    api = (tmp_path / "site" / "reference" / "store" / "index.html").read_text(encoding="utf-8")
    assert "open_store" in api and "FeatureSet" in api  # mkdocstrings rendered the docstrings


def test_strict_mode_fails_on_a_broken_anchor_and_a_page_outside_the_nav(tmp_path):
    """Our `validation:` settings turn these into warnings, and --strict into a failed build."""
    ours = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert set(ours["validation"].values()) == {"warn"}
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\nSee [the other page](other.md#no-such-heading).\n")
    (docs / "other.md").write_text("# Other\n")
    (docs / "orphan.md").write_text("# Orphan\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(
        yaml.safe_dump(
            {"site_name": "t", "docs_dir": str(docs), "validation": ours["validation"], "nav": ["index.md", "other.md"]}
        )
    )
    proc = mkdocs_build(config, tmp_path / "site")
    assert proc.returncode != 0
    assert "no-such-heading" in proc.stderr and "orphan.md" in proc.stderr, proc.stderr
