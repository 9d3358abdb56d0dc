"""The Tensor core: NumPy and DLPack exchange, dtypes, views, copies and the errors that
cross into Python."""
import ml_dtypes
import numpy as np
import pytest

import ringloom as rl


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64, np.uint8, np.float16])
def test_numpy_round_trip_is_zero_copy(rng, dtype):
    a = (rng.standard_normal((3, 5, 7)) * 10).astype(dtype)
    t = rl.from_numpy(a)
    assert t.shape == (3, 5, 7) and t.numel() == 105 and t.ndim == 3
    assert str(t.dtype) == np.dtype(dtype).name
    b = np.asarray(t)
    np.testing.assert_array_equal(b, a)
    assert np.shares_memory(a, b), "from_numpy + asarray must not copy on the CPU"
    a[1, 2, 3] = 42  # writes through both ways
    assert np.asarray(t)[1, 2, 3] == 42


def test_bfloat16_is_ml_dtypes_and_rounds_to_nearest_even(rng):
    x = rng.standard_normal(1001).astype(np.float32)
    t = rl.tensor(x, dtype="bfloat16")
    assert t.dtype == rl.bfloat16
    got = np.asarray(t)
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(got, x.astype(ml_dtypes.bfloat16))  # same rounding as ml_dtypes
    back = t.to("float32")
    np.testing.assert_array_equal(np.asarray(back), x.astype(ml_dtypes.bfloat16).astype(np.float32))
    # zero-copy import of an ml_dtypes array
    z = rl.from_numpy(got)
    assert z.dtype == rl.bfloat16 and np.shares_memory(np.asarray(z), got)


def test_tensor_copies_and_converts_python_data():
    t = rl.tensor([[1.5, 2.0], [3.0, 4.0]])  # float64 -> float32
    assert t.dtype == rl.float32 and t.shape == (2, 2)
    i = rl.tensor([1, 2, 3], dtype="int32")
    assert i.dtype == rl.int32 and list(np.asarray(i)) == [1, 2, 3]
    src = np.arange(6, dtype=np.float32)
    c = rl.tensor(src)
    assert not np.shares_memory(np.asarray(c), src), "tensor() copies"
    nc = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]  # non-contiguous: copied
    np.testing.assert_array_equal(np.asarray(rl.tensor(nc)), nc)
    with pytest.raises(ValueError, match="not C-contiguous"):
        rl.from_numpy(nc)
    with pytest.raises(TypeError, match="unsupported dtype"):
        rl.from_numpy(np.zeros(3, np.complex64))


def test_dlpack_both_ways(rng):
    a = rng.standard_normal((4, 6)).astype(np.float32)
    t = rl.from_numpy(a)
    assert t.__dlpack_device__() == (1, 0)
    b = np.from_dlpack(t)  # ringloom -> NumPy
    assert np.shares_memory(a, b)
    np.testing.assert_array_equal(b, a)
    c = np.arange(10, dtype=np.int64).reshape(2, 5)
    u = rl.from_dlpack(c)  # NumPy -> ringloom
    assert u.dtype == rl.int64 and u.shape == (2, 5)
    c[0, 0] = 99
    assert np.asarray(u)[0, 0] == 99, "from_dlpack must not copy"
    del c
    assert np.asarray(u)[1, 4] == 9  # the producer's memory stays alive through the tensor
    with pytest.raises(ValueError, match="contiguous"):
        rl.from_dlpack(np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2])
    with pytest.raises(TypeError, match="__dlpack__"):
        rl.from_dlpack(object())


def test_views_share_storage_and_check_bounds():
    t = rl.tensor(np.arange(24, dtype=np.float32).reshape(4, 6))
    r = t.reshape(2, -1)
    assert r.shape == (2, 12) and r.shares_memory(t)
    rows = t.narrow0(1, 2)
    np.testing.assert_array_equal(np.asarray(rows), np.arange(6, 18, dtype=np.float32).reshape(2, 6))
    rows.zero_()
    assert np.asarray(t)[1:3].sum() == 0 and np.asarray(t)[0].sum() == 15
    with pytest.raises(ValueError, match=r"cannot reshape float32\[4, 6\] on cpu to \[5, -1\]"):
        t.reshape(5, -1)
    with pytest.raises(IndexError, match=r"3 rows from row 3 are out of range"):
        t.narrow0(3, 3)
    with pytest.raises(IndexError, match="dimension 2 out of range"):
        t.size(2)
    clone = t.clone()
    clone.zero_()
    assert np.asarray(t).sum() > 0, "clone must not share storage"


def test_copy_checks_shape_and_dtype():
    a = rl.zeros([2, 3])
    a.copy_(rl.tensor(np.ones((2, 3), np.float32)))
    assert np.asarray(a).sum() == 6
    with pytest.raises(ValueError, match="differ in shape or dtype"):
        a.copy_(rl.zeros([3, 2]))
    with pytest.raises(ValueError, match="differ in shape or dtype"):
        a.copy_(rl.zeros([2, 3], dtype="int32"))


def test_devices_and_creation_errors():
    with pytest.raises(ValueError, match="invalid device 'gpu'"):
        rl.zeros([2], device="gpu")
    with pytest.raises(ValueError, match="negative dimension"):
        rl.empty([2, -1])
    with pytest.raises(TypeError, match="unsupported dtype 'complex64'"):
        rl.zeros([2], dtype="complex64")
    if not rl.cuda_available():
        with pytest.raises((RuntimeError, ValueError), match="cuda:0"):
            rl.zeros([2], device="cuda:0")
    assert repr(rl.zeros([2, 3])) == "<ringloom.Tensor float32[2, 3] on cpu>"


def test_int64_to_int32_and_empty_tensors():
    t = rl.tensor(np.array([1, -2, 3], np.int64))
    assert list(np.asarray(t.to("int32"))) == [1, -2, 3]
    e = rl.zeros([0, 5])
    assert e.numel() == 0 and np.asarray(e).shape == (0, 5)


@pytest.mark.gpu
def test_cuda_round_trip_and_dlpack_export(rng):
    x = rng.standard_normal((5, 3)).astype(np.float32)
    g = rl.tensor(x, device="cuda:0")
    assert g.device == "cuda:0" and g.is_cuda
    np.testing.assert_array_equal(g.numpy(), x)
    np.testing.assert_array_equal(np.asarray(g.to("bfloat16").to("float32").numpy()),
                                  x.astype(ml_dtypes.bfloat16).astype(np.float32))
    torch = pytest.importorskip("torch")
    tt = torch.from_dlpack(g)
    assert tt.is_cuda and torch.equal(tt.cpu(), torch.from_numpy(x))
    back = rl.from_dlpack(tt * 2)
    np.testing.assert_array_equal(back.numpy(), 2 * x)


def test_host_transfer_counter_counts_only_host_device_copies(rng):
    """Copies within host memory are not host<->device transfers; with a GPU, a round trip
    counts its bytes once each way."""
    x = rng.standard_normal(1000).astype(np.float32)
    rl._C.reset_host_transfer_stats()
    t = rl.tensor(x)
    t.copy_(rl.tensor(2 * x))
    np.asarray(t.cpu())
    zero = {"to_host_bytes": 0, "to_host_copies": 0, "from_host_bytes": 0, "from_host_copies": 0}
    assert rl._C.host_transfer_stats() == zero
    if not (rl._C.has_cuda_build and rl.cuda_available()):
        return
    h = rl.tensor(x)
    rl._C.reset_host_transfer_stats()
    back = h.cuda().cpu()
    np.testing.assert_array_equal(back.numpy(), x)
    s = rl._C.host_transfer_stats()
    assert s["from_host_bytes"] == x.nbytes and s["to_host_bytes"] == x.nbytes
    rl._C.reset_host_transfer_stats()
    assert rl._C.host_transfer_stats() == zero
