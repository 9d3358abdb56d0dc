// Residual add and in-place scale. Pure bandwidth: add reads 2 and writes 1 element,
// scale_ reads and writes 1; 16-byte vectors with a scalar tail (common.cuh).
#include "ops/cuda/common.cuh"
#include "ops/elementwise.h"

namespace ringloom::cuda {

namespace {

// out = a + b over n elements; out may alias a (add_). kVec: 16-byte path over n/kN packs.
template <typename T, bool kVec>
__global__ void add_kernel(const T* a, const T* b, T* out, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if constexpr (kVec) {
    constexpr int N = Pack<T>::kN;
    for (; i < n / N; i += stride) {
      Pack<T> pa = load_pack(a + i * N), pb = load_pack(b + i * N), po;
#pragma unroll
      for (int k = 0; k < N; ++k) po.v[k] = from_f32<T>(to_f32(pa.v[k]) + to_f32(pb.v[k]));
      store_pack(out + i * N, po);
    }
    // Tail (fewer than N elements): the first threads of the grid take one each.
    const int64_t t = (n / N) * N + blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (t < n) out[t] = from_f32<T>(to_f32(a[t]) + to_f32(b[t]));
  } else {
    for (; i < n; i += stride) out[i] = from_f32<T>(to_f32(a[i]) + to_f32(b[i]));
  }
}

template <typename T, bool kVec>
__global__ void scale_kernel(T* a, float s, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if constexpr (kVec) {
    constexpr int N = Pack<T>::kN;
    for (; i < n / N; i += stride) {
      Pack<T> p = load_pack(a + i * N);
#pragma unroll
      for (int k = 0; k < N; ++k) p.v[k] = from_f32<T>(to_f32(p.v[k]) * s);
      store_pack(a + i * N, p);
    }
    const int64_t t = (n / N) * N + blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (t < n) a[t] = from_f32<T>(to_f32(a[t]) * s);
  } else {
    for (; i < n; i += stride) a[i] = from_f32<T>(to_f32(a[i]) * s);
  }
}

constexpr int kThreads = 256;

}  // namespace

void add_out(const Tensor& a, const Tensor& b, Tensor& out) {
  const int64_t n = a.numel();
  if (n == 0) return;
  OpContext ctx(a);
  RL_DISPATCH_FLOAT(a.dtype(), T, {
    const T* pa = a.data_as<T>();
    const T* pb = b.data_as<T>();
    T* po = out.data_as<T>();
    if (aligned16(pa) && aligned16(pb) && aligned16(po)) {
      const int grid = grid_for(ceil_div(n, Pack<T>::kN), kThreads, ctx.device);
      add_kernel<T, true><<<grid, kThreads, 0, ctx.stream>>>(pa, pb, po, n);
    } else {
      add_kernel<T, false><<<grid_for(n, kThreads, ctx.device), kThreads, 0, ctx.stream>>>(pa, pb, po, n);
    }
  });
  CUDA_CHECK_LAUNCH();
}

void scale_(Tensor& a, float s) {
  const int64_t n = a.numel();
  if (n == 0) return;
  OpContext ctx(a);
  RL_DISPATCH_FLOAT(a.dtype(), T, {
    T* pa = a.data_as<T>();
    if (aligned16(pa)) {
      const int grid = grid_for(ceil_div(n, Pack<T>::kN), kThreads, ctx.device);
      scale_kernel<T, true><<<grid, kThreads, 0, ctx.stream>>>(pa, s, n);
    } else {
      scale_kernel<T, false><<<grid_for(n, kThreads, ctx.device), kThreads, 0, ctx.stream>>>(pa, s, n);
    }
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace ringloom::cuda
