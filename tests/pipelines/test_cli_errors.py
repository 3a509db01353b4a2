"""The CLI's one top-level handler: every failure is one `error: <file or id>: <what>` line.

Each case runs a real command through `run_app` (what the `lighthead` entry point calls) and
checks the exit code, that stderr holds exactly one `error:` line naming the file, and that no
traceback is printed (unless LIGHTHEAD_DEBUG=1).
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

from lighthead.pipelines.cli import app
from lighthead.pipelines.cli.common import run_app
from tests.conftest_helpers import TINY, build_small_retrieval_store, train_tiny_run
from tests.pipelines.datasets import fixtures

TINY_SET = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_small_retrieval_store(tmp_path_factory.mktemp("cli") / "store", seed=4)


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory):
    return train_tiny_run(store, tmp_path_factory.mktemp("runs") / "vsepp")


@pytest.fixture
def run(trained, tmp_path):
    shutil.copytree(trained, tmp_path / "run")
    return tmp_path / "run"


def lighthead(*args) -> int:
    return run_app(app, [str(a) for a in args])


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def train_args(store, out):
    return ["train", "heads", "vsepp", "--store", store, "--out", out, "--epochs", "1", "--no-progress", *TINY_SET]


def test_disk_full_names_the_file(store, tmp_path, capsys):
    """A real ENOSPC: the file being written is /dev/full."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    out = tmp_path / "run"
    out.mkdir()
    # the atomic writer's temporary name for config.json, pointing at the always-full device
    (out / f"config.json.tmp{os.getpid()}").symlink_to("/dev/full")
    assert lighthead(*train_args(store, out)) == 1
    line = error_line(capsys)
    assert (
        line == f"error: {out / 'config.json'}: no space left on device; free space and rerun the same "
        "command (committed work is kept)"
    )


@pytest.mark.parametrize(
    "code, text",
    [
        (errno.EFBIG, "file too large"),
        (errno.EROFS, "read-only file system"),
        (errno.EACCES, "permission denied"),
        (errno.EDQUOT, "disk quota exceeded"),
    ],
)
def test_write_errors_name_the_file(store, tmp_path, capsys, monkeypatch, code, text):
    import lighthead.store.manifest as manifest

    def fail(path, data, fsync=True):
        if Path(path).suffix == ".safetensors":
            raise OSError(code, os.strerror(code))  # a failed write() carries no file name
        return write(path, data, fsync)

    write = manifest.atomic_write
    monkeypatch.setattr(manifest, "atomic_write", fail)
    out = tmp_path / "run"
    assert lighthead(*train_args(store, out)) == 1
    line = error_line(capsys)
    assert line.startswith(f"error: {out / 'checkpoints'}/") and f".safetensors: {text}" in line, line


def test_permission_denied_on_the_store(tmp_path, capsys, monkeypatch):
    """Extraction into a store it may not write (real when not root; simulated as root)."""
    import lighthead.store.manifest as manifest

    root = fixtures.twitter(tmp_path / "tw")
    dest = tmp_path / "store"
    dest.mkdir()
    if os.geteuid() == 0:

        def denied(path, data, fsync=True):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(Path(path).parent))

        monkeypatch.setattr(manifest, "atomic_write", denied)
    else:
        dest.chmod(0o555)
    try:
        assert (
            lighthead(
                "extract",
                "--dataset",
                "twitter15",
                "--root",
                root,
                "--store",
                dest,
                "--features",
                "minilm",
                "--no-progress",
            )
            == 1
        )
    finally:
        dest.chmod(0o755)
    line = error_line(capsys)
    assert line.startswith(f"error: {dest}") and line.endswith(": permission denied"), line


def test_file_where_a_folder_is_expected(store, tmp_path, capsys):
    out = tmp_path / "run"
    out.write_text("not a folder")
    assert lighthead(*train_args(store, out)) == 1
    assert error_line(capsys) == f"error: {out}: already exists (a file where a folder is expected?)"


def test_corrupt_config_json_is_named(run, capsys):
    (run / "config.json").write_text('{"head": "vsepp", ')
    assert lighthead("evaluate", run) == 1
    assert error_line(capsys).startswith(f"error: {run / 'config.json'}:1: not valid JSON")
    (run / "config.json").write_bytes(b'{"head": "\xff"}')
    assert lighthead("evaluate", run) == 1
    assert error_line(capsys).startswith(f"error: {run / 'config.json'}: not UTF-8 text")


def test_corrupt_metrics_json_is_named(run, capsys):
    (run / "metrics.json").write_text('{"history": [1,')
    assert lighthead("evaluate", run, "--device", "cpu") == 1
    assert error_line(capsys).startswith(f"error: {run / 'metrics.json'}:1: not valid JSON")


def test_corrupt_npz_and_npy(tmp_path, capsys):
    import struct
    import zipfile

    from tests.store.test_importers import make_npz

    (tmp_path / "npz").mkdir()
    (tmp_path / "npz" / "1.npz").write_bytes(b"PK\x03\x04 not really a zip")
    assert lighthead("store", "import", "npz", tmp_path / "npz", tmp_path / "st") == 1
    assert str(tmp_path / "npz" / "1.npz") in error_line(capsys)
    make_npz(tmp_path / "npz2", n=1)  # a valid file whose compressed `x` member is damaged
    path = next((tmp_path / "npz2").glob("*.npz"))
    member = next(i for i in zipfile.ZipFile(path).infolist() if i.filename == "x.npy")
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[member.header_offset + 26 : member.header_offset + 30])
    data[member.header_offset + 30 + name_len + extra_len + 20] ^= 0xFF  # inside the deflated bytes
    path.write_bytes(bytes(data))
    assert lighthead("store", "import", "npz", tmp_path / "npz2", tmp_path / "st3") == 1
    assert error_line(capsys).startswith(f"error: {path}: unreadable array")
    pre = tmp_path / "pre"
    pre.mkdir()
    (pre / "test_ims.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    (pre / "test_caps.txt").write_text("a\n" * 5)
    assert lighthead("store", "import", "precomp", pre, tmp_path / "st2") == 1
    assert str(pre / "test_ims.npy") in error_line(capsys)


def test_corrupt_hdf5_metadata_is_a_store_error(store, tmp_path, capsys):
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    shard = sorted((copy / "global" / "resnet152").glob("*.h5"))[0]
    data = bytearray(shard.read_bytes())
    data[100:116] = bytes(b ^ 0xFF for b in data[100:116])  # inside HDF5's object headers, same size
    shard.write_bytes(bytes(data))
    assert lighthead(*train_args(copy, tmp_path / "run"), "--set", "image=global/resnet152") == 1
    assert str(shard) in error_line(capsys)


def test_refused_detector_weights_are_one_line(tmp_path, capsys):
    from lighthead.pipelines.datasets.demo import generate

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(tmp_path / "code-ran"),))

    root = generate(tmp_path / "demo", n_images=2, size=64)
    weights = tmp_path / "faster_rcnn_from_caffe_attr.pkl"
    weights.write_bytes(pickle.dumps({"model": Payload()}))
    assert (
        lighthead(
            "extract",
            "--dataset",
            "demo",
            "--root",
            root,
            "--store",
            tmp_path / "st",
            "--features",
            "regions36",
            "--weights",
            weights,
            "-o",
            "detector=tiny",
            "--loader-workers",
            "0",
            "--no-progress",
        )
        == 1
    )
    line = error_line(capsys)
    assert str(weights) in line and not (tmp_path / "code-ran").exists()


def test_non_utf8_input_names_file_and_line(tmp_path, capsys):
    root = fixtures.twitter(tmp_path / "tw")
    (root / "test.tsv").write_bytes((root / "test.tsv").read_bytes().replace(b"wins", b"w\xe9ns", 1))
    assert (
        lighthead(
            "extract",
            "--dataset",
            "twitter15",
            "--root",
            root,
            "--store",
            tmp_path / "st",
            "--features",
            "minilm",
            "--no-progress",
        )
        == 1
    )
    assert error_line(capsys).startswith(f"error: {root / 'test.tsv'}:2: not UTF-8 text (byte 0xe9")


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(store, tmp_path, capsys, monkeypatch):
    import lighthead.pipelines.training.loop as train_module

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(train_module, "seed_everything", broken)
    assert lighthead(*train_args(store, tmp_path / "a")) == 1
    assert error_line(capsys) == (
        "error: ZeroDivisionError: division by zero (set LIGHTHEAD_DEBUG=1 for the traceback)"
    )
    monkeypatch.setenv("LIGHTHEAD_DEBUG", "1")
    assert lighthead(*train_args(store, tmp_path / "b")) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "in broken" in err and err.strip().splitlines()[-1].startswith("error: ")


def test_ctrl_c_says_the_rerun_resumes(store, tmp_path, capsys, monkeypatch):
    import lighthead.pipelines.training.loop as train_module

    def interrupted(*args, **kwargs):
        import signal

        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends

    monkeypatch.setattr(train_module, "seed_everything", interrupted)
    assert lighthead(*train_args(store, tmp_path / "run")) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.strip()] == [
        "interrupted: everything committed so far is kept; rerun the same command to resume (`train heads` "
        "with --resume)"
    ]


def test_unknown_dataset_names_are_errors_listing_the_valid_ones(store, tmp_path, capsys):
    assert (
        lighthead(
            "train",
            "heads",
            "vsepp",
            "--store",
            store,
            "--out",
            tmp_path / "r",
            "--dataset",
            "nosuchds",
            "--no-progress",
            *TINY_SET,
        )
        == 1
    )
    line = error_line(capsys)
    assert "unknown dataset 'nosuchds'" in line and "coco" in line and "f30k" in line and "'synthetic'" in line
    assert not (tmp_path / "r").exists()
    assert lighthead("extract", "--dataset", "nosuch", "--root", tmp_path, "--store", tmp_path / "st") == 1
    line = error_line(capsys)
    assert "unknown dataset 'nosuch'" in line and "twitter15" in line and "no default features" not in line


def test_warnings_are_one_line(run, capsys):
    """`evaluate --protocol 5k` on a 5-image test split: scored, with a warning saying what."""
    assert lighthead("evaluate", run, "--protocol", "5k") == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: --protocol 5k: the test split of {run} has 5 images, not 5,000; scored all 5 as "
        "one set (not comparable to COCO 5K results)"
    ]
    assert json.loads((run / "eval-test-5k.json").read_text())["n_images"] == 5


def test_ctrl_c_that_surfaces_as_another_error_is_still_an_interrupt(store, tmp_path, capsys, monkeypatch):
    """A DataLoader whose workers died of the same Ctrl-C raises RuntimeError, not KeyboardInterrupt."""
    import signal

    import lighthead.pipelines.training.loop as train_module

    def interrupted(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            raise RuntimeError("DataLoader worker (pid 1234) exited unexpectedly") from None

    monkeypatch.setattr(train_module, "seed_everything", interrupted)
    assert lighthead(*train_args(store, tmp_path / "run")) == 130
    err = capsys.readouterr().err
    assert "error:" not in err and err.strip().startswith("interrupted: everything committed so far is kept")


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    from lighthead.pipelines.datasets.demo import generate

    return generate(tmp_path_factory.mktemp("demo") / "demo", n_images=2, size=64)


@pytest.mark.parametrize(
    "option, words",
    [
        ("min_size=abc", ["error: -o min_size: expected an integer, got 'abc'"]),
        ("minilm.random_weights=maybe", ["error: -o minilm.random_weights: expected a boolean"]),
        ("backend=gpu", ["error: -o backend: expected one of torch, detectron2, got 'gpu'"]),
        (
            "nosuch=1",
            [
                "unknown -o key 'nosuch'",
                "min_size",
                "text_layer",
                "vocab_threshold",
                "regions36: backend",
                "bert/minilm/roberta: ascii_only, layer",
                "given-boxes: backend, boxes_from",
            ],
        ),
        ("regions36.nosuch=1", ["unknown -o key 'regions36.nosuch'; regions36 reads: backend", "selection"]),
        ("nojob.size=1", ["-o nojob.size: no feature job 'nojob'", "regions36", "thumbs"]),
        ("regions36.selection=nosuch", ["unknown selection 'nosuch'", "d2-maxnms"]),
        ("detector=nosuch", ["unknown detector preset 'nosuch'", "tiny"]),
    ],
)
def test_job_options_are_checked_before_any_job_runs(demo_root, tmp_path, capsys, option, words):
    """A `-o` value that does not parse (one line naming the key and the type), an unknown key
    (the valid ones listed), or a region setting that means nothing (a bad selection, preset)
    stops the command before its first job: minilm, listed first, has not run."""
    store = tmp_path / "st"
    assert (
        lighthead(
            "extract",
            "--dataset",
            "demo",
            "--root",
            demo_root,
            "--store",
            store,
            "--features",
            "minilm,regions36",
            "--random-weights",
            "-o",
            option,
            "--loader-workers",
            "0",
            "--no-progress",
        )
        == 1
    )
    line = error_line(capsys)
    assert all(w in line for w in words), line
    assert not store.exists()


@pytest.mark.parametrize(
    "boxes_from, words",
    [
        ("regions/nosuch", ["boxes_from=regions/nosuch: no such feature set (sets: text/all-minilm-l6-v2)"]),
        ("text/all-minilm-l6-v2", ["text/all-minilm-l6-v2: boxes_from: the set has no `boxes` field"]),
    ],
)
def test_a_boxes_from_set_is_checked_before_any_job_runs(demo_root, tmp_path, capsys, boxes_from, words):
    """`-o given-boxes.boxes_from=` naming a set the store lacks (or one without boxes) stops the
    command once the store is open, before its first job: regions36, listed first, has not run
    (it once ran to the end before given-boxes found out)."""
    from lighthead.store import open_store

    store = tmp_path / "st"
    common = ["extract", "--dataset", "demo", "--root", demo_root, "--store", store, "--random-weights"]
    common += ["--loader-workers", "0", "--no-progress"]
    assert lighthead(*common, "--features", "minilm") == 0  # a store holding a set without boxes
    capsys.readouterr()
    code = lighthead(
        *common,
        "--features",
        "regions36,given-boxes",
        "-o",
        "detector=tiny",
        "-o",
        f"given-boxes.boxes_from={boxes_from}",
    )
    line = error_line(capsys)
    assert code == 1 and all(w in line for w in words), line
    assert open_store(store).names() == ["text/all-minilm-l6-v2"]


def test_typed_job_options_reach_the_jobs(demo_root, tmp_path):
    from lighthead.pipelines.features.runner import check_job_options

    assert check_job_options(
        {
            "min_size": "96",
            "channels_last": "no",
            "text_layer": "-2",
            "vocab_max_size": "none",
            "thumbs.size": 32,
            "minilm.random_weights": False,
        }
    ) == {
        "min_size": 96,
        "channels_last": False,
        "text_layer": -2,
        "vocab_max_size": None,
        "thumbs.size": 32,
        "minilm.random_weights": False,
    }
    with pytest.raises(ValueError, match=r"-o thumbs.size: expected an integer, got '2.5'"):
        check_job_options({"thumbs.size": 2.5})


@pytest.mark.parametrize("flag, value, least", [("--loader-workers", "-1", 0), ("--batch-size", "0", 1)])
def test_negative_loader_workers_are_refused(demo_root, tmp_path, capsys, flag, value, least):
    assert (
        lighthead(
            "extract",
            "--dataset",
            "demo",
            "--root",
            demo_root,
            "--store",
            tmp_path / "st",
            "--features",
            "thumbs",
            flag,
            value,
        )
        == 2
    )
    line = error_line(capsys)
    assert f"invalid value for '{flag}'" in line and f"greater than or equal to {least}" in line, line
    assert not (tmp_path / "st").exists()
    from lighthead.pipelines.features import ExtractOptions

    with pytest.raises(ValueError, match="--loader-workers must be >= 0"):
        ExtractOptions(loader_workers=-1)


def test_a_dataset_other_than_the_stores_is_refused(store, tmp_path, capsys):
    """`--dataset coco` on a store of another dataset: one line naming both and the store."""
    assert (
        lighthead(
            "train",
            "heads",
            "vsepp",
            "--store",
            store,
            "--out",
            tmp_path / "r",
            "--dataset",
            "coco",
            "--epochs",
            "1",
            "--no-progress",
            *TINY_SET,
        )
        == 1
    )
    assert error_line(capsys) == (
        f"error: {store} holds dataset 'synthetic', not 'coco': leave out --dataset, or pass the store of that dataset"
    )
    assert not (tmp_path / "r").exists()
    assert (
        lighthead(
            "sweep",
            "vsepp",
            "--store",
            store,
            "--out",
            tmp_path / "sw",
            "--grid",
            "margin=0.1,0.2",
            "--dataset",
            "f30k",
            "--no-progress",
        )
        == 1
    )
    line = error_line(capsys)
    assert "holds dataset 'synthetic', not 'f30k'" in line and str(store) in line
    assert not (tmp_path / "sw").exists()


def test_evaluate_unknown_split_lists_the_valid_ones(run, capsys):
    assert lighthead("evaluate", run, "--split", "nosuch", "--device", "cpu") == 1
    assert error_line(capsys) == f"error: the store of {run} has no 'nosuch' split; splits: test, train, val"


def test_a_run_without_validation_names_no_best_epoch(tmp_path, capsys):
    from tests.conftest_helpers import build_retrieval_store

    store = build_retrieval_store(
        tmp_path / "store", n_images=25, splits=(20, 0, 5), region_dim=32, num_regions=6, global_dim=32, token_dim=8
    )
    assert lighthead(*train_args(store, tmp_path / "run")) == 0
    out = capsys.readouterr().out
    assert "best epoch" not in out
    assert f"no validation (the store has no val split): kept the last epoch, 1; run in {tmp_path / 'run'}" in out


@pytest.mark.parametrize("job", ["regions36", "resnet18"])
@pytest.mark.parametrize("damage", ["code", "opcode", "truncated"])
def test_refused_torch_weights_are_one_line_without_torch_advice(demo_root, tmp_path, capsys, job, damage):
    """torch's weights_only refusal is several lines and recommends `weights_only=False` (which would
    run the file's code): the user sees one line naming the file, torch's reason, and no advice."""
    import torch

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(tmp_path / "code-ran"),))

    weights = tmp_path / "weights.pth"
    if damage == "code":
        torch.save({"model": {"x": Payload()}}, weights)
    elif damage == "opcode":  # a bare protocol-4 pickle: torch's unpickler stops at an opcode it lacks
        weights.write_bytes(pickle.dumps({"x": Payload()}, protocol=4))
    else:
        torch.save({"x": torch.zeros(3)}, weights)
        weights.write_bytes(weights.read_bytes()[:200])
    where = (
        ["--weights", weights, "-o", "detector=tiny"] if job == "regions36" else ["-o", f"resnet18.weights={weights}"]
    )
    assert (
        lighthead(
            "extract",
            "--dataset",
            "demo",
            "--root",
            demo_root,
            "--store",
            tmp_path / "st",
            "--features",
            job,
            *where,
            "--loader-workers",
            "0",
            "--no-progress",
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "weights_only" not in err and "warning" not in err and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {weights}: "), err
    if damage == "truncated":
        assert "not a readable torch weights file" in lines[0]
    else:
        assert "refused to load" in lines[0] and "could run code" in lines[0]
    if damage == "code":
        assert "posix.mkdir" in lines[0], lines[0]  # torch's reason: the function the file asks for
    assert not (tmp_path / "code-ran").exists()


@pytest.mark.parametrize(
    "name, data, want",
    [
        (
            "tag.yaml",
            b"head: vsepp\ngrid: !!python/object/apply:os.system [touch RAN]\n",
            ":2: could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'; a sweep "
            "file holds plain values only (no YAML tags)",
        ),
        (
            "local.yaml",
            b"head: vsepp\ngrid:\n  margin: !tuple [0.1]\n",
            ":3: could not determine a constructor for the tag",
        ),
        (
            "latin1.yaml",
            b"head: vsepp\n# marge \xe9tendue\ngrid: {margin: [0.1, 0.2]}\n",
            ":2: not UTF-8 text (byte 0xe9); save the file as UTF-8",
        ),
        (
            "syntax.yaml",
            b"head: vsepp\ngrid: {margin: [0.1\n",
            ":3: not valid YAML (while parsing a flow sequence; expected",
        ),
        ("deep.yaml", b"head: vsepp\ngrid: " + b"[" * 20000, ": nested too deeply"),
        ("syntax.toml", b"head = \n", ": not valid TOML (Invalid value (at line 1, column 8))"),
    ],
)
def test_bad_sweep_files_are_one_line_naming_the_file_and_line(store, tmp_path, capsys, name, data, want):
    path = tmp_path / name
    path.write_bytes(data)
    assert lighthead("sweep", "--store", store, "--out", tmp_path / "sw", "--file", path, "--no-progress") == 1
    line = error_line(capsys)
    assert line.startswith(f"error: {path}{want}"), line
    assert not (tmp_path / "sw").exists() and not (tmp_path / "RAN").exists()


DEEP = "[" * 100_000 + "]" * 100_000  # beyond Python's recursion limit when parsed


@pytest.mark.parametrize(
    "name, edit, want",
    [
        ("config.json", lambda c: DEEP, "nested too deeply for a run file"),
        ("config.json", lambda c: "[1, 2]", "holds a JSON array, not an object"),
        ("config.json", lambda c: {**c, "config": [1]}, "'config' is a JSON array, expected an object"),
        ("config.json", lambda c: {k: v for k, v in c.items() if k != "head"}, "no 'head' entry"),
        ("config.json", lambda c: {**c, "head": 7}, "'head' is a JSON number, expected a string"),
        (
            "config.json",
            lambda c: {**c, "config": {**c["config"], "embed_size": "big"}},
            "config.embed_size is a JSON string, which does not fit",
        ),
        ("config.json", lambda c: {**c, "loop": {**c["loop"], "seed": [0]}}, "loop.seed is a JSON array"),
        (
            "config.json",
            lambda c: {**c, "loop": {**c["loop"], "nosuch": 1}},
            "loop.nosuch is not a setting of LoopConfig",
        ),
        ("data_info.json", lambda c: {**c, "vocab_size": "many"}, "its sizes do not build a vsepp head"),
        ("data_info.json", lambda c: DEEP, "nested too deeply"),
        ("metrics.json", lambda c: DEEP, "nested too deeply"),
        ("metrics.json", lambda c: {**c, "history": {"epoch": 1}}, "'history' is a JSON object, expected an array"),
        ("metrics.json", lambda c: {**c, "history": [1, 2]}, "history[0] is not an epoch entry"),
        ("metrics.json", lambda c: {**c, "history": [{"epoch": "one"}]}, "history[0] is not an epoch entry"),
    ],
)
def test_deep_or_wrong_typed_run_json_names_the_file(run, capsys, name, edit, want):
    path = run / name
    new = edit(json.loads(path.read_text()))
    path.write_text(new if isinstance(new, str) else json.dumps(new))
    assert lighthead("evaluate", run, "--device", "cpu") == 1
    line = error_line(capsys)
    assert line.startswith(f"error: {path}: ") and want in line, line


def test_resume_and_sweep_reports_read_typed_run_files(store, trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "config.json").write_text(json.dumps({**json.loads((run / "config.json").read_text()), "overrides": [3]}))
    assert lighthead("train", "heads", "vsepp", "--store", store, "--out", run, "--resume", "--no-progress") == 1
    assert error_line(capsys).startswith(
        f"error: {run / 'config.json'}: 'overrides' is a JSON array, expected an object"
    )
    from lighthead.pipelines.sweep.trial import read_trial

    trial = tmp_path / "trial"
    trial.mkdir()
    (trial / "trial.json").write_text(json.dumps({"id": "t1", "wall_s": "slow"}))
    (trial / "metrics.json").write_text("{}")
    with pytest.raises(ValueError, match=r"trial.json: 'wall_s' is a JSON string, expected an integer or a number"):
        read_trial(trial)
