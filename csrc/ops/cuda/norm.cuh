// Shared machinery of the LayerNorm and RMSNorm kernels (norm_kernels.cuh).
//
// A row of C elements is held in registers while it is normalised, so each pass reads x
// (and dy) from memory exactly once: forward reads x, writes y and the fp32 statistics;
// backward reads x and dy, writes dx. A row is spread over `tpr` threads (threads per
// row): 32 (one warp; a 256-thread block then holds 8 rows) or 64..1024 (one block per
// row). Each thread holds VPT vectors of VEC elements, vector j of lane l at column
// (l + j * tpr) * VEC, so a warp's loads are contiguous.
//
// Parameter gradients (dgamma, dbeta) are not accumulated with atomics: the backward grid
// is persistent (as many blocks as fit on the device at once), each block sums its rows'
// contributions in registers in a fixed order and writes one fp32 partial row per block to
// a scratch buffer; a second small kernel adds the partials, again in a fixed order, into
// dgamma/dbeta. The result is bitwise reproducible on a given device.
//
// The backward keeps x, dy and gamma in storage type (RawVec: a bf16 vector of 8 takes 4
// registers, not 8), converting where they are used; registers then go to the dgamma/dbeta
// sums and to occupancy. Rows with 16-byte vectors are staged through shared memory by
// cp.async, the next row in flight while the current one is computed (backward_kernel in
// norm_kernels.cuh says why); wider or unaligned rows issue all of a row's loads before
// using any.
// The kernels are launched as programmatic dependents (PDL) of the previous kernel, and the
// partial reduction as one of the backward kernel, hiding most of each launch gap.
// Measured variants (benchmarks/NOTES-kernels.md): loads first was 14-19% faster than
// loading vector by vector, and faster than prefetching the next row into registers (more
// registers, fewer warps) or spreading 768/4096 columns over more threads per row.
#pragma once
#include <algorithm>
#include <initializer_list>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>
#include <type_traits>

#include "ops/cuda/common.cuh"

namespace ringloom::cuda::norm {

struct RowConfig {
  int vec = 1;   // elements per vector: 16 / sizeof(T) when aligned, else 1
  int tpr = 32;  // threads per row
  int vpt = 1;   // vectors per thread, one of 1, 2, 3, 4, 8
  int rows_per_block() const { return tpr == 32 ? 8 : 1; }
  int block() const { return tpr == 32 ? 256 : tpr; }
};

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

// Picks the thread layout for rows of C elements: the fewest threads per row that keep
// VPT <= 4 (more threads per row would only add reduction steps), else VPT 8; among those,
// only blocks the kernel's register use allows (a backward kernel holding 3 row arrays
// cannot run 1024 threads). kernel_of(vpt) gives the kernel instance for a VPT.
// Rows with no such layout (wider than ~8K elements without 16-byte vectors, ~16-32K with)
// return tpr = 0 and go to the wide-row kernels, which re-read the row from L2 instead.
template <typename KernelOf>
RowConfig choose_config(int64_t C, int vec, KernelOf kernel_of) {
  const int64_t nvec = ceil_div(C, vec);
  RowConfig best;
  best.vec = vec;
  best.tpr = 0;
  for (int pass = 0; pass < 2 && best.tpr == 0; ++pass) {
    for (int tpr = 32; tpr <= 1024; tpr *= 2) {
      const int64_t need = ceil_div(nvec, tpr);
      if (need > (pass == 0 ? 4 : 8)) continue;
      RowConfig c;
      c.vec = vec;
      c.tpr = tpr;
      c.vpt = round_vpt(need);
      if (c.block() > max_block(kernel_of(c.vpt))) continue;
      best = c;
      break;
    }
  }
  return best;  // tpr == 0: too wide for the register kernels; the caller uses the wide-row kernels
}

// Register cap of the backward kernels per VPT (vectors per thread) and element size, so
// that enough warps fit on an SM (65536 registers): VPT 3 (768 bf16 columns, one warp per
// row) at 128 gives two 256-thread blocks; VPT 4 at 168 gives three 128-thread blocks
// (4096 bf16 columns, 128 threads per row), and in fp32 (4096 columns: 256 threads per
// row) at 128 two 256-thread blocks or one of 512. ptxas spills nothing at these caps (its
// -v report) except a few bytes at fp32 VPT 4 unstaged and at VPT 8, which spills uncapped
// too.
constexpr int bwd_max_regs(int vpt, int elem_bytes) {
  return vpt <= 1 ? 64 : vpt == 2 ? 96 : vpt == 3 ? 128 : vpt == 4 ? (elem_bytes == 4 ? 128 : 168) : 255;
}

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

// 16 bytes from global to shared memory without passing through registers (cp.async, L2
// only: each byte is read once). Completion is per thread: after cp_async_wait<N>() the
// issuing thread sees all but its N most recent committed groups; no other thread may
// read them without a barrier, so a thread only ever reads back what it copied itself.
__device__ __forceinline__ void cp_async16(void* smem_dst, const void* src) {
  const unsigned dst = unsigned(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }

// A staged vector, read as volatile PTX: the backward reads a row twice (before and after
// its reduction), and a plain load would let the compiler keep the first read live in
// registers instead.
template <typename T, int VEC>
__device__ __forceinline__ RawVec<T, VEC> load_raw_shared(const uint4* p) {
  static_assert(RawVec<T, VEC>::kWords, "shared-memory staging holds 16-byte vectors only");
  RawVec<T, VEC> r;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.w[0]), "=r"(r.w[1]), "=r"(r.w[2]), "=r"(r.w[3])
               : "r"(unsigned(__cvta_generic_to_shared(p))));
  return r;
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

// Programmatic dependent launch (sm_90). A kernel launched with launch_pdl may start while
// the previous kernel of the stream drains (once every block of that kernel has signalled
// launch_dependents or exited), which hides most of a launch gap; it must call
// griddep_wait() before touching global memory, which returns once that kernel has
// finished and its writes are visible. Launched without the attribute (or first on its
// stream), griddep_wait returns at once.
__device__ __forceinline__ void griddep_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void griddep_launch_dependents() { asm volatile("griddepcontrol.launch_dependents;"); }

template <typename... Params, typename... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...));
}

// dparam[k][c] (+)= sum over b of partial[b][k][c], for k < nparams, in order of b
// (accumulate = false overwrites). Also used for matmul's dbias (column sums of dy).
// The partials are read as one flat row of n = nparams * C columns per b. Block (32, 32):
// 32 columns by 32 slices of b; each thread issues its (up to) 8 loads per round before
// adding them, so ~260 partial rows (two rounds of L2 latency) cost ~1 us, not one round
// trip per 4 rows. The 32 slices are then added in shared memory by a fixed shuffle tree
// (warp w sums column w), so the result does not depend on timing.
constexpr int kReduceSlices = 32, kReduceBatch = 8;
template <typename P>
__global__ void __launch_bounds__(32 * kReduceSlices)
    reduce_partials_kernel(const float* partial, int nblocks, int64_t C, int64_t n, P* d0, P* d1, bool accumulate) {
  __shared__ float s[kReduceSlices][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t col = blockIdx.x * 32LL + tx;
  // Launched as a programmatic dependent of the kernel writing the partials: wait here
  // until that grid has finished and its partials are visible. The next kernel may then
  // start launching: this grid is small, and the next one waits for it in turn.
  griddep_wait();
  griddep_launch_dependents();
  float acc = 0.0f;
  if (col < n)
    for (int b0 = ty; b0 < nblocks; b0 += kReduceSlices * kReduceBatch) {
      float v[kReduceBatch];
#pragma unroll
      for (int i = 0; i < kReduceBatch; ++i) {
        const int b = b0 + i * kReduceSlices;
        v[i] = b < nblocks ? partial[int64_t(b) * n + col] : 0.0f;
      }
#pragma unroll
      for (int i = 0; i < kReduceBatch; ++i) acc += v[i];
    }
  s[ty][tx] = acc;
  __syncthreads();
  const float total = warp_sum(s[tx][ty]);  // warp ty: column ty, slice tx
  const int64_t out = blockIdx.x * 32LL + ty;
  if (tx == 0 && out < n) {
    P* d = out < C ? d0 + out : d1 + (out - C);
    *d = from_f32<P>(accumulate ? to_f32(*d) + total : total);
  }
}

// Adds the [nblocks, nparams, C] partials into the parameter gradients (fp32 or bf16),
// as a programmatic dependent of the kernel that wrote them (which signals
// launch_dependents once its partials are the only work left).
inline void reduce_partials(const Tensor& partial, int nblocks, int nparams, int64_t C, Tensor& d0, Tensor* d1,
                            cudaStream_t stream, bool accumulate = true) {
  const int64_t n = int64_t(nparams) * C;
  const dim3 block(32, kReduceSlices), grid(unsigned(ceil_div(n, 32)));
  RL_DISPATCH_FLOAT(d0.dtype(), P, {
    launch_pdl(reduce_partials_kernel<P>, grid, block, 0, stream, partial.data_as<float>(), nblocks, C, n,
               d0.data_as<P>(), d1 ? d1->data_as<P>() : static_cast<P*>(nullptr), accumulate);
  });
  CUDA_CHECK_LAUNCH();
}

constexpr int kWideThreads = 256;  // block size of the wide-row kernels

// Blocks of `kernel` resident per SM at this block size and dynamic shared memory, with
// the kernel's dynamic shared-memory limit raised to smem first (needed above 48 KB; the
// caller has made `device` current). Cached: the query is host time on every call else.
inline int blocks_per_sm(const void* kernel, int block, size_t smem, int device) {
  static std::mutex mu;
  static std::map<std::tuple<const void*, int, size_t, int>, int> cache;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_tuple(kernel, block, smem, device);  // the attribute is per device
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  // The limit only ever rises (another row width may launch this kernel with more).
  static std::map<std::pair<const void*, int>, size_t> limit;
  size_t& lim = limit[{kernel, device}];
  if (smem > 48 * 1024 && smem > lim) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    lim = smem;
  }
  int per_sm = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, block, smem));
  return cache[key] = std::max(per_sm, 1);
}

// Persistent grid for a backward kernel: blocks resident at once, no more than the work.
inline int persistent_grid(const void* kernel, int block, size_t smem, int64_t work_blocks, int device) {
  const int64_t cap = int64_t(blocks_per_sm(kernel, block, smem, device)) * sm_count(device);
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
