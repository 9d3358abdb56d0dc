// One vectorised elementwise kernel for every pointwise op: (out_0[i], ...) = f(in_0[i],
// ..., in_{N-1}[i]) over n elements, computed in fp32 and stored in T. The functor f holds
// any scalars (a scale factor) and the math (GELU, its gradient, an add); it returns a float
// (one output) or a Values<M> (M outputs, e.g. a gradient and the forward value beside it).
//
// Pure bandwidth: each element is read once per input and written once per output. With
// every pointer 16-byte aligned, thread t of the grid-stride loop moves whole 16-byte packs
// (8 bf16 or 4 fp32: one LDG.128 per input, all issued before the math, one STG.128 per
// output), and the n % pack-width tail is taken by the first threads of the grid, one
// element each; otherwise (views at odd offsets) it falls back to one element per access.
// An output may alias an input (in-place ops).
#pragma once
#include <type_traits>
#include <utility>

#include "ops/cuda/common.cuh"

namespace ringloom::cuda::map {

constexpr int kThreads = 256;

template <int M>
struct Values {
  float v[M];
};

template <typename T, int NIN>
struct Inputs {
  const T* p[NIN];
};

template <typename T, int NOUT>
struct Outputs {
  T* p[NOUT];
};

__device__ __forceinline__ Values<1> as_values(float x) { return {{x}}; }
template <int M>
__device__ __forceinline__ Values<M> as_values(const Values<M>& x) {
  return x;
}

template <typename F, typename T, int NIN, size_t... I>
__device__ __forceinline__ auto apply_pack(const F& f, const Pack<T> (&p)[NIN], int k, std::index_sequence<I...>) {
  return as_values(f(to_f32(p[I].v[k])...));
}

template <typename F, typename T, int NIN, size_t... I>
__device__ __forceinline__ auto apply_at(const F& f, const Inputs<T, NIN>& in, int64_t t, std::index_sequence<I...>) {
  return as_values(f(to_f32(in.p[I][t])...));
}

template <typename T, int NOUT, int M>
__device__ __forceinline__ void store_at(const Outputs<T, NOUT>& out, int64_t t, const Values<M>& r) {
  static_assert(M == NOUT, "map: the functor's outputs and the output pointers differ in number");
#pragma unroll
  for (int o = 0; o < NOUT; ++o) out.p[o][t] = from_f32<T>(r.v[o]);
}

template <typename T, int NIN, int NOUT, bool kVec, typename F>
__global__ void map_kernel(F f, Inputs<T, NIN> in, Outputs<T, NOUT> out, int64_t n) {
  constexpr auto idx = std::make_index_sequence<NIN>{};
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if constexpr (kVec) {
    constexpr int N = Pack<T>::kN;
    for (int64_t i = first; i < n / N; i += stride) {
      Pack<T> p[NIN], o[NOUT];
#pragma unroll
      for (int a = 0; a < NIN; ++a) p[a] = load_pack(in.p[a] + i * N);
#pragma unroll
      for (int k = 0; k < N; ++k) {
        const auto r = apply_pack(f, p, k, idx);
#pragma unroll
        for (int q = 0; q < NOUT; ++q) o[q].v[k] = from_f32<T>(r.v[q]);
      }
#pragma unroll
      for (int q = 0; q < NOUT; ++q) store_pack(out.p[q] + i * N, o[q]);
    }
    const int64_t t = (n / N) * N + first;  // tail: fewer than N elements
    if (t < n) store_at(out, t, apply_at(f, in, t, idx));
  } else {
    for (int64_t i = first; i < n; i += stride) store_at(out, i, apply_at(f, in, i, idx));
  }
}

// (outs[0][i], ...) = f(in[i]...) for i < n on the stream of `ctx`; each pointer a T*.
template <typename T, int NOUT, typename F, typename... In>
void launch_outputs(const OpContext& ctx, const F& f, int64_t n, const Outputs<T, NOUT>& outs, const In*... in) {
  static_assert((std::is_same_v<In, T> && ...), "map::launch: inputs and outputs share one dtype");
  if (n == 0) return;
  constexpr int NIN = int(sizeof...(In));
  const Inputs<T, NIN> ins{{in...}};
  bool aligned = (aligned16(in) && ...);
  for (int q = 0; q < NOUT; ++q) aligned = aligned && aligned16(outs.p[q]);
  if (aligned) {
    const int grid = grid_for(ceil_div(n, Pack<T>::kN), kThreads, ctx.device);
    map_kernel<T, NIN, NOUT, true><<<grid, kThreads, 0, ctx.stream>>>(f, ins, outs, n);
  } else {
    map_kernel<T, NIN, NOUT, false><<<grid_for(n, kThreads, ctx.device), kThreads, 0, ctx.stream>>>(f, ins, outs, n);
  }
  CUDA_CHECK_LAUNCH();
}

// out[i] = f(in[i]...): the one-output case.
template <typename T, typename F, typename... In>
void launch(const OpContext& ctx, const F& f, int64_t n, T* out, const In*... in) {
  launch_outputs(ctx, f, n, Outputs<T, 1>{{out}}, in...);
}

}  // namespace ringloom::cuda::map
