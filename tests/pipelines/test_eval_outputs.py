"""What `lighthead evaluate` leaves in a run: the exact files per task and the "wrote" line,
ITIN's examples in words (real MiniLM token features), training curves from metrics.json, and
the optional TensorBoard log."""

from __future__ import annotations

import json
import re
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lighthead.pipelines.cli import app
from lighthead.pipelines.cli.common import run_app
from lighthead.pipelines.training.curves import curve_series, curves_figure
from lighthead.pipelines.training.evaluate import evaluate_run, load_run, markdown_table
from lighthead.pipelines.training.loop import train
from lighthead.store import open_store
from tests.conftest_helpers import build_retrieval_store
from tests.pipelines.test_sentiment import TEXT, TINY, build_store

RETRIEVAL = {"embed_size": "8", "word_dim": "8", "batch_size": "16", "val_images": "0"}
ITIN = {**TINY["itin"], "epochs": 2}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def files_of(run: Path) -> set[str]:
    return {p.name for p in run.iterdir() if p.is_file()}


def minilm_tokens(text: str) -> list[str]:
    """The bundled MiniLM's tokens of `text`, computed here without the store."""
    from transformers import AutoTokenizer

    from lighthead.extract.text import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("all-minilm-l6-v2"), local_files_only=True)
    return tok.convert_ids_to_tokens(tok(text)["input_ids"])


@pytest.fixture(scope="module")
def retrieval_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalout")
    store = build_retrieval_store(
        root / "store", n_images=30, splits=(20, 5, 5), region_dim=32, num_regions=6, global_dim=32, token_dim=8, seed=3
    )
    run = root / "run"
    train("vsepp", store, run, epochs=3, overrides={**RETRIEVAL, "val_every": "2"}, progress=False)
    return run


@pytest.fixture(scope="module")
def minilm_store(tmp_path_factory) -> Path:
    """Demo records with synthetic image features and real MiniLM token features of the posts."""
    from lighthead.pipelines.datasets.base import Record
    from lighthead.pipelines.features import ExtractOptions
    from lighthead.pipelines.features.text import run_text_job

    path = build_store(tmp_path_factory.mktemp("minilm"), n_images=40, text=False)
    store = open_store(path)
    posts = [r for r in map(Record.from_json, store.read_json("records")) if r.kind == "post"]
    options = ExtractOptions(batch_size=16, progress=False, dtype="float32")
    assert run_text_job("minilm", "all-minilm-l6-v2", posts, store, options).written == len(posts)
    return path


@pytest.fixture(scope="module")
def itin_run(minilm_store, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("itin") / "run"
    train("itin", minilm_store, run, overrides=ITIN, progress=False)
    return run


# -- one set of files per evaluation ----------------------------------------------------------


def test_retrieval_files_and_wrote_line(retrieval_run):
    before = files_of(retrieval_run)
    res = CliRunner().invoke(app, ["evaluate", str(retrieval_run), "--split", "val", "--examples", "1"])
    assert res.exit_code == 0, res.output
    new = ["eval-val-1k.json", "eval-val-1k.md", "examples-val.png", "curves.png"]
    assert files_of(retrieval_run) - before == set(new)
    lines = res.output.rstrip("\n").split("\n")
    assert lines[-1] == f"wrote {', '.join(new)} in {retrieval_run}"
    table = (retrieval_run / "eval-val-1k.md").read_text()
    assert "\n".join(lines[:-1]) + "\n" == table  # the printed table is the file's
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a 5-image split is not COCO 5K: the protocol only names the files here
        m = evaluate_run(retrieval_run, split="val", protocol="5k")
    assert [Path(f).name for f in m["files"]] == ["eval-val-5k.json", "eval-val-5k.md", "curves.png"]
    assert json.loads((retrieval_run / "eval-val-5k.json").read_text()) == {k: v for k, v in m.items() if k != "files"}


def test_sentiment_files_wrote_line_and_one_table(itin_run):
    before = files_of(itin_run)
    res = CliRunner().invoke(app, ["evaluate", str(itin_run), "--examples", "2"])
    assert res.exit_code == 0, res.output
    new = ["eval-test.json", "eval-test.md", "confusion-test.png", "examples-test.png", "curves.png"]
    assert files_of(itin_run) - before == set(new)  # no protocol in any name, no second JSON or table
    lines = res.output.rstrip("\n").split("\n")
    assert lines[-1] == f"wrote {', '.join(new)} in {itin_run}"
    table = (itin_run / "eval-test.md").read_text()
    assert "\n".join(lines[:-1]) + "\n" == table
    saved = json.loads((itin_run / "eval-test.json").read_text())
    test = json.loads((itin_run / "metrics.json").read_text())["test"]
    assert saved["accuracy"] == pytest.approx(test["accuracy"]) and saved["head"] == "itin"
    assert sum(map(sum, saved["confusion"])) == saved["n"]
    # the table: known columns by their headers, any other float metric too, one decimal, the count last
    head, rule, row = (line.strip("|").split(" | ") for line in table.strip().split("\n")[-3:])
    assert table.startswith("**itin on demo test**\n\n")
    others = [k for k, v in saved.items() if isinstance(v, float) and k not in ("accuracy", "macro_f1")]
    assert [h.strip() for h in head[:2]] == ["Acc", "Macro-F1"] and head[-1].strip() == "N"
    assert len(head) == len(row) == 3 + len(others) and rule == ["|".join(["---:"] * (3 + len(others)))]
    cells = [c.strip() for c in row]
    assert cells[:2] == [f"{saved['accuracy']:.1f}", f"{saved['macro_f1']:.1f}"] and cells[-1] == str(saved["n"])
    assert sorted(cells[2:-1]) == sorted(f"{saved[k]:.1f}" for k in others)


def test_new_float_metrics_get_a_column_in_the_one_format():
    metrics = {
        "head": "itm",
        "dataset": "demo",
        "split": "test",
        "accuracy": 71.84,
        "macro_f1": 70.41,
        "some_new_f1": 69.96,
        "alignment_kl": 0.6512,
        "relevance_f1": None,
        "relevance_n": 0,
        "n": 85,
    }
    table = markdown_table(metrics)
    assert table.split("\n")[2:] == [
        "| Acc | Macro-F1 | Align KL | some_new_f1 | N |",
        "|---:|---:|---:|---:|---:|",
        "| 71.8 | 70.4 | 0.651 | 70.0 | 85 |",
    ]


# -- ITIN's examples in words ----------------------------------------------------------------


def test_text_feature_set_records_its_tokenizer(minilm_store):
    from lighthead.extract.text import resolve_model, vocab_sha256
    from lighthead.pipelines.features.text import tokenizer_attrs
    from lighthead.pipelines.tasks.sentiment_report import load_tokenizer

    store = open_store(minilm_store)
    attrs = store[TEXT].attrs
    assert attrs["tokenizer"] == "all-minilm-l6-v2"
    assert Path(attrs["tokenizer_path"]) == resolve_model("all-minilm-l6-v2")
    assert attrs["tokenizer_vocab_sha256"] == vocab_sha256(load_tokenizer(attrs))
    # a set that exists keeps what it recorded: a moved model folder does not block a resume
    assert tokenizer_attrs("all-minilm-l6-v2", "/moved/elsewhere", store, TEXT, "0" * 64) == {
        "tokenizer": attrs["tokenizer"],
        "tokenizer_path": attrs["tokenizer_path"],
        "tokenizer_vocab_sha256": attrs["tokenizer_vocab_sha256"],
    }


def test_itin_examples_show_words(itin_run):
    from lighthead.pipelines.tasks.sentiment_report import example_panels, token_strings

    ctx = load_run(itin_run)
    task = ctx["task"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the tokenizer is found: no warning
        panels = example_panels(task, ctx["head"], "test", ctx["device"], 2)
        part = task.part("test")
        assert token_strings(task, part, [0, 1]) == [minilm_tokens(r.texts[0]) for r in part.records[:2]]
    assert len(panels) == 2
    seen = []
    for panel in panels:
        allowed = set(minilm_tokens(panel["record"].texts[0]))
        listed = [line.split("words: ", 1)[1] for line in panel["lines"] if "words: " in line]
        assert len(listed) == ITIN.get("m", 2)  # one line per region
        for line in listed:
            words = re.findall(r"(\S+) \(\d\.\d\d\)", line)
            assert len(words) == 4 and set(words) <= allowed, (words, allowed)
            seen += words
    assert not any(re.fullmatch(r"t\d+", w) for w in seen)
    assert any(w.isalpha() and w not in ("[CLS]", "[SEP]") for w in seen)  # real words, not just specials


def test_a_store_without_the_tokenizer_warns_why(minilm_store, itin_run, tmp_path):
    import shutil

    from lighthead.pipelines.datasets.base import Record
    from lighthead.pipelines.features import ExtractOptions
    from lighthead.pipelines.features.text import run_text_job
    from lighthead.pipelines.tasks.sentiment_report import token_strings

    old = tmp_path / "old"
    shutil.copytree(minilm_store, old)
    manifest = old / TEXT / "manifest.json"
    obj = json.loads(manifest.read_text())
    obj["attrs"] = {k: v for k, v in obj["attrs"].items() if not k.startswith("tokenizer")}  # as written before
    manifest.write_text(json.dumps(obj))
    ctx = load_run(itin_run)
    task = ctx["task"]
    task.store = open_store(old)
    part = task.part("test")
    part.store = task.store
    with pytest.warns(
        UserWarning,
        match=r"text/all-minilm-l6-v2: the examples show token numbers .* records no "
        r"tokenizer .*re-extract",
    ):
        tokens = token_strings(task, part, [0])
    assert tokens[0][:3] == ["t0", "t1", "t2"] and len(tokens[0]) == len(minilm_tokens(part.records[0].texts[0]))
    # resuming extraction on such a set works and keeps it as it was
    store = open_store(old)
    extra = [r for r in map(Record.from_json, store.read_json("records")) if r.kind == "target"][:3]
    run_text_job(
        "minilm", "all-minilm-l6-v2", extra, store, ExtractOptions(batch_size=4, progress=False, dtype="float32")
    )
    assert "tokenizer" not in open_store(old)[TEXT].attrs
    # a recorded tokenizer that cannot be found anywhere: the warning names it
    obj["attrs"].update(tokenizer="no-such-model-here", tokenizer_path=str(tmp_path / "gone"))
    manifest.write_text(json.dumps(json.loads(manifest.read_text()) | {"attrs": obj["attrs"]}))
    with pytest.warns(UserWarning, match="tokenizer 'no-such-model-here' cannot be loaded here"):
        token_strings(task, part, [0])


# -- training curves ----------------------------------------------------------------------


def test_curve_series_is_the_history():
    summary = {
        "selection_metric": "rsum",
        "best_epoch": 2,
        "history": [
            {"epoch": 1, "loss": 3.0, "triplet": 2.5, "samples": 10, "seconds": 1.0, "samples_per_s": 10.0},
            {
                "epoch": 2,
                "loss": 2.0,
                "triplet": 1.5,
                "bce": 0.5,
                "samples": 10,
                "seconds": 1.0,
                "samples_per_s": 9.0,
                "val": {"rsum": 100.0, "n_images": 5},
            },
            {
                "epoch": 3,
                "loss": 1.0,
                "triplet": 0.5,
                "bce": 0.4,
                "samples": 10,
                "seconds": 1.0,
                "samples_per_s": 9.0,
                "val": {"rsum": 90.0},
            },
        ],
    }
    s = curve_series(summary)
    assert s["losses"] == {
        "loss": ([1, 2, 3], [3.0, 2.0, 1.0]),
        "triplet": ([1, 2, 3], [2.5, 1.5, 0.5]),
        "bce": ([2, 3], [0.5, 0.4]),
    }
    assert s["val"] == ("rsum", [2, 3], [100.0, 90.0]) and s["best_epoch"] == 2


def test_curves_png_plots_metrics_json(retrieval_run):
    from PIL import Image

    evaluate_run(retrieval_run, split="test")
    summary = json.loads((retrieval_run / "metrics.json").read_text())
    history = summary["history"]
    series = curve_series(summary)
    assert series["losses"]["loss"] == ([h["epoch"] for h in history], [h["loss"] for h in history])
    assert series["val"] == ("rsum", [2, 3], [history[1]["val"]["rsum"], history[2]["val"]["rsum"]])  # val_every=2
    fig = curves_figure(series)
    loss_lines, val_lines = fig.axes[0].get_lines(), fig.axes[1].get_lines()
    for line, (name, (epochs, values)) in zip(loss_lines, series["losses"].items()):
        assert line.get_label() == name
        np.testing.assert_array_equal(line.get_xydata(), np.column_stack([epochs, values]))
    np.testing.assert_array_equal(val_lines[0].get_xydata(), np.column_stack(series["val"][1:]))
    path = retrieval_run / "curves.png"
    assert path.read_bytes()[:8] == PNG_MAGIC and 10_000 < path.stat().st_size < 1_000_000
    with Image.open(path) as im:
        assert im.size == (990, 374)  # 9 x 3.4 inches at 110 dpi


# -- TensorBoard --------------------------------------------------------------------------


class FakeWriter:
    made: list[FakeWriter] = []

    def __init__(self, log_dir):
        self.log_dir, self.scalars, self.flushes, self.closed = log_dir, [], 0, False
        FakeWriter.made.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        self.flushes += 1

    def close(self):
        self.closed = True


def test_tensorboard_log_writes_every_epoch(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    FakeWriter.made.clear()
    store = build_retrieval_store(
        tmp_path / "store",
        n_images=30,
        splits=(20, 5, 5),
        region_dim=32,
        num_regions=6,
        global_dim=32,
        token_dim=8,
        seed=3,
    )
    run = tmp_path / "run"
    metrics = train("vsepp", store, run, epochs=2, overrides={**RETRIEVAL, "log": "tensorboard"}, progress=False)
    (w,) = FakeWriter.made
    assert w.log_dir == str(run / "tensorboard") and w.closed and w.flushes == 2
    got = {(tag, step): value for tag, value, step in w.scalars}
    for h in metrics["history"]:
        assert got[("train/loss", h["epoch"])] == h["loss"]
        assert got[("train/samples_per_s", h["epoch"])] == h["samples_per_s"]
        assert got[("val/rsum", h["epoch"])] == h["val"]["rsum"]
    assert got[("test/rsum", metrics["best_epoch"])] == metrics["test"]["rsum"]
    assert json.loads((run / "config.json").read_text())["loop"]["log"] == "tensorboard"


def test_tensorboard_missing_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as when the package is absent
    store = build_retrieval_store(
        tmp_path / "store", n_images=10, splits=(6, 2, 2), region_dim=8, num_regions=2, global_dim=8, token_dim=8
    )
    run = tmp_path / "run"
    argv = [
        "lighthead",
        "train",
        "heads",
        "vsepp",
        "--store",
        str(store),
        "--out",
        str(run),
        "--no-progress",
        "--set",
        "log=tensorboard",
    ]
    monkeypatch.setattr("sys.argv", argv)
    assert run_app(app) == 1
    err = capsys.readouterr().err
    assert err == "error: --set log=tensorboard needs the tensorboard package: pip install 'lighthead[tensorboard]'\n"
    assert not run.exists()  # nothing written before the failure
    monkeypatch.setattr("sys.argv", argv[:-1] + ["log=wandb"])
    assert run_app(app) == 1
    assert "log must be one of none, tensorboard" in capsys.readouterr().err


def test_the_docs_state_the_files_and_the_tensorboard_error():
    from lighthead.pipelines.training.live_log import MISSING

    docs = Path(__file__).resolve().parents[2] / "docs"
    training = " ".join((docs / "heads" / "index.md").read_text(encoding="utf-8").split())
    evaluation = " ".join((docs / "evaluation.md").read_text(encoding="utf-8").split())
    assert f"error: {MISSING}" in training
    for name in ("`eval-<split>-<protocol>.json`", "`eval-<split>.json`", "`confusion-<split>.png`", "`curves.png`"):
        assert name in evaluation
