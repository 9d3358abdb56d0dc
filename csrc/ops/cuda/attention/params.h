// What every attention kernel needs to find its data: the packed qkv layout
// qkv[B, T, Hq + 2*Hkv, D] (queries, then keys, then values per token), out[B, T, Hq, D],
// lse[B, Hq, T] fp32, and for backward dout/dqkv with the same layouts plus the fp32
// scratch the host code allocates (dvec[B, Hq, T] = rowsum(dout * out), and dq_accum
// [B, T, Hq, D] for the atomic dq path).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace ringloom::cuda::attn {

struct Params {
  const void* qkv = nullptr;
  void* out = nullptr;
  float* lse = nullptr;
  // backward only
  const void* dout = nullptr;
  void* dqkv = nullptr;
  float* dvec = nullptr;      // simple path: [B, Hq, T]; flash path: [B, Hq, T_pad]
  float* lse2 = nullptr;      // flash path: lse * log2(e), [B, Hq, T_pad], +inf past T
  float* dq_accum = nullptr;
  int T_pad = 0;              // T rounded up to 64: padded rows let the tiles load without masks

  int B = 0, T = 0, Hq = 0, Hkv = 0, D = 0;
  int group = 1;              // Hq / Hkv: query head h reads kv head h / group
  bool causal = false;
  float scale = 0.f;          // softmax scale on q.k
  float scale_log2 = 0.f;     // scale * log2(e): the kernels work with exp2

  __host__ __device__ int64_t qkv_row() const { return int64_t(Hq + 2 * Hkv) * D; }  // elements between tokens
  __host__ __device__ int64_t out_row() const { return int64_t(Hq) * D; }
  // Element offset of (b, t=0, head, d=0) in qkv / out.
  __host__ __device__ int64_t qkv_head(int b, int head) const { return int64_t(b) * T * qkv_row() + int64_t(head) * D; }
  __host__ __device__ int64_t out_head(int b, int h) const { return int64_t(b) * T * out_row() + int64_t(h) * D; }
};

// Launchers (one translation unit each, so the builds run side by side).
// Tensor-core kernels: bf16, D in {64, 128}.
void flash_forward(const Params& p, cudaStream_t s);
// Needs dvec and lse2 of T_pad rows (flash_backward fills them first).
// deterministic: dq by a separate pass over the key blocks instead of fp32 atomics.
void flash_backward(const Params& p, bool deterministic, cudaStream_t s);
// D = 128 dK/dV(/atomic dQ) kernel with the two-dimensional warp layout (flash_bwd_2d.cu).
void flash_bwd_dkdv_2d(const Params& p, cudaStream_t s);
// Hopper (sm_90a, compute capability 9.0 only) kernels: bf16, D in {64, 128}; qkv, out and
// dout 16-byte aligned (TMA). The backward takes the flash path's scratch (dvec, lse2 of
// T_pad rows and dq_accum) and has no deterministic mode.
void hopper_forward(const Params& p, cudaStream_t s);
void hopper_backward(const Params& p, cudaStream_t s);
// Backward steps shared by flash_backward and hopper_backward (flash_bwd.cu): dvec and lse2
// for T_pad rows; dqkv's query part = scale * dq_accum in bf16.
void backward_prep(const Params& p, cudaStream_t s);
void dq_accum_to_bf16(const Params& p, cudaStream_t s);
// Simple kernels: any D <= 256, fp32 or bf16 (is_bf16). One warp per row.
void simple_forward(const Params& p, bool is_bf16, cudaStream_t s);
void simple_backward(const Params& p, bool is_bf16, cudaStream_t s);
// dvec[b, h, t] = sum_d dout * out, in fp32 (backward's preprocessing, FlashAttention-2 D_i).
void backward_dvec(const Params& p, bool is_bf16, cudaStream_t s);

}  // namespace ringloom::cuda::attn
