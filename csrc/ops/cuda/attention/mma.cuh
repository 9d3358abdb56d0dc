// Tensor-core building blocks for the flash kernels (sm_80+ instructions, run on sm_90):
// cp.async 16-byte copies global -> shared, ldmatrix, and mma.sync.m16n8k16 bf16 with fp32
// accumulation. Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16"), with
// g = lane / 4 and t = lane % 4:
//   A 16x16 (row major): a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]
//   B 16x8  (k x n):     b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
//   C 16x8  fp32:        c0,c1 = C[g][2t..2t+1], c2,c3 = C[g+8][2t..2t+1]
// A C fragment pair (two adjacent n8 tiles) packed to bf16 is exactly an A fragment, which is
// how P = softmax(S) goes from the first matrix product to the second without shared memory.
//
// Shared-memory tiles are [rows][D] bf16 with the 16-byte chunks of each row XOR-swizzled by
// (row % 8): the 8 rows one ldmatrix matrix reads then sit in 8 different bank groups.
#pragma once
#include <cuda_bf16.h>
#include <cstdint>

namespace ringloom::cuda::attn {

using bf16 = __nv_bfloat16;

// Element offset of (row, col) in a swizzled [rows][kCols] bf16 tile; col's 8-element chunk
// is permuted, the position inside the chunk is kept.
// Rows of fewer than 8 chunks (a [BN][32] tile) XOR with fewer row bits so the permuted
// chunk stays inside its row.
template <int kCols>
__device__ __forceinline__ int swz(int row, int col) {
  constexpr int kMask = kCols / 8 >= 8 ? 7 : kCols / 8 - 1;
  static_assert(kCols == 32 || kCols % 64 == 0, "4 chunks a row, or a multiple of 8");
  return row * kCols + ((((col >> 3) ^ (row & kMask))) << 3) + (col & 7);
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Byte offset of (row, col) in a swizzled [rows][kCols] bf16 tile.
template <int kCols>
__device__ __forceinline__ uint32_t swz_bytes(int row, int col) {
  return uint32_t(swz<kCols>(row, col)) * 2u;
}

// Walking the columns of a swizzled tile by 16 is an XOR of the address. For a lane column
// c in {0, 8} and a step c0 that is a multiple of 16 (c0 < kCols), the chunk index is
// c0/8 + c/8 = c0/8 ^ c/8, and the swizzle XORs the chunk again with row bits, so
//   offset(row, c0 + c) = offset(row, c) ^ (2*c0)   [bytes].
// With the tile starting on a multiple of 2*kCols bytes (kSmemAlign below) the same XOR
// applies to the shared address itself: one LOP3 per ldmatrix, and whole 16-row steps are
// an immediate added to it. That keeps one address register per operand instead of one
// per (row block, column step), which at D = 128 was ~80 hoisted registers and the spills.
constexpr int kSmemAlign = 256;
__device__ __forceinline__ uint32_t col_step(uint32_t lane_addr, int c0) { return lane_addr ^ uint32_t(2 * c0); }

// Rounds the dynamic shared-memory base up to kSmemAlign (launchers ask for kSmemAlign extra).
__device__ __forceinline__ unsigned char* align_smem(unsigned char* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  return p + ((kSmemAlign - (a & (kSmemAlign - 1))) & (kSmemAlign - 1));
}

// Makes x look new to the compiler each time it runs, so addresses derived from it inside a
// loop are computed there (one LOP3 each) instead of hoisted out and held in registers for
// the whole loop (the compiler's loop-invariant motion does not weigh register pressure).
__device__ __forceinline__ uint32_t opaque(uint32_t x) {
  asm volatile("" : "+r"(x));
  return x;
}

// 16-byte async copy; when !valid the destination is zero-filled (src-size 0), which is
// how rows past the sequence end become zeros that cannot leak NaN into the products.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)));
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

// c += a * b  (16x8x16, bf16 in, fp32 accumulate)
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// Copies a [kRows][kCols] tile whose row r starts at src + (row0 + r) * stride into the
// swizzled shared tile; rows at or past `limit` are zero-filled. All kThreads threads take part.
// A thread copies one column chunk of rows r, r + kRowStep, ...: kRowStep is a multiple of
// the swizzle period (8 rows), so its shared addresses differ by immediates, and its global
// address advances by a running pointer. The base goes through opaque() so the compiler
// does not precompute one pointer per chunk across the caller's loop (64-bit registers).
template <int kRows, int kCols, int kThreads>
__device__ __forceinline__ void load_tile_async(bf16* dst, const bf16* src, int64_t stride, int row0, int limit) {
  constexpr int kChunksRow = kCols / 8, kRowStep = kThreads / kChunksRow;
  static_assert(kThreads % kChunksRow == 0 && kRows % kRowStep == 0, "tile must split evenly over the threads");
  static_assert(kRowStep % 8 == 0 || kRows == kRowStep, "row steps must keep the swizzle phase");
  const int r = threadIdx.x / kChunksRow, col = (threadIdx.x % kChunksRow) * 8;
  const uint32_t s = smem_u32(dst) + swz_bytes<kCols>(r, col);
  uint64_t g = reinterpret_cast<uint64_t>(src + int64_t(row0 + r) * stride + col);
  asm volatile("" : "+l"(g));
  const uint64_t step = uint64_t(stride) * kRowStep * sizeof(bf16);
#pragma unroll
  for (int i = 0; i < kRows / kRowStep; ++i) {
    const bool valid = row0 + r + i * kRowStep < limit;
    // An invalid row still needs a mapped address for the instruction: use the tile base.
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s + i * kRowStep * kCols * 2),
                 "l"(valid ? g : reinterpret_cast<uint64_t>(src)), "r"(valid ? 16 : 0));
    g += step;
  }
}

// Writes a swizzled [kRows][kCols] shared tile to global rows row0.. (< limit), 16 bytes a thread.
template <int kRows, int kCols, int kThreads>
__device__ __forceinline__ void store_tile(bf16* dst, const bf16* src, int64_t stride, int row0, int limit) {
  constexpr int kChunks = kRows * kCols / 8;
  static_assert(kChunks % kThreads == 0, "tile must split evenly over the threads");
#pragma unroll
  for (int i = 0; i < kChunks / kThreads; ++i) {
    const int c = i * kThreads + threadIdx.x;
    const int r = c / (kCols / 8), col = (c % (kCols / 8)) * 8;
    if (row0 + r < limit)
      *reinterpret_cast<uint4*>(dst + int64_t(row0 + r) * stride + col) =
          *reinterpret_cast<const uint4*>(src + swz<kCols>(r, col));
  }
}

// 2^x as the single MUFU.EX2 instruction; exp2f without --use_fast_math adds a range
// fix-up around it for denormal results, which softmax does not need (they flush to 0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

}  // namespace ringloom::cuda::attn
