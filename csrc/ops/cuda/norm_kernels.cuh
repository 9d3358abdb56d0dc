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

// y = xhat gamma (+ beta), xhat = (x - mean) rstd: one expression for the forward and for
// a backward that also writes y, so the two agree bit for bit (the FMA is explicit, not
// left to contraction).
__device__ __forceinline__ float normalized(float x, float mean, float rstd) { return (x - mean) * rstd; }
template <bool kCenter>
__device__ __forceinline__ float output_value(float xhat, float gamma, float beta) {
  if constexpr (kCenter) return __fmaf_rn(xhat, gamma, beta);
  return xhat * gamma;
}

template <bool kCenter, typename T, int VEC, int VPT>
__global__ void forward_kernel(const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta,
                               T* __restrict__ y, float* __restrict__ mean_out, float* __restrict__ rstd_out,
                               int64_t rows, int C, int tpr, float eps) {
  __shared__ float scratch[32];
  const int rpb = blockDim.x / tpr;
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
      for (int k = 0; k < VEC; ++k) o[k] = output_value<kCenter>(normalized(v[j][k], mean, rstd), gm[k], bt[k]);
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

// A thread's sums of dgamma (and dbeta), one per element it holds of every row, kept in
// shared memory rather than registers: registers go to the row itself (in fp32, below) and
// to more warps per SM. Laid out as 16-byte words [word][thread], so a warp's access is 512
// contiguous bytes (no bank conflicts); updated once per row, one LDS.128 + STS.128 per 4
// sums. Thread t of a block owns words t, t + blockDim.x, ...; nobody else touches them
// until the block's final combine.
template <int NP, int VPT, int VEC>
struct SmemSums {
  static constexpr int W = VEC % 4 == 0 ? 4 : 1;  // floats per word
  static constexpr int kWords = NP * VPT * (VEC / W);
  float* base;
  __device__ float* word(int p, int j, int h, int t) const {
    return base + (size_t((p * VPT + j) * (VEC / W) + h) * blockDim.x + t) * W;
  }
  __device__ void zero() const {
#pragma unroll
    for (int i = 0; i < kWords; ++i) {
      float* q = base + (size_t(i) * blockDim.x + threadIdx.x) * W;
      if constexpr (W == 4) *reinterpret_cast<float4*>(q) = make_float4(0.f, 0.f, 0.f, 0.f);
      else *q = 0.f;
    }
  }
  // sums[p][j][k] += a[k] * b[k] (product false: += a[k]).
  __device__ void add(int p, int j, const float (&a)[VEC], const float (&b)[VEC], bool product) const {
#pragma unroll
    for (int h = 0; h < VEC / W; ++h) {
      float* q = word(p, j, h, threadIdx.x);
      if constexpr (W == 4) {
        float4 v = *reinterpret_cast<float4*>(q);
        const int k = 4 * h;
        if (product) {
          v.x = __fmaf_rn(a[k], b[k], v.x), v.y = __fmaf_rn(a[k + 1], b[k + 1], v.y);
          v.z = __fmaf_rn(a[k + 2], b[k + 2], v.z), v.w = __fmaf_rn(a[k + 3], b[k + 3], v.w);
        } else {
          v.x += a[k], v.y += a[k + 1], v.z += a[k + 2], v.w += a[k + 3];
        }
        *reinterpret_cast<float4*>(q) = v;
      } else {
        *q = product ? __fmaf_rn(a[h], b[h], *q) : *q + a[h];
      }
    }
  }
  __device__ float at(int p, int j, int k, int t) const { return word(p, j, k / W, t)[k % W]; }
};

// Per-block partials of dgamma (and dbeta) go to partial[blockIdx.x][kParams][C].
// blockDim.x / tpr rows per block, each row group walking rows with a grid stride.
//
// Per row, one pass over the loaded x, dy and gamma (in storage type, RawVec) converts
// each element once and keeps what dx needs in fp32: xhat and g = dy gamma, while adding
// the row sums (of g and g xhat) and the sums of dgamma (dy xhat) and dbeta (dy). After the
// row reductions, dx = rstd (g - mean(g) - xhat mean(g xhat)) is two FMAs per element.
// Each element is widened once, not once per use: the kernel is bound by issued
// instructions as much as by bytes, so that count decides its speed.
// The extras are read and written in the store loop. kOut: write the forward output y
// (ex.y); a template flag, not a test of ex.y, so the path costs no registers when unused.
template <bool kCenter, bool kOut, typename T, int VEC, int VPT>
__global__ void __maxnreg__(bwd_max_regs(VPT))
    backward_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ gamma,
                    const float* __restrict__ mean, const float* __restrict__ rstd, T* __restrict__ dx,
                    float* __restrict__ partial, int64_t rows, int C, Extras<T> ex, int tpr) {
  using V = RawVec<T, VEC>;
  constexpr int NP = kParams<kCenter>;
  extern __shared__ float4 sums_smem[];
  const SmemSums<NP, VPT, VEC> sums{reinterpret_cast<float*>(sums_smem)};
  __shared__ float2 scratch[32];
  const int rpb = blockDim.x / tpr;
  const int g = threadIdx.x / tpr, l = threadIdx.x % tpr;
  const int64_t stride = int64_t(gridDim.x) * rpb;
  sums.zero();

  // rpb > 1 only with one warp per row, so the loop condition is warp-uniform; with one
  // block per row it is block-uniform (row_sum/row_sum2 have barriers).
  for (int64_t row = int64_t(blockIdx.x) * rpb + g; row < rows; row += stride) {
    float xh[VPT][VEC], gk[VPT][VEC];
    float2 s = make_float2(0.0f, 0.0f);  // sum g, sum g xhat
    const float m = kCenter ? mean[row] : 0.0f, rs = rstd[row];
    {
      V xv[VPT], dv[VPT], gm[VPT];
      load_row<T, VEC, VPT>(x + row * C, l, tpr, C, xv);
      load_row<T, VEC, VPT>(dy + row * C, l, tpr, C, dv);
      // gamma: re-read for every row (L1 hits) rather than held: registers are the limit.
      load_row_volatile<T, VEC, VPT>(gamma, l, tpr, C, gm);
      // Columns past C hold x = dy = gamma = 0: they add nothing to the sums.
#pragma unroll
      for (int j = 0; j < VPT; ++j) {
        float d[VEC];
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          xh[j][k] = normalized(raw_f32(xv[j], k), m, rs);
          d[k] = raw_f32(dv[j], k);
          gk[j][k] = d[k] * raw_f32(gm[j], k);
          if constexpr (kCenter) s.x += gk[j][k];
          s.y = __fmaf_rn(gk[j][k], xh[j][k], s.y);
        }
        sums.add(0, j, d, xh[j], true);
        if constexpr (kCenter) sums.add(1, j, d, d, false);
      }
    }
    if constexpr (kCenter) s = row_sum2(s, tpr, scratch);
    else s.y = row_sum(s.y, tpr, reinterpret_cast<float*>(scratch));
    // dx = rstd g - rstd mean(g) - xhat (rstd mean(g xhat)); mean(g) = 0 for RMSNorm.
    const float a = -rs * (s.x / C), b = -rs * (s.y / C);
    T* dxr = dx + row * C;
#pragma unroll
    for (int j = 0; j < VPT; ++j) {
      const int col = (l + j * tpr) * VEC;
      if (col < C) {
        float o[VEC];
#pragma unroll
        for (int k = 0; k < VEC; ++k) o[k] = __fmaf_rn(xh[j][k], b, __fmaf_rn(rs, gk[j][k], a));
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
          const V gv = load_raw_volatile<T, VEC>(gamma + col);
          V bt;
          if constexpr (kCenter) bt = load_raw_volatile<T, VEC>(ex.beta + col);
          float o[VEC];
#pragma unroll
          for (int k = 0; k < VEC; ++k)
            o[k] = output_value<kCenter>(xh[j][k], raw_f32(gv, k), kCenter ? raw_f32(bt, k) : 0.0f);
          store_vec<T, VEC>(yr + col, o);
        }
      }
    }
  }
  // The reduce kernel may start launching now (it waits for this grid to finish).
  asm volatile("griddepcontrol.launch_dependents;");
  __syncthreads();
  // The block's partial row: each column summed over the block's row groups in group order.
  float* out = partial + int64_t(blockIdx.x) * NP * C;
  for (int i = threadIdx.x; i < NP * C; i += blockDim.x) {
    const int p = i / C, c = i - p * C, v = c / VEC, k = c - v * VEC, lane = v % tpr, j = v / tpr;
    float t = sums.at(p, j, k, lane);
    for (int gi = 1; gi < rpb; ++gi) t += sums.at(p, j, k, gi * tpr + lane);
    out[i] = t;
  }
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
      y[row * C + c] = from_f32<T>(output_value<kCenter>(normalized(to_f32(xr[c]), mean, rstd), to_f32(gamma[c]),
                                                         kCenter ? to_f32(beta[c]) : 0.0f));
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
        ex.y[row * C + c] = from_f32<T>(
            output_value<kCenter>(normalized(xv, m, rs), to_f32(gamma[c]), kCenter ? to_f32(ex.beta[c]) : 0.0f));
    }
  }
}

// The launch layout for rows of C elements: 16-byte vectors when `vec` is the pack width,
// else scalars, and the RowConfig choose_config picks for the kernel family
// instance(VEC, VPT) (integral constants). Calls launch(kernel, cfg) with the chosen
// instance, or wide() for rows too wide for the register kernels.
template <typename T, typename Instance, typename Launch, typename Wide>
void dispatch_layout(int64_t C, int vec, LayoutRule rule, Instance instance, Launch launch, Wide wide) {
  auto run = [&](auto vec_c) {
    auto kernel_of = [&](int vpt) -> const void* {
      RL_NORM_DISPATCH_VPT(vpt, V,
                           return reinterpret_cast<const void*>(instance(vec_c, std::integral_constant<int, V>{})));
      return nullptr;
    };
    const RowConfig cfg = choose_config(C, decltype(vec_c)::value, kernel_of, rule);
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
        C, vec, kForwardLayout, [](auto v, auto p) { return forward_kernel<kCenter, T, decltype(v)::value, decltype(p)::value>; },
        [&](auto kernel, const RowConfig& cfg) {
          const unsigned grid = unsigned(ceil_div(rows, cfg.rows));
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
          C, vec, kBackwardLayout,
          [](auto v, auto p) { return backward_kernel<kCenter, kOut, T, decltype(v)::value, decltype(p)::value>; },
          [&](auto kernel, const RowConfig& cfg) {
            // The sums in shared memory (SmemSums): NP x VPT x VEC floats per thread.
            const size_t smem = size_t(NP) * cfg.vpt * cfg.vec * sizeof(float) * cfg.block();
            if (fits_dynamic_smem(kernel, cfg.block(), smem, ctx.device))
              launch(kernel, cfg.block(), smem, ceil_div(rows, cfg.rows), cfg.tpr);
            else
              launch(backward_wide_kernel<kCenter, T>, kWideThreads, 0, rows);
          },
          [&] { launch(backward_wide_kernel<kCenter, T>, kWideThreads, 0, rows); });
    };
    if (ex.y) run(std::true_type{});
    else run(std::false_type{});
  });
  return dx;
}

}  // namespace ringloom::cuda::norm
