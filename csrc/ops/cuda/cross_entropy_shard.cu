// Vocabulary-parallel cross-entropy on the GPU; the math is in ops/cross_entropy_shard.h.
//
// stats: one block per row; pass 1 finds the slice's max, pass 2 sums exp(x - m) (the
// row, V_r = V / R elements, is then read from L2). combine: one thread per row, R is
// small. backward: one block per row writes grad = scale * (exp(x - lse) - onehot) over
// the logits. Scalar loads: these rows are R times shorter than the unsharded op's, and
// the GEMM that produced them dominates the step.
#include <cmath>

#include "ops/cross_entropy_shard.h"
#include "ops/cuda/common.cuh"

namespace ringloom::cuda {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : -INFINITY;
  return warp_max(v);
}

template <typename T>
__global__ void shard_stats_kernel(const T* __restrict__ logits, const int* __restrict__ targets,
                                   float* __restrict__ stats, int64_t rows, int64_t V, int64_t start) {
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = logits + r * V;
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) m = fmaxf(m, to_f32(row[i]));
    m = block_max(m, scratch);
    float s = 0.0f;
    if (m != -INFINITY)
      for (int64_t i = threadIdx.x; i < V; i += blockDim.x) s += __expf(to_f32(row[i]) - m);
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) {
      const int64_t local = int64_t(targets[r]) - start;
      stats[3 * r] = m;
      stats[3 * r + 1] = s;
      stats[3 * r + 2] = local >= 0 && local < V ? to_f32(row[local]) : 0.0f;
    }
  }
}

__global__ void shard_combine_kernel(const float* __restrict__ stats, const int* __restrict__ targets,
                                     float* __restrict__ losses, float* __restrict__ lse, int64_t R, int64_t rows,
                                     int64_t ignore_index) {
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < rows; n += int64_t(gridDim.x) * blockDim.x) {
    float M = -INFINITY;
    for (int64_t r = 0; r < R; ++r) M = fmaxf(M, stats[(r * rows + n) * 3]);
    float s = 0.0f, picked = 0.0f;
    for (int64_t r = 0; r < R; ++r) {
      const float* e = stats + (r * rows + n) * 3;
      s += e[0] == -INFINITY ? 0.0f : e[1] * expf(e[0] - M);
      picked += e[2];
    }
    const float l = M + logf(s);
    lse[n] = l;
    losses[n] = int64_t(targets[n]) == ignore_index ? 0.0f : l - picked;
  }
}

template <typename T>
__global__ void shard_backward_kernel(T* __restrict__ logits, const int* __restrict__ targets,
                                      const float* __restrict__ lse, int64_t rows, int64_t V, int64_t start,
                                      int64_t ignore_index, float grad_scale) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    T* row = logits + r * V;
    const bool ignored = int64_t(targets[r]) == ignore_index;
    const int64_t local = int64_t(targets[r]) - start;
    const float l = lse[r];
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
      const float g = ignored ? 0.0f : grad_scale * __expf(to_f32(row[i]) - l) - (i == local ? grad_scale : 0.0f);
      row[i] = from_f32<T>(g);
    }
  }
}

int row_grid(int64_t rows, int device) { return int(std::max<int64_t>(1, std::min<int64_t>(rows, int64_t(sm_count(device)) * 16))); }

}  // namespace

Tensor cross_entropy_shard_stats(const Tensor& logits, const Tensor& targets, int64_t vocab_start) {
  const int64_t rows = logits.size(0), V = logits.size(1);
  Tensor stats = Tensor::empty({rows, 3}, DType::Float32, logits.device());
  if (rows == 0) return stats;
  OpContext ctx(logits);
  RL_DISPATCH_FLOAT(logits.dtype(), T, {
    shard_stats_kernel<T><<<row_grid(rows, ctx.device), kThreads, 0, ctx.stream>>>(
        logits.data_as<T>(), targets.data_as<int>(), stats.data_as<float>(), rows, V, vocab_start);
  });
  CUDA_CHECK_LAUNCH();
  return stats;
}

std::pair<Tensor, Tensor> cross_entropy_shard_combine(const Tensor& stats, const Tensor& targets,
                                                      int64_t ignore_index) {
  const int64_t R = stats.size(0), rows = stats.size(1);
  Tensor losses = Tensor::empty({rows}, DType::Float32, stats.device());
  Tensor lse = Tensor::empty({rows}, DType::Float32, stats.device());
  if (rows == 0) return {losses, lse};
  OpContext ctx(stats);
  shard_combine_kernel<<<grid_for(rows, kThreads, ctx.device), kThreads, 0, ctx.stream>>>(
      stats.data_as<float>(), targets.data_as<int>(), losses.data_as<float>(), lse.data_as<float>(), R, rows,
      ignore_index);
  CUDA_CHECK_LAUNCH();
  return {losses, lse};
}

void cross_entropy_shard_backward(Tensor& logits, const Tensor& targets, const Tensor& lse, int64_t vocab_start,
                                  int64_t ignore_index, float grad_scale) {
  const int64_t rows = logits.size(0), V = logits.size(1);
  if (rows == 0 || V == 0) return;
  OpContext ctx(logits);
  RL_DISPATCH_FLOAT(logits.dtype(), T, {
    shard_backward_kernel<T><<<row_grid(rows, ctx.device), kThreads, 0, ctx.stream>>>(
        logits.data_as<T>(), targets.data_as<int>(), lse.data_as<float>(), rows, V, vocab_start, ignore_index,
        grad_scale);
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace ringloom::cuda
