// Flash-attention forward for Hopper (sm_90a), in the design of FlashAttention-3 (Shah et
// al. 2024): one block per (128 query rows, batch*head) with three warpgroups.
//   - Producer warpgroup (one thread, 24 registers): loads the Q tile once and streams the
//     key and value tiles of the head through a two-stage ring in shared memory with TMA,
//     each stage guarded by a "full" barrier (bytes landed) and an "empty" barrier (both
//     consumers done reading).
//   - Two consumer warpgroups (240 registers each), 64 query rows each: S = Q K^T and
//     O += P V on wgmma, online softmax in registers (as flash_fwd.cu:
//     m' = max(m, max_j s_j), l' = l 2^(m-m') + sum_j 2^(s_j-m'), o' = o 2^(m-m') + P V).
//     Softmax overlaps the matrix products two ways: the two consumer warpgroups run
//     independently, so one's softmax runs under the other's wgmma; and inside a warpgroup
//     the product S_{n+1} = Q K_{n+1}^T and O += P_n V_n are issued together before the
//     softmax of S_{n+1}, which then runs while P_n V_n is still on the tensor cores (its
//     rescale of O waits for that product).
// Key blocks run from the last to the first: with 128-row query and key blocks only the
// first block visited needs the causal / sequence-end mask. P goes from the accumulators
// to the second product's A operand in registers (an fp32 accumulator pair of two adjacent
// n8 blocks is an m16k16 A fragment). bf16, D = 64 or 128; sm_90 only.
#include <cudaTypedefs.h>

#include <cfloat>

#include "core/cuda/check.h"
#include "ops/cuda/attention/hopper.cuh"
#include "ops/cuda/attention/hopper_tma.h"
#include "ops/cuda/attention/mma.cuh"
#include "ops/cuda/attention/params.h"

namespace ringloom::cuda::attn {

namespace {

using namespace sm90;

constexpr int kBM = 128;  // query rows a block: two consumer warpgroups of 64
constexpr int kBN = 128;  // keys a block; equal to kBM so one tensor map serves Q, K and V
constexpr int kStages = 2;
constexpr int kThreads = 384;

template <int D>
struct FwdSmem {
  static constexpr int kTile = kBN * D * 2;  // bytes of one 128-row tile
  static constexpr int kQ = 0;
  static constexpr int kK = kQ + kTile;
  static constexpr int kV = kK + kStages * kTile;
  static constexpr int kBar = kV + kStages * kTile;
  static constexpr int kBytes = kBar + 128 + 1024;  // barriers, then slack for 1024-byte alignment
};

template <int D>
__global__ void __launch_bounds__(kThreads, 1) hopper_fwd_kernel(const __grid_constant__ CUtensorMap tm, const Params p) {
  using Smem = FwdSmem<D>;
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + Smem::kBar);
  uint64_t* q_full = bars;
  uint64_t* k_full = bars + 1;
  uint64_t* k_empty = bars + 1 + kStages;
  uint64_t* v_full = bars + 1 + 2 * kStages;
  uint64_t* v_empty = bars + 1 + 3 * kStages;

  const int m_block = gridDim.x - 1 - blockIdx.x;  // causal: the longest rows start first
  const int b = blockIdx.y / p.Hq, h = blockIdx.y % p.Hq, hk = h / p.group;
  const int q0 = m_block * kBM, T = p.T;
  int n_blocks = (T + kBN - 1) / kBN;
  if (p.causal) n_blocks = min(n_blocks, (q0 + kBM + kBN - 1) / kBN);
  const int wg = threadIdx.x / 128;

  if (threadIdx.x == 0) {
    mbar_init(q_full, 1);
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&k_full[s], 1);
      mbar_init(&v_full[s], 1);
      mbar_init(&k_empty[s], 8);  // lane 0 of each consumer warp
      mbar_init(&v_empty[s], 8);
    }
    mbar_init_fence();
  }
  __syncthreads();

  if (wg == 0) {  // producer
    setmaxnreg_dec<24>();
    if (threadIdx.x == 0) {
      tma_prefetch_desc(&tm);
      constexpr uint32_t kTileBytes = Smem::kTile;
      mbar_expect_tx(q_full, kTileBytes);
#pragma unroll
      for (int c = 0; c < D / 64; ++c) tma_load_4d(smem + Smem::kQ + c * kBM * 128, &tm, q_full, c * 64, q0, h, b);
      for (int it = 0; it < n_blocks; ++it) {
        const int n = n_blocks - 1 - it, st = it % kStages;
        const uint32_t ph = (it / kStages) & 1;
        mbar_wait(&k_empty[st], ph ^ 1);
        mbar_expect_tx(&k_full[st], kTileBytes);
#pragma unroll
        for (int c = 0; c < D / 64; ++c)
          tma_load_4d(smem + Smem::kK + st * Smem::kTile + c * kBN * 128, &tm, &k_full[st], c * 64, n * kBN, p.Hq + hk, b);
        mbar_wait(&v_empty[st], ph ^ 1);
        mbar_expect_tx(&v_full[st], kTileBytes);
#pragma unroll
        for (int c = 0; c < D / 64; ++c)
          tma_load_4d(smem + Smem::kV + st * Smem::kTile + c * kBN * 128, &tm, &v_full[st], c * 64, n * kBN,
                      p.Hq + p.Hkv + hk, b);
      }
    }
    return;
  }

  // ---- consumers ----
  setmaxnreg_inc<240>();
  const int cw = wg - 1, tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32, t = lane % 4;
  const int row0 = cw * 64 + warp * 16 + lane / 4;  // this thread's rows in the tile: row0, row0 + 8
  const uint32_t q_base = smem_addr(smem + Smem::kQ) + cw * 64 * 128;
  const uint32_t k_base = smem_addr(smem + Smem::kK), v_base = smem_addr(smem + Smem::kV);
  const float sl2 = p.scale_log2;

  float s[kBN / 2];
  float o[D / 2];
  uint32_t pa[kBN / 16][4];
  float m_r[2] = {-INFINITY, -INFINITY}, l_r[2] = {0.f, 0.f};
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] = 0.f;

  auto issue_qk = [&](int st) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const uint32_t koff = (kk >> 2) * kBN * 128 + (kk & 3) * 32;  // 64-column chunk, 16-deep step
      const uint64_t da = gmma_desc(q_base + (kk >> 2) * kBM * 128 + (kk & 3) * 32, 16, 1024);
      const uint64_t db = gmma_desc(k_base + st * Smem::kTile + koff, 16, 1024);
      wgmma_ss_n128<0, 0>(s, da, db, kk > 0);
    }
  };
  auto issue_pv = [&](int st) {
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) {
      const uint64_t db = gmma_desc(v_base + st * Smem::kTile + kk * 16 * 128, kBN * 128, 1024);
      if constexpr (D == 64) wgmma_rs_n64<1>(o, pa[kk], db, 1);
      else wgmma_rs_n128<1>(o, pa[kk], db, 1);
    }
  };
  // Online softmax of s in place (exp2 of the scaled scores); alpha = 2^(m_old - m_new) per
  // row, and l is updated here since it does not depend on the product in flight.
  auto softmax = [&](float (&alpha)[2]) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < kBN / 8; ++j) mx = fmaxf(mx, fmaxf(s[4 * j + 2 * i], s[4 * j + 2 * i + 1]));
      mx = quad_max(mx) * sl2;
      const float m_new = fmaxf(m_r[i], mx);
      const float m_use = m_new == -INFINITY ? 0.f : m_new;
      alpha[i] = fast_exp2(m_r[i] - m_use);
      m_r[i] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < kBN / 8; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float v = fast_exp2(fmaf(s[4 * j + 2 * i + e], sl2, -m_use));
          s[4 * j + 2 * i + e] = v;
          sum += v;
        }
      l_r[i] = l_r[i] * alpha[i] + sum;
    }
  };
  auto to_pa = [&]() {
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) {
      pa[kk][0] = pack_bf16(s[8 * kk + 0], s[8 * kk + 1]);
      pa[kk][1] = pack_bf16(s[8 * kk + 2], s[8 * kk + 3]);
      pa[kk][2] = pack_bf16(s[8 * kk + 4], s[8 * kk + 5]);
      pa[kk][3] = pack_bf16(s[8 * kk + 6], s[8 * kk + 7]);
    }
  };

  mbar_wait(q_full, 0);
  // First key block (the only one that needs a mask): S, mask, softmax, P.
  {
    mbar_wait(&k_full[0], 0);
    wgmma_fence();
    issue_qk(0);
    wgmma_commit();
    wgmma_wait<0>();
    reg_fence(s);
    __syncwarp();  // every lane's reads of the stage come before the release
    if (lane == 0) mbar_arrive(&k_empty[0]);
    const int k0 = (n_blocks - 1) * kBN;
    if (k0 + kBN > T || p.causal) {
#pragma unroll
      for (int j = 0; j < kBN / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = k0 + 8 * j + 2 * t + (e & 1), row = q0 + row0 + 8 * (e >> 1);
          if (col >= T || (p.causal && col > row)) s[4 * j + e] = -INFINITY;
        }
    }
    float alpha[2];
    softmax(alpha);
    to_pa();
  }
  for (int it = 1; it < n_blocks; ++it) {
    const int st = it % kStages, pst = (it - 1) % kStages;
    mbar_wait(&k_full[st], (it / kStages) & 1);
    wgmma_fence();
    issue_qk(st);
    wgmma_commit();
    mbar_wait(&v_full[pst], ((it - 1) / kStages) & 1);
    issue_pv(pst);
    wgmma_commit();
    wgmma_wait<1>();  // S_it is ready; P_{it-1} V_{it-1} may still run
    reg_fence(s);
    __syncwarp();  // every lane's reads of the stage come before the release
    if (lane == 0) mbar_arrive(&k_empty[st]);
    float alpha[2];
    softmax(alpha);
    wgmma_wait<0>();
    reg_fence(o);
    reg_fence(pa);
    __syncwarp();  // every lane's reads of the stage come before the release
    if (lane == 0) mbar_arrive(&v_empty[pst]);
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      o[4 * j + 0] *= alpha[0];
      o[4 * j + 1] *= alpha[0];
      o[4 * j + 2] *= alpha[1];
      o[4 * j + 3] *= alpha[1];
    }
    to_pa();
  }
  {
    const int lst = (n_blocks - 1) % kStages;
    mbar_wait(&v_full[lst], ((n_blocks - 1) / kStages) & 1);
    wgmma_fence();
    issue_pv(lst);
    wgmma_commit();
    wgmma_wait<0>();
    reg_fence(o);
    reg_fence(pa);
    __syncwarp();  // every lane's reads of the stage come before the release
    if (lane == 0) mbar_arrive(&v_empty[lst]);
  }

  // Epilogue: normalise, stage the bf16 rows in this warpgroup's own rows of the Q tile
  // (no longer read), then 16-byte coalesced stores of the rows inside the sequence.
  float* lse = p.lse + (int64_t(b) * p.Hq + h) * T;
  unsigned char* sQ = smem + Smem::kQ;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const float l = quad_sum(l_r[i]);
    const float inv = l > 0.f ? 1.f / l : 0.f;
    const int row = row0 + 8 * i;
#pragma unroll
    for (int j = 0; j < D / 8; ++j)
      *reinterpret_cast<uint32_t*>(sQ + tile_offset<kBM>(row, 8 * j + 2 * t)) =
          pack_bf16(o[4 * j + 2 * i] * inv, o[4 * j + 2 * i + 1] * inv);
    if (t == 0 && q0 + row < T) lse[q0 + row] = l > 0.f ? (m_r[i] + log2f(l)) * 0.69314718055994531f : -INFINITY;
  }
  named_barrier(1 + cw, 128);
  bf16* out = static_cast<bf16*>(p.out) + p.out_head(b, h);
  const int64_t ors = p.out_row();
  constexpr int kUnits = D / 8;  // 16-byte units a row
#pragma unroll
  for (int u = tid; u < 64 * kUnits; u += 128) {
    const int row = cw * 64 + u / kUnits, cu = u % kUnits;
    if (q0 + row < T)
      *reinterpret_cast<uint4*>(out + (q0 + row) * ors + cu * 8) =
          *reinterpret_cast<const uint4*>(sQ + tile_offset<kBM>(row, cu * 8));
  }
}

template <int D>
void launch_hopper_fwd(const Params& p, cudaStream_t s) {
  const CUtensorMap tm = qkv_tensor_map(p, kBN);
  auto kernel = hopper_fwd_kernel<D>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, FwdSmem<D>::kBytes));
  dim3 grid((p.T + kBM - 1) / kBM, p.B * p.Hq);
  kernel<<<grid, kThreads, FwdSmem<D>::kBytes, s>>>(tm, p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void hopper_forward(const Params& p, cudaStream_t s) {
  if (p.D == 64) launch_hopper_fwd<64>(p, s);
  else launch_hopper_fwd<128>(p, s);
}

}  // namespace ringloom::cuda::attn
