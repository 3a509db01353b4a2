"""The one restricted unpickler: each caller's allow-list, and nothing outside it is ever called."""

from __future__ import annotations

import collections
import io
import os
import pickle

import numpy as np
import pytest

from lighthead.store.safe_pickle import CHECKPOINT_ARRAYS, NUMPY_ARRAYS, PLAIN_DATA, UnsafePickle, restricted_load


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def _load(obj, allowed):
    return restricted_load(io.BytesIO(pickle.dumps(obj)), allowed, encoding="latin1")


@pytest.mark.parametrize("allowed", [PLAIN_DATA, NUMPY_ARRAYS, CHECKPOINT_ARRAYS])
def test_a_callable_is_refused_by_every_list(allowed):
    with pytest.raises(UnsafePickle) as err:
        _load({"x": _Boom()}, allowed)
    assert err.value.name == "system" and err.value.module in ("posix", "nt", "os")


def test_each_list_allows_what_its_caller_reads():
    assert _load({"a": [1, "b", (2.5, None)]}, PLAIN_DATA) == {"a": [1, "b", (2.5, None)]}
    with pytest.raises(UnsafePickle):
        _load(np.arange(3), PLAIN_DATA)  # dataset annotations: no arrays
    assert _load(np.arange(3), NUMPY_ARRAYS).tolist() == [0, 1, 2]
    with pytest.raises(UnsafePickle):
        _load(collections.OrderedDict(a=1), NUMPY_ARRAYS)  # .npz members: arrays only
    assert _load(collections.OrderedDict(a=np.ones(2)), CHECKPOINT_ARRAYS)["a"].tolist() == [1.0, 1.0]
