// C entry points over the Hopper attention kernels for dev/attention/check.py (ctypes),
// built with the kernels alone in seconds (the command is in check.py).
#include <cstdio>
#include <exception>

#include <cmath>

#include "ops/cuda/attention/params.h"

using ringloom::cuda::attn::Params;

static Params make(const void* qkv, int B, int T, int Hq, int Hkv, int D, int causal) {
  Params p;
  p.qkv = qkv;
  p.B = B; p.T = T; p.Hq = Hq; p.Hkv = Hkv; p.D = D; p.group = Hq / Hkv;
  p.causal = causal != 0;
  p.scale = 1.f / sqrtf(float(D));
  p.scale_log2 = p.scale * 1.4426950408889634f;
  return p;
}

extern "C" int rl_hopper_fwd(const void* qkv, void* out, float* lse, int B, int T, int Hq, int Hkv, int D, int causal,
                             void* stream) {
  try {
    Params p = make(qkv, B, T, Hq, Hkv, D, causal);
    p.out = out;
    p.lse = lse;
    ringloom::cuda::attn::hopper_forward(p, static_cast<cudaStream_t>(stream));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rl_hopper_fwd: %s\n", e.what());
    return 1;
  }
}

// dvec/lse2 scratch (2 x B*Hq*T_pad fp32) and dq_accum (B*T*Hq*D fp32) are the caller's.
extern "C" int rl_hopper_bwd(const void* dout, const void* qkv, const void* out, float* lse, void* dqkv, float* stats,
                             float* dq_accum, int B, int T, int Hq, int Hkv, int D, int causal, void* stream) {
  try {
    Params p = make(qkv, B, T, Hq, Hkv, D, causal);
    p.out = const_cast<void*>(out);
    p.lse = lse;
    p.dout = dout;
    p.dqkv = dqkv;
    p.T_pad = (T + 63) / 64 * 64;
    p.dvec = stats;
    p.lse2 = stats + int64_t(B) * Hq * p.T_pad;
    p.dq_accum = dq_accum;
    ringloom::cuda::attn::hopper_backward(p, static_cast<cudaStream_t>(stream));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rl_hopper_bwd: %s\n", e.what());
    return 1;
  }
}
