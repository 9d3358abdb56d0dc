// RMSNorm forward and backward; the math is in ops/rmsnorm.h, the thread layout and the
// partial-sum scheme for dgamma in ops/cuda/norm.cuh. Same bytes as LayerNorm less beta.
#include "ops/cuda/norm.cuh"
#include "ops/rmsnorm.h"

namespace ringloom::cuda {

namespace {

using norm::row_sum;

template <typename T, int VEC, int VPT>
__global__ void rmsnorm_forward_kernel(const T* __restrict__ x, const T* __restrict__ gamma, T* __restrict__ y,
                                       float* __restrict__ rstd_out, int64_t rows, int C, int tpr, float eps) {
  __shared__ float scratch[32];
  const int rpb = tpr == 32 ? 8 : 1;
  const int g = threadIdx.x / tpr, l = threadIdx.x % tpr;
  const int64_t row = blockIdx.x * int64_t(rpb) + g;
  if (row >= rows) return;  // only possible with one warp per row: the whole warp leaves
  const T* xr = x + row * C;

  float v[VPT][VEC];
  float q = 0.0f;
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
    for (int k = 0; k < VEC; ++k) q += v[j][k] * v[j][k];
  }
  const float rstd = rsqrtf(row_sum(q, tpr, scratch) / C + eps);
  T* yr = y + row * C;
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    const int col = (l + j * tpr) * VEC;
    if (col < C) {
      float gm[VEC], o[VEC];
      load_vec<T, VEC>(gamma + col, gm);
#pragma unroll
      for (int k = 0; k < VEC; ++k) o[k] = v[j][k] * rstd * gm[k];
      store_vec<T, VEC>(yr + col, o);
    }
  }
  if (l == 0) rstd_out[row] = rstd;
}

// dx = rstd (g - x rstd^2 mean(g x)), g = dy * gamma; per-block partials of
// dgamma = sum dy x rstd go to partial[blockIdx.x][C]. Layout and loads as in
// layernorm_backward_kernel (layernorm.cu).
template <typename T, int VEC, int VPT>
__global__ void __maxnreg__(norm::bwd_max_regs(VPT))
    rmsnorm_backward_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ gamma,
                            const float* __restrict__ rstd, T* __restrict__ dx, float* __restrict__ partial,
                            int64_t rows, int C, int tpr) {
  using V = norm::RawVec<T, VEC>;
  extern __shared__ float combine[];  // [C] when a block holds several rows
  __shared__ float scratch[32];
  const int rpb = blockDim.x / tpr;
  const int g = threadIdx.x / tpr, l = threadIdx.x % tpr;
  const int64_t stride = int64_t(gridDim.x) * rpb;

  float dg[VPT][VEC];
#pragma unroll
  for (int j = 0; j < VPT; ++j)
#pragma unroll
    for (int k = 0; k < VEC; ++k) dg[j][k] = 0.0f;

  // Warp-uniform loop with one warp per row, block-uniform with one block per row.
  for (int64_t row = int64_t(blockIdx.x) * rpb + g; row < rows; row += stride) {
    V xv[VPT], dv[VPT], gm[VPT];
    norm::load_row<T, VEC, VPT>(x + row * C, l, tpr, C, xv);
    norm::load_row<T, VEC, VPT>(dy + row * C, l, tpr, C, dv);
    const float rs = rstd[row];
    // gamma: re-read for every row (L1 hits) rather than held: registers are the limit.
    norm::load_row_volatile<T, VEC, VPT>(gamma, l, tpr, C, gm);
    // Columns past C hold x = dy = gamma = 0: they add nothing to the sums below.
    float sgx = 0.0f;
#pragma unroll
    for (int j = 0; j < VPT; ++j)
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const float xk = norm::raw_f32(xv[j], k), d = norm::raw_f32(dv[j], k);
        sgx += d * norm::raw_f32(gm[j], k) * xk;
        dg[j][k] += d * xk * rs;
      }
    const float c = rs * rs * row_sum(sgx, tpr, scratch) / C;
    T* dxr = dx + row * C;
#pragma unroll
    for (int j = 0; j < VPT; ++j) {
      const int col = (l + j * tpr) * VEC;
      if (col < C) {
        float o[VEC];
#pragma unroll
        for (int k = 0; k < VEC; ++k)
          o[k] = rs * (norm::raw_f32(dv[j], k) * norm::raw_f32(gm[j], k) - norm::raw_f32(xv[j], k) * c);
        store_vec<T, VEC>(dxr + col, o);
      }
    }
  }
  // The reduce kernel may start launching now (it waits for this grid to finish).
  asm volatile("griddepcontrol.launch_dependents;");

  float* out = partial + int64_t(blockIdx.x) * C;
  if (rpb == 1) {
#pragma unroll
    for (int j = 0; j < VPT; ++j) {
      const int col = (l + j * tpr) * VEC;
      if (col < C)
#pragma unroll
        for (int k = 0; k < VEC; ++k) out[col + k] = dg[j][k];
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
          for (int k = 0; k < VEC; ++k) combine[col + k] = (gi == 0 ? 0.0f : combine[col + k]) + dg[j][k];
      }
    }
    __syncthreads();
  }
  for (int c = threadIdx.x; c < C; c += blockDim.x) out[c] = combine[c];
}

// Rows too wide for the register kernels: see layernorm.cu's wide-row kernels.
template <typename T>
__global__ void rmsnorm_forward_wide_kernel(const T* __restrict__ x, const T* __restrict__ gamma, T* __restrict__ y,
                                            float* __restrict__ rstd_out, int64_t rows, int C, float eps) {
  __shared__ float scratch[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * C;
    float q = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
      const float v = to_f32(xr[c]);
      q += v * v;
    }
    const float rstd = rsqrtf(block_sum(q, scratch) / C + eps);
    for (int c = threadIdx.x; c < C; c += blockDim.x)
      y[row * C + c] = from_f32<T>(to_f32(xr[c]) * rstd * to_f32(gamma[c]));
    if (threadIdx.x == 0) rstd_out[row] = rstd;
  }
}

template <typename T>
__global__ void rmsnorm_backward_wide_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                             const T* __restrict__ gamma, const float* __restrict__ rstd,
                                             T* __restrict__ dx, float* __restrict__ partial, int64_t rows, int C) {
  __shared__ float scratch[32];
  float* pg = partial + int64_t(blockIdx.x) * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) pg[c] = 0.0f;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * C;
    const T* dyr = dy + row * C;
    const float rs = rstd[row];
    float sgx = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
      const float xv = to_f32(xr[c]), d = to_f32(dyr[c]);
      sgx += d * to_f32(gamma[c]) * xv;
      pg[c] += d * xv * rs;
    }
    const float k = rs * rs * block_sum(sgx, scratch) / C;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
      dx[row * C + c] = from_f32<T>(rs * (to_f32(dyr[c]) * to_f32(gamma[c]) - to_f32(xr[c]) * k));
  }
}

}  // namespace

std::tuple<Tensor, Tensor> rmsnorm_forward(const Tensor& x, const Tensor& gamma, float eps) {
  const int64_t C = x.size(-1);
  const int64_t rows = leading_rows(x.shape());
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor rstd = Tensor::empty({rows}, DType::Float32, x.device());
  if (rows == 0) return {y, rstd};
  OpContext ctx(x);
  RL_DISPATCH_FLOAT(x.dtype(), T, {
    const int vec = norm::vec_width<T>(C, {x.data(), y.data(), gamma.data()});
    auto run = [&](auto vec_c) {
      constexpr int VEC = decltype(vec_c)::value;
      auto kernel_of = [](int vpt) -> const void* {
        RL_NORM_DISPATCH_VPT(vpt, V, return reinterpret_cast<const void*>(rmsnorm_forward_kernel<T, VEC, V>));
        return nullptr;
      };
      const norm::RowConfig cfg = norm::choose_config(C, VEC, kernel_of);
      if (cfg.tpr == 0) {
        rmsnorm_forward_wide_kernel<T><<<grid_for(rows * norm::kWideThreads, norm::kWideThreads, ctx.device),
                                         norm::kWideThreads, 0, ctx.stream>>>(
            x.data_as<T>(), gamma.data_as<T>(), y.data_as<T>(), rstd.data_as<float>(), rows, int(C), eps);
        return;
      }
      const unsigned grid = unsigned(ceil_div(rows, cfg.rows_per_block()));
      RL_NORM_DISPATCH_VPT(cfg.vpt, VPT, {
        rmsnorm_forward_kernel<T, VEC, VPT><<<grid, cfg.block(), 0, ctx.stream>>>(
            x.data_as<T>(), gamma.data_as<T>(), y.data_as<T>(), rstd.data_as<float>(), rows, int(C), cfg.tpr, eps);
      });
    };
    if (vec == 1) run(std::integral_constant<int, 1>{});
    else run(std::integral_constant<int, Pack<T>::kN>{});
  });
  CUDA_CHECK_LAUNCH();
  return {y, rstd};
}

Tensor rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& rstd, Tensor& dgamma) {
  const int64_t C = x.size(-1);
  const int64_t rows = leading_rows(x.shape());
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (rows == 0) return dx;
  OpContext ctx(x);
  RL_DISPATCH_FLOAT(x.dtype(), T, {
    const int vec = norm::vec_width<T>(C, {x.data(), dy.data(), dx.data(), gamma.data()});
    auto run = [&](auto vec_c) {
      constexpr int VEC = decltype(vec_c)::value;
      auto kernel_of = [](int vpt) -> const void* {
        RL_NORM_DISPATCH_VPT(vpt, V, return reinterpret_cast<const void*>(rmsnorm_backward_kernel<T, VEC, V>));
        return nullptr;
      };
      const norm::RowConfig cfg = norm::choose_config(C, VEC, kernel_of);
      if (cfg.tpr == 0) {
        auto kernel = rmsnorm_backward_wide_kernel<T>;
        const int grid = norm::persistent_grid(kernel, norm::kWideThreads, 0, rows, ctx.device);
        Tensor partial = Tensor::empty({grid, C}, DType::Float32, x.device());
        kernel<<<grid, norm::kWideThreads, 0, ctx.stream>>>(dy.data_as<T>(), x.data_as<T>(), gamma.data_as<T>(),
                                                            rstd.data_as<float>(), dx.data_as<T>(),
                                                            partial.data_as<float>(), rows, int(C));
        CUDA_CHECK_LAUNCH();
        norm::reduce_partials(partial, grid, 1, C, dgamma, nullptr, ctx.stream);
        return;
      }
      const size_t smem = cfg.rows_per_block() > 1 ? size_t(C) * sizeof(float) : 0;
      const int64_t groups = ceil_div(rows, cfg.rows_per_block());
      RL_NORM_DISPATCH_VPT(cfg.vpt, VPT, {
        auto kernel = rmsnorm_backward_kernel<T, VEC, VPT>;
        const int grid = norm::persistent_grid(kernel, cfg.block(), smem, groups, ctx.device);
        Tensor partial = Tensor::empty({grid, C}, DType::Float32, x.device());
        kernel<<<grid, cfg.block(), smem, ctx.stream>>>(dy.data_as<T>(), x.data_as<T>(), gamma.data_as<T>(),
                                                        rstd.data_as<float>(), dx.data_as<T>(),
                                                        partial.data_as<float>(), rows, int(C), cfg.tpr);
        CUDA_CHECK_LAUNCH();
        norm::reduce_partials(partial, grid, 1, C, dgamma, nullptr, ctx.stream);
      });
    };
    if (vec == 1) run(std::integral_constant<int, 1>{});
    else run(std::integral_constant<int, Pack<T>::kN>{});
  });
  return dx;
}

}  // namespace ringloom::cuda
