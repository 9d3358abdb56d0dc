// Norm backward variants for dev/norms/harness.cu, timed beside the shipped kernels.
#pragma once

namespace {

// ---- previous design: the dgamma/dbeta sums in registers, each element widened per use ----
// x, dy and gamma stay in storage type across the row reduction and are widened again in
// the store loop; the sums take NP x VPT x VEC registers, which cap the warps per SM.
template <bool kCenter, typename T, int VEC, int VPT>
__global__ void __maxnreg__(VPT <= 1 ? 64 : VPT == 2 ? 96 : VPT == 3 ? 128 : VPT == 4 ? 168 : 255)
    registers_backward_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ gamma,
                    const float* __restrict__ mean, const float* __restrict__ rstd, T* __restrict__ dx,
                    float* __restrict__ partial, int64_t rows, int C, int tpr) {
  using V = RawVec<T, VEC>;
  constexpr int NP = kParams<kCenter>;
  extern __shared__ float combine[];  // [NP][C] when a block holds several rows
  __shared__ float2 scratch[32];
  const int rpb = blockDim.x / tpr;
  const int g = threadIdx.x / tpr, l = threadIdx.x % tpr;
  const int64_t stride = int64_t(gridDim.x) * rpb;

  float acc[NP][VPT][VEC];  // [0]: dgamma, [1]: dbeta
#pragma unroll
  for (int p = 0; p < NP; ++p)
#pragma unroll
    for (int j = 0; j < VPT; ++j)
#pragma unroll
      for (int k = 0; k < VEC; ++k) acc[p][j][k] = 0.0f;

  // rpb > 1 only with one warp per row, so the loop condition is warp-uniform; with one
  // block per row it is block-uniform (row_sum/row_sum2 have barriers).
  for (int64_t row = int64_t(blockIdx.x) * rpb + g; row < rows; row += stride) {
    V xv[VPT], dv[VPT], gm[VPT];
    load_row<T, VEC, VPT>(x + row * C, l, tpr, C, xv);
    load_row<T, VEC, VPT>(dy + row * C, l, tpr, C, dv);
    const float m = kCenter ? mean[row] : 0.0f, rs = rstd[row];
    // gamma: re-read for every row (L1 hits) rather than held: registers are the limit.
    load_row_volatile<T, VEC, VPT>(gamma, l, tpr, C, gm);
    // Columns past C hold x = dy = gamma = 0: they add nothing to the sums below.
    float2 s = make_float2(0.0f, 0.0f);  // sum g, sum g xhat
#pragma unroll
    for (int j = 0; j < VPT; ++j)
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const float xh = (raw_f32(xv[j], k) - m) * rs, d = raw_f32(dv[j], k);
        const float gk = d * raw_f32(gm[j], k);
        if constexpr (kCenter) s.x += gk;
        s.y += gk * xh;
        acc[0][j][k] += d * xh;
        if constexpr (kCenter) acc[NP - 1][j][k] += d;
      }
    if constexpr (kCenter) s = row_sum2(s, tpr, scratch);
    else s.y = row_sum(s.y, tpr, reinterpret_cast<float*>(scratch));
    const float mg = s.x / C, mgx = s.y / C;  // mg = 0 for RMSNorm
    T* dxr = dx + row * C;
#pragma unroll
    for (int j = 0; j < VPT; ++j) {
      const int col = (l + j * tpr) * VEC;
      if (col < C) {
        float o[VEC];
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const float xh = (raw_f32(xv[j], k) - m) * rs;
          o[k] = rs * (raw_f32(dv[j], k) * raw_f32(gm[j], k) - mg - xh * mgx);
        }
        store_vec<T, VEC>(dxr + col, o);
      }
    }
  }
  // The reduce kernel may start launching now (it waits for this grid to finish).
  asm volatile("griddepcontrol.launch_dependents;");

  // fn(sum, index in a [NP][C] row) for each sum this thread holds (columns < C).
  auto each_sum = [&](auto&& fn) {
#pragma unroll
    for (int j = 0; j < VPT; ++j) {
      const int col = (l + j * tpr) * VEC;
      if (col < C)
#pragma unroll
        for (int p = 0; p < NP; ++p)
#pragma unroll
          for (int k = 0; k < VEC; ++k) fn(acc[p][j][k], p * C + col + k);
    }
  };
  float* out = partial + int64_t(blockIdx.x) * NP * C;
  if (rpb == 1) {
    each_sum([&](float v, int i) { out[i] = v; });
    return;
  }
  // Several rows per block: add the row groups' sums in shared memory, group 0 first.
  for (int gi = 0; gi < rpb; ++gi) {
    if (g == gi) each_sum([&](float v, int i) { combine[i] = (gi == 0 ? 0.0f : combine[i]) + v; });
    __syncthreads();
  }
  for (int c = threadIdx.x; c < NP * C; c += blockDim.x) out[c] = combine[c];
}

int persistent(const void* kernel, int block, size_t smem, int64_t work_blocks, int* per_sm_out = nullptr) {
  int per_sm = 0;
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, block, smem));
  if (per_sm_out) *per_sm_out = per_sm;
  return int(std::max<int64_t>(1, std::min<int64_t>(int64_t(std::max(per_sm, 1)) * g_sms, work_blocks)));
}

// One shape and norm: shipped forward, shipped backward (with and without its reduce),
// then the variants; each backward checked against the shipped one first.
template <bool kCenter, int VPT>
void norm_shape(int64_t R, int C, int tpr, double copy) {
  using T = bf16;
  constexpr int VEC = 8, NP = kParams<kCenter>;
  const size_t n = size_t(R) * C;
  std::printf("%s %lldx%d bf16 (tpr %d, VPT %d)\n", kCenter ? "LayerNorm" : "RMSNorm", (long long)R, C, tpr, VPT);
  std::vector<T*> x(kCopies), dy(kCopies), dx(kCopies);
  std::vector<float*> mean(kCopies), rstd(kCopies);
  for (int i = 0; i < kCopies; ++i) {
    x[i] = reinterpret_cast<T*>(upload(random_bf16(n, 11 + i, 2.0f, 0.3f)));
    dy[i] = reinterpret_cast<T*>(upload(random_bf16(n, 101 + i, 1.0f)));
    CK(cudaMalloc(&dx[i], n * sizeof(T)));
    CK(cudaMalloc(&mean[i], R * 4));
    CK(cudaMalloc(&rstd[i], R * 4));
  }
  T* y;
  CK(cudaMalloc(&y, n * sizeof(T)));
  T* gamma = reinterpret_cast<T*>(upload(random_bf16(C, 7, 0.2f, 1.0f)));
  T* beta = reinterpret_cast<T*>(upload(random_bf16(C, 8, 0.2f)));
  float *dg, *dg_ref;
  CK(cudaMalloc(&dg, NP * C * 4));
  CK(cudaMalloc(&dg_ref, NP * C * 4));
  const int rpb = tpr == 32 ? 8 : 1, block = tpr == 32 ? 256 : tpr;  // forward, and the previous backward
  const int bwd_block = tpr == 32 ? 256 : tpr;  // the package's choice (kBackwardLayout)

  auto fwd = forward_kernel<kCenter, T, VEC, VPT>;
  auto forward = [&](int i) {
    const int k = i % kCopies;
    fwd<<<unsigned(ceil_div(R, rpb)), block, 0, g_stream>>>(x[k], gamma, beta, y, mean[k], rstd[k], R, C, tpr, 1e-5f);
  };
  for (int i = 0; i < kCopies; ++i) forward(i);
  CK(cudaStreamSynchronize(g_stream));
  const double same_f = copy_gbs(4 * n), same_b = copy_gbs(6 * n);
  std::printf("  same-size copy: %.0f GB/s (fwd bytes), %.0f GB/s (bwd bytes)\n", same_f, same_b);
  {
    const double us = time_us(forward);
    print({"forward (shipped)", us, 4.0 * n / us / 1e3}, copy, same_f);
  }

  // Shipped backward (sums in shared memory), at the layout the package picks and others.
  float* partial;
  CK(cudaMalloc(&partial, size_t(8) * g_sms * NP * C * 4 * 8));
  const Extras<T> ex{nullptr, nullptr, nullptr};
  auto bwd = backward_kernel<kCenter, false, T, VEC, VPT>;
  CK(cudaFuncSetAttribute(reinterpret_cast<const void*>(bwd), cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024));
  auto shipped_launch = [&](int blk, int* grid_out) {
    const size_t sb = size_t(NP) * VPT * VEC * 4 * blk;
    const int grid = persistent(reinterpret_cast<const void*>(bwd), blk, sb, ceil_div(R, blk / tpr));
    if (grid_out) *grid_out = grid;
    return [&, blk, sb, grid](int i, bool reduce) {
      const int k = i % kCopies;
      bwd<<<grid, blk, sb, g_stream>>>(dy[k], x[k], gamma, mean[k], rstd[k], dx[k], partial, R, C, ex, tpr);
      if (reduce) launch_reduce_partials<float>(partial, grid, NP, C, dg, NP > 1 ? dg + C : nullptr, g_stream, true);
    };
  };
  int grid0 = 0;
  auto shipped = shipped_launch(bwd_block, &grid0);
  CK(cudaMemset(dg, 0, NP * C * 4));
  shipped(0, true);
  CK(cudaStreamSynchronize(g_stream));
  CK(cudaGetLastError());
  const auto dx_ref = download(reinterpret_cast<uint16_t*>(dx[0]), n);
  const auto dgr = download(dg, NP * C);
  auto report = [&](const std::string& name, const std::function<void(int)>& fn) {
    // Check: dx within 1% (about two bf16 ulps) of the shipped kernel's, dgamma within 1e-4.
    CK(cudaMemset(dx[0], 0xff, n * sizeof(T)));
    CK(cudaMemset(dg, 0, NP * C * 4));
    fn(0);
    CK(cudaStreamSynchronize(g_stream));
    CK(cudaGetLastError());
    const auto d = download(reinterpret_cast<uint16_t*>(dx[0]), n);
    const auto s = download(dg, NP * C);
    size_t bad = 0;
    for (size_t e = 0; e < n; ++e) {
      const float a = bf16_bits_to_f32(d[e]), b = bf16_bits_to_f32(dx_ref[e]);
      if (!(std::fabs(a - b) <= 1e-2f * std::fabs(b) + 1e-6f)) ++bad;
    }
    for (int e = 0; e < NP * C; ++e)
      if (!(std::fabs(s[e] - dgr[e]) <= 1e-4f * std::fabs(dgr[e]) + 1e-3f)) ++bad;
    const double us = time_us(fn);
    print({name + (bad ? " MISMATCH " + std::to_string(bad) : ""), us, 6.0 * n / us / 1e3}, copy, same_b);
  };
  std::printf("  backward: grid %d of %d threads\n", grid0, bwd_block);
  report("backward (shipped)", [&](int i) { shipped(i, true); });
  {
    const double us = time_us([&](int i) { shipped(i, false); });
    print({"backward (shipped, without the reduce)", us, 6.0 * n / us / 1e3}, copy, same_b);
  }
  for (int blk : {128, 512}) {
    if (tpr > 32) continue;  // several rows per block: one warp per row only
    int per_sm = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, reinterpret_cast<const void*>(bwd), blk,
                                                     size_t(NP) * VPT * VEC * 4 * blk));
    if (per_sm == 0) continue;
    auto f = shipped_launch(blk, nullptr);
    report("backward (shipped, block " + std::to_string(blk) + ")", [&](int i) { f(i, true); });
  }
  {
    auto prev = registers_backward_kernel<kCenter, T, VEC, VPT>;
    const size_t comb = rpb > 1 ? size_t(NP * C) * 4 : 0;
    const int grid = persistent(reinterpret_cast<const void*>(prev), block, comb, ceil_div(R, rpb));
    report("backward (previous: sums in registers)", [&](int i) {
      const int k = i % kCopies;
      prev<<<grid, block, comb, g_stream>>>(dy[k], x[k], gamma, mean[k], rstd[k], dx[k], partial, R, C, tpr);
      launch_reduce_partials<float>(partial, grid, NP, C, dg, NP > 1 ? dg + C : nullptr, g_stream, true);
    });
  }
  for (int i = 0; i < kCopies; ++i) {
    CK(cudaFree(x[i]));
    CK(cudaFree(dy[i]));
    CK(cudaFree(dx[i]));
    CK(cudaFree(mean[i]));
    CK(cudaFree(rstd[i]));
  }
  CK(cudaFree(y));
  CK(cudaFree(partial));
  CK(cudaFree(gamma));
  CK(cudaFree(beta));
  CK(cudaFree(dg));
  CK(cudaFree(dg_ref));
}

void run_norm_variants(double copy) {
  norm_shape<true, 3>(16384, 768, 32, copy);
  norm_shape<false, 3>(16384, 768, 32, copy);
  norm_shape<true, 4>(8192, 4096, 128, copy);
  norm_shape<false, 4>(8192, 4096, 128, copy);
  norm_shape<true, 2>(8192, 4096, 256, copy);
  norm_shape<false, 2>(8192, 4096, 256, copy);
  norm_shape<true, 1>(8192, 4096, 512, copy);
  norm_shape<false, 1>(8192, 4096, 512, copy);
  norm_shape<true, 2>(16384, 768, 64, copy);
}

}  // namespace

#include "ops/cuda/cross_entropy_kernel.cuh"

namespace {

// Cross-entropy forward + backward over bf16 logits in place, at several launch shapes
// (threads per block, loads in flight per thread); the first is the shipped one.
void run_cross_entropy_variants(double copy) {
  using T = bf16;
  for (int64_t R : {16384, 8192}) {
    const int64_t V = 50304;
    const size_t n = size_t(R) * V;
    std::printf("cross-entropy %lldx%lld bf16 fwd+bwd\n", (long long)R, (long long)V);
    T* pristine = reinterpret_cast<T*>(upload(random_bf16(n, 5, 6.0f)));
    T* logits;
    CK(cudaMalloc(&logits, n * sizeof(T)));
    std::vector<int> th(R);
    uint32_t s = 17;
    for (auto& t : th) t = int((s = s * 1664525u + 1013904223u) % uint32_t(V));
    int* targets = upload(th);
    float* losses;
    CK(cudaMalloc(&losses, R * 4));
    const double same = copy_gbs(4 * n);
    std::printf("  same-size copy: %.0f GB/s\n", same);
    std::vector<float> loss_ref;
    std::vector<uint16_t> grad_ref;
    auto variant = [&](const char* name, auto kernel, int threads, bool backward) {
      const int grid = int(std::min<int64_t>(R, int64_t(g_sms) * 64));
      auto call = [&](int) {
        kernel<<<grid, threads, 0, g_stream>>>(logits, targets, losses, R, V, -100, 1.0f / R);
      };
      CK(cudaMemcpy(logits, pristine, n * sizeof(T), cudaMemcpyDeviceToDevice));
      call(0);
      CK(cudaStreamSynchronize(g_stream));
      CK(cudaGetLastError());
      const auto l = download(losses, R);
      const auto gr = download(reinterpret_cast<uint16_t*>(logits), n);
      size_t bad = 0;
      if (loss_ref.empty()) {
        loss_ref = l;
        grad_ref = gr;
      } else {
        for (int64_t i = 0; i < R; ++i)
          if (!(std::fabs(l[i] - loss_ref[i]) <= 1e-5f * std::fabs(loss_ref[i]) + 1e-5f)) ++bad;
        if (backward)
          for (size_t i = 0; i < n; i += 7) {
            const float a = bf16_bits_to_f32(gr[i]), b = bf16_bits_to_f32(grad_ref[i]);
            if (!(std::fabs(a - b) <= 1e-2f * std::fabs(b) + 1e-9f)) ++bad;
          }
      }
      const double us = time_us(call, 10);
      const double bytes = (backward ? 4.0 : 2.0) * n;
      print({std::string(name) + (bad ? " MISMATCH " + std::to_string(bad) : ""), us, bytes / us / 1e3}, copy,
            backward ? same : copy_gbs(size_t(bytes)));
    };
    using xent::cross_entropy_kernel;
    variant("fwd+bwd 1024 threads, 4 loads", cross_entropy_kernel<T, true, 1024, 4>, 1024, true);
    variant("fwd+bwd 1024 threads, 2 loads (previous)", cross_entropy_kernel<T, true, 1024, 2>, 1024, true);
    variant("fwd+bwd 512 threads, 4 loads (shipped)", cross_entropy_kernel<T, true, 512, 4>, 512, true);
    variant("fwd+bwd 384 threads, 4 loads", cross_entropy_kernel<T, true, 384, 4>, 384, true);
    variant("fwd+bwd 512 threads, 3 loads", cross_entropy_kernel<T, true, 512, 3>, 512, true);
    variant("fwd+bwd 256 threads, 8 loads", cross_entropy_kernel<T, true, 256, 8>, 256, true);
    variant("fwd+bwd 256 threads, 4 loads", cross_entropy_kernel<T, true, 256, 4>, 256, true);
    variant("fwd 1024 threads, 2 loads (previous)", cross_entropy_kernel<T, false, 1024, 2>, 1024, false);
    variant("fwd 512 threads, 4 loads (shipped)", cross_entropy_kernel<T, false, 512, 4>, 512, false);
    variant("fwd 256 threads, 4 loads", cross_entropy_kernel<T, false, 256, 4>, 256, false);
    loss_ref.clear();
    CK(cudaFree(pristine));
    CK(cudaFree(logits));
    CK(cudaFree(targets));
    CK(cudaFree(losses));
  }
}

}  // namespace
