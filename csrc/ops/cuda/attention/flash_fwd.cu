// Flash-attention forward on tensor cores (Dao et al. 2022; FlashAttention-2's partitioning,
// Dao 2023): one block per (query block, batch*head), each warp owns kMT x 16 query rows
// and streams the key/value blocks of its head through shared memory, keeping the running
// row max m, the running sum l and the unnormalised output in registers (online softmax):
//   s = scale*log2(e) * q.k,   m' = max(m, max_j s_j),   l' = l*2^(m-m') + sum_j 2^(s_j-m'),
//   o' = o*2^(m-m') + sum_j 2^(s_j-m') v_j;   at the end out = o/l, lse = (m + log2 l) * ln 2.
// The loads overlap the arithmetic as in FlashAttention-2: V_n is fetched while S = Q K_n^T
// is computed, K_{n+1} while softmax and P V_n run (cp.async, one buffer each).
// Instantiated for bf16, D = 64 and 128; other cases go to simple.cu.
#include <cfloat>

#include "core/cuda/check.h"
#include "ops/cuda/attention/mma.cuh"
#include "ops/cuda/attention/params.h"

namespace ringloom::cuda::attn {

namespace {

template <int D, int kWarps, int kMT, int BN>
struct FwdTraits {
  static constexpr int kThreads = kWarps * 32;
  static constexpr int BM = kWarps * kMT * 16;
  static constexpr int kSmem = (BM + 2 * BN) * D * int(sizeof(bf16)) + kSmemAlign;
};

// kMergedWait: wait for V_n together with the barrier that frees sK after S = Q K^T (two
// barriers a key block, as FlashAttention-2) instead of a third barrier before P V, which
// lets V_n land under the softmax as well. Measured: merged is faster at D = 128 (fewer
// barriers for warps that each hold 128 output registers), the third barrier at D = 64.
template <int D, int kWarps, int kMT, int BN, bool kMergedWait>
__global__ void __launch_bounds__(kWarps * 32) flash_fwd_kernel(const Params p) {
  using Tr = FwdTraits<D, kWarps, kMT, BN>;
  constexpr int BM = Tr::BM, NT = Tr::kThreads;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(align_smem(smem_raw));
  bf16* sK = sQ + BM * D;
  bf16* sV = sK + BN * D;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  // ldmatrix lane addresses: P1 for A (row major) and B from [k][n] (.trans);
  // P2 for B from [n][k] rows.
  const int p1r = lane & 15, p1c = (lane >> 4) * 8;
  const int p2r = (lane & 7) + ((lane >> 4) << 3), p2c = ((lane >> 3) & 1) * 8;
  // This lane's ldmatrix addresses at column step 0 (col_step walks the columns; 16-row
  // steps are immediates): Q as A, K as B, V as B read transposed.
  uint32_t q_lane = smem_u32(sQ) + swz_bytes<D>(warp * kMT * 16 + p1r, p1c);
  uint32_t k_lane = smem_u32(sK) + swz_bytes<D>(p2r, p2c);
  uint32_t v_lane = smem_u32(sV) + swz_bytes<D>(p1r, p1c);
  constexpr uint32_t kRow16 = 16 * D * sizeof(bf16);

  const int m_block = gridDim.x - 1 - blockIdx.x;  // causal: the longest rows start first
  const int b = blockIdx.y / p.Hq, h = blockIdx.y % p.Hq, hk = h / p.group;
  const int T = p.T, q0 = m_block * BM, wrow0 = warp * kMT * 16;
  const int64_t rs = p.qkv_row();
  const bf16* qkv = static_cast<const bf16*>(p.qkv);
  const bf16* gQ = qkv + p.qkv_head(b, h);
  const bf16* gK = qkv + p.qkv_head(b, p.Hq + hk);
  const bf16* gV = qkv + p.qkv_head(b, p.Hq + p.Hkv + hk);

  int n_blocks = (T + BN - 1) / BN;
  if (p.causal) n_blocks = min(n_blocks, (q0 + BM + BN - 1) / BN);  // keys j <= last row

  load_tile_async<BM, D, NT>(sQ, gQ, rs, q0, T);
  load_tile_async<BN, D, NT>(sK, gK, rs, 0, T);
  cp_async_commit();

  float o[kMT][D / 8][4];
  float m_r[kMT][2], l_r[kMT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) o[mt][dn][0] = o[mt][dn][1] = o[mt][dn][2] = o[mt][dn][3] = 0.f;
    m_r[mt][0] = m_r[mt][1] = -INFINITY;
    l_r[mt][0] = l_r[mt][1] = 0.f;
  }
  const float sl2 = p.scale_log2;
  cp_async_wait<0>();
  __syncthreads();

  for (int n = 0; n < n_blocks; ++n) {
    const int k0 = n * BN;
    q_lane = opaque(q_lane);
    k_lane = opaque(k_lane);
    v_lane = opaque(v_lane);
    load_tile_async<BN, D, NT>(sV, gV, rs, k0, T);
    cp_async_commit();

    // S = Q K^T for this warp's rows and the BN keys.
    float s[kMT][BN / 8][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int j = 0; j < BN / 8; ++j) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t qa[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) ldsm_x4(qa[mt], col_step(q_lane, kk * 16) + mt * kRow16);
#pragma unroll
      for (int j = 0; j < BN / 16; ++j) {
        uint32_t kb[4];
        ldsm_x4(kb, col_step(k_lane, kk * 16) + j * kRow16);
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma_bf16(s[mt][2 * j], qa[mt], kb[0], kb[1]);
          mma_bf16(s[mt][2 * j + 1], qa[mt], kb[2], kb[3]);
        }
      }
    }
    if constexpr (kMergedWait) cp_async_wait<0>();  // V_n has landed
    __syncthreads();  // every warp is done with sK: fetch the next key block into it
    if (n + 1 < n_blocks) load_tile_async<BN, D, NT>(sK, gK, rs, k0 + BN, T);
    cp_async_commit();

    // Mask keys past the end and, when causal, keys after the query (only blocks that need it).
    if (k0 + BN > T || (p.causal && k0 + BN - 1 > q0 + wrow0)) {
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int j = 0; j < BN / 8; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int col = k0 + j * 8 + 2 * t + (e & 1);
            const int row = q0 + wrow0 + mt * 16 + g + (e >> 1) * 8;
            if (col >= T || (p.causal && col > row)) s[mt][j][e] = -INFINITY;
          }
    }

    // Online softmax; each row lives in the 4 threads of a quad.
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < BN / 8; ++j) mx = fmaxf(mx, fmaxf(s[mt][j][2 * r], s[mt][j][2 * r + 1]));
        mx = quad_max(mx) * sl2;
        const float m_new = fmaxf(m_r[mt][r], mx);
        const float m_use = m_new == -INFINITY ? 0.f : m_new;  // a row with nothing seen yet
        const float alpha = fast_exp2(m_r[mt][r] - m_use);
        m_r[mt][r] = m_new;
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < BN / 8; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float v = fast_exp2(fmaf(s[mt][j][2 * r + e], sl2, -m_use));
            s[mt][j][2 * r + e] = v;
            sum += v;
          }
        l_r[mt][r] = l_r[mt][r] * alpha + sum;  // per-thread partial; the quad sums at the end
#pragma unroll
        for (int dn = 0; dn < D / 8; ++dn) {
          o[mt][dn][2 * r] *= alpha;
          o[mt][dn][2 * r + 1] *= alpha;
        }
      }

    if constexpr (!kMergedWait) {
      cp_async_wait<1>();  // V_n has landed (K_{n+1} may still be in flight)
      __syncthreads();
    }
    // O += P V: P's C fragments repacked as A fragments, V read transposed.
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      uint32_t pa[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        pa[mt][0] = pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        pa[mt][1] = pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        pa[mt][2] = pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        pa[mt][3] = pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dj = 0; dj < D / 16; ++dj) {
        uint32_t vb[4];
        ldsm_x4_t(vb, col_step(v_lane, dj * 16) + kk * kRow16);
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma_bf16(o[mt][2 * dj], pa[mt], vb[0], vb[1]);
          mma_bf16(o[mt][2 * dj + 1], pa[mt], vb[2], vb[3]);
        }
      }
    }
    cp_async_wait<0>();  // K_{n+1} is in, and every warp is done with sV
    __syncthreads();
  }

  // Epilogue: normalise, stage the bf16 rows in this warp's own rows of sQ, store coalesced.
  float* lse = p.lse + (int64_t(b) * p.Hq + h) * T;
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float l = quad_sum(l_r[mt][r]);
      const float inv = l > 0.f ? 1.f / l : 0.f;
      const int lrow = wrow0 + mt * 16 + g + r * 8;
#pragma unroll
      for (int dn = 0; dn < D / 8; ++dn)
        *reinterpret_cast<uint32_t*>(sQ + swz<D>(lrow, dn * 8 + 2 * t)) =
            pack_bf16(o[mt][dn][2 * r] * inv, o[mt][dn][2 * r + 1] * inv);
      if (t == 0 && q0 + lrow < T) lse[q0 + lrow] = l > 0.f ? (m_r[mt][r] + log2f(l)) * 0.69314718055994531f : -INFINITY;
    }
  __syncthreads();
  store_tile<BM, D, NT>(static_cast<bf16*>(p.out) + p.out_head(b, h), sQ, p.out_row(), q0, T);
}

template <int D, int kWarps, int kMT, int BN, bool kMergedWait>
void launch_fwd(const Params& p, cudaStream_t s) {
  using Tr = FwdTraits<D, kWarps, kMT, BN>;
  auto kernel = flash_fwd_kernel<D, kWarps, kMT, BN, kMergedWait>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmem));
  dim3 grid((p.T + Tr::BM - 1) / Tr::BM, p.B * p.Hq);
  kernel<<<grid, Tr::kThreads, Tr::kSmem, s>>>(p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void flash_forward(const Params& p, cudaStream_t s) {
  // FlashAttention-2's shape: 4 warps and 128 query rows (two m16 tiles a warp, so each K/V
  // fragment read from shared memory feeds two MMAs), 64-key blocks. Measured alternatives
  // (NOTES-attention.md): 32-key blocks and 8 warps x 16 rows were slower at both head dims.
  if (p.D == 64) launch_fwd<64, 4, 2, 64, false>(p, s);
  else launch_fwd<128, 4, 2, 64, true>(p, s);
}

}  // namespace ringloom::cuda::attn
