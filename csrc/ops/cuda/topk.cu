// CUDA top-k compression and accumulation; the contract is in ops/topk.h.
//
// Selection by sorting: CUB's radix sort orders (magnitude key, index) pairs by key,
// descending, and is stable, so equal magnitudes keep their ascending index order: the
// first k pairs are exactly the (|x| descending, i ascending) top k the CPU op's
// nth_element picks. A second radix sort puts those k indices in ascending order, and one
// kernel writes the payload and zeroes the sent entries. The keys are the bits of |x|
// (ops/topk.h: topk_magnitude_key), below 2^31, so the first sort looks at 31 bits (four
// 8-bit passes, against a full sort's cost of a radix select; simple and exact).
//
// Accumulation: one launch per rank, in rank order, each adding that rank's k values in
// parallel; a rank's indices are distinct (strictly increasing), so no two threads of a
// launch touch one element and no atomics are needed: each element gets its adds in rank
// order, the same fp32 sums as the CPU loop.
#include <cub/device/device_radix_sort.cuh>

#include "ops/cuda/common.cuh"
#include "ops/topk.h"

namespace ringloom::cuda {

namespace {

constexpr int kThreads = 256;

int bits_for(int64_t n) {  // bits that hold every value in [0, n)
  int b = 1;
  while ((int64_t(1) << b) < n) ++b;
  return b;
}

__global__ void magnitude_keys_kernel(const float* __restrict__ a, uint32_t* __restrict__ keys,
                                      uint32_t* __restrict__ idx, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    keys[i] = topk_magnitude_key(__float_as_uint(a[i]));
    idx[i] = uint32_t(i);
  }
}

// payload[j] = a[idx[j]], payload[k + j] = idx[j]'s bits; then a[idx[j]] = 0. Each thread
// reads and zeroes its own element only (the indices are distinct).
__global__ void emit_kernel(float* __restrict__ a, const uint32_t* __restrict__ idx, float* __restrict__ payload,
                            int64_t k) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < k; j += int64_t(gridDim.x) * blockDim.x) {
    const uint32_t i = idx[j];
    payload[j] = a[i];
    payload[k + j] = __uint_as_float(i);
    a[i] = 0.0f;
  }
}

// out[idx[j]] += val[j] for one rank's part; entries whose index is outside [0, n) or not
// above the previous one are skipped and counted in *bad.
__global__ void accumulate_kernel(float* __restrict__ out, const float* __restrict__ part, int64_t k, int64_t n,
                                  int* __restrict__ bad) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < k; j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = __float_as_int(part[k + j]);
    const int64_t prev = j > 0 ? int64_t(__float_as_int(part[k + j - 1])) : -1;
    if (i < 0 || i >= n || i <= prev) {
      atomicAdd(bad, 1);
      continue;
    }
    out[i] += part[j];
  }
}

}  // namespace

void topk_compress(Tensor& acc, int64_t k, Tensor& payload) {
  const int64_t n = acc.numel();
  OpContext ctx(acc);
  const Device dev = acc.device();
  // keys in/out, indices in/out, then the k chosen indices in ascending order.
  Tensor keys = Tensor::empty({2, n}, DType::Int32, dev);
  Tensor idx = Tensor::empty({2, n}, DType::Int32, dev);
  Tensor chosen = Tensor::empty({k}, DType::Int32, dev);
  uint32_t* keys_in = keys.data_as<uint32_t>();
  uint32_t* keys_out = keys_in + n;
  uint32_t* idx_in = idx.data_as<uint32_t>();
  uint32_t* idx_out = idx_in + n;
  magnitude_keys_kernel<<<grid_for(n, kThreads, ctx.device), kThreads, 0, ctx.stream>>>(acc.data_as<float>(),
                                                                                       keys_in, idx_in, n);
  CUDA_CHECK_LAUNCH();
  size_t sort_bytes = 0, index_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(nullptr, sort_bytes, keys_in, keys_out, idx_in, idx_out,
                                                       int(n), 0, 31, ctx.stream));
  const int index_bits = bits_for(n);
  CUDA_CHECK(cub::DeviceRadixSort::SortKeys(nullptr, index_bytes, idx_out, chosen.data_as<uint32_t>(), int(k), 0,
                                            index_bits, ctx.stream));
  size_t temp_bytes = std::max(sort_bytes, index_bytes);
  Tensor temp = Tensor::empty({int64_t(std::max<size_t>(temp_bytes, 1))}, DType::UInt8, dev);
  CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(temp.data(), temp_bytes, keys_in, keys_out, idx_in, idx_out,
                                                       int(n), 0, 31, ctx.stream));
  temp_bytes = std::max(sort_bytes, index_bytes);
  CUDA_CHECK(cub::DeviceRadixSort::SortKeys(temp.data(), temp_bytes, idx_out, chosen.data_as<uint32_t>(), int(k), 0,
                                            index_bits, ctx.stream));
  emit_kernel<<<grid_for(k, kThreads, ctx.device), kThreads, 0, ctx.stream>>>(
      acc.data_as<float>(), chosen.data_as<uint32_t>(), payload.data_as<float>(), k);
  CUDA_CHECK_LAUNCH();
}

void topk_accumulate(Tensor& out, const Tensor& gathered, int64_t world, int64_t k) {
  const int64_t n = out.numel();
  OpContext ctx(out);
  Tensor bad = Tensor::empty({1}, DType::Int32, out.device());
  CUDA_CHECK(cudaMemsetAsync(bad.data(), 0, sizeof(int), ctx.stream));
  CUDA_CHECK(cudaMemsetAsync(out.data(), 0, size_t(n) * sizeof(float), ctx.stream));
  const float* g = gathered.data_as<float>();
  for (int64_t r = 0; r < world; ++r) {  // rank order: each launch adds after the previous one
    accumulate_kernel<<<grid_for(k, kThreads, ctx.device), kThreads, 0, ctx.stream>>>(
        out.data_as<float>(), g + 2 * k * r, k, n, bad.data_as<int>());
    CUDA_CHECK_LAUNCH();
  }
  // The count of bad entries, read back through a Tensor copy (so the host-transfer
  // counter sees these 4 bytes) after the stream has run the adds.
  const int nbad = bad.to(Device::cpu()).data_as<int>()[0];
  RL_CHECK(nbad == 0, Value, "topk_accumulate: ", nbad, " of the ", world, " x ", k,
           " gathered indices are bad; indices must be strictly increasing and inside [0, ", n,
           ") within each rank's part");
}

}  // namespace ringloom::cuda
