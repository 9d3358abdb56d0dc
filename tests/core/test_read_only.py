"""Read-only memory stays read-only: from_numpy and from_dlpack keep NumPy's writeable flag
(a zero-copy view marked read_only), every op, copy and collective that would write into
such a tensor raises ValueError naming it, and views handed back out are read-only too."""
from __future__ import annotations

import numpy as np
import pytest

import ringloom as rl
from ringloom import _C

o = rl.ops
READ_ONLY = "view of read-only memory"


def frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=a.dtype)
    a.flags.writeable = False
    return a


def test_memmap_opened_read_only(tmp_path):
    path = tmp_path / "w.bin"
    np.arange(6, dtype=np.float32).tofile(path)
    mm = np.memmap(path, dtype=np.float32, mode="r", shape=(2, 3))
    t = rl.from_numpy(mm)
    assert t.read_only and t.data_ptr() == mm.ctypes.data  # still zero-copy
    with pytest.raises(ValueError, match=f"scale_: a .*{READ_ONLY}"):
        o.scale_(t, 2.0)
    with pytest.raises(ValueError, match=f"add_: a .*{READ_ONLY}"):
        o.add_(t, rl.zeros([2, 3]))
    np.testing.assert_array_equal(np.fromfile(path, np.float32), np.arange(6, dtype=np.float32))
    # Reading is fine.
    np.testing.assert_array_equal(np.asarray(o.add(t, t)), 2 * np.asarray(mm))


def test_bytes_are_never_modified():
    data = bytes(range(16))
    t = rl.from_numpy(np.frombuffer(data, np.uint8))
    for write in (lambda: t.zero_(), lambda: t.copy_(rl.zeros([16], dtype="uint8"))):
        with pytest.raises(ValueError, match=READ_ONLY):
            write()
    assert data == bytes(range(16))


def test_every_writing_op_refuses():
    ro = lambda *s: rl.from_numpy(frozen(np.ones(s, np.float32)))  # noqa: E731
    z = lambda *s: rl.zeros(list(s))  # noqa: E731
    ids = rl.zeros([1, 2], dtype="int32")
    calls = {
        "adamw_step: params": lambda: o.adamw_step([ro(3)], [z(3)], [z(3)], [z(3)], [0.0], lr=1e-3),
        "adamw_step: m": lambda: o.adamw_step([z(3)], [z(3)], [ro(3)], [z(3)], [0.0], lr=1e-3),
        "adamw_step: v": lambda: o.adamw_step([z(3)], [z(3)], [z(3)], [ro(3)], [0.0], lr=1e-3),
        "adamw_step: compute": lambda: o.adamw_step([z(3)], [z(3)], [z(3)], [z(3)], [0.0], lr=1e-3, compute=[ro(3)]),
        "adamw_write_scalars: scalars": lambda: o.adamw_write_scalars(ro(3), lr=1e-3),
        "matmul_backward_weight: dw": lambda: o.matmul_backward_weight(z(2, 4), z(2, 3), ro(4, 3)),
        "matmul_backward_weight: dbias": lambda: o.matmul_backward_weight(z(2, 4), z(2, 3), z(4, 3), ro(4)),
        "layernorm_backward: dgamma": lambda: o.layernorm_backward(z(2, 3), z(2, 3), z(3), z(2), z(2), ro(3), z(3)),
        "layernorm_backward: dbeta": lambda: o.layernorm_backward(z(2, 3), z(2, 3), z(3), z(2), z(2), z(3), ro(3)),
        "rmsnorm_backward: dgamma": lambda: o.rmsnorm_backward(z(2, 3), z(2, 3), z(3), z(2), ro(3)),
        "embedding_backward: dwte": lambda: o.embedding_backward(ids, z(1, 2, 3), ro(5, 3)),
        "embedding_backward: dwpe": lambda: o.embedding_backward(ids, z(1, 2, 3), z(5, 3), ro(4, 3)),
        "rope_forward: x": lambda: o.rope_forward(ro(1, 2, 2, 4), 2),
        "rope_backward: dx": lambda: o.rope_backward(ro(1, 2, 2, 4), 2),
        "cross_entropy_forward_backward: logits": lambda: o.cross_entropy_forward_backward(ro(2, 5),
                                                                                            rl.zeros([2], dtype="int32")),
        "copy_: the destination": lambda: ro(3).copy_(z(3)),
        "zero_: the tensor": lambda: ro(3).zero_(),
    }
    for what, call in calls.items():
        with pytest.raises(ValueError, match=f"{what}.*{READ_ONLY}"):
            call()


def test_views_handed_out_stay_read_only():
    a = frozen(np.arange(4, dtype=np.float32))
    t = rl.from_numpy(a)
    assert not np.asarray(t).flags.writeable
    assert not t.numpy().flags.writeable
    assert memoryview(t).readonly
    assert t.reshape(2, 2).read_only and t.narrow0(1, 2).read_only
    assert not t.clone().read_only and not t.to("bfloat16").read_only
    with pytest.raises(BufferError, match="read-only"):
        t.__dlpack__()
    # Writeable arrays are unaffected.
    w = rl.from_numpy(np.zeros(3, np.float32))
    assert not w.read_only and np.asarray(w).flags.writeable and not memoryview(w).readonly


def test_from_dlpack_keeps_the_read_only_flag():
    a = frozen(np.arange(4, dtype=np.float32))
    t = rl.from_dlpack(a)
    assert t.read_only and t.data_ptr() == a.ctypes.data
    with pytest.raises(ValueError, match=READ_ONLY):
        o.scale_(t, 3.0)
    assert not rl.from_dlpack(np.zeros(3, np.float32)).read_only


def test_collective_output_refused():
    server = _C.comm.StoreServer("127.0.0.1", 0, "tok")
    store = _C.comm.Store("127.0.0.1", server.port, "tok", 0, 10.0)
    pg = _C.comm.ProcessGroup(store, server, "ro", [0], 0, "ring", 10.0, "tok")
    try:
        t = rl.from_numpy(frozen(np.ones(4, np.float32)))
        with pytest.raises(ValueError, match=f"all_reduce: the output .*{READ_ONLY}"):
            pg.all_reduce(t)
        with pytest.raises(ValueError, match=f"broadcast: the output .*{READ_ONLY}"):
            pg.broadcast(t, 0)
    finally:
        pg.shutdown()
