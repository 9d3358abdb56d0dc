// Fused softmax cross-entropy; the math is in ops/cross_entropy.h.
//
// One block per row of logits. Pass 1 streams the row once from memory with 16-byte loads
// and keeps, per thread, an online softmax state (Milakov & Gimelshein 2018): running max
// m and running sum s of exp(x - m); when a larger value arrives, s is rescaled by
// exp(m_old - m_new). The block combines the states into lse = m + log(s), so the row is
// read once for the statistics, with no fp32 copy of the logits anywhere.
// Pass 2 (forward_backward only) reads the row again, now from L2 (one row of 50304 bf16
// is 100 KB; with two 1024-thread blocks per SM, ~264 rows = 26 MB are in flight, inside
// the 50 MB L2), and writes grad = grad_scale * (exp(x - lse) - onehot) over it in place.
// Memory traffic is then the floor: read the logits once, write the gradient once.
//
// A target outside [0, V) that is not ignore_index cannot be reported without a host
// synchronisation; its row's loss is NaN instead (so the mean loss shows it), and its
// gradient is the softmax without the one-hot term.
#include <cmath>

#include "ops/cross_entropy.h"
#include "ops/cuda/common.cuh"

namespace ringloom::cuda {

namespace {

constexpr int kThreads = 1024;

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

template <typename T, bool kBackward>
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
        for (int64_t i = threadIdx.x; i < V; i += blockDim.x) row[i] = from_f32<T>(0.0f);
      }
      if (threadIdx.x == 0) losses[r] = 0.0f;
      continue;
    }

    // Pass 1: online softmax statistics.
    SoftmaxState st;
    for (int64_t i = threadIdx.x; i < sp.head; i += blockDim.x) st.add(to_f32(row[i]));
    int64_t p = threadIdx.x;
    for (; p + blockDim.x < sp.packs; p += 2 * blockDim.x) {  // two loads in flight
      float a[N], b[N];
      load_vec<T, N>(row + sp.head + p * N, a);
      load_vec<T, N>(row + sp.head + (p + blockDim.x) * N, b);
      st.add_pack(a);
      st.add_pack(b);
    }
    if (p < sp.packs) {
      float a[N];
      load_vec<T, N>(row + sp.head + p * N, a);
      st.add_pack(a);
    }
    for (int64_t i = sp.tail_start + threadIdx.x; i < V; i += blockDim.x) st.add(to_f32(row[i]));

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
      const int nw = blockDim.x >> 5;
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
      for (int64_t i = threadIdx.x; i < sp.head; i += blockDim.x) row[i] = from_f32<T>(grad(to_f32(row[i]), i));
      // Packs in reverse order: the end of the row was read last in pass 1, so it is the
      // part most likely still in L2. Last use of the data: evict-first loads and stores.
      for (int64_t q = sp.packs - 1 - threadIdx.x; q >= 0; q -= blockDim.x) {
        T* ptr = row + sp.head + q * N;
        Pack<T> pk = load_pack_stream(ptr);
        const int64_t i0 = sp.head + q * N;
#pragma unroll
        for (int k = 0; k < N; ++k) pk.v[k] = from_f32<T>(grad(to_f32(pk.v[k]), i0 + k));
        __stcs(reinterpret_cast<int4*>(ptr), *reinterpret_cast<const int4*>(&pk));
      }
      for (int64_t i = sp.tail_start + threadIdx.x; i < V; i += blockDim.x)
        row[i] = from_f32<T>(grad(to_f32(row[i]), i));
    }
  }
}

template <bool kBackward>
Tensor run(Tensor& logits, const Tensor& targets, int64_t ignore_index, float grad_scale) {
  const int64_t rows = logits.size(0), V = logits.size(1);
  Tensor losses = Tensor::empty({rows}, DType::Float32, logits.device());
  if (rows == 0) return losses;
  OpContext ctx(logits);
  if (V == 0) {
    CUDA_CHECK(cudaMemsetAsync(losses.data(), 0, losses.nbytes(), ctx.stream));
    return losses;
  }
  RL_DISPATCH_FLOAT(logits.dtype(), T, {
    const int grid = int(std::min<int64_t>(rows, int64_t(sm_count(ctx.device)) * 64));
    cross_entropy_kernel<T, kBackward><<<grid, kThreads, 0, ctx.stream>>>(
        logits.data_as<T>(), targets.data_as<int>(), losses.data_as<float>(), rows, V,
        ignore_index, grad_scale);
  });
  CUDA_CHECK_LAUNCH();
  return losses;
}

}  // namespace

Tensor cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  Tensor l = logits;  // forward only: the kernel does not write the logits
  return run<false>(l, targets, ignore_index, 0.0f);
}

Tensor cross_entropy_forward_backward(Tensor& logits, const Tensor& targets, int64_t ignore_index, float grad_scale) {
  return run<true>(logits, targets, ignore_index, grad_scale);
}

}  // namespace ringloom::cuda
