// CUDA attention entry points: pick the kernel, allocate outputs and scratch, launch on the
// device's current stream. bf16 with D = 64 or 128 runs tensor-core kernels: on a compute
// capability 9.0 GPU (H100/H200) the Hopper kernels (hopper_fwd.cu, hopper_bwd.cu: wgmma,
// TMA, warp-specialised) when the build has them, elsewhere the flash kernels (flash_fwd.cu,
// flash_bwd.cu); everything else (fp32, other head dims up to 256) the simple kernels
// (simple.cu). Inputs are validated in ops/attention.cpp.
//
// Backward is deterministic on request (the op's `deterministic` argument): flash_bwd.cu's
// separate dq pass replaces the fp32 atomic accumulation of dq (about 1.4x the backward's
// matrix work). dk/dv are always deterministic; the simple kernels always are.
// The backend setting (ops/attention_backend.h: ours | cudnn | auto) may send a call to
// cuDNN's fused attention instead (cudnn.cu); auto follows the measured table per shape and
// direction, and a deterministic backward stays on ours.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>

#include "core/cuda/check.h"
#include "core/cuda/context.h"
#include "ops/attention.h"
#include "ops/attention_backend.h"
#include "ops/cuda/attention/params.h"
#include "ops/cuda/attention/cudnn.h"

namespace ringloom::cuda {

namespace {

constexpr int kMaxSimpleDim = 256;

bool use_flash(const Tensor& qkv) {
  return qkv.dtype() == DType::BFloat16 && (qkv.size(3) == 64 || qkv.size(3) == 128);
}

// The Hopper kernels: sm_90a code runs on compute capability 9.0 exactly, and TMA needs
// 16-byte aligned tensors. Builds without them (no architecture 90, CUDA < 12.3) skip the
// calls below at compile time.
#ifdef RINGLOOM_WITH_SM90A_ATTENTION
bool use_hopper(int dev, std::initializer_list<const void*> ptrs) {
  int major = 0, minor = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  if (major != 9 || minor != 0) return false;
  for (const void* q : ptrs)
    if (reinterpret_cast<uintptr_t>(q) % 16 != 0) return false;
  return true;
}
#endif

attn::Params make_params(const char* op, const Tensor& qkv, int64_t n_head, int64_t n_kv_head, bool causal,
                         float scale) {
  attn::Params p;
  p.B = int(qkv.size(0));
  p.T = int(qkv.size(1));
  p.Hq = int(n_head);
  p.Hkv = int(n_kv_head);
  p.D = int(qkv.size(3));
  p.group = p.Hq / p.Hkv;
  p.causal = causal;
  p.scale = scale > 0.f ? scale : 1.f / std::sqrt(float(p.D));
  p.scale_log2 = p.scale * 1.4426950408889634f;
  p.qkv = qkv.data();
  RL_CHECK(use_flash(qkv) || p.D <= kMaxSimpleDim, Value, op, ": head dim ", p.D, " of qkv (", qkv.describe(),
           ") is not supported on CUDA (64 or 128 in bf16, or at most ", kMaxSimpleDim, ")");
  RL_CHECK(int64_t(p.B) * p.Hq <= 65535 && qkv.size(1) < (int64_t(1) << 30), Value, op, ": qkv (",
           qkv.describe(), ") has too many batch*heads (at most 65535) or tokens for one launch");
  return p;
}

// The backend setting (ops/attention_backend.h) applied to one problem and direction.
// Auto may pick differently for forward and backward: both save/read the same lse.
bool route_to_cudnn(const Tensor& qkv, bool causal, bool backward, bool deterministic) {
  switch (attention_backend()) {
    case AttentionBackend::Cudnn:  // unsupported shapes fail there, naming the shape
      RL_CHECK(!(backward && deterministic), Value,
               "attention_backward: the cudnn attention backend has no deterministic backward; use backend "
               "\"ours\" or \"auto\"");
      return true;
    case AttentionBackend::Auto:
      if (!cudnn_attention_supports(qkv) || (backward && deterministic)) return false;
      return attention_auto_choice(qkv.size(3), causal, qkv.size(1), backward) == AttentionBackend::Cudnn;
    default: return false;
  }
}

}  // namespace

std::pair<Tensor, Tensor> attention_forward(const Tensor& qkv, int64_t n_head, int64_t n_kv_head, bool causal,
                                            float scale) {
  if (route_to_cudnn(qkv, causal, /*backward=*/false, /*deterministic=*/false))
    return cudnn_attention_forward(qkv, n_head, n_kv_head, causal, scale);
  attn::Params p = make_params("attention_forward", qkv, n_head, n_kv_head, causal, scale);
  Tensor out = Tensor::empty({qkv.size(0), qkv.size(1), n_head, qkv.size(3)}, qkv.dtype(), qkv.device());
  Tensor lse = Tensor::empty({qkv.size(0), n_head, qkv.size(1)}, DType::Float32, qkv.device());
  if (qkv.numel() == 0) return {out, lse};
  const int dev = qkv.device().index;
  DeviceGuard guard(dev);
  p.out = out.data();
  p.lse = lse.data_as<float>();
  cudaStream_t s = current_stream(dev);
#ifdef RINGLOOM_WITH_SM90A_ATTENTION
  if (use_flash(qkv) && use_hopper(dev, {p.qkv, p.out})) {
    attn::hopper_forward(p, s);
    return {out, lse};
  }
#endif
  if (use_flash(qkv)) attn::flash_forward(p, s);
  else attn::simple_forward(p, qkv.dtype() == DType::BFloat16, s);
  return {out, lse};
}

Tensor attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                          int64_t n_head, int64_t n_kv_head, bool causal, float scale, bool deterministic) {
  if (route_to_cudnn(qkv, causal, /*backward=*/true, deterministic))
    return cudnn_attention_backward(dout, qkv, out, lse, n_head, n_kv_head, causal, scale);
  attn::Params p = make_params("attention_backward", qkv, n_head, n_kv_head, causal, scale);
  Tensor dqkv = Tensor::empty(qkv.shape(), qkv.dtype(), qkv.device());
  if (qkv.numel() == 0) return dqkv;
  const int dev = qkv.device().index;
  DeviceGuard guard(dev);
  cudaStream_t s = current_stream(dev);
  const bool bf16 = qkv.dtype() == DType::BFloat16;
  p.out = out.data();
  p.lse = lse.data_as<float>();
  p.dout = dout.data();
  p.dqkv = dqkv.data();
  if (!use_flash(qkv)) {
    Tensor dvec = Tensor::empty({qkv.size(0), n_head, qkv.size(1)}, DType::Float32, qkv.device());
    p.dvec = dvec.data_as<float>();
    attn::backward_dvec(p, bf16, s);
    attn::simple_backward(p, bf16, s);
    return dqkv;
  }
  // dvec and lse2, each [B, Hq, T_pad] fp32, in one scratch block.
  p.T_pad = (p.T + 63) / 64 * 64;
  Tensor stats = Tensor::empty({2, qkv.size(0), n_head, p.T_pad}, DType::Float32, qkv.device());
  p.dvec = stats.data_as<float>();
  p.lse2 = p.dvec + qkv.size(0) * n_head * p.T_pad;
  Tensor dq_accum;  // fp32 [B, T, Hq, D], summed into with atomics by the key-block kernel
  if (!deterministic) {
    dq_accum = Tensor::empty({qkv.size(0), qkv.size(1), n_head, qkv.size(3)}, DType::Float32, qkv.device());
    p.dq_accum = dq_accum.data_as<float>();
  }
#ifdef RINGLOOM_WITH_SM90A_ATTENTION
  if (!deterministic && use_hopper(dev, {p.qkv, p.dout, p.dqkv})) {
    attn::hopper_backward(p, s);
    return dqkv;
  }
#endif
  attn::flash_backward(p, deterministic, s);
  return dqkv;
}

}  // namespace ringloom::cuda
