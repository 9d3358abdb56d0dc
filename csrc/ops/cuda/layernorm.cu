// LayerNorm forward and backward; the math is in ops/layernorm.h, the thread layout and
// the partial-sum scheme for dgamma/dbeta in ops/cuda/norm.cuh.
//
// Bytes (bf16, rows x C): forward reads x and writes y (4 bytes per element, plus 8 per
// row of stats); backward reads x and dy and writes dx (6 bytes per element). At
// 16384 x 768 that is 50 MB + 75 MB, about 42 us at 3 TB/s.
#include "ops/cuda/norm.cuh"
#include "ops/layernorm.h"

namespace ringloom::cuda {

namespace {

using norm::row_sum;

template <typename T, int VEC, int VPT>
__global__ void layernorm_forward_kernel(const T* __restrict__ x, const T* __restrict__ gamma,
                                         const T* __restrict__ beta, T* __restrict__ y, float* __restrict__ mean_out,
                                         float* __restrict__ rstd_out, int64_t rows, int C, int tpr, float eps) {
  __shared__ float scratch[32];
  const int rpb = tpr == 32 ? 8 : 1;
  const int g = threadIdx.x / tpr, l = threadIdx.x % tpr;
  const int64_t row = blockIdx.x * int64_t(rpb) + g;
  if (row >= rows) return;  // only possible with one warp per row: the whole warp leaves
  const T* xr = x + row * C;

  float v[VPT][VEC];
  float s = 0.0f;
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    const int col = (l + j * tpr) * VEC;
    if (col < C) {
      load_vec<T, VEC>(xr + col, v[j]);
    } else {
#pragma unroll
      for (int k = 0; k < VEC; ++k) v[j][k] = 0.0f;
    }
#pragma unroll
    for (int k = 0; k < VEC; ++k) s += v[j][k];
  }
  const float mean = row_sum(s, tpr, scratch) / C;
  // Variance from the registers, around the mean: no cancellation as in E[x^2] - mean^2.
  float q = 0.0f;
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    if ((l + j * tpr) * VEC < C) {
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const float d = v[j][k] - mean;
        q += d * d;
      }
    }
  }
  const float rstd = rsqrtf(row_sum(q, tpr, scratch) / C + eps);

  T* yr = y + row * C;
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    const int col = (l + j * tpr) * VEC;
    if (col < C) {
      float gm[VEC], bt[VEC], o[VEC];
      load_vec<T, VEC>(gamma + col, gm);
      load_vec<T, VEC>(beta + col, bt);
#pragma unroll
      for (int k = 0; k < VEC; ++k) o[k] = (v[j][k] - mean) * rstd * gm[k] + bt[k];
      store_vec<T, VEC>(yr + col, o);
    }
  }
  if (l == 0) {
    mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

// dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy * gamma; per-block partials of
// dgamma = sum dy xhat and dbeta = sum dy go to partial[blockIdx.x][0|1][C].
// blockDim.x / tpr rows per block, each row group walking rows with a grid stride. x, dy
// and gamma stay in storage type (norm::RawVec) and are converted where used; all of a
// row's loads are issued before the first use (loading and summing one vector at a time,
// which the compiler keeps in order, costs three round trips to memory per row instead of
// one).
template <typename T, int VEC, int VPT>
__global__ void __maxnreg__(norm::bwd_max_regs(VPT))
    layernorm_backward_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ gamma,
                              const float* __restrict__ mean, const float* __restrict__ rstd, T* __restrict__ dx,
                              float* __restrict__ partial, int64_t rows, int C, int tpr) {
  using V = norm::RawVec<T, VEC>;
  extern __shared__ float combine[];  // [2][C] when a block holds several rows
  __shared__ float2 scratch[32];
  const int rpb = blockDim.x / tpr;
  const int g = threadIdx.x / tpr, l = threadIdx.x % tpr;
  const int64_t stride = int64_t(gridDim.x) * rpb;

  float dg[VPT][VEC], db[VPT][VEC];
#pragma unroll
  for (int j = 0; j < VPT; ++j)
#pragma unroll
    for (int k = 0; k < VEC; ++k) dg[j][k] = db[j][k] = 0.0f;

  // rpb > 1 only with one warp per row, so the loop condition is warp-uniform; with one
  // block per row it is block-uniform (row_sum2 has barriers).
  for (int64_t row = int64_t(blockIdx.x) * rpb + g; row < rows; row += stride) {
    V xv[VPT], dv[VPT], gm[VPT];
    norm::load_row<T, VEC, VPT>(x + row * C, l, tpr, C, xv);
    norm::load_row<T, VEC, VPT>(dy + row * C, l, tpr, C, dv);
    const float m = mean[row], rs = rstd[row];
    // gamma: re-read for every row (L1 hits) rather than held: registers are the limit.
    norm::load_row_volatile<T, VEC, VPT>(gamma, l, tpr, C, gm);
    // Columns past C hold x = dy = gamma = 0: they add nothing to the sums below.
    float2 s = make_float2(0.0f, 0.0f);  // sum g, sum g xhat
#pragma unroll
    for (int j = 0; j < VPT; ++j)
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const float xh = (norm::raw_f32(xv[j], k) - m) * rs, d = norm::raw_f32(dv[j], k);
        const float gk = d * norm::raw_f32(gm[j], k);
        s.x += gk;
        s.y += gk * xh;
        dg[j][k] += d * xh;
        db[j][k] += d;
      }
    s = norm::row_sum2(s, tpr, scratch);
    const float mg = s.x / C, mgx = s.y / C;
    T* dxr = dx + row * C;
#pragma unroll
    for (int j = 0; j < VPT; ++j) {
      const int col = (l + j * tpr) * VEC;
      if (col < C) {
        float o[VEC];
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const float xh = (norm::raw_f32(xv[j], k) - m) * rs;
          o[k] = rs * (norm::raw_f32(dv[j], k) * norm::raw_f32(gm[j], k) - mg - xh * mgx);
        }
        store_vec<T, VEC>(dxr + col, o);
      }
    }
  }
  // The reduce kernel may start launching now (it waits for this grid to finish).
  asm volatile("griddepcontrol.launch_dependents;");

  float* out = partial + int64_t(blockIdx.x) * 2 * C;
  if (rpb == 1) {
#pragma unroll
    for (int j = 0; j < VPT; ++j) {
      const int col = (l + j * tpr) * VEC;
      if (col < C)
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          out[col + k] = dg[j][k];
          out[C + col + k] = db[j][k];
        }
    }
    return;
  }
  // Several rows per block: add the row groups' sums in shared memory, group 0 first.
  for (int gi = 0; gi < rpb; ++gi) {
    if (g == gi) {
#pragma unroll
      for (int j = 0; j < VPT; ++j) {
        const int col = (l + j * tpr) * VEC;
        if (col < C)
#pragma unroll
          for (int k = 0; k < VEC; ++k) {
            combine[col + k] = (gi == 0 ? 0.0f : combine[col + k]) + dg[j][k];
            combine[C + col + k] = (gi == 0 ? 0.0f : combine[C + col + k]) + db[j][k];
          }
      }
    }
    __syncthreads();
  }
  for (int c = threadIdx.x; c < 2 * C; c += blockDim.x) out[c] = combine[c];
}

// Rows too wide for the register kernels (norm::choose_config returned tpr = 0): one
// block per row, each pass re-reading the row (from L2). The backward grid is persistent;
// each thread owns the columns c = threadIdx.x (mod blockDim.x) of its block's partial row
// and adds into it in row order, so the result stays deterministic without atomics.
template <typename T>
__global__ void layernorm_forward_wide_kernel(const T* __restrict__ x, const T* __restrict__ gamma,
                                              const T* __restrict__ beta, T* __restrict__ y,
                                              float* __restrict__ mean_out, float* __restrict__ rstd_out,
                                              int64_t rows, int C, float eps) {
  __shared__ float scratch[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * C;
    float s = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) s += to_f32(xr[c]);
    const float mean = block_sum(s, scratch) / C;
    float q = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
      const float d = to_f32(xr[c]) - mean;
      q += d * d;
    }
    const float rstd = rsqrtf(block_sum(q, scratch) / C + eps);
    for (int c = threadIdx.x; c < C; c += blockDim.x)
      y[row * C + c] = from_f32<T>((to_f32(xr[c]) - mean) * rstd * to_f32(gamma[c]) + to_f32(beta[c]));
    if (threadIdx.x == 0) {
      mean_out[row] = mean;
      rstd_out[row] = rstd;
    }
  }
}

template <typename T>
__global__ void layernorm_backward_wide_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                               const T* __restrict__ gamma, const float* __restrict__ mean,
                                               const float* __restrict__ rstd, T* __restrict__ dx,
                                               float* __restrict__ partial, int64_t rows, int C) {
  __shared__ float scratch[32];
  float* pg = partial + int64_t(blockIdx.x) * 2 * C;
  float* pb = pg + C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) pg[c] = pb[c] = 0.0f;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * C;
    const T* dyr = dy + row * C;
    const float m = mean[row], rs = rstd[row];
    float sg = 0.0f, sgx = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
      const float xh = (to_f32(xr[c]) - m) * rs, d = to_f32(dyr[c]), g = d * to_f32(gamma[c]);
      sg += g;
      sgx += g * xh;
      pg[c] += d * xh;
      pb[c] += d;
    }
    const float mg = block_sum(sg, scratch) / C;
    const float mgx = block_sum(sgx, scratch) / C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
      const float xh = (to_f32(xr[c]) - m) * rs;
      dx[row * C + c] = from_f32<T>(rs * (to_f32(dyr[c]) * to_f32(gamma[c]) - mg - xh * mgx));
    }
  }
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> layernorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                                     float eps) {
  const int64_t C = x.size(-1);
  const int64_t rows = C == 0 ? 0 : x.numel() / C;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty({rows}, DType::Float32, x.device());
  Tensor rstd = Tensor::empty({rows}, DType::Float32, x.device());
  if (rows == 0) return {y, mean, rstd};
  OpContext ctx(x);
  RL_DISPATCH_FLOAT(x.dtype(), T, {
    const int vec = norm::vec_width<T>(C, {x.data(), y.data(), gamma.data(), beta.data()});
    auto run = [&](auto vec_c) {
      constexpr int VEC = decltype(vec_c)::value;
      auto kernel_of = [](int vpt) -> const void* {
        RL_NORM_DISPATCH_VPT(vpt, V, return reinterpret_cast<const void*>(layernorm_forward_kernel<T, VEC, V>));
        return nullptr;
      };
      const norm::RowConfig cfg = norm::choose_config(C, VEC, kernel_of);
      if (cfg.tpr == 0) {
        layernorm_forward_wide_kernel<T><<<grid_for(rows * norm::kWideThreads, norm::kWideThreads, ctx.device),
                                           norm::kWideThreads, 0, ctx.stream>>>(
            x.data_as<T>(), gamma.data_as<T>(), beta.data_as<T>(), y.data_as<T>(), mean.data_as<float>(),
            rstd.data_as<float>(), rows, int(C), eps);
        return;
      }
      const unsigned grid = unsigned(ceil_div(rows, cfg.rows_per_block()));
      RL_NORM_DISPATCH_VPT(cfg.vpt, VPT, {
        layernorm_forward_kernel<T, VEC, VPT><<<grid, cfg.block(), 0, ctx.stream>>>(
            x.data_as<T>(), gamma.data_as<T>(), beta.data_as<T>(), y.data_as<T>(), mean.data_as<float>(),
            rstd.data_as<float>(), rows, int(C), cfg.tpr, eps);
      });
    };
    if (vec == 1) run(std::integral_constant<int, 1>{});
    else run(std::integral_constant<int, Pack<T>::kN>{});
  });
  CUDA_CHECK_LAUNCH();
  return {y, mean, rstd};
}

Tensor layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                          const Tensor& rstd, Tensor& dgamma, Tensor& dbeta) {
  const int64_t C = x.size(-1);
  const int64_t rows = C == 0 ? 0 : x.numel() / C;
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (rows == 0) return dx;
  RL_CHECK(dgamma.dtype() == dbeta.dtype(), Type, "layernorm_backward: dgamma (", dgamma.describe(),
           ") and dbeta (", dbeta.describe(), ") must have the same dtype");
  OpContext ctx(x);
  RL_DISPATCH_FLOAT(x.dtype(), T, {
    const int vec = norm::vec_width<T>(C, {x.data(), dy.data(), dx.data(), gamma.data()});
    auto run = [&](auto vec_c) {
      constexpr int VEC = decltype(vec_c)::value;
      auto kernel_of = [](int vpt) -> const void* {
        RL_NORM_DISPATCH_VPT(vpt, V, return reinterpret_cast<const void*>(layernorm_backward_kernel<T, VEC, V>));
        return nullptr;
      };
      const norm::RowConfig cfg = norm::choose_config(C, VEC, kernel_of);
      if (cfg.tpr == 0) {
        auto kernel = layernorm_backward_wide_kernel<T>;
        const int grid = norm::persistent_grid(kernel, norm::kWideThreads, 0, rows, ctx.device);
        Tensor partial = Tensor::empty({grid, 2, C}, DType::Float32, x.device());
        kernel<<<grid, norm::kWideThreads, 0, ctx.stream>>>(dy.data_as<T>(), x.data_as<T>(), gamma.data_as<T>(),
                                                            mean.data_as<float>(), rstd.data_as<float>(),
                                                            dx.data_as<T>(), partial.data_as<float>(), rows, int(C));
        CUDA_CHECK_LAUNCH();
        norm::reduce_partials(partial, grid, 2, C, dgamma, &dbeta, ctx.stream);
        return;
      }
      const size_t smem = cfg.rows_per_block() > 1 ? size_t(2 * C) * sizeof(float) : 0;
      const int64_t groups = ceil_div(rows, cfg.rows_per_block());
      RL_NORM_DISPATCH_VPT(cfg.vpt, VPT, {
        auto kernel = layernorm_backward_kernel<T, VEC, VPT>;
        const int grid = norm::persistent_grid(kernel, cfg.block(), smem, groups, ctx.device);
        Tensor partial = Tensor::empty({grid, 2, C}, DType::Float32, x.device());
        kernel<<<grid, cfg.block(), smem, ctx.stream>>>(dy.data_as<T>(), x.data_as<T>(), gamma.data_as<T>(),
                                                        mean.data_as<float>(), rstd.data_as<float>(), dx.data_as<T>(),
                                                        partial.data_as<float>(), rows, int(C), cfg.tpr);
        CUDA_CHECK_LAUNCH();
        norm::reduce_partials(partial, grid, 2, C, dgamma, &dbeta, ctx.stream);
      });
    };
    if (vec == 1) run(std::integral_constant<int, 1>{});
    else run(std::integral_constant<int, Pack<T>::kN>{});
  });
  return dx;
}

}  // namespace ringloom::cuda
