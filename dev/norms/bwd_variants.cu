// The norm backward's two loading schemes timed against each other and against a device
// copy, in one process on one GPU, outside the package (seconds to build):
//
//   nvcc -std=c++17 -arch=sm_90 --expt-relaxed-constexpr -O3 -Icsrc -o /tmp/bwd_variants \
//        dev/norms/bwd_variants.cu && /tmp/bwd_variants
//
// staged: x/dy rows through the cp.async shared-memory ring (what the package runs for
// 16-byte aligned rows up to 64 KB of staging); direct: the row loaded straight into
// registers (what it runs for wider rows). Both are the package's own kernel instances
// (backward_kernel<..., kStaged>) with the package's launch layout, each followed by the
// partial reduce. Also: the backward kernel alone (no reduce), and the forward, with a
// variant of it at 768 columns (forward_f32_kernel below).
// bf16, 16384x768 and 8192x4096, LayerNorm and RMSNorm. Timing: CUDA events around 200
// back-to-back calls rotating over 4 input copies (no L2 reuse), median of 5. Bytes
// counted: forward x + y (4 per element), backward x + dy + dx (6 per element), as
// benchmarks/bench_layernorm.py counts them. Checks: dx of both variants bitwise equal.
#include <cstdio>
#include <cstring>
#include <vector>

#include "ops/cuda/norm_kernels.cuh"

using namespace ringloom::cuda;
using namespace ringloom::cuda::norm;
using bf16 = __nv_bfloat16;

#define CK(x)                                                                              \
  do {                                                                                     \
    cudaError_t e_ = (x);                                                                  \
    if (e_ != cudaSuccess) {                                                               \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                        \
    }                                                                                      \
  } while (0)

__global__ void fill(bf16* p, int64_t n, uint32_t seed, float scale, float shift) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
    p[i] = __float2bfloat16(shift + scale * (float(h & 0xffffff) / 16777216.0f - 0.5f));
  }
}

// Forward variant (one warp per row, 16-byte vectors): x widened to fp32 right after its
// load and held so, as the package's forward did before (55 registers in its general form,
// 4 blocks of 256 per SM at 768 bf16; this one-layout copy takes 48: 5 blocks), where
// forward_kernel now holds it in storage type (40 registers: 6 blocks). Same arithmetic in
// the same order, so y must be bitwise equal.
template <bool kCenter, int VPT>
__global__ void forward_f32_kernel(const bf16* __restrict__ x, const bf16* __restrict__ gamma,
                                   const bf16* __restrict__ beta, bf16* __restrict__ y, float* __restrict__ mean_out,
                                   float* __restrict__ rstd_out, int64_t rows, int C, float eps) {
  constexpr int VEC = 8, TPR = 32;
  const int g = threadIdx.x / TPR, l = threadIdx.x % TPR;
  const int64_t row = blockIdx.x * 8LL + g;
  if (row >= rows) return;
  float v[VPT][VEC];
  float s = 0.0f;
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    const int col = (l + j * TPR) * VEC;
    if (col < C) {
      load_vec<bf16, VEC>(x + row * C + col, v[j]);
    } else {
#pragma unroll
      for (int k = 0; k < VEC; ++k) v[j][k] = 0.0f;
    }
#pragma unroll
    for (int k = 0; k < VEC; ++k) s += v[j][k];
  }
  const float mean = kCenter ? warp_sum(s) / C : 0.0f;
  float q = 0.0f;
#pragma unroll
  for (int j = 0; j < VPT; ++j)
    if ((l + j * TPR) * VEC < C)
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const float d = v[j][k] - mean;
        q += d * d;
      }
  const float rstd = rsqrtf(warp_sum(q) / C + eps);
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    const int col = (l + j * TPR) * VEC;
    if (col < C) {
      float gm[VEC], o[VEC];
      load_vec<bf16, VEC>(gamma + col, gm);
#pragma unroll
      for (int k = 0; k < VEC; ++k) o[k] = (v[j][k] - mean) * rstd * gm[k];
      if constexpr (kCenter) {
        float bt[VEC];
        load_vec<bf16, VEC>(beta + col, bt);
#pragma unroll
        for (int k = 0; k < VEC; ++k) o[k] += bt[k];
      }
      store_vec<bf16, VEC>(y + row * C + col, o);
    }
  }
  if (l == 0) {
    if constexpr (kCenter) mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

template <typename F>
float time_ms(F fn, int iters = 200) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  std::vector<float> t;
  for (int i = 0; i < 20; ++i) fn(i);
  for (int r = 0; r < 5; ++r) {
    CK(cudaEventRecord(a));
    for (int i = 0; i < iters; ++i) fn(i);
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms / iters);
  }
  std::sort(t.begin(), t.end());
  return t[2];
}

int g_sms = 0;
constexpr int kMaxGrid = 4096;  // partial rows allocated

template <typename K>
int grid_of(K kernel, int block, size_t smem, int64_t work) {
  if (smem > 48 * 1024) CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  int per = 0;
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, kernel, block, smem));
  return int(std::min<int64_t>(int64_t(std::max(per, 1)) * g_sms, work));
}

template <bool kCenter, int VPT>
void run_shape(int64_t R, int C, int tpr, double copy_gbs) {
  constexpr int NP = kParams<kCenter>, L2 = 4;
  const int64_t n = R * C;
  bf16 *x, *dy, *y, *dx, *dx2, *gamma, *beta;
  float *mean, *rstd, *partial, *dg;
  CK(cudaMalloc(&x, L2 * n * 2));
  CK(cudaMalloc(&dy, L2 * n * 2));
  CK(cudaMalloc(&y, n * 2));
  CK(cudaMalloc(&dx, n * 2));
  CK(cudaMalloc(&dx2, n * 2));
  CK(cudaMalloc(&gamma, C * 2));
  CK(cudaMalloc(&beta, C * 2));
  CK(cudaMalloc(&mean, L2 * R * 4));
  CK(cudaMalloc(&rstd, L2 * R * 4));
  CK(cudaMalloc(&partial, int64_t(kMaxGrid) * NP * C * 4));
  CK(cudaMalloc(&dg, NP * C * 4));
  fill<<<1024, 256>>>(x, L2 * n, 1, 6.0f, 1.5f);
  fill<<<1024, 256>>>(dy, L2 * n, 2, 2.0f, 0.0f);
  fill<<<64, 256>>>(gamma, C, 3, 0.6f, 1.0f);
  fill<<<64, 256>>>(beta, C, 4, 0.6f, 0.0f);
  const int rpb = tpr == 32 ? 8 : 1, block = tpr == 32 ? 256 : tpr;
  const unsigned fgrid = unsigned((R + rpb - 1) / rpb);
  auto fwd = [&](int i) {
    const int k = i % L2;
    forward_kernel<kCenter, bf16, 8, VPT><<<fgrid, block>>>(x + k * n, gamma, beta, y, mean + k * R, rstd + k * R, R,
                                                            C, tpr, 1e-5f);
  };
  for (int k = 0; k < L2; ++k) fwd(k);
  CK(cudaDeviceSynchronize());

  RowConfig cfg;
  cfg.vec = 8, cfg.tpr = tpr, cfg.vpt = VPT;
  const size_t combine = rpb > 1 ? size_t(rpb) * NP * C * 4 : 0;
  auto staged_k = backward_kernel<kCenter, bf16, 8, VPT, true>;
  auto direct_k = backward_kernel<kCenter, bf16, 8, VPT, false>;
  const size_t smem_s = std::max(staging_bytes(cfg), combine), smem_d = combine;
  const int64_t work = (R + rpb - 1) / rpb;
  const int grid_s = grid_of(staged_k, block, smem_s, work), grid_d = grid_of(direct_k, block, smem_d, work);
  if (std::max(grid_s, grid_d) > kMaxGrid) {
    std::fprintf(stderr, "grid %d exceeds the partial buffer (%d rows)\n", std::max(grid_s, grid_d), kMaxGrid);
    std::exit(1);
  }
  auto bwd = [&](auto kernel, int grid, size_t smem, bf16* out, bool reduce) {
    return [=](int i) {
      const int k = i % L2;
      kernel<<<grid, block, smem>>>(dy + k * n, x + k * n, gamma, mean + k * R, rstd + k * R, out, partial, R, C,
                                    tpr);
      if (reduce)
        reduce_partials_kernel<float><<<unsigned((NP * C + 31) / 32), dim3(32, kReduceSlices)>>>(
            partial, grid, C, int64_t(NP) * C, dg, NP > 1 ? dg + C : nullptr, true);
    };
  };
  bwd(staged_k, grid_s, smem_s, dx, false)(0);
  bwd(direct_k, grid_d, smem_d, dx2, false)(0);
  CK(cudaDeviceSynchronize());
  std::vector<uint16_t> h1(n), h2(n);
  CK(cudaMemcpy(h1.data(), dx, n * 2, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(h2.data(), dx2, n * 2, cudaMemcpyDeviceToHost));
  const bool same = std::memcmp(h1.data(), h2.data(), n * 2) == 0;

  const char* name = kCenter ? "LayerNorm" : "RMSNorm";
  auto row = [&](const char* what, float ms, double bytes) {
    const double gbs = bytes / (ms * 1e-3) / 1e9;
    std::printf("%-9s %6lldx%-5d %-28s %8.4f ms %7.0f GB/s %5.1f%% of copy\n", name, (long long)R, C, what, ms, gbs,
                100.0 * gbs / copy_gbs);
  };
  row("fwd", time_ms(fwd), 4.0 * n);
  if (tpr == 32) {  // the forward variant (one warp per row only)
    bf16* y2;
    float *m2, *r2;
    CK(cudaMalloc(&y2, n * 2));
    CK(cudaMalloc(&m2, R * 4));
    CK(cudaMalloc(&r2, R * 4));
    auto fwd_f32 = [&](int i) {
      const int k = i % L2;
      forward_f32_kernel<kCenter, VPT><<<fgrid, 256>>>(x + k * n, gamma, beta, y2, m2, r2, R, C, 1e-5f);
    };
    fwd(0);
    fwd_f32(0);
    CK(cudaDeviceSynchronize());
    std::vector<uint16_t> a(n), b(n);
    CK(cudaMemcpy(a.data(), y, n * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(b.data(), y2, n * 2, cudaMemcpyDeviceToHost));
    row("fwd variant: x held in fp32", time_ms(fwd_f32), 4.0 * n);
    std::printf("%-9s %6lldx%-5d y variant == y package (bitwise): %s\n", kCenter ? "LayerNorm" : "RMSNorm",
                (long long)R, C, std::memcmp(a.data(), b.data(), n * 2) == 0 ? "yes" : "NO");
    CK(cudaFree(y2));
    CK(cudaFree(m2));
    CK(cudaFree(r2));
  }
  char what[64];
  std::snprintf(what, sizeof what, "bwd staged (grid %d)", grid_s);
  row(what, time_ms(bwd(staged_k, grid_s, smem_s, dx, true)), 6.0 * n);
  std::snprintf(what, sizeof what, "bwd direct (grid %d)", grid_d);
  row(what, time_ms(bwd(direct_k, grid_d, smem_d, dx2, true)), 6.0 * n);
  row("bwd staged, no reduce", time_ms(bwd(staged_k, grid_s, smem_s, dx, false)), 6.0 * n);
  row("bwd direct, no reduce", time_ms(bwd(direct_k, grid_d, smem_d, dx2, false)), 6.0 * n);
  std::printf("%-9s %6lldx%-5d dx staged == dx direct (bitwise): %s\n", name, (long long)R, C, same ? "yes" : "NO");
  for (void* p : {(void*)x, (void*)dy, (void*)y, (void*)dx, (void*)dx2, (void*)gamma, (void*)beta, (void*)mean,
                  (void*)rstd, (void*)partial, (void*)dg})
    CK(cudaFree(p));
}

int main() {
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  g_sms = prop.multiProcessorCount;
  const size_t nbytes = size_t(2) << 30;
  void *src, *dst;
  CK(cudaMalloc(&src, nbytes));
  CK(cudaMalloc(&dst, nbytes));
  CK(cudaMemset(src, 1, nbytes));
  const float copy_ms = time_ms([&](int) { CK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice)); }, 10);
  const double copy_gbs = 2.0 * nbytes / (copy_ms * 1e-3) / 1e9;
  CK(cudaFree(src));
  CK(cudaFree(dst));
  std::printf("%s, %d SMs; device copy %.0f GB/s (read + write)\n", prop.name, g_sms, copy_gbs);
  run_shape<true, 3>(16384, 768, 32, copy_gbs);
  run_shape<false, 3>(16384, 768, 32, copy_gbs);
  run_shape<true, 4>(8192, 4096, 128, copy_gbs);
  run_shape<false, 4>(8192, 4096, 128, copy_gbs);
  return 0;
}
