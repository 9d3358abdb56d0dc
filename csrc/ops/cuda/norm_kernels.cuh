// The LayerNorm and RMSNorm kernels, one body for both (layernorm.cu and rmsnorm.cu only
// instantiate it). The two differ in three places, each an `if constexpr (kCenter)`:
//
//   LayerNorm (kCenter):  xhat = (x - mean) rstd,  y = xhat gamma + beta
//                          dx = rstd (g - mean(g) - xhat mean(g xhat)),  g = dy gamma
//                          dgamma = sum dy xhat,  dbeta = sum dy
//   RMSNorm:              xhat = x rstd,           y = xhat gamma
//                          dx = rstd (g - xhat mean(g xhat)),  dgamma = sum dy xhat
//
// with rstd = 1 / sqrt(mean((x - mean)^2) + eps) (mean = 0 for RMSNorm). The math and the
// CPU reference are in ops/layernorm.h and ops/rmsnorm.h; the thread layout, the
// register-held rows and the partial-sum scheme for the parameter gradients in norm.cuh.
//
// Bytes (bf16, rows x C): forward reads x and writes y (4 bytes per element, plus 4 or 8
// per row of statistics); backward reads x and dy and writes dx (6 bytes per element), plus
// 2 for a residual added to dx and 2 for the forward output y when asked for (the extras
// of ops/layernorm.h).
#pragma once
#include "ops/cuda/norm.cuh"

namespace ringloom::cuda::norm {

template <bool kCenter>
constexpr int kParams = kCenter ? 2 : 1;  // gamma (and beta): partial rows per block

// y = (x - mean) rstd gamma (+ beta): one expression for the forward and for a backward
// that also writes y, so the two agree bit for bit (the FMA is explicit, not left to
// contraction).
template <bool kCenter>
__device__ __forceinline__ float output_value(float x, float mean, float rstd, float gamma, float beta) {
  if constexpr (kCenter) return __fmaf_rn((x - mean) * rstd, gamma, beta);
  return (x - mean) * rstd * gamma;
}

template <bool kCenter, typename T, int VEC, int VPT>
__global__ void forward_kernel(const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta,
                               T* __restrict__ y, float* __restrict__ mean_out, float* __restrict__ rstd_out,
                               int64_t rows, int C, int tpr, float eps) {
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
    if constexpr (kCenter)
#pragma unroll
      for (int k = 0; k < VEC; ++k) s += v[j][k];
  }
  float mean = 0.0f;
  if constexpr (kCenter) mean = row_sum(s, tpr, scratch) / C;
  // Variance from the registers, around the mean: no cancellation as in E[x^2] - mean^2.
  // Columns past C hold 0 and must not count (x - mean != 0 there).
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
      float gm[VEC], bt[VEC] = {}, o[VEC];
      load_vec<T, VEC>(gamma + col, gm);
      if constexpr (kCenter) load_vec<T, VEC>(beta + col, bt);
#pragma unroll
      for (int k = 0; k < VEC; ++k) o[k] = output_value<kCenter>(v[j][k], mean, rstd, gm[k], bt[k]);
      store_vec<T, VEC>(yr + col, o);
    }
  }
  if (l == 0) {
    if constexpr (kCenter) mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

// The backward's optional extras (ops/layernorm.h), null when not asked for.
template <typename T>
struct Extras {
  const T* residual;  // added to dx
  const T* beta;      // LayerNorm's, for y
  T* y;               // the forward output
};

// Per-block partials of dgamma (and dbeta) go to partial[blockIdx.x][kParams][C].
// blockDim.x / tpr rows per block, each row group walking rows with a grid stride. x, dy
// and gamma stay in storage type (RawVec) and are converted where used; all of a row's
// loads are issued before the first use. The extras are read and written in the store
// loop, where the row is already in registers. kOut: write the forward output y (ex.y);
// a template flag, not a test of ex.y, because its registers (beta, the second pass over
// the row) would otherwise be reserved, and spilled at 3 vectors per thread, in every call.
template <bool kCenter, bool kOut, typename T, int VEC, int VPT>
__global__ void __maxnreg__(bwd_max_regs(VPT))
    backward_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ gamma,
                    const float* __restrict__ mean, const float* __restrict__ rstd, T* __restrict__ dx,
                    float* __restrict__ partial, int64_t rows, int C, Extras<T> ex, int tpr) {
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
        if (ex.residual) {
          const V r = load_raw<T, VEC>(ex.residual + row * C + col);
#pragma unroll
          for (int k = 0; k < VEC; ++k) o[k] += raw_f32(r, k);
        }
        store_vec<T, VEC>(dxr + col, o);
      }
    }
    if constexpr (kOut) {
      T* yr = ex.y + row * C;
#pragma unroll
      for (int j = 0; j < VPT; ++j) {
        const int col = (l + j * tpr) * VEC;
        if (col < C) {
          V bt;
          if constexpr (kCenter) bt = load_raw_volatile<T, VEC>(ex.beta + col);
          float o[VEC];
#pragma unroll
          for (int k = 0; k < VEC; ++k)
            o[k] = output_value<kCenter>(raw_f32(xv[j], k), m, rs, raw_f32(gm[j], k), kCenter ? raw_f32(bt, k) : 0.0f);
          store_vec<T, VEC>(yr + col, o);
        }
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

// Rows too wide for the register kernels (choose_config returned tpr = 0): one block per
// row, each pass re-reading the row (from L2). The backward grid is persistent; each
// thread owns the columns c = threadIdx.x (mod blockDim.x) of its block's partial row and
// adds into it in row order, so the result stays deterministic without atomics.
template <bool kCenter, typename T>
__global__ void forward_wide_kernel(const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta,
                                    T* __restrict__ y, float* __restrict__ mean_out, float* __restrict__ rstd_out,
                                    int64_t rows, int C, float eps) {
  __shared__ float scratch[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * C;
    float mean = 0.0f;
    if constexpr (kCenter) {
      float s = 0.0f;
      for (int c = threadIdx.x; c < C; c += blockDim.x) s += to_f32(xr[c]);
      mean = block_sum(s, scratch) / C;
    }
    float q = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
      const float d = to_f32(xr[c]) - mean;
      q += d * d;
    }
    const float rstd = rsqrtf(block_sum(q, scratch) / C + eps);
    for (int c = threadIdx.x; c < C; c += blockDim.x)
      y[row * C + c] = from_f32<T>(
          output_value<kCenter>(to_f32(xr[c]), mean, rstd, to_f32(gamma[c]), kCenter ? to_f32(beta[c]) : 0.0f));
    if (threadIdx.x == 0) {
      if constexpr (kCenter) mean_out[row] = mean;
      rstd_out[row] = rstd;
    }
  }
}

template <bool kCenter, typename T>
__global__ void backward_wide_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ gamma,
                                     const float* __restrict__ mean, const float* __restrict__ rstd,
                                     T* __restrict__ dx, float* __restrict__ partial, int64_t rows, int C,
                                     Extras<T> ex) {
  __shared__ float scratch[32];
  float* pg = partial + int64_t(blockIdx.x) * kParams<kCenter> * C;
  float* pb = pg + C;  // LayerNorm only
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    pg[c] = 0.0f;
    if constexpr (kCenter) pb[c] = 0.0f;
  }
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * C;
    const T* dyr = dy + row * C;
    const float m = kCenter ? mean[row] : 0.0f, rs = rstd[row];
    float sg = 0.0f, sgx = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
      const float xh = (to_f32(xr[c]) - m) * rs, d = to_f32(dyr[c]), g = d * to_f32(gamma[c]);
      sg += g;
      sgx += g * xh;
      pg[c] += d * xh;
      if constexpr (kCenter) pb[c] += d;
    }
    const float mg = kCenter ? block_sum(sg, scratch) / C : 0.0f;
    const float mgx = block_sum(sgx, scratch) / C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
      const float xv = to_f32(xr[c]), xh = (xv - m) * rs;
      float o = rs * (to_f32(dyr[c]) * to_f32(gamma[c]) - mg - xh * mgx);
      if (ex.residual) o += to_f32(ex.residual[row * C + c]);
      dx[row * C + c] = from_f32<T>(o);
      if (ex.y)
        ex.y[row * C + c] =
            from_f32<T>(output_value<kCenter>(xv, m, rs, to_f32(gamma[c]), kCenter ? to_f32(ex.beta[c]) : 0.0f));
    }
  }
}

// The launch layout for rows of C elements: 16-byte vectors when `vec` is the pack width,
// else scalars, and the RowConfig choose_config picks for the kernel family
// instance(VEC, VPT) (integral constants). Calls launch(kernel, cfg) with the chosen
// instance, or wide() for rows too wide for the register kernels.
template <typename T, typename Instance, typename Launch, typename Wide>
void dispatch_layout(int64_t C, int vec, Instance instance, Launch launch, Wide wide) {
  auto run = [&](auto vec_c) {
    auto kernel_of = [&](int vpt) -> const void* {
      RL_NORM_DISPATCH_VPT(vpt, V,
                           return reinterpret_cast<const void*>(instance(vec_c, std::integral_constant<int, V>{})));
      return nullptr;
    };
    const RowConfig cfg = choose_config(C, decltype(vec_c)::value, kernel_of);
    if (cfg.tpr == 0) return wide();
    RL_NORM_DISPATCH_VPT(cfg.vpt, V, launch(instance(vec_c, std::integral_constant<int, V>{}), cfg));
  };
  if (vec == 1) run(std::integral_constant<int, 1>{});
  else run(std::integral_constant<int, Pack<T>::kN>{});
}

// Forward into y and the statistics (mean: LayerNorm only, else nullptr; beta likewise).
template <bool kCenter>
void forward(const Tensor& x, const Tensor& gamma, const Tensor* beta, Tensor& y, Tensor* mean, Tensor& rstd,
             float eps) {
  const int64_t C = x.size(-1);
  const int64_t rows = leading_rows(x.shape());
  if (rows == 0) return;
  OpContext ctx(x);
  RL_DISPATCH_FLOAT(x.dtype(), T, {
    const T *px = x.data_as<T>(), *pg = gamma.data_as<T>(), *pb = beta ? beta->data_as<T>() : nullptr;
    T* py = y.data_as<T>();
    float* pm = mean ? mean->data_as<float>() : nullptr;
    float* pr = rstd.data_as<float>();
    const int vec = vec_width<T>(C, {px, py, pg, beta ? static_cast<const void*>(pb) : px});
    dispatch_layout<T>(
        C, vec, [](auto v, auto p) { return forward_kernel<kCenter, T, decltype(v)::value, decltype(p)::value>; },
        [&](auto kernel, const RowConfig& cfg) {
          const unsigned grid = unsigned(ceil_div(rows, cfg.rows_per_block()));
          kernel<<<grid, cfg.block(), 0, ctx.stream>>>(px, pg, pb, py, pm, pr, rows, int(C), cfg.tpr, eps);
        },
        [&] {
          const int grid = grid_for(rows * kWideThreads, kWideThreads, ctx.device);
          forward_wide_kernel<kCenter, T><<<grid, kWideThreads, 0, ctx.stream>>>(px, pg, pb, py, pm, pr, rows,
                                                                                 int(C), eps);
        });
  });
  CUDA_CHECK_LAUNCH();
}

// Backward: returns dx (+ residual, when defined) and adds the parameter gradients into
// dgamma (and dbeta); *y = the forward output when y is not null (beta: LayerNorm's).
template <bool kCenter>
Tensor backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor* mean, const Tensor& rstd,
                Tensor& dgamma, Tensor* dbeta, const Tensor& residual, const Tensor* beta, Tensor* y) {
  constexpr int NP = kParams<kCenter>;
  const int64_t C = x.size(-1);
  const int64_t rows = leading_rows(x.shape());
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (y) *y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (rows == 0) return dx;
  OpContext ctx(x);
  RL_DISPATCH_FLOAT(x.dtype(), T, {
    const T *pdy = dy.data_as<T>(), *px = x.data_as<T>(), *pg = gamma.data_as<T>();
    T* pdx = dx.data_as<T>();
    const float* pm = mean ? mean->data_as<float>() : nullptr;
    const float* pr = rstd.data_as<float>();
    const Extras<T> ex{residual.defined() ? residual.data_as<T>() : nullptr,
                       y && kCenter ? beta->data_as<T>() : nullptr, y ? y->data_as<T>() : nullptr};
    // One persistent grid: each block writes one partial row per parameter, which
    // reduce_partials then adds in block order.
    auto launch = [&](auto kernel, int block, size_t smem, int64_t work_blocks, auto... tail) {
      const int grid = persistent_grid(kernel, block, smem, work_blocks, ctx.device);
      Tensor partial = Tensor::empty({grid, NP, C}, DType::Float32, x.device());
      kernel<<<grid, block, smem, ctx.stream>>>(pdy, px, pg, pm, pr, pdx, partial.data_as<float>(), rows, int(C), ex,
                                                tail...);
      CUDA_CHECK_LAUNCH();
      reduce_partials(partial, grid, NP, C, dgamma, dbeta, ctx.stream);
    };
    const int vec =
        vec_width<T>(C, {px, pdy, pdx, pg, ex.residual ? ex.residual : px, ex.beta ? ex.beta : px, ex.y ? ex.y : px});
    auto run = [&](auto out_c) {
      constexpr bool kOut = decltype(out_c)::value;
      dispatch_layout<T>(
          C, vec,
          [](auto v, auto p) { return backward_kernel<kCenter, kOut, T, decltype(v)::value, decltype(p)::value>; },
          [&](auto kernel, const RowConfig& cfg) {
            const size_t smem = cfg.rows_per_block() > 1 ? size_t(NP * C) * sizeof(float) : 0;
            launch(kernel, cfg.block(), smem, ceil_div(rows, cfg.rows_per_block()), cfg.tpr);
          },
          [&] { launch(backward_wide_kernel<kCenter, T>, kWideThreads, 0, rows); });
    };
    if (ex.y) run(std::true_type{});
    else run(std::false_type{});
  });
  return dx;
}

}  // namespace ringloom::cuda::norm
