// The fused softmax cross-entropy kernel; cross_entropy.cu launches it and says how it
// works, dev/norms/ times it at other launch shapes.
#pragma once
#include <cmath>

#include "ops/cuda/common.cuh"

namespace ringloom::cuda::xent {

// Online softmax state over a subset of a row: max m and sum of exp(x - m).
struct SoftmaxState {
  float m = -INFINITY, s = 0.0f;
  __device__ void add(float x) {
    if (x > m) {
      s = s * __expf(m - x) + 1.0f;
      m = x;
    } else {
      s += __expf(x - m);
    }
  }
  template <int N>
  __device__ void add_pack(const float (&x)[N]) {
    float pm = x[0];
#pragma unroll
    for (int k = 1; k < N; ++k) pm = fmaxf(pm, x[k]);
    const float mn = fmaxf(m, pm);
    if (mn == -INFINITY) return;  // everything so far is -inf: nothing to add
    float acc = s * __expf(m - mn);
#pragma unroll
    for (int k = 0; k < N; ++k) acc += __expf(x[k] - mn);
    s = acc;
    m = mn;
  }
  __device__ void merge(float m2, float s2) {
    const float mn = fmaxf(m, m2);
    if (mn == -INFINITY) return;
    s = s * __expf(m - mn) + s2 * __expf(m2 - mn);
    m = mn;
  }
};

// The row splits into a scalar head (until 16-byte alignment), packs, and a scalar tail.
struct RowSplit {
  int64_t head, packs, tail_start;
};
template <typename T>
__device__ RowSplit split_row(const T* row, int64_t V) {
  constexpr int N = Pack<T>::kN;
  const int64_t mis = (reinterpret_cast<uintptr_t>(row) & 15) / sizeof(T);
  const int64_t head = mis == 0 ? 0 : (N - mis < V ? N - mis : V);
  const int64_t packs = (V - head) / N;
  return {head, packs, head + packs * N};
}

// kThreads per block (one row at a time per block); kLoads: 16-byte loads each thread
// issues before using any, in both passes (bytes in flight per SM = threads x kLoads x 16).
template <typename T, bool kBackward, int kThreads, int kLoads>
__global__ void __launch_bounds__(kThreads) cross_entropy_kernel(T* __restrict__ logits, const int* __restrict__ targets,
                                                                 float* __restrict__ losses, int64_t rows, int64_t V,
                                                                 int64_t ignore_index, float grad_scale) {
  constexpr int N = Pack<T>::kN;
  __shared__ float sm_m[32], sm_s[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    T* row = logits + r * V;
    const int target = targets[r];
    const bool ignored = int64_t(target) == ignore_index;
    const RowSplit sp = split_row(row, V);

    if (ignored) {  // loss 0, gradient 0
      if (kBackward) {
        for (int64_t i = threadIdx.x; i < V; i += kThreads) row[i] = from_f32<T>(0.0f);
      }
      if (threadIdx.x == 0) losses[r] = 0.0f;
      continue;
    }

    // Pass 1: online softmax statistics, kLoads packs in flight per thread.
    SoftmaxState st;
    for (int64_t i = threadIdx.x; i < sp.head; i += kThreads) st.add(to_f32(row[i]));
    const T* packs = row + sp.head;
    int64_t p = threadIdx.x;
    for (; p + (kLoads - 1) * kThreads < sp.packs; p += kLoads * kThreads) {
      Pack<T> raw[kLoads];
#pragma unroll
      for (int u = 0; u < kLoads; ++u) raw[u] = load_pack(packs + (p + u * kThreads) * N);
#pragma unroll
      for (int u = 0; u < kLoads; ++u) {
        float a[N];
#pragma unroll
        for (int e = 0; e < N; ++e) a[e] = to_f32(raw[u].v[e]);
        st.add_pack(a);
      }
    }
    for (; p < sp.packs; p += kThreads) {
      float a[N];
      load_vec<T, N>(packs + p * N, a);
      st.add_pack(a);
    }
    for (int64_t i = sp.tail_start + threadIdx.x; i < V; i += kThreads) st.add(to_f32(row[i]));

    // Combine the threads' states: warps by shuffles, then warp 0 over the warps.
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) st.merge(__shfl_xor_sync(0xffffffffu, st.m, o), __shfl_xor_sync(0xffffffffu, st.s, o));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
      sm_m[warp] = st.m;
      sm_s[warp] = st.s;
    }
    __syncthreads();
    if (warp == 0) {
      constexpr int nw = kThreads / 32;
      SoftmaxState w;
      if (lane < nw) {
        w.m = sm_m[lane];
        w.s = sm_s[lane];
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) w.merge(__shfl_xor_sync(0xffffffffu, w.m, o), __shfl_xor_sync(0xffffffffu, w.s, o));
      if (lane == 0) {
        sm_m[0] = w.m;
        sm_s[0] = w.s;
      }
    }
    __syncthreads();
    const float lse = sm_m[0] + logf(sm_s[0]);
    const bool valid = target >= 0 && target < V;
    if (threadIdx.x == 0) losses[r] = valid ? lse - to_f32(row[target]) : NAN;
    __syncthreads();  // sm_* reused by the next row; row[target] read before pass 2 overwrites it

    if constexpr (kBackward) {
      // Pass 2: grad = scale * exp(x - lse) - scale * [i == target], written over x.
      auto grad = [&](float x, int64_t i) {
        return grad_scale * __expf(x - lse) - (i == target ? grad_scale : 0.0f);
      };
      for (int64_t i = threadIdx.x; i < sp.head; i += kThreads) row[i] = from_f32<T>(grad(to_f32(row[i]), i));
      // Packs in reverse order: the end of the row was read last in pass 1, so it is the
      // part most likely still in L2. Last use of the data: evict-first loads and stores.
      // kLoads packs are loaded before the first is written (they do not overlap).
      auto write = [&](int64_t q, Pack<T> pk) {
        const int64_t i0 = sp.head + q * N;
#pragma unroll
        for (int e = 0; e < N; ++e) pk.v[e] = from_f32<T>(grad(to_f32(pk.v[e]), i0 + e));
        __stcs(reinterpret_cast<int4*>(row + i0), *reinterpret_cast<const int4*>(&pk));
      };
      int64_t q = sp.packs - 1 - threadIdx.x;
      for (; q - (kLoads - 1) * kThreads >= 0; q -= kLoads * kThreads) {
        Pack<T> raw[kLoads];
#pragma unroll
        for (int u = 0; u < kLoads; ++u) raw[u] = load_pack_stream(row + sp.head + (q - u * kThreads) * N);
#pragma unroll
        for (int u = 0; u < kLoads; ++u) write(q - u * kThreads, raw[u]);
      }
      for (; q >= 0; q -= kThreads) write(q, load_pack_stream(row + sp.head + q * N));
      for (int64_t i = sp.tail_start + threadIdx.x; i < V; i += kThreads)
        row[i] = from_f32<T>(grad(to_f32(row[i]), i));
    }
  }
}

}  // namespace ringloom::cuda::xent
