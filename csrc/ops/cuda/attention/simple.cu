// Simple attention kernels for what the tensor-core path does not cover: fp32 inputs and
// head dims other than 64/128 (any D <= 256). One warp per row; each lane holds D/32 of
// the row's elements and dot products are warp reductions. Correct and plain, not fast.
// Also the backward preprocessing shared with the flash path: dvec = rowsum(dout * out).
#include <cuda_bf16.h>

#include "core/cuda/check.h"
#include "ops/cuda/attention/params.h"

namespace ringloom::cuda::attn {

namespace {

constexpr int kMaxPerLane = 8;  // D <= 32 * 8
constexpr int kWarpsPerBlock = 4;

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_f(float x);
template <>
__device__ __forceinline__ float from_f<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16(x); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Loads row[d] for d = lane + 32*i into x[i] (0 past D).
template <typename T>
__device__ __forceinline__ void load_row(float (&x)[kMaxPerLane], const T* row, int D, int lane) {
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int d = lane + 32 * i;
    x[i] = d < D ? to_f(row[d]) : 0.f;
  }
}
__device__ __forceinline__ float dot_row(const float (&a)[kMaxPerLane], const float (&b)[kMaxPerLane]) {
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) s += a[i] * b[i];
  return warp_sum(s);
}

// Global warp index -> (b, h, i) for rows of [B, H, T].
struct RowIdx {
  int b, h, i;
  bool valid;
};
__device__ __forceinline__ RowIdx row_index(int B, int H, int T) {
  const int64_t w = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  RowIdx r;
  r.valid = w < int64_t(B) * H * T;
  r.i = int(w % T);
  r.h = int((w / T) % H);
  r.b = int(w / (int64_t(T) * H));
  return r;
}

template <typename T>
__global__ void simple_fwd_kernel(const Params p) {
  const RowIdx r = row_index(p.B, p.Hq, p.T);
  if (!r.valid) return;
  const int lane = threadIdx.x % 32, D = p.D, hk = r.h / p.group;
  const T* qkv = static_cast<const T*>(p.qkv);
  const int64_t rs = p.qkv_row();
  float q[kMaxPerLane], k[kMaxPerLane], v[kMaxPerLane], o[kMaxPerLane] = {};
  load_row(q, qkv + p.qkv_head(r.b, r.h) + r.i * rs, D, lane);
  const T* kbase = qkv + p.qkv_head(r.b, p.Hq + hk);
  const T* vbase = qkv + p.qkv_head(r.b, p.Hq + p.Hkv + hk);
  float m = -INFINITY, l = 0.f;
  const int n = p.causal ? r.i + 1 : p.T;
  for (int j = 0; j < n; ++j) {
    load_row(k, kbase + j * rs, D, lane);
    load_row(v, vbase + j * rs, D, lane);
    const float s = dot_row(q, k) * p.scale;
    const float m_new = fmaxf(m, s);
    const float alpha = expf(m - m_new), pj = expf(s - m_new);
    l = l * alpha + pj;
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) o[i] = o[i] * alpha + pj * v[i];
    m = m_new;
  }
  T* out = static_cast<T*>(p.out) + p.out_head(r.b, r.h) + int64_t(r.i) * p.out_row();
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i)
    if (lane + 32 * i < D) out[lane + 32 * i] = from_f<T>(o[i] / l);
  if (lane == 0) p.lse[(int64_t(r.b) * p.Hq + r.h) * p.T + r.i] = m + logf(l);
}

template <typename T>
__global__ void dvec_kernel(const Params p) {
  const RowIdx r = row_index(p.B, p.Hq, p.T);
  if (!r.valid) return;
  const int lane = threadIdx.x % 32;
  const int64_t off = p.out_head(r.b, r.h) + int64_t(r.i) * p.out_row();
  float s = 0.f;
  for (int d = lane; d < p.D; d += 32)
    s += to_f(static_cast<const T*>(p.dout)[off + d]) * to_f(static_cast<const T*>(p.out)[off + d]);
  s = warp_sum(s);
  if (lane == 0) p.dvec[(int64_t(r.b) * p.Hq + r.h) * p.T + r.i] = s;
}

// dq_i = scale * sum_j p_ij (dp_ij - D_i) k_j, one warp per query row.
template <typename T>
__global__ void simple_bwd_dq_kernel(const Params p) {
  const RowIdx r = row_index(p.B, p.Hq, p.T);
  if (!r.valid) return;
  const int lane = threadIdx.x % 32, D = p.D, hk = r.h / p.group;
  const T* qkv = static_cast<const T*>(p.qkv);
  const int64_t rs = p.qkv_row(), stat = (int64_t(r.b) * p.Hq + r.h) * p.T + r.i;
  float q[kMaxPerLane], dO[kMaxPerLane], k[kMaxPerLane], v[kMaxPerLane], dq[kMaxPerLane] = {};
  load_row(q, qkv + p.qkv_head(r.b, r.h) + r.i * rs, D, lane);
  load_row(dO, static_cast<const T*>(p.dout) + p.out_head(r.b, r.h) + int64_t(r.i) * p.out_row(), D, lane);
  const float lse = p.lse[stat], Di = p.dvec[stat];
  const T* kbase = qkv + p.qkv_head(r.b, p.Hq + hk);
  const T* vbase = qkv + p.qkv_head(r.b, p.Hq + p.Hkv + hk);
  const int n = p.causal ? r.i + 1 : p.T;
  for (int j = 0; j < n; ++j) {
    load_row(k, kbase + j * rs, D, lane);
    load_row(v, vbase + j * rs, D, lane);
    const float pij = expf(dot_row(q, k) * p.scale - lse);
    const float ds = pij * (dot_row(dO, v) - Di);
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) dq[i] += ds * k[i];
  }
  T* dst = static_cast<T*>(p.dqkv) + p.qkv_head(r.b, r.h) + r.i * rs;
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i)
    if (lane + 32 * i < D) dst[lane + 32 * i] = from_f<T>(dq[i] * p.scale);
}

// dk_j, dv_j summed over every query head of the group, one warp per key row.
template <typename T>
__global__ void simple_bwd_dkdv_kernel(const Params p) {
  const RowIdx r = row_index(p.B, p.Hkv, p.T);  // r.h is the kv head, r.i the key
  if (!r.valid) return;
  const int lane = threadIdx.x % 32, D = p.D, j = r.i;
  const T* qkv = static_cast<const T*>(p.qkv);
  const int64_t rs = p.qkv_row();
  float k[kMaxPerLane], v[kMaxPerLane], q[kMaxPerLane], dO[kMaxPerLane], dk[kMaxPerLane] = {}, dv[kMaxPerLane] = {};
  load_row(k, qkv + p.qkv_head(r.b, p.Hq + r.h) + j * rs, D, lane);
  load_row(v, qkv + p.qkv_head(r.b, p.Hq + p.Hkv + r.h) + j * rs, D, lane);
  for (int h = r.h * p.group; h < (r.h + 1) * p.group; ++h) {
    const T* qbase = qkv + p.qkv_head(r.b, h);
    const T* obase = static_cast<const T*>(p.dout) + p.out_head(r.b, h);
    const int64_t stat = (int64_t(r.b) * p.Hq + h) * p.T;
    for (int i = p.causal ? j : 0; i < p.T; ++i) {
      load_row(q, qbase + i * rs, D, lane);
      load_row(dO, obase + int64_t(i) * p.out_row(), D, lane);
      const float pij = expf(dot_row(q, k) * p.scale - p.lse[stat + i]);
      const float ds = pij * (dot_row(dO, v) - p.dvec[stat + i]);
#pragma unroll
      for (int e = 0; e < kMaxPerLane; ++e) {
        dv[e] += pij * dO[e];
        dk[e] += ds * q[e];
      }
    }
  }
  T* dqkv = static_cast<T*>(p.dqkv);
  T* dkr = dqkv + p.qkv_head(r.b, p.Hq + r.h) + j * rs;
  T* dvr = dqkv + p.qkv_head(r.b, p.Hq + p.Hkv + r.h) + j * rs;
#pragma unroll
  for (int e = 0; e < kMaxPerLane; ++e)
    if (lane + 32 * e < D) {
      dkr[lane + 32 * e] = from_f<T>(dk[e] * p.scale);
      dvr[lane + 32 * e] = from_f<T>(dv[e]);
    }
}

template <typename Kernel>
void launch_rows(Kernel kernel, const Params& p, int64_t rows, cudaStream_t s) {
  const int threads = 32 * kWarpsPerBlock;
  const int64_t blocks = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  kernel<<<unsigned(blocks), threads, 0, s>>>(p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void simple_forward(const Params& p, bool is_bf16, cudaStream_t s) {
  const int64_t rows = int64_t(p.B) * p.Hq * p.T;
  if (is_bf16) launch_rows(simple_fwd_kernel<__nv_bfloat16>, p, rows, s);
  else launch_rows(simple_fwd_kernel<float>, p, rows, s);
}

void backward_dvec(const Params& p, bool is_bf16, cudaStream_t s) {
  const int64_t rows = int64_t(p.B) * p.Hq * p.T;
  if (is_bf16) launch_rows(dvec_kernel<__nv_bfloat16>, p, rows, s);
  else launch_rows(dvec_kernel<float>, p, rows, s);
}

void simple_backward(const Params& p, bool is_bf16, cudaStream_t s) {
  const int64_t q_rows = int64_t(p.B) * p.Hq * p.T, k_rows = int64_t(p.B) * p.Hkv * p.T;
  if (is_bf16) {
    launch_rows(simple_bwd_dq_kernel<__nv_bfloat16>, p, q_rows, s);
    launch_rows(simple_bwd_dkdv_kernel<__nv_bfloat16>, p, k_rows, s);
  } else {
    launch_rows(simple_bwd_dq_kernel<float>, p, q_rows, s);
    launch_rows(simple_bwd_dkdv_kernel<float>, p, k_rows, s);
  }
}

}  // namespace ringloom::cuda::attn
