// Flash-attention backward for Hopper (sm_90a), in the design of FlashAttention-3's backward:
// parallel over key blocks like flash_bwd.cu (FlashAttention-2, Algorithm 2), with the
// matrix products on wgmma and the tiles brought in by TMA. A block owns 128 keys of one kv
// head and walks every 64-query block of every query head in its GQA group, so dK and dV
// are summed in registers in a fixed order. Three warpgroups:
//   - producer (one thread): K and V once; then per query block Q and dO through a two-stage
//     ring (full/empty barriers).
//   - lse*log2(e) and D_i = rowsum(dO o O) of the query block (backward_prep's lse2, dvec)
//     go from global memory straight into the consumers' registers, not through a shared
//     stage: see load_stats.
//   - two consumers, 64 keys each, per query block (transposed products keep P^T and dS^T
//     in registers as A operands, as in flash_bwd.cu):
//       S^T = K Q^T, dP^T = V dO^T               (issued together, shared-memory operands)
//       P^T = exp2(S^T*scale*log2e - lse_i*log2e), dV += P^T dO   (under dP^T)
//       dS^T = P^T o (dP^T - D_i),               dK += dS^T Q
//       dS^T is also staged in shared memory for dQ = dS K, summed over key blocks into an
//       fp32 buffer with atomics and converted by flash_bwd.cu's last kernel. At D = 128 the
//       two consumers each take 64 of dQ's columns; at D = 64 (one 64-column chunk) they
//       take turns by query block.
// dK is scaled by the softmax scale once at the end (dQ in the conversion). The
// deterministic backward stays on flash_bwd.cu's separate dQ pass. bf16, D = 64 or 128.
#include <cfloat>

#include "core/cuda/check.h"
#include "ops/cuda/attention/hopper.cuh"
#include "ops/cuda/attention/hopper_tma.h"
#include "ops/cuda/attention/mma.cuh"
#include "ops/cuda/attention/params.h"

namespace ringloom::cuda::attn {

namespace {

using namespace sm90;

constexpr int kBN = 128;  // keys a block: two consumer warpgroups of 64
constexpr int kBM = 64;   // queries a step (T_pad is a multiple of it)
constexpr int kStages = 2;
constexpr int kThreads = 384;

template <int D>
struct BwdSmem {
  static constexpr int kKV = kBN * D * 2;   // one K or V tile
  static constexpr int kQt = kBM * D * 2;   // one Q or dO tile
  static constexpr int kdSt = kBN * kBM * 2;  // one dS^T tile [128 keys][64 queries]
  static constexpr int kK = 0;
  static constexpr int kV = kK + kKV;
  static constexpr int kQ = kV + kKV;
  static constexpr int kdO = kQ + kStages * kQt;
  static constexpr int kdS = kdO + kStages * kQt;
  // D = 128: dQ staged for the TMA reduce, [warpgroup][2 chunks of 32 columns][64 rows][32]
  // fp32, 128-byte swizzled rows (16-byte unit u of row r at u ^ (r % 8)).
  static constexpr int kdQ = kdS + kStages * kdSt;
  static constexpr int kdQw = kBM * 64 * 4;
  static constexpr int kBar = kdQ + (D == 128 ? 2 * kdQw : 0);
  static constexpr int kBytes = kBar + 128 + 1024;
};

// Named barriers (0 is __syncthreads): the consumers' dS^T barrier, and per consumer
// warpgroup w a "dQ staged" and a "dQ stage read" barrier between its 128 threads and the
// 32 threads of the dQ writer warp.
constexpr int kBarDs = 1, kBarDqFull = 2, kBarDqEmpty = 4, kDqBarThreads = 128 + 32;
__device__ __forceinline__ void named_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
// dq_accum[b, m0.., h, c0..c0+31] += the staged 64 x 32 fp32 box (TMA, rows past T dropped).
__device__ __forceinline__ void tma_reduce_add_4d(const CUtensorMap* map, uint32_t src, int c0, int c1, int c2,
                                                  int c3) {
  asm volatile(
      "cp.reduce.async.bulk.tensor.4d.global.shared::cta.add.tile.bulk_group [%0, {%2, %3, %4, %5}], [%1];\n" ::"l"(
          reinterpret_cast<uint64_t>(map)),
      "r"(src), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
      : "memory");
}

// The per-query statistics a consumer thread needs for one query block: its accumulator
// columns are the queries 8j + 2t + {0, 1} (j < 8), so 8 float2 loads each of lse2 and dvec
// (16 LDG.64 a step; a shared stage cost 32 LDS). They are read from global memory, where
// backward_prep, an earlier kernel on the same stream, wrote them: complete and visible
// before this kernel starts, read-only during it, so no barrier inside the kernel has to
// order them. (A shared stage filled by a bulk copy and released through the stage's
// mbarriers, FlashAttention-3's way, is ordered as well, but racecheck reports the async-proxy
// copy against the generic loads of it.) The 256 bytes a query block are shared by the
// block's 8 consumer warps; the producer prefetches them into L1 with the step's Q.
__device__ __forceinline__ void load_stats(float2 (&v)[kBM / 8], const float* row, int t) {
#pragma unroll
  for (int j = 0; j < kBM / 8; ++j) v[j] = __ldg(reinterpret_cast<const float2*>(row + 8 * j + 2 * t));
}

// One consumer warpgroup (w: its 64 keys). kW >= 0 fixes w at compile time, which D = 64
// needs: its warpgroups take turns computing dQ, and a turn that depends on a run-time w
// is a divergent branch around wgmma, which the compiler serialises.
template <int D, int kW>
__device__ __forceinline__ void bwd_consumer(const Params& p, unsigned char* smem, int w_rt, int b, int hk, int k0,
                                             int m_begin, int m_end, int n_iters) {
  using Smem = BwdSmem<D>;
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + Smem::kBar);
  uint64_t* kv_full = bars;
  uint64_t* q_full = bars + 1;
  uint64_t* q_empty = bars + 1 + kStages;
  uint64_t* do_full = bars + 1 + 2 * kStages;
  uint64_t* do_empty = bars + 1 + 3 * kStages;
  const int T = p.T;
  const int w = kW >= 0 ? kW : w_rt, tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32, t = lane % 4;
  const int krow0 = w * 64 + warp * 16 + lane / 4;  // this thread's keys in the block: krow0, krow0 + 8
  const uint32_t k_base = smem_addr(smem + Smem::kK), v_base = smem_addr(smem + Smem::kV);
  const uint32_t q_base = smem_addr(smem + Smem::kQ), do_base = smem_addr(smem + Smem::kdO);
  const uint32_t ds_base = smem_addr(smem + Smem::kdS);
  const float sl2 = p.scale_log2;

  float dk[D / 2], dv[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) dk[i] = dv[i] = 0.f;
  float s[kBM / 2], dp[kBM / 2], dq[32];
  uint32_t pa[kBM / 16][4], dsa[kBM / 16][4];

  // A (64 keys of this warpgroup) x B^T (64 queries), both K-major over D.
  auto issue_kt = [&](float (&acc)[kBM / 2], uint32_t a_base, uint32_t b_base) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const uint64_t da = gmma_desc(a_base + (kk >> 2) * kBN * 128 + w * 64 * 128 + (kk & 3) * 32, 16, 1024);
      const uint64_t db = gmma_desc(b_base + (kk >> 2) * kBM * 128 + (kk & 3) * 32, 16, 1024);
      wgmma_ss_n64<0, 0>(acc, da, db, kk > 0);
    }
  };
  // acc (64 keys x D) += A (registers, 64 keys x 64 queries) B (64 queries x D, MN-major).
  auto issue_rs = [&](float (&acc)[D / 2], const uint32_t (&a)[kBM / 16][4], uint32_t b_base) {
#pragma unroll
    for (int kk = 0; kk < kBM / 16; ++kk) {
      const uint64_t db = gmma_desc(b_base + kk * 16 * 128, kBM * 128, 1024);
      if constexpr (D == 64) wgmma_rs_n64<1>(acc, a[kk], db, 1);
      else wgmma_rs_n128<1>(acc, a[kk], db, 1);
    }
  };
  auto pack = [&](uint32_t (&a)[kBM / 16][4], const float (&x)[kBM / 2]) {
#pragma unroll
    for (int kk = 0; kk < kBM / 16; ++kk) {
      a[kk][0] = pack_bf16(x[8 * kk + 0], x[8 * kk + 1]);
      a[kk][1] = pack_bf16(x[8 * kk + 2], x[8 * kk + 3]);
      a[kk][2] = pack_bf16(x[8 * kk + 4], x[8 * kk + 5]);
      a[kk][3] = pack_bf16(x[8 * kk + 6], x[8 * kk + 7]);
    }
  };

  mbar_wait(kv_full, 0);
  for (int it = 0; it < n_iters; ++it) {
    const int h = hk * p.group + it / (m_end - m_begin), m = m_begin + it % (m_end - m_begin);
    const int st = it % kStages;
    const uint32_t ph = (it / kStages) & 1;
    const uint32_t q_st = q_base + st * Smem::kQt, do_st = do_base + st * Smem::kQt;
    const uint32_t ds_st = ds_base + st * Smem::kdSt;

    mbar_wait(&q_full[st], ph);
    wgmma_fence();
    issue_kt(s, k_base, q_st);
    wgmma_commit();
    mbar_wait(&do_full[st], ph);
    issue_kt(dp, v_base, do_st);
    wgmma_commit();
    // Loaded while S^T and dP^T run on the tensor cores.
    const int64_t row_stat = (int64_t(b) * p.Hq + h) * p.T_pad + m * kBM;
    float2 lse[kBM / 8], dvec[kBM / 8];
    load_stats(lse, p.lse2 + row_stat, t);
    load_stats(dvec, p.dvec + row_stat, t);
    wgmma_wait<1>();  // S^T is ready
    reg_fence(s);
    const bool mask = p.causal && m * kBM < k0 + kBN;
#pragma unroll
    for (int j = 0; j < kBM / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int q = 8 * j + 2 * t + (e & 1);
        float v = fast_exp2(fmaf(s[4 * j + e], sl2, -((e & 1) ? lse[j].y : lse[j].x)));
        if (mask && k0 + krow0 + 8 * (e >> 1) > m * kBM + q) v = 0.f;
        s[4 * j + e] = v;
      }
    pack(pa, s);
    wgmma_fence();
    issue_rs(dv, pa, do_st);
    wgmma_commit();
    wgmma_wait<1>();  // dP^T is ready; dV += P^T dO may still run
    reg_fence(dp);
#pragma unroll
    for (int j = 0; j < kBM / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) dp[4 * j + e] = s[4 * j + e] * (dp[4 * j + e] - ((e & 1) ? dvec[j].y : dvec[j].x));
    pack(dsa, dp);
    // Stage dS^T [keys][queries] for dQ; pairs of adjacent queries are one 4-byte store.
    unsigned char* sds = smem + Smem::kdS + st * Smem::kdSt;
#pragma unroll
    for (int j = 0; j < kBM / 8; ++j)
#pragma unroll
      for (int i = 0; i < 2; ++i)
        *reinterpret_cast<uint32_t*>(sds + tile_offset<kBN>(krow0 + 8 * i, 8 * j + 2 * t)) =
            pack_bf16(dp[4 * j + 2 * i], dp[4 * j + 2 * i + 1]);
    fence_async_shared();
    named_barrier(kBarDs, 256);  // both halves of dS^T are in shared memory

    // dQ (64 queries x 64 columns) = dS (MN-major A: [keys][queries]) K (MN-major B), issued
    // before dK += dS^T Q so that dQ's atomics run while dK is on the tensor cores.
    const bool do_dq = D == 128 || (it & 1) == kW;
    const int dq_chunk = D == 128 ? w : 0;
    if (do_dq) {
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk) {
        const uint64_t da = gmma_desc(ds_st + kk * 16 * 128, kBM * 128, 1024);
        const uint64_t db = gmma_desc(k_base + dq_chunk * kBN * 128 + kk * 16 * 128, kBN * 128, 1024);
        wgmma_ss_n64<1, 1>(dq, da, db, kk > 0);
      }
      wgmma_commit();
    }
    wgmma_fence();
    issue_rs(dk, dsa, q_st);
    wgmma_commit();
    wgmma_wait<1>();  // dV (the last reader of the dO stage) and dQ are complete
    reg_fence(dq);
    reg_fence(dv);
    reg_fence(pa);
    __syncwarp();  // every lane's reads of the stage come before the release
    if (lane == 0) mbar_arrive(&do_empty[st]);
    if constexpr (D == 128) {
      // Stage dQ for the writer warp (it adds it into dq_accum with a TMA reduce).
      named_barrier(kBarDqEmpty + w, kDqBarThreads);  // the writer has read the previous dQ
      unsigned char* sdq = smem + Smem::kdQ + w * Smem::kdQw;
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int r = warp * 16 + lane / 4 + 8 * i;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const int unit = 2 * (j & 3) + (t >> 1);
          *reinterpret_cast<float2*>(sdq + (j >> 2) * (kBM * 128) + r * 128 + ((unit ^ (r & 7)) << 4) + (t & 1) * 8) =
              make_float2(dq[4 * j + 2 * i], dq[4 * j + 2 * i + 1]);
        }
      }
      fence_async_shared();
      named_arrive(kBarDqFull + w, kDqBarThreads);
    } else if (do_dq) {
      float* dqa = p.dq_accum + (int64_t(b) * T * p.Hq + h) * D + dq_chunk * 64;
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int q = m * kBM + warp * 16 + lane / 4 + 8 * i;
        if (q < T) {
          float* row = dqa + int64_t(q) * p.Hq * D;
#pragma unroll
          for (int j = 0; j < 8; ++j)
            atomicAdd(reinterpret_cast<float2*>(row + 8 * j + 2 * t), make_float2(dq[4 * j + 2 * i], dq[4 * j + 2 * i + 1]));
        }
      }
    }
    wgmma_wait<0>();  // dK, the last reader of the Q stage
    reg_fence(dk);
    reg_fence(dsa);
    __syncwarp();
    if (lane == 0) mbar_arrive(&q_empty[st]);
  }

  // dK (scaled) and dV rows of this block, bf16, into dqkv.
  bf16* dqkv = static_cast<bf16*>(p.dqkv);
  const int64_t rs = p.qkv_row();
  bf16* gdk = dqkv + p.qkv_head(b, p.Hq + hk);
  bf16* gdv = dqkv + p.qkv_head(b, p.Hq + p.Hkv + hk);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int key = k0 + krow0 + 8 * i;
    if (key >= T) continue;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      const int64_t off = int64_t(key) * rs + 8 * j + 2 * t;
      *reinterpret_cast<uint32_t*>(gdk + off) = pack_bf16(dk[4 * j + 2 * i] * p.scale, dk[4 * j + 2 * i + 1] * p.scale);
      *reinterpret_cast<uint32_t*>(gdv + off) = pack_bf16(dv[4 * j + 2 * i], dv[4 * j + 2 * i + 1]);
    }
  }
}

template <int D>
__global__ void __launch_bounds__(kThreads, 1)
    hopper_bwd_kernel(const __grid_constant__ CUtensorMap tm_kv, const __grid_constant__ CUtensorMap tm_q,
                      const __grid_constant__ CUtensorMap tm_do, const __grid_constant__ CUtensorMap tm_dq,
                      const Params p, int swizzle) {
  using Smem = BwdSmem<D>;
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + Smem::kBar);
  uint64_t* kv_full = bars;
  uint64_t* q_full = bars + 1;
  uint64_t* q_empty = bars + 1 + kStages;
  uint64_t* do_full = bars + 1 + 2 * kStages;
  uint64_t* do_empty = bars + 1 + 3 * kStages;

  // Block order. Full attention: key blocks of one kv head next to each other (they share the
  // head's Q, dO and dq_accum in L2). Causal: the key block decides the work (kb = 0 walks
  // every query block, the last one 1-2), so the longest blocks go first ("longest processing
  // time" order, as FlashAttention-3's backward): kv heads in sections of `swizzle` (as many as
  // keep their Q, dO and dq_accum in L2), within a section key block 0 of every head, then 1...
  const int n_kb = (p.T + kBN - 1) / kBN, n_bh = p.B * p.Hkv, tile = blockIdx.x;
  int kb, bh;
  if (!p.causal) {
    kb = tile % n_kb;
    bh = tile / n_kb;
  } else {
    const int section = tile / (swizzle * n_kb), within = tile % (swizzle * n_kb);
    const int heads = min(swizzle, n_bh - section * swizzle);
    kb = within / heads;
    bh = section * swizzle + within % heads;
  }
  const int b = bh / p.Hkv, hk = bh % p.Hkv;
  const int k0 = kb * kBN;
  const int m_begin = p.causal ? k0 / kBM : 0, m_end = p.T_pad / kBM;
  const int n_iters = p.group * (m_end - m_begin);
  const int wg = threadIdx.x / 128;

  if (threadIdx.x == 0) {
    mbar_init(kv_full, 1);
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&q_full[s], 1);
      mbar_init(&do_full[s], 1);
      mbar_init(&q_empty[s], 8);  // lane 0 of each consumer warp
      mbar_init(&do_empty[s], 8);
    }
    mbar_init_fence();
  }
  __syncthreads();

  if (wg == 0) {  // producer
    setmaxnreg_dec<24>();
    if (threadIdx.x == 0) {
      mbar_expect_tx(kv_full, 2 * Smem::kKV);
#pragma unroll
      for (int c = 0; c < D / 64; ++c) {
        tma_load_4d(smem + Smem::kK + c * kBN * 128, &tm_kv, kv_full, c * 64, k0, p.Hq + hk, b);
        tma_load_4d(smem + Smem::kV + c * kBN * 128, &tm_kv, kv_full, c * 64, k0, p.Hq + p.Hkv + hk, b);
      }
      int h = hk * p.group, m = m_begin;  // stepped, not divided: this warpgroup has 24 registers
      for (int it = 0; it < n_iters; ++it, h += (m + 1 == m_end), m = m + 1 == m_end ? m_begin : m + 1) {
        const int st = it % kStages;
        const uint32_t ph = (it / kStages) & 1;
        // The consumers' lse2/dvec loads of this step (load_stats) then hit in L1.
        const int64_t row_stat = (int64_t(b) * p.Hq + h) * p.T_pad + m * kBM;
#pragma unroll
        for (int c = 0; c < kBM * 4; c += 128) {
          prefetch_l1(p.lse2 + row_stat + c / 4);
          prefetch_l1(p.dvec + row_stat + c / 4);
        }
        mbar_wait(&q_empty[st], ph ^ 1);
        mbar_expect_tx(&q_full[st], Smem::kQt);
#pragma unroll
        for (int c = 0; c < D / 64; ++c)
          tma_load_4d(smem + Smem::kQ + st * Smem::kQt + c * kBM * 128, &tm_q, &q_full[st], c * 64, m * kBM, h, b);
        mbar_wait(&do_empty[st], ph ^ 1);
        mbar_expect_tx(&do_full[st], Smem::kQt);
#pragma unroll
        for (int c = 0; c < D / 64; ++c)
          tma_load_4d(smem + Smem::kdO + st * Smem::kQt + c * kBM * 128, &tm_do, &do_full[st], c * 64, m * kBM, h, b);
      }
    } else if (D == 128 && threadIdx.x / 32 == 1) {  // dQ writer: TMA reduce-add of each staged dQ
      // Few live values: this warpgroup runs on 24 registers.
      const bool leader = threadIdx.x == 32;
      const uint32_t sdq = smem_addr(smem + Smem::kdQ);
      named_arrive(kBarDqEmpty, kDqBarThreads);
      named_arrive(kBarDqEmpty + 1, kDqBarThreads);
      const int h_end = (hk + 1) * p.group;
      for (int h = hk * p.group; h < h_end; ++h)
#pragma unroll 1
        for (int row = m_begin * kBM; row < m_end * kBM; row += kBM) {
#pragma unroll
          for (int w = 0; w < 2; ++w) {
            named_barrier(kBarDqFull + w, kDqBarThreads);
            if (leader) {
              tma_reduce_add_4d(&tm_dq, sdq + w * Smem::kdQw, w * 64, row, h, b);
              tma_reduce_add_4d(&tm_dq, sdq + w * Smem::kdQw + kBM * 128, w * 64 + 32, row, h, b);
              asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
            }
          }
          if (leader) asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");  // stages read
          __syncwarp();
          named_arrive(kBarDqEmpty, kDqBarThreads);  // (the last pair is never waited for)
          named_arrive(kBarDqEmpty + 1, kDqBarThreads);
        }
      if (leader) asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");  // reduces done
    }
    return;
  }

  setmaxnreg_inc<240>();
  if constexpr (D == 128) {
    bwd_consumer<D, -1>(p, smem, wg - 1, b, hk, k0, m_begin, m_end, n_iters);
  } else {
    if (wg == 1) bwd_consumer<D, 0>(p, smem, 0, b, hk, k0, m_begin, m_end, n_iters);
    else bwd_consumer<D, 1>(p, smem, 1, b, hk, k0, m_begin, m_end, n_iters);
  }
}

template <int D>
void launch_hopper_bwd(const Params& p, cudaStream_t s) {
  const CUtensorMap tm_kv = qkv_tensor_map(p, kBN);
  const CUtensorMap tm_q = qkv_tensor_map(p, kBM);
  const CUtensorMap tm_do = bshd_tensor_map(p.dout, p.B, p.T, p.Hq, p.D, kBM);
  // dq_accum [B, T, Hq, D] fp32 as (d, t, head, b), boxes of 32 columns (128 bytes) x 64 rows.
  CUtensorMap tm_dq;
  {
    const cuuint64_t row_bytes = cuuint64_t(p.Hq) * p.D * 4;
    cuuint64_t dims[4] = {cuuint64_t(p.D), cuuint64_t(p.T), cuuint64_t(p.Hq), cuuint64_t(p.B)};
    cuuint64_t strides[3] = {row_bytes, cuuint64_t(p.D) * 4, row_bytes * p.T};
    cuuint32_t box[4] = {32, cuuint32_t(kBM), 1, 1};
    cuuint32_t elem_strides[4] = {1, 1, 1, 1};
    const CUresult r = tensor_map_encoder()(&tm_dq, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4, p.dq_accum, dims, strides, box,
                                            elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    RL_CHECK(r == CUDA_SUCCESS, Runtime, "cuTensorMapEncodeTiled failed (", int(r), ") for dq_accum");
  }
  auto kernel = hopper_bwd_kernel<D>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, BwdSmem<D>::kBytes));
  // Heads a causal section: a power of two that keeps each head's Q, dO (bf16) and dq_accum
  // (fp32) for all query heads of its group within ~40 MB of L2.
  const int64_t head_bytes = int64_t(p.group) * p.T * p.D * (2 + 2 + 4);
  int swizzle = 1;
  while (int64_t(swizzle) * 2 * head_bytes <= (int64_t(40) << 20)) swizzle *= 2;
  const int n_blocks = (p.T + kBN - 1) / kBN * p.B * p.Hkv;
  kernel<<<n_blocks, kThreads, BwdSmem<D>::kBytes, s>>>(tm_kv, tm_q, tm_do, tm_dq, p, swizzle);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void hopper_backward(const Params& p, cudaStream_t s) {
  backward_prep(p, s);
  CUDA_CHECK(cudaMemsetAsync(p.dq_accum, 0, sizeof(float) * size_t(p.B) * p.T * p.Hq * p.D, s));
  if (p.D == 64) launch_hopper_bwd<64>(p, s);
  else launch_hopper_bwd<128>(p, s);
  dq_accum_to_bf16(p, s);
}

}  // namespace ringloom::cuda::attn
