"""No code runs from a model folder: an `auto_map` is refused in one line, stdin is never asked.

A folder whose config.json names its own Python (`auto_map`) makes transformers ask on stdin
whether to run it; a "y" there (`yes |`, a wrapper) would run it. Each case answers "y" on
stdin and checks that the folder's code did not run and that stdin was not read.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from lighthead.extract.text import RemoteCodeError, resolve_model, vocab_sha256
from lighthead.pipelines.cli import app
from lighthead.pipelines.cli.common import run_app
from tests.pipelines.datasets import fixtures


def code_folder(folder: Path, where: str = "config.json") -> Path:
    """A model folder whose `where` maps the auto classes to its own module, which, if ever
    imported, leaves the file MARKER beside it."""
    folder.mkdir(parents=True)
    config = {"model_type": "codebert", "hidden_size": 32}
    auto_map = {
        "AutoConfig": "custom.CustomConfig",
        "AutoModel": "custom.CustomModel",
        "AutoTokenizer": ["custom.CustomTokenizer", None],
    }
    (folder / "config.json").write_text(json.dumps(config | ({"auto_map": auto_map} if where == "config.json" else {})))
    if where != "config.json":
        (folder / where).write_text(json.dumps({"auto_map": auto_map}))
    (folder / "custom.py").write_text(
        f"open({str(folder / 'MARKER')!r}, 'w').write('ran')\n"
        "from transformers import BertConfig, BertModel, BertTokenizerFast\n"
        "class CustomConfig(BertConfig):\n    model_type = 'codebert'\n"
        "class CustomModel(BertModel):\n    config_class = CustomConfig\n"
        "class CustomTokenizer(BertTokenizerFast):\n    pass\n"
    )
    return folder


@pytest.fixture
def yes_on_stdin(monkeypatch, tmp_path):
    """stdin that answers "y" to any question; transformers' module cache kept under tmp_path."""
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    stdin = io.StringIO("y\n" * 20)
    monkeypatch.setattr(sys, "stdin", stdin)
    return stdin


@pytest.mark.parametrize("where", ["config.json", "tokenizer_config.json"])
def test_resolve_model_refuses_a_folder_with_its_own_code(tmp_path, where):
    folder = code_folder(tmp_path / "model", where)
    with pytest.raises(RemoteCodeError, match=rf"^{folder}: its {where} has an auto_map"):
        resolve_model(folder)


def test_text_model_with_its_own_code_is_one_line_and_runs_nothing(tmp_path, capsys, yes_on_stdin):
    folder = code_folder(tmp_path / "model")
    root = fixtures.twitter(tmp_path / "tw")
    code = run_app(
        app,
        [
            "extract",
            "--dataset",
            "twitter15",
            "--root",
            str(root),
            "--store",
            str(tmp_path / "st"),
            "--features",
            "minilm",
            "--text-model",
            str(folder),
            "--no-progress",
        ],
    )
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    want = (
        f"error: {folder}: its config.json has an auto_map (the model would run the folder's own Python code); "
        "models that need their own code are refused"
    )
    assert lines == [want], err
    assert not (folder / "MARKER").exists()
    assert yes_on_stdin.tell() == 0  # nothing asked


def test_a_recorded_tokenizer_path_is_a_hint_checked_before_use(tmp_path, yes_on_stdin):
    from transformers import AutoTokenizer

    from lighthead.pipelines.tasks.sentiment_report import load_tokenizer

    minilm = resolve_model("all-minilm-l6-v2")
    digest = vocab_sha256(AutoTokenizer.from_pretrained(minilm, local_files_only=True, trust_remote_code=False))
    # a store received from elsewhere names a local folder with code: refused, no fallback, nothing run
    folder = code_folder(tmp_path / "model")
    attrs = {"tokenizer": "all-minilm-l6-v2", "tokenizer_path": str(folder), "tokenizer_vocab_sha256": digest}
    with pytest.raises(RemoteCodeError, match=f"^{folder}: its config.json has an auto_map"):
        load_tokenizer(attrs)
    assert not (folder / "MARKER").exists() and yes_on_stdin.tell() == 0
    # a folder holding another tokenizer is not taken for the recorded one
    with pytest.raises(ValueError, match=f"{minilm}: a different tokenizer"):
        load_tokenizer({"tokenizer": str(minilm), "tokenizer_path": str(minilm), "tokenizer_vocab_sha256": "0" * 64})
    # a path that is gone or not a folder falls back to the recorded name, which matches
    (tmp_path / "file").write_text("x")
    for hint in (tmp_path / "gone", tmp_path / "file"):
        tok = load_tokenizer(
            {"tokenizer": "all-minilm-l6-v2", "tokenizer_path": str(hint), "tokenizer_vocab_sha256": digest}
        )
        assert vocab_sha256(tok) == digest
