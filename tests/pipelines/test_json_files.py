"""pipelines/json_files.py: whole-file writes of runs, sweeps and reports are atomic, convert
numpy and torch values, and a failed write names the file."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
import torch

from lighthead.pipelines import json_files
from lighthead.pipelines.json_files import atomic_json, write_text


def test_values_are_converted(tmp_path):
    obj = {"a": np.float32(0.5), "b": np.arange(3), "c": torch.tensor([1.5, 2.0]), "d": torch.tensor(7), "e": (1, 2)}
    atomic_json(tmp_path / "sub" / "x.json", obj)  # the folder is made
    assert json.loads((tmp_path / "sub" / "x.json").read_text()) == {
        "a": 0.5,
        "b": [0, 1, 2],
        "c": [1.5, 2.0],
        "d": 7,
        "e": [1, 2],
    }
    assert json_files.to_json_value(object()).startswith("<object object")


def test_a_failed_write_keeps_the_old_file_and_names_it(tmp_path, monkeypatch):
    path = tmp_path / "eval-test.md"
    write_text(path, "old\n")
    real_open = open

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("builtins.open", lambda p, mode="r", *a, **k: Full(real_open(p, mode, *a, **k)))
    with pytest.raises(OSError) as e:
        write_text(path, "new\n")
    monkeypatch.undo()
    assert e.value.filename == str(path) and e.value.errno == errno.ENOSPC
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["eval-test.md"]
