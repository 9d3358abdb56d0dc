// Flash-attention backward on tensor cores (FlashAttention-2, Dao 2023, Algorithm 2):
// parallel over key blocks. A block owns BN = 16*kWarps keys of one kv head (each warp 16
// keys) and walks every query block of every query head in the GQA group, so dK and dV
// for the kv head are summed in registers in a fixed order (deterministic, no reduction
// pass). Per query block, with P and D_i = rowsum(dout*out) recomputed/read:
//   S^T = K Q^T,  P^T = exp2(S^T*scale*log2e - lse_i*log2e),  dP^T = V dO^T,
//   dV += P^T dO,  dS^T = P^T o (dP^T - D_i),  dK += dS^T Q  (scaled once at the end)
// The key-major layout keeps P^T and dS^T in registers as A fragments of the dV/dK MMAs.
// It runs D = 64, and D = 128's deterministic path; D = 128's default is the
// two-dimensional warp layout of flash_bwd_2d.cu (less shared-memory traffic per MMA).
//
// dQ = scale * dS K needs a sum over key blocks, i.e. over blocks:
//  - default: each block stages dS in shared memory and adds its dS K into an fp32
//    dq_accum with atomics (as FlashAttention-2), converted to bf16 by a last small kernel;
//  - deterministic: a second kernel, parallel over query blocks like the forward, recomputes
//    S, P, dP per key block and accumulates dQ in registers (two extra MMAs per tile).
#include <cfloat>

#include "core/cuda/check.h"
#include "ops/cuda/attention/mma.cuh"
#include "ops/cuda/attention/params.h"

namespace ringloom::cuda::attn {

namespace {

constexpr float kLog2e = 1.4426950408889634f;

template <int D, int kWarps, int BM, bool kAtomicDq>
struct DkdvTraits {
  static constexpr int kThreads = kWarps * 32;
  static constexpr int BN = kWarps * 16;
  static constexpr int kSmemBf16 = 2 * BN * D + 4 * BM * D + (kAtomicDq ? BN * BM : 0);
  static constexpr int kSmem = kSmemBf16 * int(sizeof(bf16)) + 4 * BM * int(sizeof(float));
};

template <int D, int kWarps, int BM, bool kAtomicDq>
__global__ void __launch_bounds__(kWarps * 32) flash_bwd_dkdv_kernel(const Params p) {
  using Tr = DkdvTraits<D, kWarps, BM, kAtomicDq>;
  constexpr int BN = Tr::BN, NT = Tr::kThreads;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sK = reinterpret_cast<bf16*>(smem_raw);
  bf16* sV = sK + BN * D;
  bf16* sQ = sV + BN * D;     // [2][BM][D]
  bf16* sdO = sQ + 2 * BM * D;  // [2][BM][D]
  bf16* sdS = sdO + 2 * BM * D;  // [BN][BM] (atomic dq only)
  float* sLse = reinterpret_cast<float*>(smem_raw + (Tr::kSmemBf16) * sizeof(bf16));  // [2][BM], log2 units
  float* sDv = sLse + 2 * BM;                                                       // [2][BM]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int p1r = lane & 15, p1c = (lane >> 4) * 8;
  const int p2r = (lane & 7) + ((lane >> 4) << 3), p2c = ((lane >> 3) & 1) * 8;

  const int b = blockIdx.y / p.Hkv, hk = blockIdx.y % p.Hkv;
  const int T = p.T, k0 = blockIdx.x * BN;
  const int64_t rs = p.qkv_row(), ors = p.out_row();
  const bf16* qkv = static_cast<const bf16*>(p.qkv);
  const bf16* dout = static_cast<const bf16*>(p.dout);

  load_tile_async<BN, D, NT>(sK, qkv + p.qkv_head(b, p.Hq + hk), rs, k0, T);
  load_tile_async<BN, D, NT>(sV, qkv + p.qkv_head(b, p.Hq + p.Hkv + hk), rs, k0, T);

  const int m_first = p.causal ? k0 / BM : 0;  // causal: queries before k0 see none of these keys
  const int m_count = (T + BM - 1) / BM - m_first;
  const int total = p.group * m_count;

  auto prefetch = [&](int it, int buf) {
    const int h = hk * p.group + it / m_count, q0 = (m_first + it % m_count) * BM;
    load_tile_async<BM, D, NT>(sQ + buf * BM * D, qkv + p.qkv_head(b, h), rs, q0, T);
    load_tile_async<BM, D, NT>(sdO + buf * BM * D, dout + p.out_head(b, h), ors, q0, T);
    // lse2 and dvec rows are padded to T_pad (rows past T: +inf and 0, so their P is 0).
    static_assert(BM / 4 * 2 <= NT, "one thread per 16-byte chunk of lse2 and dvec");
    const int64_t stat = (int64_t(b) * p.Hq + h) * p.T_pad + q0;
    if (threadIdx.x < BM / 4) cp_async16(sLse + buf * BM + threadIdx.x * 4, p.lse2 + stat + threadIdx.x * 4, true);
    else if (threadIdx.x < BM / 2) {
      const int c = threadIdx.x - BM / 4;
      cp_async16(sDv + buf * BM + c * 4, p.dvec + stat + c * 4, true);
    }
  };
  prefetch(0, 0);
  cp_async_commit();

  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int dn = 0; dn < D / 8; ++dn)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[dn][e] = dv[dn][e] = 0.f;
  const float sl2 = p.scale_log2;
  const int krow0 = k0 + warp * 16 + g;  // this thread's key rows: krow0, krow0 + 8

  for (int it = 0; it < total; ++it) {
    const int buf = it & 1;
    if (it + 1 < total) prefetch(it + 1, buf ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const int h = hk * p.group + it / m_count, q0 = (m_first + it % m_count) * BM;
    const bf16* cQ = sQ + buf * BM * D;
    const bf16* cdO = sdO + buf * BM * D;
    const float* cL = sLse + buf * BM;
    const float* cD = sDv + buf * BM;

    // S^T = K Q^T and dP^T = V dO^T: rows = this warp's 16 keys, columns = BM queries.
    float st[BM / 8][4], dpt[BM / 8][4];
#pragma unroll
    for (int j = 0; j < BM / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) st[j][e] = dpt[j][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t ka[4], va[4];
      ldmatrix_x4(ka, sK + swz<D>(warp * 16 + p1r, kk * 16 + p1c));
      ldmatrix_x4(va, sV + swz<D>(warp * 16 + p1r, kk * 16 + p1c));
#pragma unroll
      for (int j = 0; j < BM / 16; ++j) {
        uint32_t qb[4], ob[4];
        ldmatrix_x4(qb, cQ + swz<D>(j * 16 + p2r, kk * 16 + p2c));
        ldmatrix_x4(ob, cdO + swz<D>(j * 16 + p2r, kk * 16 + p2c));
        mma_bf16(st[2 * j], ka, qb[0], qb[1]);
        mma_bf16(st[2 * j + 1], ka, qb[2], qb[3]);
        mma_bf16(dpt[2 * j], va, ob[0], ob[1]);
        mma_bf16(dpt[2 * j + 1], va, ob[2], ob[3]);
      }
    }
    // P^T, masked: keys past the end, and (causal) keys after the query.
    const bool need_mask = k0 + BN > T || (p.causal && q0 < k0 + BN - 1);
#pragma unroll
    for (int j = 0; j < BM / 8; ++j) {
      const float2 lq = *reinterpret_cast<const float2*>(cL + j * 8 + 2 * t);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float pv = fast_exp2(fmaf(st[j][e], sl2, -((e & 1) ? lq.y : lq.x)));
        if (need_mask) {
          const int kr = krow0 + (e >> 1) * 8;
          if (kr >= T || (p.causal && q0 + j * 8 + 2 * t + (e & 1) < kr)) pv = 0.f;
        }
        st[j][e] = pv;
      }
    }
    // dV += P^T dO
#pragma unroll
    for (int kk = 0; kk < BM / 16; ++kk) {
      uint32_t pa[4] = {pack_bf16(st[2 * kk][0], st[2 * kk][1]), pack_bf16(st[2 * kk][2], st[2 * kk][3]),
                        pack_bf16(st[2 * kk + 1][0], st[2 * kk + 1][1]),
                        pack_bf16(st[2 * kk + 1][2], st[2 * kk + 1][3])};
#pragma unroll
      for (int dj = 0; dj < D / 16; ++dj) {
        uint32_t ob[4];
        ldmatrix_x4_trans(ob, cdO + swz<D>(kk * 16 + p1r, dj * 16 + p1c));
        mma_bf16(dv[2 * dj], pa, ob[0], ob[1]);
        mma_bf16(dv[2 * dj + 1], pa, ob[2], ob[3]);
      }
    }
    // dS^T = P^T o (dP^T - D_q)
#pragma unroll
    for (int j = 0; j < BM / 8; ++j) {
      const float2 dq2 = *reinterpret_cast<const float2*>(cD + j * 8 + 2 * t);
#pragma unroll
      for (int e = 0; e < 4; ++e) st[j][e] *= dpt[j][e] - ((e & 1) ? dq2.y : dq2.x);
    }
    // dK += dS^T Q
#pragma unroll
    for (int kk = 0; kk < BM / 16; ++kk) {
      uint32_t sa[4] = {pack_bf16(st[2 * kk][0], st[2 * kk][1]), pack_bf16(st[2 * kk][2], st[2 * kk][3]),
                        pack_bf16(st[2 * kk + 1][0], st[2 * kk + 1][1]),
                        pack_bf16(st[2 * kk + 1][2], st[2 * kk + 1][3])};
      if constexpr (kAtomicDq) {
        // Stage dS^T (bf16) for the dQ product below.
        const int r = warp * 16 + g;
        *reinterpret_cast<uint32_t*>(sdS + swz<BM>(r, kk * 16 + 2 * t)) = sa[0];
        *reinterpret_cast<uint32_t*>(sdS + swz<BM>(r + 8, kk * 16 + 2 * t)) = sa[1];
        *reinterpret_cast<uint32_t*>(sdS + swz<BM>(r, kk * 16 + 8 + 2 * t)) = sa[2];
        *reinterpret_cast<uint32_t*>(sdS + swz<BM>(r + 8, kk * 16 + 8 + 2 * t)) = sa[3];
      }
#pragma unroll
      for (int dj = 0; dj < D / 16; ++dj) {
        uint32_t qb[4];
        ldmatrix_x4_trans(qb, cQ + swz<D>(kk * 16 + p1r, dj * 16 + p1c));
        mma_bf16(dk[2 * dj], sa, qb[0], qb[1]);
        mma_bf16(dk[2 * dj + 1], sa, qb[2], qb[3]);
      }
    }
    if constexpr (kAtomicDq) {
      __syncthreads();  // all of dS^T is in shared memory
      // dQ[q][d] += sum_k dS[q][k] K[k][d]; warps split the BM x D tile.
      constexpr int kQT = BM / 16, kWQ = kWarps / kQT, kDW = D / kWQ;
      static_assert(kWarps % kQT == 0, "warps must cover the query tiles");
      const int qt = warp % kQT, d0 = (warp / kQT) * kDW;
      float dq[kDW / 8][4];
#pragma unroll
      for (int dn = 0; dn < kDW / 8; ++dn) dq[dn][0] = dq[dn][1] = dq[dn][2] = dq[dn][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        uint32_t sa[4];
        ldmatrix_x4_trans(sa, sdS + swz<BM>(kk * 16 + p2r, qt * 16 + p2c));
#pragma unroll
        for (int dj = 0; dj < kDW / 16; ++dj) {
          uint32_t kb[4];
          ldmatrix_x4_trans(kb, sK + swz<D>(kk * 16 + p1r, d0 + dj * 16 + p1c));
          mma_bf16(dq[2 * dj], sa, kb[0], kb[1]);
          mma_bf16(dq[2 * dj + 1], sa, kb[2], kb[3]);
        }
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int q = q0 + qt * 16 + g + r * 8;
        if (q < T) {
          float* dst = p.dq_accum + ((int64_t(b) * T + q) * p.Hq + h) * D + d0 + 2 * t;
#pragma unroll
          for (int dn = 0; dn < kDW / 8; ++dn)
            atomicAdd(reinterpret_cast<float2*>(dst + dn * 8), make_float2(dq[dn][2 * r], dq[dn][2 * r + 1]));
        }
      }
    }
    __syncthreads();  // this buffer and sdS are free for the next prefetch / iteration
  }

  // Epilogue: dK (times the softmax scale) and dV through shared memory to coalesced stores.
  cp_async_wait<0>();
  __syncthreads();
#pragma unroll
  for (int dn = 0; dn < D / 8; ++dn)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = warp * 16 + g + r * 8, col = dn * 8 + 2 * t;
      *reinterpret_cast<uint32_t*>(sK + swz<D>(row, col)) = pack_bf16(dk[dn][2 * r] * p.scale, dk[dn][2 * r + 1] * p.scale);
      *reinterpret_cast<uint32_t*>(sV + swz<D>(row, col)) = pack_bf16(dv[dn][2 * r], dv[dn][2 * r + 1]);
    }
  __syncthreads();
  bf16* dqkv = static_cast<bf16*>(p.dqkv);
  store_tile<BN, D, NT>(dqkv + p.qkv_head(b, p.Hq + hk), sK, rs, k0, T);
  store_tile<BN, D, NT>(dqkv + p.qkv_head(b, p.Hq + p.Hkv + hk), sV, rs, k0, T);
}

// Deterministic dQ: one block per (query block, batch*head), like the forward.
template <int D, int kWarps, int BN>
struct DqTraits {
  static constexpr int kThreads = kWarps * 32;
  static constexpr int BM = kWarps * 16;
  static constexpr int kSmem = (2 * BM + 4 * BN) * D * int(sizeof(bf16));
};

template <int D, int kWarps, int BN>
__global__ void __launch_bounds__(kWarps * 32) flash_bwd_dq_kernel(const Params p) {
  using Tr = DqTraits<D, kWarps, BN>;
  constexpr int BM = Tr::BM, NT = Tr::kThreads;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);
  bf16* sdO = sQ + BM * D;
  bf16* sK = sdO + BM * D;  // [2][BN][D]
  bf16* sV = sK + 2 * BN * D;  // [2][BN][D]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int p1r = lane & 15, p1c = (lane >> 4) * 8;
  const int p2r = (lane & 7) + ((lane >> 4) << 3), p2c = ((lane >> 3) & 1) * 8;
  const int m_block = gridDim.x - 1 - blockIdx.x;
  const int b = blockIdx.y / p.Hq, h = blockIdx.y % p.Hq, hk = h / p.group;
  const int T = p.T, q0 = m_block * BM;
  const int64_t rs = p.qkv_row(), ors = p.out_row();
  const bf16* qkv = static_cast<const bf16*>(p.qkv);
  const bf16* gK = qkv + p.qkv_head(b, p.Hq + hk);
  const bf16* gV = qkv + p.qkv_head(b, p.Hq + p.Hkv + hk);
  int n_blocks = (T + BN - 1) / BN;
  if (p.causal) n_blocks = min(n_blocks, (q0 + BM + BN - 1) / BN);

  load_tile_async<BM, D, NT>(sQ, qkv + p.qkv_head(b, h), rs, q0, T);
  load_tile_async<BM, D, NT>(sdO, static_cast<const bf16*>(p.dout) + p.out_head(b, h), ors, q0, T);
  load_tile_async<BN, D, NT>(sK, gK, rs, 0, T);
  load_tile_async<BN, D, NT>(sV, gV, rs, 0, T);
  cp_async_commit();

  const int row0 = q0 + warp * 16 + g;  // rows row0, row0 + 8
  float lse2[2], dvr[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + r * 8;
    const int64_t i = (int64_t(b) * p.Hq + h) * p.T_pad + row;  // padded: +inf / 0 past T
    lse2[r] = p.lse2[i];
    dvr[r] = p.dvec[i];
  }
  float dq[D / 8][4];
#pragma unroll
  for (int dn = 0; dn < D / 8; ++dn) dq[dn][0] = dq[dn][1] = dq[dn][2] = dq[dn][3] = 0.f;
  const float sl2 = p.scale_log2;

  for (int n = 0; n < n_blocks; ++n) {
    const int buf = n & 1, k0 = n * BN;
    if (n + 1 < n_blocks) {
      load_tile_async<BN, D, NT>(sK + (buf ^ 1) * BN * D, gK, rs, k0 + BN, T);
      load_tile_async<BN, D, NT>(sV + (buf ^ 1) * BN * D, gV, rs, k0 + BN, T);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const bf16* cK = sK + buf * BN * D;
    const bf16* cV = sV + buf * BN * D;

    float s[BN / 8][4], dp[BN / 8][4];
#pragma unroll
    for (int j = 0; j < BN / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[j][e] = dp[j][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t qa[4], oa[4];
      ldmatrix_x4(qa, sQ + swz<D>(warp * 16 + p1r, kk * 16 + p1c));
      ldmatrix_x4(oa, sdO + swz<D>(warp * 16 + p1r, kk * 16 + p1c));
#pragma unroll
      for (int j = 0; j < BN / 16; ++j) {
        uint32_t kb[4], vb[4];
        ldmatrix_x4(kb, cK + swz<D>(j * 16 + p2r, kk * 16 + p2c));
        ldmatrix_x4(vb, cV + swz<D>(j * 16 + p2r, kk * 16 + p2c));
        mma_bf16(s[2 * j], qa, kb[0], kb[1]);
        mma_bf16(s[2 * j + 1], qa, kb[2], kb[3]);
        mma_bf16(dp[2 * j], oa, vb[0], vb[1]);
        mma_bf16(dp[2 * j + 1], oa, vb[2], vb[3]);
      }
    }
    const bool need_mask = k0 + BN > T || (p.causal && k0 + BN - 1 > q0 + warp * 16);
#pragma unroll
    for (int j = 0; j < BN / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        float pv = fast_exp2(fmaf(s[j][e], sl2, -lse2[r]));
        if (need_mask) {
          const int col = k0 + j * 8 + 2 * t + (e & 1);
          if (col >= T || (p.causal && col > row0 + r * 8)) pv = 0.f;
        }
        s[j][e] = pv * (dp[j][e] - dvr[r]);  // dS
      }
    // dQ += dS K
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      uint32_t sa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                        pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]), pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dj = 0; dj < D / 16; ++dj) {
        uint32_t kb[4];
        ldmatrix_x4_trans(kb, cK + swz<D>(kk * 16 + p1r, dj * 16 + p1c));
        mma_bf16(dq[2 * dj], sa, kb[0], kb[1]);
        mma_bf16(dq[2 * dj + 1], sa, kb[2], kb[3]);
      }
    }
    __syncthreads();  // done with this K/V buffer before it is refilled
  }
  cp_async_wait<0>();
#pragma unroll
  for (int dn = 0; dn < D / 8; ++dn)
#pragma unroll
    for (int r = 0; r < 2; ++r)
      *reinterpret_cast<uint32_t*>(sQ + swz<D>(warp * 16 + g + r * 8, dn * 8 + 2 * t)) =
          pack_bf16(dq[dn][2 * r] * p.scale, dq[dn][2 * r + 1] * p.scale);
  __syncthreads();
  store_tile<BM, D, NT>(static_cast<bf16*>(p.dqkv) + p.qkv_head(b, h), sQ, rs, q0, T);
}

// Backward preprocessing, one warp per (b, h, t < T_pad): dvec = rowsum(dout * out) (the
// D_i of FlashAttention-2) and lse2 = lse * log2(e); rows past T get 0 and +inf.
__global__ void flash_bwd_prep_kernel(const Params p) {
  const int64_t w = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (w >= int64_t(p.B) * p.Hq * p.T_pad) return;
  const int t = int(w % p.T_pad), bh = int(w / p.T_pad), b = bh / p.Hq, h = bh % p.Hq;
  float dv = 0.f, l2 = INFINITY;
  if (t < p.T) {
    const int64_t off = p.out_head(b, h) + int64_t(t) * p.out_row();
    const auto* o = reinterpret_cast<const __nv_bfloat162*>(static_cast<const bf16*>(p.out) + off);
    const auto* g = reinterpret_cast<const __nv_bfloat162*>(static_cast<const bf16*>(p.dout) + off);
    for (int i = lane; i < p.D / 2; i += 32) {
      const float2 a = __bfloat1622float2(o[i]), c = __bfloat1622float2(g[i]);
      dv += a.x * c.x + a.y * c.y;
    }
#pragma unroll
    for (int s = 16; s > 0; s >>= 1) dv += __shfl_xor_sync(0xffffffffu, dv, s);
    l2 = p.lse[int64_t(bh) * p.T + t] * kLog2e;
  }
  if (lane == 0) {
    p.dvec[w] = dv;
    p.lse2[w] = l2;
  }
}

// dqkv[b, t, h, :] = scale * dq_accum[b, t, h, :] in bf16, four elements a thread.
__global__ void dq_convert_kernel(const Params p) {
  const int64_t n4 = int64_t(p.B) * p.T * p.Hq * p.D / 4;
  const int64_t row_len = int64_t(p.Hq) * p.D;  // one token's queries
  bf16* dqkv = static_cast<bf16*>(p.dqkv);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n4; i += int64_t(gridDim.x) * blockDim.x) {
    const float4 v = reinterpret_cast<const float4*>(p.dq_accum)[i];
    const int64_t e = i * 4, tok = e / row_len, off = e % row_len;
    uint2 packed = make_uint2(pack_bf16(v.x * p.scale, v.y * p.scale), pack_bf16(v.z * p.scale, v.w * p.scale));
    *reinterpret_cast<uint2*>(dqkv + tok * p.qkv_row() + off) = packed;
  }
}

}  // namespace

void backward_prep(const Params& p, cudaStream_t s) {
  const int64_t prep_rows = int64_t(p.B) * p.Hq * p.T_pad;
  flash_bwd_prep_kernel<<<unsigned((prep_rows + 7) / 8), 256, 0, s>>>(p);
  CUDA_CHECK_LAUNCH();
}

void dq_accum_to_bf16(const Params& p, cudaStream_t s) {
  const int64_t n4 = int64_t(p.B) * p.T * p.Hq * p.D / 4;
  const int blocks = int(std::min<int64_t>((n4 + 255) / 256, 4096));
  dq_convert_kernel<<<blocks, 256, 0, s>>>(p);
  CUDA_CHECK_LAUNCH();
}

namespace {

template <typename Kernel>
void set_smem(Kernel kernel, int bytes) {
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

template <int D, int kWarps, int BM, bool kAtomicDq>
void launch_dkdv(const Params& p, cudaStream_t s) {
  using Tr = DkdvTraits<D, kWarps, BM, kAtomicDq>;
  auto kernel = flash_bwd_dkdv_kernel<D, kWarps, BM, kAtomicDq>;
  set_smem(kernel, Tr::kSmem);
  dim3 grid((p.T + Tr::BN - 1) / Tr::BN, p.B * p.Hkv);
  kernel<<<grid, Tr::kThreads, Tr::kSmem, s>>>(p);
  CUDA_CHECK_LAUNCH();
}

template <int D, int kWarps, int BN>
void launch_dq(const Params& p, cudaStream_t s) {
  using Tr = DqTraits<D, kWarps, BN>;
  auto kernel = flash_bwd_dq_kernel<D, kWarps, BN>;
  set_smem(kernel, Tr::kSmem);
  dim3 grid((p.T + Tr::BM - 1) / Tr::BM, p.B * p.Hq);
  kernel<<<grid, Tr::kThreads, Tr::kSmem, s>>>(p);
  CUDA_CHECK_LAUNCH();
}

// k2d: the atomic-dq path runs flash_bwd_2d.cu's kernel (D = 128 only).
template <int D, int kWarps, int BM, bool k2d = false>
void backward_for_dim(const Params& p, bool deterministic, cudaStream_t s) {
  static_assert(64 % BM == 0, "T_pad (T rounded up to 64) must be whole query blocks");
  backward_prep(p, s);
  if (deterministic) {
    launch_dkdv<D, kWarps, BM, false>(p, s);
    launch_dq<D, 4, 64>(p, s);
    return;
  }
  CUDA_CHECK(cudaMemsetAsync(p.dq_accum, 0, sizeof(float) * size_t(p.B) * p.T * p.Hq * D, s));
  if constexpr (k2d) flash_bwd_dkdv_2d(p, s);
  else launch_dkdv<D, kWarps, BM, true>(p, s);
  dq_accum_to_bf16(p, s);
}

}  // namespace

void flash_backward(const Params& p, bool deterministic, cudaStream_t s) {
  // D=64: 4 warps (64 keys a block, two blocks an SM), 64 queries a step.
  // D=128: the two-dimensional warp layout of flash_bwd_2d.cu (measured 1.10-1.13x the
  // key-major kernel with 64-query steps, 1.23-1.24x with 32); the deterministic path keeps
  // the key-major kernel (dq by the separate pass), with 64-query steps.
  if (p.D == 64) backward_for_dim<64, 4, 64>(p, deterministic, s);
  else backward_for_dim<128, 8, 64, true>(p, deterministic, s);
}

}  // namespace ringloom::cuda::attn
