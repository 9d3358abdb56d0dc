// Host side of the Hopper attention kernels: the TMA tensor map over the packed qkv
// [B, T, Hq + 2*Hkv, D] bf16 tensor, seen as 4-d (d, t, head, b) with d innermost, and tiles
// (boxes) of 64 columns x `rows` tokens of one head, 128-byte swizzled. Tokens past T read
// as zeros. cuTensorMapEncodeTiled is a driver call, reached through the runtime's
// entry-point lookup so the extension needs no link against libcuda.
#pragma once
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include "core/cuda/check.h"
#include "ops/cuda/attention/params.h"

namespace ringloom::cuda::attn {

inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
#if CUDART_VERSION >= 12050
    CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q));
#else
    CUDA_CHECK(cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &f, cudaEnableDefault, &q));
#endif
    RL_CHECK(q == cudaDriverEntryPointSuccess && f != nullptr, Runtime,
             "cuTensorMapEncodeTiled is not available from the CUDA driver");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// A map over a [B, T, heads, D] bf16 tensor (qkv, out or dout) with boxes of 64 x rows.
inline CUtensorMap bshd_tensor_map(const void* base, int B, int T, int heads, int D, int rows) {
  CUtensorMap map;
  const cuuint64_t row_bytes = cuuint64_t(heads) * D * 2;
  cuuint64_t dims[4] = {cuuint64_t(D), cuuint64_t(T), cuuint64_t(heads), cuuint64_t(B)};
  cuuint64_t strides[3] = {row_bytes, cuuint64_t(D) * 2, row_bytes * T};
  cuuint32_t box[4] = {64, cuuint32_t(rows), 1, 1};
  cuuint32_t elem_strides[4] = {1, 1, 1, 1};
  const CUresult r = tensor_map_encoder()(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, const_cast<void*>(base), dims,
                                          strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                          CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                          CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  RL_CHECK(r == CUDA_SUCCESS, Runtime, "cuTensorMapEncodeTiled failed (", int(r), ") for a [", B, ", ", T, ", ",
           heads, ", ", D, "] tensor");
  return map;
}

inline CUtensorMap qkv_tensor_map(const Params& p, int rows) {
  return bshd_tensor_map(p.qkv, p.B, p.T, p.Hq + 2 * p.Hkv, p.D, rows);
}

}  // namespace ringloom::cuda::attn
