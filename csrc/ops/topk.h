// Top-k sparsification with error feedback (Stich, Cordonnier, Jaggi 2018, "Sparsified SGD
// with memory"; Lin et al. 2018, "Deep Gradient Compression"), the two halves that run on a
// rank's own device around the all-gather of the payloads (parallel/compression.py).
//
// topk_compress(acc, k) -> payload
//   acc: fp32 [n], this rank's gradient plus its residual. Picks exactly k indices, the k
//   largest |acc[i]| in the order (|acc[i]| descending, i ascending): ties go to the lower
//   index, so every device picks the same set. NaN counts as larger than every number
//   (+-inf included), and all NaNs as equal (so the lowest-indexed NaNs go first); -0 and
//   +0 are equal. Returns payload fp32 [2k] on acc's device: the k values in ascending
//   index order, then the k int32 indices (ascending) stored as the bits of fp32 words.
//   Sets acc[i] = 0 at the chosen indices: acc becomes the residual of what was not sent.
//   1 <= k <= n < 2^31 (indices travel as int32).
//
// topk_accumulate(out, gathered, world, k)
//   gathered: fp32 [world * 2k], the payloads of ranks 0..world-1 back to back. Sets out
//   (fp32 [n]) to zero, then for r = 0, 1, ..., world-1 in turn adds rank r's values at
//   its indices: out[idx_r[j]] += val_r[j]. The fp32 additions happen in rank order on
//   every device, so all ranks (CPU or GPU) get bit-identical sums. Each rank's indices
//   must be strictly increasing (what topk_compress sends) and inside [0, n): that makes
//   one rank's adds independent (the GPU runs them in parallel without atomics) and keeps
//   every write in bounds. A payload breaking this raises ValueError; entries that break
//   it are never written. CPU: checked before anything is written. CUDA: the kernels skip
//   such entries and count them on the device; the op reads that count back (4 bytes and
//   a wait for the stream) and raises after the sums; out is then unspecified (never
//   written out of bounds).
#pragma once
#include <cstdint>

#include "core/tensor.h"

#ifdef __CUDACC__
#define RL_TOPK_FN __host__ __device__ __forceinline__
#else
#define RL_TOPK_FN inline
#endif

namespace ringloom {

Tensor topk_compress(Tensor& acc, int64_t k);
void topk_accumulate(Tensor& out, const Tensor& gathered, int64_t world, int64_t k);

namespace cpu {
void topk_compress(Tensor& acc, int64_t k, Tensor& payload);
void topk_accumulate(Tensor& out, const Tensor& gathered, int64_t world, int64_t k);
}  // namespace cpu
namespace cuda {
void topk_compress(Tensor& acc, int64_t k, Tensor& payload);
void topk_accumulate(Tensor& out, const Tensor& gathered, int64_t world, int64_t k);
}  // namespace cuda

// The order key of a value: the bits of |x| as an unsigned integer (for non-negative
// floats the bits order like the values), with every NaN mapped to one key above +inf's.
RL_TOPK_FN uint32_t topk_magnitude_key(uint32_t bits) {
  const uint32_t mag = bits & 0x7fffffffu;
  return mag > 0x7f800000u ? 0x7f800001u : mag;
}

}  // namespace ringloom
