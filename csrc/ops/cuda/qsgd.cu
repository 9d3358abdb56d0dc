// CUDA QSGD encode and decode-sum: the math is in ops/qsgd.h and ops/qsgd_math.h, shared
// with the CPU op, which gives the same bytes and sums.
//
// Encode is two launches on the tensor's stream.
//   norms_kernel: one warp per bucket (QSGD's buckets hold hundreds to thousands of
//     elements), lane t adds the squares of elements t, t + 32, ... in float64, then the
//     xor-butterfly shuffle reduction (the order ops/qsgd.h documents); lane 0 writes the
//     fp32 norm.
//   codes_kernel: one thread per payload byte of codes, computing the codes that byte
//     holds (a code that straddles two bytes is computed by both, from the same counter,
//     identically), so no two threads write one byte and no atomics are needed.
// decode_sum_kernel: one thread per element, adding the ranks' decoded values in rank order.
#include "ops/cuda/common.cuh"
#include "ops/qsgd.h"
#include "ops/qsgd_math.h"

namespace ringloom::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) norms_kernel(const float* __restrict__ g, int64_t n, int64_t bucket,
                                                         int64_t nb, float* __restrict__ norms) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (kThreads / 32);
  for (int64_t b = (int64_t(blockIdx.x) * kThreads + threadIdx.x) / 32; b < nb; b += warps) {
    const int64_t start = b * bucket, d = min(bucket, n - start);
    double acc = 0.0;
    for (int64_t j = lane; j < d; j += 32) {
      const double x = double(g[start + j]);
      acc += x * x;  // exact product: a fused multiply-add rounds the same
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc = acc + __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) norms[b] = qsgd::norm_of(acc);
  }
}

__global__ void __launch_bounds__(kThreads) codes_kernel(const float* __restrict__ g, int64_t n, int64_t levels,
                                                         int64_t bucket, int64_t bits, uint64_t stream,
                                                         const float* __restrict__ norms, uint8_t* __restrict__ codes,
                                                         int64_t nbytes) {
  auto code = [&](int64_t e) {
    return qsgd::code_of(g[e], norms[e / bucket], levels, qsgd::uniform(stream, e));
  };
  for (int64_t j = int64_t(blockIdx.x) * kThreads + threadIdx.x; j < nbytes; j += int64_t(gridDim.x) * kThreads)
    codes[j] = qsgd::packed_byte(j, n, bits, code);
}

__global__ void __launch_bounds__(kThreads) decode_sum_kernel(const uint8_t* __restrict__ in, int64_t world,
                                                              int64_t size, int64_t n, int64_t levels,
                                                              int64_t bucket, int64_t bits, int64_t nb,
                                                              float* __restrict__ out) {
  const int64_t nbytes = size - 4 * nb;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += int64_t(gridDim.x) * kThreads) {
    float acc = 0.0f;
    for (int64_t r = 0; r < world; ++r) {
      const uint8_t* p = in + r * size;
      const float norm = qsgd::load_norm(p + 4 * (i / bucket));
      acc += qsgd::decode(qsgd::unpack_code(p + 4 * nb, nbytes, i, bits), norm, levels);
    }
    out[i] = qsgd::canonical(acc);
  }
}

}  // namespace

void qsgd_encode(const float* g, int64_t n, int64_t levels, int64_t bucket, int64_t bits, uint64_t stream,
                 const Tensor& payload) {
  OpContext ctx(payload);
  const int64_t nb = ceil_div(n, bucket);
  float* norms = reinterpret_cast<float*>(payload.data());  // a fresh allocation: 4-byte aligned
  norms_kernel<<<grid_for(nb * 32, kThreads, ctx.device), kThreads, 0, ctx.stream>>>(g, n, bucket, nb, norms);
  CUDA_CHECK_LAUNCH();
  const int64_t nbytes = payload.numel() - 4 * nb;
  codes_kernel<<<grid_for(nbytes, kThreads, ctx.device), kThreads, 0, ctx.stream>>>(
      g, n, levels, bucket, bits, stream, norms, payload.data_as<uint8_t>() + 4 * nb, nbytes);
  CUDA_CHECK_LAUNCH();
}

void qsgd_decode_sum(const Tensor& out, const Tensor& gathered, int64_t world, int64_t n, int64_t levels,
                     int64_t bucket, int64_t bits) {
  OpContext ctx(out);
  decode_sum_kernel<<<grid_for(n, kThreads, ctx.device), kThreads, 0, ctx.stream>>>(
      gathered.data_as<uint8_t>(), world, gathered.numel() / world, n, levels, bucket, bits, ceil_div(n, bucket),
      out.data_as<float>());
  CUDA_CHECK_LAUNCH();
}

}  // namespace ringloom::cuda
