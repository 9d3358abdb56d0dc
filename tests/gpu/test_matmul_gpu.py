"""CUDA matmul (cuBLASLt) against float64 references: forward with fused bias, backward
input, backward weight into fp32 dw (overwrite and accumulate) and dbias. fp32 runs on
TF32 tensor cores, so it is held to the tf32 tolerance; bf16 to the bf16 one."""
import numpy as np
import pytest

import ringloom as rl
from gpu_util import cpu_op, gpu, host, nan_tensor, poison_next_alloc, precision, rounded
from tolerances import assert_close

pytestmark = pytest.mark.gpu

SHAPES = [((7,), 13, 5), ((3, 37), 61, 45), ((4, 64), 768, 2304), ((2, 100), 3072, 768)]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("lead,K,N", SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_matmul_gpu(rng, dtype, lead, K, N, with_bias):
    tol = precision(dtype, gemm=True)
    x = rng.standard_normal((*lead, K)).astype(np.float32)
    w = (rng.standard_normal((N, K)) / np.sqrt(K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    dy = rng.standard_normal((*lead, N)).astype(np.float32)
    xr, wr, br, dyr = (rounded(a, dtype) for a in (x, w, b, dy))

    poison_next_alloc((*lead, N), dtype)
    y = rl.ops.matmul_forward(gpu(x, dtype), gpu(w, dtype), gpu(b, dtype) if with_bias else None)
    assert y.dtype == getattr(rl, dtype) and y.shape == (*lead, N)
    assert_close(host(y), xr @ wr.T + (br if with_bias else 0), tol, "y")

    poison_next_alloc((*lead, K), dtype)
    dx = rl.ops.matmul_backward_input(gpu(dy, dtype), gpu(w, dtype))
    assert_close(host(dx), dyr @ wr, tol, "dx")

    # fp32 dw from bf16 dy/x: first overwrite a poisoned dw, then accumulate into it.
    M = int(np.prod(lead))
    dw_ref = dyr.reshape(M, N).T @ xr.reshape(M, K)
    db_ref = dyr.reshape(M, N).sum(0)
    dw = nan_tensor((N, K))
    db = nan_tensor((N,)) if with_bias else None
    rl.ops.matmul_backward_weight(gpu(dy, dtype), gpu(x, dtype), dw, db, accumulate=False)
    assert_close(host(dw), dw_ref, tol, "dw (overwrite)")
    if with_bias:
        assert_close(host(db), db_ref, "float32", "dbias (overwrite)")
    rl.ops.matmul_backward_weight(gpu(dy, dtype), gpu(x, dtype), dw, db, accumulate=True)
    assert_close(host(dw), 2 * dw_ref, tol, "dw (accumulate)")
    if with_bias:
        assert_close(host(db), 2 * db_ref, "float32", "dbias (accumulate)")

    if dtype == "float32":  # the CPU op on the same inputs, where this build has it
        ycpu = cpu_op(lambda: rl.ops.matmul_forward(rl.tensor(x), rl.tensor(w), rl.tensor(b) if with_bias else None))
        if ycpu is not None:
            assert_close(host(y), np.asarray(ycpu, np.float64), "tf32", "y vs CPU op")


def test_matmul_gpu_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((256, 768)).astype(np.float32)
    w = (rng.standard_normal((2304, 768)) / 28).astype(np.float32)
    b = rng.standard_normal(2304).astype(np.float32)
    y = host(rl.ops.matmul_forward(gpu(x, "bfloat16"), gpu(w, "bfloat16"), gpu(b, "bfloat16")))
    tx, tw, tb = (torch.tensor(a, device="cuda").bfloat16() for a in (x, w, b))
    yt = torch.nn.functional.linear(tx, tw, tb).double().cpu().numpy()
    assert_close(y, yt, "bfloat16", "y vs torch")


def test_matmul_gpu_bad_inputs():
    x = gpu(np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"matmul_forward: last dim of x .*\[4, 5\]"):
        rl.ops.matmul_forward(x, gpu(np.ones((3, 6), np.float32)))
    with pytest.raises(TypeError, match="matmul_forward: .*different dtypes"):
        rl.ops.matmul_forward(x, gpu(np.ones((3, 5), np.float32), "bfloat16"))
    with pytest.raises(ValueError, match="matmul_forward: .*different devices"):
        rl.ops.matmul_forward(x, rl.tensor(np.ones((3, 5), np.float32)))
