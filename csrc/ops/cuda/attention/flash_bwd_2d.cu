// Flash-attention backward at D = 128 with FlashAttention-2's two-dimensional warp layout
// (Dao 2023, Algorithm 2; the partitioning of its sm80 backward kernel for head dim 128).
//
// A block owns BN = 128 keys of one kv head and walks BM = 64 query rows at a time over every
// query head of the GQA group (dK, dV summed in registers in a fixed order). Per query block
// the eight warps split each product in two dimensions, so that no warp holds more than
// 32 x 32 of S and dP next to its 128 dK/dV accumulators:
//   1. S = Q K^T, dP = dO V^T     [64 x 128]: warp (wm, wn) owns queries wm*32.., keys wn*32..
//      P = exp2(S*scale*log2e - lse*log2e), dS = P o (dP - D_i); P and dS go to shared
//      memory in bf16 ([query][key] tiles).
//   2. dV += P^T dO, dK += dS^T Q [128 x 128]: warp (wk, wd) owns keys wk*32.., dims wd*64..
//   3. dQ = dS K                  [64 x 128]: warp (wq, wc) owns queries wq*32.., dims wc*32..,
//      added into the fp32 dq_accum with atomics (converted by dq_convert_kernel).
// Shared-memory reads per MMA are ~0.45 ldmatrix.x4 against ~0.6 for the key-major layout
// (each warp 16 keys x all queries) of flash_bwd.cu, whose S^T/dP^T products reload
// Q and dO fragments for every 16 keys; that traffic was what bound the backward (ncu: L1
// 69% busy, short-scoreboard stalls). The cost: P and dS make a round trip through shared
// memory, and two barriers a query block. Measured on an H100 (NOTES-attention.md, run 5):
// 1.10-1.13x the key-major kernel's fwd+bwd at D = 128, on par with FlashAttention-2.
#include "core/cuda/check.h"
#include "ops/cuda/attention/mma.cuh"
#include "ops/cuda/attention/params.h"

namespace ringloom::cuda::attn {

namespace {

constexpr int kD = 128, kBN = 128, kBM = 64, kWarps = 8, kThreads = kWarps * 32;
constexpr int kRowBytes = kD * int(sizeof(bf16));  // one row of every [rows][128] tile
constexpr uint32_t kRow16 = 16 * kRowBytes;        // 16 rows: an immediate address step
// bf16 tiles: K, V [128][128]; Q, dO [2][64][128] (double-buffered); P, dS [64][128].
constexpr int kSmemBf16 = 2 * kBN * kD + 4 * kBM * kD + 2 * kBM * kBN;
constexpr int kSmem = kSmemBf16 * int(sizeof(bf16)) + 4 * kBM * int(sizeof(float)) + kSmemAlign;
static_assert(kBN == kD, "P and dS tiles share the [rows][128] swizzle with the others");

__global__ void __launch_bounds__(kThreads) flash_bwd_2d_kernel(const Params p) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sK = reinterpret_cast<bf16*>(align_smem(smem_raw));
  bf16* sV = sK + kBN * kD;
  bf16* sQ = sV + kBN * kD;        // [2][BM][D]
  bf16* sdO = sQ + 2 * kBM * kD;   // [2][BM][D]
  bf16* sP = sdO + 2 * kBM * kD;   // [BM][BN]
  bf16* sdS = sP + kBM * kBN;      // [BM][BN]
  float* sLse = reinterpret_cast<float*>(sdS + kBM * kBN);  // [2][BM], log2 units
  float* sDv = sLse + 2 * kBM;                               // [2][BM]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int p1r = lane & 15, p1c = (lane >> 4) * 8;
  const int p2r = (lane & 7) + ((lane >> 4) << 3), p2c = ((lane >> 3) & 1) * 8;
  // Warp roles in the three products (see the file comment).
  const int wm = warp & 1, wn = warp >> 1;  // 1: 2 x 4 over queries x keys
  const int wk = warp >> 1, wd = warp & 1;  // 2: 4 x 2 over keys x dims
  const int wq = warp & 1, wc = warp >> 1;  // 3: 2 x 4 over queries x dims

  const int b = blockIdx.y / p.Hkv, hk = blockIdx.y % p.Hkv;
  const int T = p.T, k0 = blockIdx.x * kBN;
  const int64_t rs = p.qkv_row(), ors = p.out_row();
  const bf16* qkv = static_cast<const bf16*>(p.qkv);
  const bf16* dout = static_cast<const bf16*>(p.dout);

  load_tile_async<kBN, kD, kThreads>(sK, qkv + p.qkv_head(b, p.Hq + hk), rs, k0, T);
  load_tile_async<kBN, kD, kThreads>(sV, qkv + p.qkv_head(b, p.Hq + p.Hkv + hk), rs, k0, T);

  const int m_first = p.causal ? k0 / kBM : 0;  // causal: queries before k0 see none of these keys
  const int m_count = (T + kBM - 1) / kBM - m_first;
  const int total = p.group * m_count;

  auto prefetch = [&](int it, int buf) {
    const int h = hk * p.group + it / m_count, q0 = (m_first + it % m_count) * kBM;
    load_tile_async<kBM, kD, kThreads>(sQ + buf * kBM * kD, qkv + p.qkv_head(b, h), rs, q0, T);
    load_tile_async<kBM, kD, kThreads>(sdO + buf * kBM * kD, dout + p.out_head(b, h), ors, q0, T);
    // lse2 and dvec rows are padded to T_pad (rows past T: +inf and 0, so their P is 0).
    const int64_t stat = (int64_t(b) * p.Hq + h) * p.T_pad + q0;
    if (threadIdx.x < kBM / 4) cp_async16(sLse + buf * kBM + threadIdx.x * 4, p.lse2 + stat + threadIdx.x * 4, true);
    else if (threadIdx.x < kBM / 2) {
      const int c = threadIdx.x - kBM / 4;
      cp_async16(sDv + buf * kBM + c * 4, p.dvec + stat + c * 4, true);
    }
  };
  prefetch(0, 0);
  cp_async_commit();

  // Lane addresses at column step 0 (col_step walks 16 columns, 16-row steps are immediates).
  const uint32_t uK = smem_u32(sK), uV = smem_u32(sV), uQ = smem_u32(sQ), udO = smem_u32(sdO);
  const uint32_t uP = smem_u32(sP), udS = smem_u32(sdS);
  uint32_t a1_q = swz_bytes<kD>(wm * 32 + p1r, p1c);        // 1: Q, dO as A
  uint32_t a1_k = swz_bytes<kD>(wn * 32 + p2r, p2c);        // 1: K, V as B ([n][k] rows)
  uint32_t a2_p = swz_bytes<kBN>(p2r, wk * 32 + p2c);       // 2: P^T, dS^T as A (transposed read)
  uint32_t a2_o = swz_bytes<kD>(p1r, wd * 64 + p1c);        // 2: dO, Q as B ([k][n] rows, .trans)
  uint32_t a3_s = swz_bytes<kBN>(wq * 32 + p1r, p1c);       // 3: dS as A
  uint32_t a3_k = swz_bytes<kD>(p1r, wc * 32 + p1c);        // 3: K as B ([k][n] rows, .trans)

  float dk[2][8][4], dv[2][8][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) dk[mt][n][e] = dv[mt][n][e] = 0.f;
  const float sl2 = p.scale_log2;

  for (int it = 0; it < total; ++it) {
    const int buf = it & 1;
    cp_async_wait<0>();
    __syncthreads();  // tile `it` is in; every warp is done with iteration it-1 (other buffer, P, dS)
    if (it + 1 < total) prefetch(it + 1, buf ^ 1);
    cp_async_commit();
    const int q0 = (m_first + it % m_count) * kBM;
    const uint32_t cQ = uQ + buf * kBM * kRowBytes, cdO = udO + buf * kBM * kRowBytes;
    const float* cL = sLse + buf * kBM;
    const float* cD = sDv + buf * kBM;
    a1_q = opaque(a1_q);
    a1_k = opaque(a1_k);
    a2_p = opaque(a2_p);
    a2_o = opaque(a2_o);
    a3_s = opaque(a3_s);
    a3_k = opaque(a3_k);

    // 1. S and dP for this warp's 32 queries x 32 keys.
    float s[2][4][4], dp[2][4][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int n = 0; n < 4; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mt][n][e] = dp[mt][n][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      uint32_t qa[2][4], oa[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        ldsm_x4(qa[mt], cQ + col_step(a1_q, kk * 16) + mt * kRow16);
        ldsm_x4(oa[mt], cdO + col_step(a1_q, kk * 16) + mt * kRow16);
      }
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        uint32_t kb[4], vb[4];
        ldsm_x4(kb, uK + col_step(a1_k, kk * 16) + j * kRow16);
        ldsm_x4(vb, uV + col_step(a1_k, kk * 16) + j * kRow16);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          mma_bf16(s[mt][2 * j], qa[mt], kb[0], kb[1]);
          mma_bf16(s[mt][2 * j + 1], qa[mt], kb[2], kb[3]);
          mma_bf16(dp[mt][2 * j], oa[mt], vb[0], vb[1]);
          mma_bf16(dp[mt][2 * j + 1], oa[mt], vb[2], vb[3]);
        }
      }
    }
    // P (masked: keys past the end; causal: keys after the query) and dS, to shared memory.
    const bool need_mask = k0 + kBN > T || (p.causal && k0 + kBN - 1 > q0);
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int ql = wm * 32 + mt * 16 + g + r * 8;  // query row inside the block
        const float l2 = cL[ql], dvq = cD[ql];
#pragma unroll
        for (int n = 0; n < 4; ++n) {
          const int kl = wn * 32 + n * 8 + 2 * t;  // key column inside the block
          float pv[2], ds[2];
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            pv[e] = fast_exp2(fmaf(s[mt][n][2 * r + e], sl2, -l2));
            if (need_mask) {
              const int key = k0 + kl + e;
              if (key >= T || (p.causal && key > q0 + ql)) pv[e] = 0.f;
            }
            ds[e] = pv[e] * (dp[mt][n][2 * r + e] - dvq);
          }
          *reinterpret_cast<uint32_t*>(sP + swz<kBN>(ql, kl)) = pack_bf16(pv[0], pv[1]);
          *reinterpret_cast<uint32_t*>(sdS + swz<kBN>(ql, kl)) = pack_bf16(ds[0], ds[1]);
        }
      }
    __syncthreads();  // all of P and dS are in shared memory

    // 2. dV += P^T dO and dK += dS^T Q for this warp's 32 keys x 64 dims.
#pragma unroll
    for (int kk = 0; kk < kBM / 16; ++kk) {
      uint32_t pa[2][4], sa[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        ldsm_x4_t(pa[mt], uP + col_step(a2_p, mt * 16) + kk * kRow16);
        ldsm_x4_t(sa[mt], udS + col_step(a2_p, mt * 16) + kk * kRow16);
      }
#pragma unroll
      for (int dj = 0; dj < 4; ++dj) {
        uint32_t ob[4], qb[4];
        ldsm_x4_t(ob, cdO + col_step(a2_o, dj * 16) + kk * kRow16);
        ldsm_x4_t(qb, cQ + col_step(a2_o, dj * 16) + kk * kRow16);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          mma_bf16(dv[mt][2 * dj], pa[mt], ob[0], ob[1]);
          mma_bf16(dv[mt][2 * dj + 1], pa[mt], ob[2], ob[3]);
          mma_bf16(dk[mt][2 * dj], sa[mt], qb[0], qb[1]);
          mma_bf16(dk[mt][2 * dj + 1], sa[mt], qb[2], qb[3]);
        }
      }
    }

    // 3. dQ (this warp's 32 queries x 32 dims) += dS K, into dq_accum.
    {
      float dq[2][4][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int n = 0; n < 4; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) dq[mt][n][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk) {
        uint32_t sa[2][4];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) ldsm_x4(sa[mt], udS + col_step(a3_s, kk * 16) + mt * kRow16);
#pragma unroll
        for (int dj = 0; dj < 2; ++dj) {
          uint32_t kb[4];
          ldsm_x4_t(kb, uK + col_step(a3_k, dj * 16) + kk * kRow16);
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) {
            mma_bf16(dq[mt][2 * dj], sa[mt], kb[0], kb[1]);
            mma_bf16(dq[mt][2 * dj + 1], sa[mt], kb[2], kb[3]);
          }
        }
      }
      const int h = hk * p.group + it / m_count;
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int q = q0 + wq * 32 + mt * 16 + g + r * 8;
          if (q < T) {
            float* dst = p.dq_accum + ((int64_t(b) * T + q) * p.Hq + h) * kD + wc * 32 + 2 * t;
#pragma unroll
            for (int n = 0; n < 4; ++n)
              atomicAdd(reinterpret_cast<float2*>(dst + n * 8), make_float2(dq[mt][n][2 * r], dq[mt][n][2 * r + 1]));
          }
        }
    }
  }

  // Epilogue: dK (times the softmax scale) and dV through shared memory to coalesced stores.
  cp_async_wait<0>();
  __syncthreads();  // every warp is done reading sK (step 3)
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = wk * 32 + mt * 16 + g + r * 8, col = wd * 64 + n * 8 + 2 * t;
        *reinterpret_cast<uint32_t*>(sK + swz<kD>(row, col)) =
            pack_bf16(dk[mt][n][2 * r] * p.scale, dk[mt][n][2 * r + 1] * p.scale);
        *reinterpret_cast<uint32_t*>(sV + swz<kD>(row, col)) = pack_bf16(dv[mt][n][2 * r], dv[mt][n][2 * r + 1]);
      }
  __syncthreads();
  bf16* dqkv = static_cast<bf16*>(p.dqkv);
  store_tile<kBN, kD, kThreads>(dqkv + p.qkv_head(b, p.Hq + hk), sK, rs, k0, T);
  store_tile<kBN, kD, kThreads>(dqkv + p.qkv_head(b, p.Hq + p.Hkv + hk), sV, rs, k0, T);
}

}  // namespace

void flash_bwd_dkdv_2d(const Params& p, cudaStream_t s) {
  static_assert(64 % kBM == 0, "T_pad (T rounded up to 64) must be whole query blocks");
  CUDA_CHECK(cudaFuncSetAttribute(flash_bwd_2d_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  dim3 grid((p.T + kBN - 1) / kBN, p.B * p.Hkv);
  flash_bwd_2d_kernel<<<grid, kThreads, kSmem, s>>>(p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace ringloom::cuda::attn
