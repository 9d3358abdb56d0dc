// CPU LayerNorm, the reference for the CUDA kernels; the math is in ops/layernorm.h.
//
// Row statistics are summed in double (two passes: mean, then squared deviations) so the
// reference carries no cancellation error of its own; the saved mean/rstd are fp32, as the
// header promises and as the CUDA path saves them. Rows are independent and run in
// parallel. dgamma/dbeta are column sums over rows: each block of columns is summed by one
// thread in row order, so the result does not depend on the number of threads.
#include "ops/layernorm.h"

#include <algorithm>
#include <cmath>

namespace ringloom::cpu {

namespace {
constexpr int64_t kParallelMin = 1 << 14;  // elements; smaller problems stay on one thread
constexpr int64_t kColumnBlock = 64;       // columns per task in the dgamma/dbeta sums

// y = (x - mean) rstd gamma + beta for one row: the forward's output, and the backward's
// when it also writes y (the same statements on the same fp32 statistics: the same bits).
void output_row(const float* xr, float m, float s, const float* w, const float* b, float* yr, int64_t C) {
  for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - m) * s * w[c] + b[c];
}
}  // namespace

std::tuple<Tensor, Tensor, Tensor> layernorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                                     float eps) {
  const int64_t C = x.size(-1), rows = leading_rows(x.shape());
  Tensor y = Tensor::empty(x.shape(), DType::Float32);
  Tensor mean = Tensor::empty({rows}, DType::Float32);
  Tensor rstd = Tensor::empty({rows}, DType::Float32);
  const float* xp = x.data_as<float>();
  const float* w = gamma.data_as<float>();
  const float* b = beta.data_as<float>();
  float* yp = y.data_as<float>();
  float* mp = mean.data_as<float>();
  float* rp = rstd.data_as<float>();
#pragma omp parallel for schedule(static) if (rows * C > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = xp + r * C;
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < C; ++c) sum += xr[c];
    const double m = sum / double(C);
    double sq = 0.0;
#pragma omp simd reduction(+ : sq)
    for (int64_t c = 0; c < C; ++c) sq += (xr[c] - m) * (xr[c] - m);
    const float mf = float(m);
    const float s = float(1.0 / std::sqrt(sq / double(C) + double(eps)));
    mp[r] = mf;
    rp[r] = s;
    output_row(xr, mf, s, w, b, yp + r * C, C);
  }
  return {y, mean, rstd};
}

Tensor layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                          const Tensor& rstd, Tensor& dgamma, Tensor& dbeta, const Tensor& residual,
                          const Tensor& beta, Tensor* y) {
  const int64_t C = x.size(-1), rows = leading_rows(x.shape());
  Tensor dx = Tensor::empty(x.shape(), DType::Float32);
  if (y) *y = Tensor::empty(x.shape(), DType::Float32);
  const float* res = residual.defined() ? residual.data_as<float>() : nullptr;
  const float* bp = y ? beta.data_as<float>() : nullptr;
  float* yp = y ? y->data_as<float>() : nullptr;
  const float* g = dy.data_as<float>();
  const float* xp = x.data_as<float>();
  const float* w = gamma.data_as<float>();
  const float* mp = mean.data_as<float>();
  const float* rp = rstd.data_as<float>();
  float* dxp = dx.data_as<float>();
  const bool parallel = rows * C > kParallelMin;

  // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  g = dy * gamma.
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r = 0; r < rows; ++r) {
    const float* gr = g + r * C;
    const float* xr = xp + r * C;
    const float m = mp[r], s = rp[r];
    float* dxr = dxp + r * C;
    double sum_g = 0.0, sum_gx = 0.0;
    // g = dy * gamma is rounded once and kept in dx, so that the second loop subtracts
    // mean(g) from the very values it was summed from: recomputing dy * gamma there lets the
    // compiler fuse it into an FMA (-march=native), whose unrounded product no longer
    // cancels against the mean (C = 1 gave dx ~ 1e-6 instead of 0).
#pragma omp simd reduction(+ : sum_g, sum_gx)
    for (int64_t c = 0; c < C; ++c) {
      const float gc = gr[c] * w[c];
      dxr[c] = gc;
      sum_g += gc;
      sum_gx += gc * ((xr[c] - m) * s);
    }
    const float mean_g = float(sum_g / double(C)), mean_gx = float(sum_gx / double(C));
    for (int64_t c = 0; c < C; ++c) {
      const float xhat = (xr[c] - m) * s;
      dxr[c] = s * (dxr[c] - mean_g - xhat * mean_gx);
    }
    if (res)
      for (int64_t c = 0; c < C; ++c) dxr[c] += res[r * C + c];
    if (yp) output_row(xr, m, s, w, bp, yp + r * C, C);
  }

  // dgamma += sum_rows dy * xhat,  dbeta += sum_rows dy.
  float* dw = dgamma.data_as<float>();
  float* db = dbeta.data_as<float>();
  const int64_t blocks = (C + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t k = 0; k < blocks; ++k) {
    const int64_t c0 = k * kColumnBlock, n = std::min(kColumnBlock, C - c0);
    double acc_w[kColumnBlock] = {}, acc_b[kColumnBlock] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const float* gr = g + r * C + c0;
      const float* xr = xp + r * C + c0;
      const float m = mp[r], s = rp[r];
      for (int64_t j = 0; j < n; ++j) {
        acc_w[j] += gr[j] * ((xr[j] - m) * s);
        acc_b[j] += gr[j];
      }
    }
    for (int64_t j = 0; j < n; ++j) {
      dw[c0 + j] += float(acc_w[j]);
      db[c0 + j] += float(acc_b[j]);
    }
  }
  return dx;
}

}  // namespace ringloom::cpu
