// One vectorised elementwise kernel for every pointwise op: out[i] = f(in_0[i], ...,
// in_{N-1}[i]) over n elements, computed in fp32 and stored in T. The functor f holds any
// scalars (a scale factor) and the math (GELU, its gradient, an add).
//
// Pure bandwidth: each element is read once per input and written once. With every
// pointer 16-byte aligned, thread t of the grid-stride loop moves whole 16-byte packs
// (8 bf16 or 4 fp32: one LDG.128 per input, all issued before the math, one STG.128), and
// the n % pack-width tail is taken by the first threads of the grid, one element each;
// otherwise (views at odd offsets) it falls back to one element per access. `out` may
// alias an input (in-place ops).
#pragma once
#include <type_traits>
#include <utility>

#include "ops/cuda/common.cuh"

namespace ringloom::cuda::map {

constexpr int kThreads = 256;

template <typename T, int NIN>
struct Inputs {
  const T* p[NIN];
};

template <typename F, typename T, int NIN, size_t... I>
__device__ __forceinline__ float apply_pack(const F& f, const Pack<T> (&p)[NIN], int k, std::index_sequence<I...>) {
  return f(to_f32(p[I].v[k])...);
}

template <typename F, typename T, int NIN, size_t... I>
__device__ __forceinline__ float apply_at(const F& f, const Inputs<T, NIN>& in, int64_t t, std::index_sequence<I...>) {
  return f(to_f32(in.p[I][t])...);
}

template <typename T, int NIN, bool kVec, typename F>
__global__ void map_kernel(F f, Inputs<T, NIN> in, T* out, int64_t n) {
  constexpr auto idx = std::make_index_sequence<NIN>{};
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if constexpr (kVec) {
    constexpr int N = Pack<T>::kN;
    for (int64_t i = first; i < n / N; i += stride) {
      Pack<T> p[NIN], o;
#pragma unroll
      for (int a = 0; a < NIN; ++a) p[a] = load_pack(in.p[a] + i * N);
#pragma unroll
      for (int k = 0; k < N; ++k) o.v[k] = from_f32<T>(apply_pack(f, p, k, idx));
      store_pack(out + i * N, o);
    }
    const int64_t t = (n / N) * N + first;  // tail: fewer than N elements
    if (t < n) out[t] = from_f32<T>(apply_at(f, in, t, idx));
  } else {
    for (int64_t i = first; i < n; i += stride) out[i] = from_f32<T>(apply_at(f, in, i, idx));
  }
}

// out[i] = f(in[i]...) for i < n on the stream of `ctx`; each pointer a T*.
template <typename T, typename F, typename... In>
void launch(const OpContext& ctx, const F& f, int64_t n, T* out, const In*... in) {
  static_assert((std::is_same_v<In, T> && ...), "map::launch: inputs and output share one dtype");
  if (n == 0) return;
  constexpr int NIN = int(sizeof...(In));
  const Inputs<T, NIN> ins{{in...}};
  if (aligned16(out) && (aligned16(in) && ...)) {
    const int grid = grid_for(ceil_div(n, Pack<T>::kN), kThreads, ctx.device);
    map_kernel<T, NIN, true><<<grid, kThreads, 0, ctx.stream>>>(f, ins, out, n);
  } else {
    map_kernel<T, NIN, false><<<grid_for(n, kThreads, ctx.device), kThreads, 0, ctx.stream>>>(f, ins, out, n);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace ringloom::cuda::map
