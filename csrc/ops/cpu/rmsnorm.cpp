// CPU RMSNorm, the reference for the CUDA kernels; the math is in ops/rmsnorm.h.
//
// Same structure as cpu/layernorm.cpp: row sums in double, rows in parallel, fp32 rstd
// saved per row; dgamma is a column sum done per block of columns in row order, so it is
// the same on any number of threads.
#include "ops/rmsnorm.h"

#include <algorithm>
#include <cmath>

namespace ringloom::cpu {

namespace {
constexpr int64_t kParallelMin = 1 << 14;  // elements; smaller problems stay on one thread
constexpr int64_t kColumnBlock = 64;       // columns per task in the dgamma sum

// y = x rstd gamma for one row: the forward's output, and the backward's when it also
// writes y (the same statements on the same fp32 rstd: the same bits).
void output_row(const float* xr, float s, const float* w, float* yr, int64_t C) {
  for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * s * w[c];
}
}  // namespace

std::tuple<Tensor, Tensor> rmsnorm_forward(const Tensor& x, const Tensor& gamma, float eps) {
  const int64_t C = x.size(-1), rows = leading_rows(x.shape());
  Tensor y = Tensor::empty(x.shape(), DType::Float32);
  Tensor rstd = Tensor::empty({rows}, DType::Float32);
  const float* xp = x.data_as<float>();
  const float* w = gamma.data_as<float>();
  float* yp = y.data_as<float>();
  float* rp = rstd.data_as<float>();
#pragma omp parallel for schedule(static) if (rows * C > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = xp + r * C;
    double sq = 0.0;
#pragma omp simd reduction(+ : sq)
    for (int64_t c = 0; c < C; ++c) sq += double(xr[c]) * xr[c];
    const float s = float(1.0 / std::sqrt(sq / double(C) + double(eps)));
    rp[r] = s;
    output_row(xr, s, w, yp + r * C, C);
  }
  return {y, rstd};
}

Tensor rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& rstd, Tensor& dgamma,
                        const Tensor& residual, Tensor* y) {
  const int64_t C = x.size(-1), rows = leading_rows(x.shape());
  Tensor dx = Tensor::empty(x.shape(), DType::Float32);
  if (y) *y = Tensor::empty(x.shape(), DType::Float32);
  const float* res = residual.defined() ? residual.data_as<float>() : nullptr;
  float* yp = y ? y->data_as<float>() : nullptr;
  const float* g = dy.data_as<float>();
  const float* xp = x.data_as<float>();
  const float* w = gamma.data_as<float>();
  const float* rp = rstd.data_as<float>();
  float* dxp = dx.data_as<float>();
  const bool parallel = rows * C > kParallelMin;

  // dx = rstd * (g - x * rstd^2 * mean(g * x)),  g = dy * gamma.
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r = 0; r < rows; ++r) {
    const float* gr = g + r * C;
    const float* xr = xp + r * C;
    const float s = rp[r];
    double sum_gx = 0.0;
#pragma omp simd reduction(+ : sum_gx)
    for (int64_t c = 0; c < C; ++c) sum_gx += double(gr[c] * w[c]) * xr[c];
    const float k = s * s * float(sum_gx / double(C));
    float* dxr = dxp + r * C;
    for (int64_t c = 0; c < C; ++c) dxr[c] = s * (gr[c] * w[c] - xr[c] * k);
    if (res)
      for (int64_t c = 0; c < C; ++c) dxr[c] += res[r * C + c];
    if (yp) output_row(xr, s, w, yp + r * C, C);
  }

  // dgamma += sum_rows dy * x * rstd.
  float* dw = dgamma.data_as<float>();
  const int64_t blocks = (C + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t c0 = b * kColumnBlock, n = std::min(kColumnBlock, C - c0);
    double acc[kColumnBlock] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const float* gr = g + r * C + c0;
      const float* xr = xp + r * C + c0;
      const float s = rp[r];
      for (int64_t j = 0; j < n; ++j) acc[j] += gr[j] * (xr[j] * s);
    }
    for (int64_t j = 0; j < n; ++j) dw[c0 + j] += float(acc[j]);
  }
  return dx;
}

}  // namespace ringloom::cpu
