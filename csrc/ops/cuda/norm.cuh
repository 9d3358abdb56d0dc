// Shared machinery of the LayerNorm and RMSNorm kernels (norm_kernels.cuh).
//
// A row of C elements is held in registers while it is normalised, so each pass reads x
// (and dy) from memory exactly once: forward reads x, writes y and the fp32 statistics;
// backward reads x and dy, writes dx. A row is spread over `tpr` threads (threads per
// row): 32 (one warp; a block then holds several rows, LayoutRule) or 64..1024 (one block
// per row). Each thread holds VPT vectors of VEC elements, vector j of lane l at column
// (l + j * tpr) * VEC, so a warp's loads are contiguous.
//
// Parameter gradients (dgamma, dbeta) are not accumulated with atomics: the backward grid
// is persistent (as many blocks as fit on the device at once), each thread sums its rows'
// contributions in a fixed order in shared memory (SmemSums, norm_kernels.cuh), each block
// adds its row groups' sums and writes one fp32 partial row to a scratch buffer; a second
// small kernel adds the partials, again in a fixed order, into dgamma/dbeta. The result is
// bitwise reproducible on a given device.
//
// The backward issues all loads of a row (x, dy, gamma) before using any, keeps them in
// storage type (RawVec: a bf16 vector of 8 takes 4 registers, not 8) until each element is
// widened, once, into the two fp32 values dx needs; registers then go to the row and to
// occupancy. The partial reduction is launched as a programmatic dependent (PDL) of the
// backward kernel. Measured variants: benchmarks/NOTES-kernels.md and dev/norms/ (which
// keeps the previous register-sum kernel beside the shipped one).
#pragma once
#include <initializer_list>
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>

#include "ops/cuda/common.cuh"

namespace ringloom::cuda::norm {

struct RowConfig {
  int vec = 1;   // elements per vector: 16 / sizeof(T) when aligned, else 1
  int tpr = 32;  // threads per row
  int vpt = 1;   // vectors per thread, one of 1, 2, 3, 4, 8
  int rows = 8;  // rows per block: several only with one warp per row
  int block() const { return tpr * rows; }
};

// A kernel family's layout preferences: rows per block when one warp holds a row, and
// the most vectors per thread before a wider row is spread over more threads. The
// backward keeps fewer vectors per thread than the forward: it holds two fp32 values per
// element across the row reduction, and more threads per row buy it more warps per SM
// (measured at 4096 bf16 columns: 256 threads x 2 vectors beat 128 x 4 by 10-12%).
struct LayoutRule {
  int warp_rows;
  int max_vpt;
};
constexpr LayoutRule kForwardLayout{8, 4};
constexpr LayoutRule kBackwardLayout{8, 2};

inline int round_vpt(int64_t v) { return v <= 4 ? int(v) : 8; }

// The largest block a kernel can be launched with, given its registers (cached).
inline int max_block(const void* kernel) {
  static std::mutex mu;
  static std::map<const void*, int> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(kernel);
  if (it != cache.end()) return it->second;
  cudaFuncAttributes a;
  CUDA_CHECK(cudaFuncGetAttributes(&a, kernel));
  return cache[kernel] = a.maxThreadsPerBlock;
}

// Picks the thread layout for rows of C elements: one warp per row while that keeps VPT
// <= 4, else the fewest threads per row that keep VPT <= rule.max_vpt (more threads per row
// would only add reduction steps), else VPT 8; among those, only blocks the kernel's
// register use allows (a backward kernel holding 3 row arrays cannot run 1024 threads).
// kernel_of(vpt) gives the kernel instance for a VPT. Rows with no such layout (wider
// than ~8K elements without 16-byte vectors, ~16-32K with) return tpr = 0 and go to the
// wide-row kernels, which re-read the row from L2 instead.
template <typename KernelOf>
RowConfig choose_config(int64_t C, int vec, KernelOf kernel_of, LayoutRule rule) {
  const int64_t nvec = ceil_div(C, vec);
  RowConfig best;
  best.vec = vec;
  best.tpr = 0;
  for (int pass = 0; pass < 2 && best.tpr == 0; ++pass) {
    for (int tpr = 32; tpr <= 1024; tpr *= 2) {
      const int64_t need = ceil_div(nvec, tpr);
      if (need > (pass == 1 ? 8 : tpr == 32 ? 4 : rule.max_vpt)) continue;
      RowConfig c;
      c.vec = vec;
      c.tpr = tpr;
      c.vpt = round_vpt(need);
      const int limit = max_block(kernel_of(c.vpt));
      c.rows = tpr == 32 ? std::min(rule.warp_rows, limit / 32) : 1;
      if (c.rows < 1 || c.block() > limit) continue;
      best = c;
      break;
    }
  }
  return best;  // tpr == 0: too wide for the register kernels; the caller uses the wide-row kernels
}

// Whether `kernel` can run a block of `block` threads with `smem` bytes of dynamic shared
// memory (cached). Past the default limit (48 KB less the kernel's static shared memory),
// a kernel's limit is raised once to all the device allows, so no later, smaller setting
// can shrink it below an earlier answer.
template <typename Kernel>
bool fits_dynamic_smem(Kernel kernel, int block, size_t smem, int device) {
  static std::mutex mu;
  static std::map<std::tuple<const void*, int, size_t, int>, bool> cache;
  const void* fn = reinterpret_cast<const void*>(kernel);
  const auto key = std::make_tuple(fn, block, smem, device);
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  int optin = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  cudaFuncAttributes a;
  CUDA_CHECK(cudaFuncGetAttributes(&a, fn));
  const size_t room = size_t(optin) > a.sharedSizeBytes ? size_t(optin) - a.sharedSizeBytes : 0;
  bool ok = smem <= room;
  if (ok && smem > size_t(a.maxDynamicSharedSizeBytes))
    CUDA_CHECK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, int(room)));
  if (ok) {
    int per_sm = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, block, smem));
    ok = per_sm > 0;
  }
  return cache[key] = ok;
}

// Register cap of the backward kernels per VPT (vectors per thread), so that enough warps
// fit on an SM (65536 registers): VPT 2 (4096 bf16 columns, 256 threads per row) at 80
// runs three 256-thread blocks, VPT 3 and 4 (one warp per row, 8 rows per block) at 128
// two. ptxas spills nothing at these caps (its -v report, sm_90), except 4 bytes in the
// LayerNorm kernel that also writes the forward output at VPT 4; VPT 8 spills uncapped too.
constexpr int bwd_max_regs(int vpt) { return vpt <= 1 ? 64 : vpt == 2 ? 80 : vpt <= 4 ? 128 : 255; }

// 16-byte vectors when C is a multiple of the pack width and every row starts aligned.
template <typename T>
int vec_width(int64_t C, std::initializer_list<const void*> ptrs) {
  if (C % Pack<T>::kN != 0) return 1;
  for (const void* p : ptrs)
    if (!aligned16(p)) return 1;
  return Pack<T>::kN;
}

// VEC elements in storage type, as 32-bit words when they fill 16 bytes (one access),
// else one scalar (the unaligned fallback, VEC == 1).
template <typename T, int VEC>
struct RawVec {
  static_assert(VEC == 1 || VEC * sizeof(T) == 16, "VEC must be 1 or the pack width");
  static constexpr bool kWords = VEC * sizeof(T) == 16;
  uint32_t w[kWords ? 4 : 1];
  T s;  // VEC == 1 only
};

template <typename T, int VEC>
__device__ __forceinline__ RawVec<T, VEC> load_raw(const T* p) {
  RawVec<T, VEC> r;
  if constexpr (RawVec<T, VEC>::kWords) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    r.w[0] = u.x, r.w[1] = u.y, r.w[2] = u.z, r.w[3] = u.w;
  } else {
    r.s = *p;
  }
  return r;
}

// The same load as volatile PTX, so that the compiler re-reads (from L1) instead of
// keeping the vector live across a loop: used for gamma, which is the same for every row.
template <typename T, int VEC>
__device__ __forceinline__ RawVec<T, VEC> load_raw_volatile(const T* p) {
  if constexpr (RawVec<T, VEC>::kWords) {
    RawVec<T, VEC> r;
    asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r.w[0]), "=r"(r.w[1]), "=r"(r.w[2]), "=r"(r.w[3])
                 : "l"(p));
    return r;
  } else {
    return load_raw<T, VEC>(p);
  }
}

template <typename T, int VEC>
__device__ __forceinline__ void zero_raw(RawVec<T, VEC>& r) {
  if constexpr (RawVec<T, VEC>::kWords) {
    r.w[0] = r.w[1] = r.w[2] = r.w[3] = 0u;
  } else {
    r.s = from_f32<T>(0.0f);
  }
}

// Element k of a RawVec as fp32, converted where it is used. A bf16 is the top half of an
// fp32, so widening is one shift or mask; it is written as volatile inline PTX because,
// left to itself, the compiler widens every vector right after its load, which doubles the
// registers a row takes and, with the next row prefetched, spills.
template <typename T, int VEC>
__device__ __forceinline__ float raw_f32(const RawVec<T, VEC>& r, int k) {
  if constexpr (!RawVec<T, VEC>::kWords) {
    return to_f32(r.s);
  } else if constexpr (std::is_same_v<T, float>) {
    return __uint_as_float(r.w[k]);
  } else {
    uint32_t f;
    if (k & 1)
      asm volatile("and.b32 %0, %1, 0xffff0000;" : "=r"(f) : "r"(r.w[k >> 1]));
    else
      asm volatile("shl.b32 %0, %1, 16;" : "=r"(f) : "r"(r.w[k >> 1]));
    return __uint_as_float(f);
  }
}

// The VPT vectors of one row that thread l of tpr holds (vector j at column
// (l + j * tpr) * VEC); columns past C read as zero. All loads are issued before any
// use, so a thread has its whole share of the row in flight at once.
template <typename T, int VEC, int VPT>
__device__ __forceinline__ void load_row(const T* __restrict__ p, int l, int tpr, int C,
                                         RawVec<T, VEC> (&out)[VPT]) {
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    const int col = (l + j * tpr) * VEC;
    if (col < C)
      out[j] = load_raw<T, VEC>(p + col);
    else
      zero_raw(out[j]);
  }
}

template <typename T, int VEC, int VPT>
__device__ __forceinline__ void load_row_volatile(const T* __restrict__ p, int l, int tpr, int C,
                                                  RawVec<T, VEC> (&out)[VPT]) {
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    const int col = (l + j * tpr) * VEC;
    if (col < C)
      out[j] = load_raw_volatile<T, VEC>(p + col);
    else
      zero_raw(out[j]);
  }
}

// Sum over the tpr threads of one row; every thread of the row gets the result.
// tpr == 32: shuffles inside the warp. tpr > 32: the block is the row.
__device__ __forceinline__ float row_sum(float v, int tpr, float* scratch) {
  if (tpr == 32) return warp_sum(v);
  return block_sum(v, scratch);
}

// Two sums over the row at once (one barrier pair instead of two when tpr > 32).
__device__ __forceinline__ float2 row_sum2(float2 v, int tpr, float2* scratch) {
  v.x = warp_sum(v.x);
  v.y = warp_sum(v.y);
  if (tpr == 32) return v;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : make_float2(0.0f, 0.0f);
  v.x = warp_sum(v.x);
  v.y = warp_sum(v.y);
  return v;
}

// dparam[k][c] (+)= sum over b of partial[b][k][c], for k < nparams, in order of b
// (accumulate = false overwrites). Also used for matmul's dbias (column sums of dy).
// Block (32, kSlices): 32 columns, kSlices slices of the partial rows, combined in shared
// memory. The sum waits on its inputs' L2 round trips, not on bandwidth: many slices and
// eight loads in flight per thread keep each thread's chain short.
constexpr int kSlices = 32;
template <typename P>
__global__ void reduce_partials_kernel(const float* partial, int nblocks, int nparams, int64_t C, P* d0, P* d1,
                                       bool accumulate) {
  __shared__ float s[kSlices][33];
  const int tx = threadIdx.x, ty = threadIdx.y, k = blockIdx.y;
  const int64_t c = blockIdx.x * 32LL + tx;
  // Launched as a programmatic dependent of the backward kernel (launch_reduce_partials):
  // wait here until that grid has finished and its partials are visible.
  asm volatile("griddepcontrol.wait;" ::: "memory");
  float acc = 0.0f;
  if (c < C)
#pragma unroll 8
    for (int b = ty; b < nblocks; b += kSlices) acc += partial[(int64_t(b) * nparams + k) * C + c];
  s[ty][tx] = acc;
  __syncthreads();
  if (ty == 0 && c < C) {
    float total = 0.0f;
#pragma unroll
    for (int i = 0; i < kSlices; ++i) total += s[i][tx];
    P* d = k == 0 ? d0 : d1;
    d[c] = from_f32<P>(accumulate ? to_f32(d[c]) + total : total);
  }
}

// Adds the [nblocks, nparams, C] fp32 partials into d0 (and d1), of type P.
template <typename P>
void launch_reduce_partials(const float* partial, int nblocks, int nparams, int64_t C, P* d0, P* d1,
                            cudaStream_t stream, bool accumulate) {
  dim3 block(32, kSlices), grid(unsigned(ceil_div(C, 32)), unsigned(nparams));
  // Programmatic dependent launch (sm_90): the reduce grid is set up while the backward
  // grid drains (that kernel signals griddepcontrol.launch_dependents after its row loop),
  // instead of after it, hiding most of a launch gap; the kernel waits on
  // griddepcontrol.wait before reading the partials.
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, reduce_partials_kernel<P>, partial, nblocks, nparams, C, d0, d1, accumulate));
}

// The same for tensors: d0 and d1 (may be null) fp32 or bf16.
inline void reduce_partials(const Tensor& partial, int nblocks, int nparams, int64_t C, Tensor& d0, Tensor* d1,
                            cudaStream_t stream, bool accumulate = true) {
  RL_DISPATCH_FLOAT(d0.dtype(), P, {
    launch_reduce_partials<P>(partial.data_as<float>(), nblocks, nparams, C, d0.data_as<P>(),
                              d1 ? d1->data_as<P>() : static_cast<P*>(nullptr), stream, accumulate);
  });
  CUDA_CHECK_LAUNCH();
}

constexpr int kWideThreads = 256;  // block size of the wide-row kernels

// Persistent grid for a backward kernel: blocks resident at once, no more than the work.
template <typename Kernel>
int persistent_grid(Kernel kernel, int block, size_t smem, int64_t work_blocks, int device) {
  int per_sm = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, block, smem));
  const int64_t cap = int64_t(std::max(per_sm, 1)) * sm_count(device);
  return int(std::max<int64_t>(1, std::min(cap, work_blocks)));
}

}  // namespace ringloom::cuda::norm

// RL_NORM_DISPATCH_VPT(vpt, V, ...): the body with constexpr int V = vpt (1, 2, 3, 4, 8).
#define RL_NORM_DISPATCH_VPT(vpt, V, ...)        \
  do {                                           \
    switch (vpt) {                               \
      case 1: { constexpr int V = 1; __VA_ARGS__; break; } \
      case 2: { constexpr int V = 2; __VA_ARGS__; break; } \
      case 3: { constexpr int V = 3; __VA_ARGS__; break; } \
      case 4: { constexpr int V = 4; __VA_ARGS__; break; } \
      default: { constexpr int V = 8; __VA_ARGS__; break; } \
    }                                            \
  } while (0)
