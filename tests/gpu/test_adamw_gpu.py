"""CUDA multi-tensor AdamW and grad_norm against float64 references and torch's fused
AdamW: many tensors of odd sizes (chunk boundaries, scalar tails), an unaligned view
(the scalar path), fp32 and bf16 gradients, bf16/fp32 compute copies, clipping from the
device-side norm."""
import numpy as np
import pytest

import ringloom as rl
from gpu_util import gpu, host, nan_tensor, rounded
from tolerances import assert_close

pytestmark = pytest.mark.gpu

SIZES = [1, 13, 16384, 16385, 40003, 768]


def reference_step(p, g, m, v, wd, lr, b1, b2, eps, step, clip):
    g = g * clip
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    mhat, vhat = m / (1 - b1 ** step), v / (1 - b2 ** step)
    return p - lr * (mhat / (np.sqrt(vhat) + eps) + wd * p), m, v


@pytest.mark.parametrize("grad_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("compute_dtype", [None, "bfloat16", "float32"])
@pytest.mark.parametrize("max_norm", [0.0, 0.5])
def test_adamw_gpu(rng, grad_dtype, compute_dtype, max_norm):
    ps = [rng.standard_normal(n).astype(np.float32) for n in SIZES]
    gs = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in SIZES]
    ms = [rng.standard_normal(n).astype(np.float32) * 0.01 for n in SIZES]
    vs = [rng.random(n).astype(np.float32) * 0.01 for n in SIZES]
    wds = [0.1 if i % 2 else 0.0 for i in range(len(SIZES))]
    lr, b1, b2, eps, step = 0.1, 0.9, 0.95, 1e-8, 3  # updates large enough to check to ~1e-5

    P = [gpu(p) for p in ps]
    # One parameter as a view 4 bytes into a larger buffer: not 16-byte aligned.
    backing = gpu(np.concatenate([[7.0], ps[1]]).astype(np.float32))
    P[1] = backing.narrow0(1, SIZES[1])
    G = [gpu(g, grad_dtype) for g in gs]
    M, Vv = [gpu(m) for m in ms], [gpu(v) for v in vs]
    C = [nan_tensor(p.shape, compute_dtype) for p in ps] if compute_dtype else []
    gr = [rounded(g, grad_dtype) for g in gs]

    norm_t = rl.ops.grad_norm(G)
    norm_ref = np.sqrt(sum((g ** 2).sum() for g in gr))
    assert_close(host(norm_t), [norm_ref], "float32", "grad_norm")
    clip = min(1.0, max_norm / (norm_ref + 1e-6)) if max_norm > 0 else 1.0

    rl.ops.adamw_step(P, G, M, Vv, wds, lr, b1, b2, eps, step, max_norm, norm_t if max_norm > 0 else None, C)
    assert host(backing)[0] == 7.0, "the element before the view must be untouched"
    for i in range(len(SIZES)):
        p_ref, m_ref, v_ref = reference_step(ps[i].astype(np.float64), gr[i], ms[i].astype(np.float64),
                                             vs[i].astype(np.float64), wds[i], lr, b1, b2, eps, step, clip)
        assert_close(host(P[i]), p_ref, "float32", f"param {i}")
        # The update itself (p_new - p_old) to fp32 precision of p.
        assert_close(host(P[i]) - ps[i], p_ref - ps[i], "float32_grad", f"update {i}")
        assert_close(host(M[i]), m_ref, "float32", f"m {i}")
        assert_close(host(Vv[i]), v_ref, "float32", f"v {i}")
        if compute_dtype:
            assert_close(host(C[i]), rounded(host(P[i]), compute_dtype), "float32", f"compute copy {i}")


def test_adamw_gpu_matches_torch_fused(rng):
    torch = pytest.importorskip("torch")
    shapes = [(768, 3), (50, 7), (1000,)]
    ps = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    tp = [torch.tensor(p, device="cuda", requires_grad=True) for p in ps]
    opt = torch.optim.AdamW(tp, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=True)
    P = [gpu(p) for p in ps]
    M = [gpu(np.zeros(s, np.float32)) for s in shapes]
    Vv = [gpu(np.zeros(s, np.float32)) for s in shapes]
    for step in range(1, 4):
        gs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        for t, g in zip(tp, gs):
            t.grad = torch.tensor(g, device="cuda")
        opt.step()
        rl.ops.adamw_step(P, [gpu(g) for g in gs], M, Vv, [0.1] * 3, 1e-2, 0.9, 0.95, 1e-8, step)
    for t, p in zip(tp, P):
        assert_close(host(p), t.detach().double().cpu().numpy(), "float32", "params vs torch fused AdamW")


def test_grad_norm_gpu_many_tensors(rng):
    gs = [rng.standard_normal(n).astype(np.float32) for n in (3, 100000, 5, 70001)]
    norm = host(rl.ops.grad_norm([gpu(g) for g in gs]))
    assert_close(norm, [np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in gs))], "float32", "grad_norm")


def test_adamw_gpu_bad_inputs():
    p = gpu(np.ones(4))
    with pytest.raises(ValueError, match="adamw_step: params .* must have the same length"):
        rl.ops.adamw_step([p], [], [p], [p], [0.0], 1e-3)
    with pytest.raises(TypeError, match=r"adamw_step: params\[0\] must be float32"):
        rl.ops.adamw_step([gpu(np.ones(4), "bfloat16")], [p], [p], [p], [0.0], 1e-3)
