"""The one restricted unpickler: pickles read without running any code they name.

A pickle can call any function it names. `restricted_load(fh, allowed)` unpickles with an
allow-list of (module, name) pairs and refuses anything else before it is looked up; each
caller passes its own list:
- `NUMPY_ARRAYS`: numpy arrays, dtypes and scalars (`.npz` members stored as pickles, below);
- `CHECKPOINT_ARRAYS`: those plus protocol-5 buffers and OrderedDict (detector checkpoints,
  `lighthead.extract.regions.checkpoints`);
- `PLAIN_DATA` (empty): only what pickle builds from its own opcodes: dicts, lists, tuples,
  sets, strings, bytes, numbers (dataset annotation pickles, `lighthead.pipelines.datasets.pickles`).

bottom-up-attention.pytorch saves a dict as `info=` (`np.savez_compressed(..., info=info)`),
which numpy turns into a 0-d object array, i.e. a pickle. `np.load(allow_pickle=True)` would
call whatever that pickle names; `read_member` instead unpickles with an allow-list: plain
containers and numbers (pickle's own opcodes, no lookups) and the few numpy callables that
rebuild arrays, dtypes and scalars. Anything else (`os.system`, `builtins.eval`, a class of
some package) is refused before it is looked up, so nothing a file says is ever called.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from typing import Any

import numpy as np

# (module, name) pairs a numpy object-array pickle needs, for numpy 1.x and 2.x module paths.
NUMPY_ARRAYS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # bytes in pickles written by Python 2 (protocol 2)
    }
)
CHECKPOINT_ARRAYS = NUMPY_ARRAYS | {
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),  # protocol 5
    ("collections", "OrderedDict"),
}
PLAIN_DATA: frozenset[tuple[str, str]] = frozenset()  # no class or callable at all


class UnsafePickle(ValueError):
    """The pickle names something outside the allow-list (`module`, `name`), or uses persistent ids."""

    def __init__(self, message: str, module: str = "", name: str = ""):
        super().__init__(message)
        self.module, self.name = module, name


class _Unpickler(pickle.Unpickler):
    def __init__(self, fh: Any, allowed: frozenset[tuple[str, str]], refusal: str, encoding: str):
        super().__init__(fh, encoding=encoding)
        self.allowed, self.refusal = allowed, refusal

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            raise UnsafePickle(self.refusal.format(module=module, name=name), module, name)
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickle("it uses persistent ids")


def restricted_load(
    fh: Any,
    allowed: frozenset[tuple[str, str]],
    refusal: str = "it names {module}.{name}, which the file may not hold",
    encoding: str = "ASCII",
) -> Any:
    """Unpickle the open binary file `fh`, allowing only the (module, name) pairs of `allowed`;
    anything else raises UnsafePickle with `refusal` (formatted with module and name) before
    it is looked up. encoding: how Python 2 `str` objects decode ("latin1" for numpy arrays)."""
    return _Unpickler(fh, allowed, refusal, encoding).load()


def loads(data: bytes) -> Any:
    """Unpickle `data` with the numpy allow-list (raises UnsafePickle, or pickle's own errors)."""
    return restricted_load(
        io.BytesIO(data),
        NUMPY_ARRAYS,
        "it names {module}.{name}, which is not a numpy array, dtype or scalar",
        encoding="latin1",
    )


def read_member(zf: zipfile.ZipFile, key: str) -> Any:
    """The array stored as `key` in an open `.npz`: plain arrays as numpy reads them, object
    arrays through the allow-listed unpickler. A 0-d object array gives its one object."""
    raw = zf.read(f"{key}.npy")
    fh = io.BytesIO(raw)
    version = np.lib.format.read_magic(fh)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(
        version
    )
    if read_header is None:
        raise ValueError(f"member {key}.npy has .npy format version {version}, expected 1.0 or 2.0")
    _, _, dtype = read_header(fh)
    if not dtype.hasobject:
        return np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    arr = loads(fh.read())
    if not isinstance(arr, np.ndarray):
        raise UnsafePickle(f"member {key}.npy holds a {type(arr).__name__}, not an array")
    return arr.item() if arr.shape == () else arr
