// Pieces shared by the cross-entropy kernels (full rows, ops/cuda/cross_entropy.cu, and
// vocabulary slices, ops/cuda/cross_entropy_shard.cu).
//
// Online softmax statistics (Milakov & Gimelshein 2018): a running max m and a running sum
// s = sum_j exp(x_j - m). When a larger value m' arrives, s is rescaled by exp(m - m'); two
// partial states merge the same way:
//   m = max(m1, m2),  s = s1 exp(m1 - m) + s2 exp(m2 - m),  logsumexp = m + log(s).
// One read of the data gives both statistics. -inf logits add nothing; a NaN makes s NaN.
#pragma once
#include <cmath>

#include "ops/cuda/common.cuh"

namespace ringloom::cuda {

struct SoftmaxState {
  float m = -INFINITY, s = 0.0f;
  __device__ void add(float x) {
    if (x > m) {
      s = s * __expf(m - x) + 1.0f;
      m = x;
    } else if (x != -INFINITY) {  // exp(-inf) adds 0 (and exp(-inf - m) is NaN while m is -inf)
      s += __expf(x - m);
    }
  }
  // N values at once: one rescale per pack instead of one per value.
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

// The whole block's state, in every thread: shuffles within each warp, then every warp
// merges the warps' states from shared memory (blockDim.x a multiple of 32). `scratch` holds
// >= 64 floats, written before the one barrier and read after it: a caller alternating two
// scratch buffers between consecutive calls needs no other barrier (a thread still reading
// buffer A cannot have passed the next call's barrier, which precedes the writes to A after
// it). The merge order is fixed by the block shape: the result is deterministic.
__device__ __forceinline__ SoftmaxState block_softmax_state(SoftmaxState st, float* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    st.merge(__shfl_xor_sync(0xffffffffu, st.m, o), __shfl_xor_sync(0xffffffffu, st.s, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  if (lane == 0) {
    scratch[warp] = st.m;
    scratch[32 + warp] = st.s;
  }
  __syncthreads();
  SoftmaxState w;
  if (lane < nwarps) {
    w.m = scratch[lane];
    w.s = scratch[32 + lane];
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    w.merge(__shfl_xor_sync(0xffffffffu, w.m, o), __shfl_xor_sync(0xffffffffu, w.s, o));
  return w;
}

// The gradient of one logit x at column i: grad_scale * (exp(x - lse) - [i == target]).
__device__ __forceinline__ float xent_grad(float x, int64_t i, int64_t target, float lse, float grad_scale) {
  return grad_scale * __expf(x - lse) - (i == target ? grad_scale : 0.0f);
}

}  // namespace ringloom::cuda
