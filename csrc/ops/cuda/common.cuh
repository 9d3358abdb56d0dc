// Helpers shared by the CUDA op kernels: dtype dispatch, fp32 <-> storage conversion,
// 16-byte vector loads/stores, warp and block reductions, launch sizing.
//
// Memory-bound kernels move 16 bytes per thread per access (8 bf16 or 4 fp32): that is the
// widest load a thread can issue (LDG.128) and what keeps a warp's accesses to one 512-byte
// transaction. Vector paths need the pointer 16-byte aligned and the element count a
// multiple of the vector width; each kernel falls back to scalar code otherwise (odd sizes,
// views at odd offsets).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "core/cuda/check.h"
#include "core/cuda/context.h"
#include "core/tensor.h"

namespace ringloom::cuda {

using bf16 = __nv_bfloat16;

// ---- fp32 <-> storage ----
__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ bf16 from_f32<bf16>(float x) { return __float2bfloat16(x); }

// ---- 16-byte vectors ----
// Pack<T>: kN elements of T in 16 bytes, loaded and stored with one instruction.
template <typename T>
struct alignas(16) Pack {
  static constexpr int kN = 16 / sizeof(T);
  T v[kN];
};

template <typename T>
__device__ __forceinline__ Pack<T> load_pack(const T* p) {
  Pack<T> r;
  *reinterpret_cast<int4*>(&r) = *reinterpret_cast<const int4*>(p);
  return r;
}
// Streaming load (evict-first in L1 and L2): for data read exactly once.
template <typename T>
__device__ __forceinline__ Pack<T> load_pack_stream(const T* p) {
  Pack<T> r;
  *reinterpret_cast<int4*>(&r) = __ldcs(reinterpret_cast<const int4*>(p));
  return r;
}
template <typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T>& r) {
  *reinterpret_cast<int4*>(p) = *reinterpret_cast<const int4*>(&r);
}

// VEC consecutive elements to/from fp32 registers: one 16-byte access when VEC is the
// pack width, a scalar access when VEC == 1 (the fallback for unaligned rows).
template <typename T, int VEC>
__device__ __forceinline__ void load_vec(const T* p, float (&out)[VEC]) {
  if constexpr (VEC == 1) {
    out[0] = to_f32(*p);
  } else {
    static_assert(VEC == Pack<T>::kN, "VEC must be 1 or the pack width");
    const Pack<T> pk = load_pack(p);
#pragma unroll
    for (int k = 0; k < VEC; ++k) out[k] = to_f32(pk.v[k]);
  }
}
template <typename T, int VEC>
__device__ __forceinline__ void store_vec(T* p, const float (&in)[VEC]) {
  if constexpr (VEC == 1) {
    *p = from_f32<T>(in[0]);
  } else {
    Pack<T> pk;
#pragma unroll
    for (int k = 0; k < VEC; ++k) pk.v[k] = from_f32<T>(in[k]);
    store_pack(p, pk);
  }
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// ---- reductions ----
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the whole block, result in every thread. `scratch` holds >= 32 floats; the
// order of additions is fixed by the block shape, so the result is deterministic.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : 0.0f;
  return warp_sum(v);
}

// ---- launch helpers ----
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Grid for a grid-stride loop over n items: enough blocks to fill the device a few times
// over, never more than the work needs.
inline int grid_for(int64_t n, int threads, int device, int waves = 8) {
  const int64_t need = ceil_div(n, threads);
  const int64_t cap = int64_t(sm_count(device)) * waves;
  return int(std::max<int64_t>(1, std::min(need, cap)));
}

// The device and stream an op on tensor t runs on; makes the device current.
struct OpContext {
  int device;
  DeviceGuard guard;
  cudaStream_t stream;
  explicit OpContext(const Tensor& t)
      : device(t.device().index), guard(t.device().index), stream(current_stream(t.device().index)) {}
};

}  // namespace ringloom::cuda

// RL_DISPATCH_FLOAT(dtype, T, ...) runs the body with T = float or bf16.
#define RL_DISPATCH_FLOAT(dtype, T, ...)                                                           \
  do {                                                                                             \
    if ((dtype) == ::ringloom::DType::Float32) {                                                   \
      using T = float;                                                                             \
      __VA_ARGS__;                                                                                 \
    } else if ((dtype) == ::ringloom::DType::BFloat16) {                                           \
      using T = ::ringloom::cuda::bf16;                                                            \
      __VA_ARGS__;                                                                                 \
    } else {                                                                                       \
      ::ringloom::fail(::ringloom::ErrorKind::Type, "CUDA kernels take float32 or bfloat16, got ", \
                       ::ringloom::dtype_name(dtype));                                             \
    }                                                                                              \
  } while (0)
