// CUDA modified Gram-Schmidt; the algorithm is in ops/orthonormalize.h.
//
// One block per matrix: PowerSGD's P is [rows, r] with small r, so the r (r + 1) / 2 dot
// products of one matrix are too little work to spread over blocks, and one block keeps
// every step's reduction a fixed in-block tree (deterministic, no atomics). Each thread
// owns the rows tid, tid + blockDim, ...: it sums its rows' products in float64 in that
// order, the block adds the partial sums as a tree, and the thread then updates the same
// rows, so only the reductions need barriers. Products and differences use the _rn
// intrinsics so that no multiply-add is fused (the CPU op rounds each one).
#include "ops/cuda/common.cuh"
#include "ops/orthonormalize.h"

namespace ringloom::cuda {

namespace {

constexpr int kThreads = 256;

// Sum of v over the block, in every thread; a fixed tree over shared memory.
__device__ double block_sum_f64(double v, double* s) {
  s[threadIdx.x] = v;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
    __syncthreads();
  }
  const double total = s[0];
  __syncthreads();  // s is written again by the next call
  return total;
}

__global__ void __launch_bounds__(kThreads) mgs_kernel(float* __restrict__ a, int64_t rows, int64_t r) {
  __shared__ double s[kThreads];
  for (int64_t j = 0; j < r; ++j) {
    for (int64_t i = 0; i <= j; ++i) {
      double acc = 0.0;
      for (int64_t row = threadIdx.x; row < rows; row += kThreads)
        acc = __dadd_rn(acc, __dmul_rn(double(a[row * r + i]), double(a[row * r + j])));
      const double d = block_sum_f64(acc, s);
      if (i < j) {
        for (int64_t row = threadIdx.x; row < rows; row += kThreads)
          a[row * r + j] = float(__dsub_rn(double(a[row * r + j]), __dmul_rn(d, double(a[row * r + i]))));
      } else {
        const double nrm = sqrt(d);
        if (nrm > 0.0)
          for (int64_t row = threadIdx.x; row < rows; row += kThreads)
            a[row * r + j] = float(__ddiv_rn(double(a[row * r + j]), nrm));
      }
    }
  }
}

}  // namespace

void orthonormalize_columns_(Tensor& p) {
  OpContext ctx(p);
  mgs_kernel<<<1, kThreads, 0, ctx.stream>>>(p.data_as<float>(), p.size(0), p.size(1));
  CUDA_CHECK_LAUNCH();
}

}  // namespace ringloom::cuda
