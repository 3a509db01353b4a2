"""Reading `.npz` members that numpy stored as pickles, without running any code they name.

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
_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # bytes in pickles written by Python 2 (protocol 2)
}


class UnsafePickle(ValueError):
    """The pickle names something outside the allow-list."""


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise UnsafePickle(f"it names {module}.{name}, which is not a numpy array, dtype or scalar")
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickle("it uses persistent ids")


def loads(data: bytes) -> Any:
    """Unpickle `data` with the allow-list (raises UnsafePickle, or pickle's own errors)."""
    return _Unpickler(io.BytesIO(data), encoding="latin1").load()


def read_member(zf: zipfile.ZipFile, key: str) -> Any:
    """The array stored as `key` in an open `.npz`: plain arrays as numpy reads them, object
    arrays through the allow-listed unpickler. A 0-d object array gives its one object."""
    raw = zf.read(f"{key}.npy")
    fh = io.BytesIO(raw)
    version = np.lib.format.read_magic(fh)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read_header is None:
        raise ValueError(f"member {key}.npy has .npy format version {version}, expected 1.0 or 2.0")
    _, _, dtype = read_header(fh)
    if not dtype.hasobject:
        return np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    arr = loads(fh.read())
    if not isinstance(arr, np.ndarray):
        raise UnsafePickle(f"member {key}.npy holds a {type(arr).__name__}, not an array")
    return arr.item() if arr.shape == () else arr
