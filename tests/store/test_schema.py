import numpy as np
import pytest

from lighthead.store import Field, StoreError
from lighthead.store.schema import check_name


def test_field_normalises_shape_and_dtype():
    f = Field("boxes", [None, 4], np.float32)
    assert f.shape == (None, 4) and f.dtype == "float32" and f.variable and f.row_shape == (4,)
    assert Field("x", (36, 2048)).dtype == "float16"  # features default to half precision
    assert not Field("s", ()).variable and Field("s", ()).row_shape == ()
    assert Field.from_json(f.to_json()) == f


@pytest.mark.parametrize("shape", [(4, None), (0,), (-1, 2), (None, None), (2.5,), (True,)])
def test_bad_shapes(shape):
    with pytest.raises(ValueError):
        Field("x", shape)


@pytest.mark.parametrize("dtype", ["object", "U5", "S3", "complex64"])
def test_non_numeric_dtypes_refused(dtype):
    with pytest.raises(ValueError):
        Field("x", (2,), dtype)


@pytest.mark.parametrize("name", ["", "a b", "a.b", "../x", "-x"])
def test_bad_field_names(name):
    with pytest.raises(ValueError):
        Field(name, ())


def test_coerce_checks_shape_and_kind():
    f = Field("x", (2, 3), "float16")
    out = f.coerce(np.ones((2, 3), np.float64), "id")
    assert out.dtype == np.float16 and out.flags.c_contiguous
    with pytest.raises(StoreError, match="'id'.*shape"):
        f.coerce(np.ones((3, 2)), "id")
    with pytest.raises(StoreError, match="cannot store float64 as int32"):
        Field("n", (), "int32").coerce(1.5, "id")
    v = Field("v", (None, 4), "float32")
    assert v.coerce(np.zeros((0, 4)), "id").shape == (0, 4)
    with pytest.raises(StoreError):
        v.coerce(np.zeros((3, 5)), "id")


def test_coerce_copies_so_callers_may_reuse_buffers():
    buf = np.zeros(3, np.float32)
    out = Field("x", (3,), "float32").coerce(buf, "id")
    buf[:] = 1
    assert out.sum() == 0


def test_feature_set_names():
    assert check_name("/regions/butd-r101-vg-36/") == "regions/butd-r101-vg-36"
    for bad in ["", "a/../b", "meta/x", "a//b", "a b"]:
        with pytest.raises(ValueError):
            check_name(bad)
