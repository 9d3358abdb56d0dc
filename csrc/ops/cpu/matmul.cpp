#include "ops/matmul.h"

#include <algorithm>
#include <cstring>

#include "ops/cpu/blas.h"

namespace ringloom::cpu {

Tensor matmul_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual) {
  const int64_t K = x.size(-1), N = w.size(0), M = leading_rows(x.shape());
  Shape out_shape = x.shape();
  out_shape.back() = N;
  Tensor y = Tensor::empty(out_shape, DType::Float32);
  float* yp = y.data_as<float>();
  float beta = 0.0f;
  // Seed y with the residual and every row with the bias; the GEMM accumulates onto them.
  if (residual.defined()) {
    std::memcpy(yp, residual.data_as<float>(), size_t(M) * size_t(N) * sizeof(float));
    beta = 1.0f;
  }
  if (bias.defined()) {
    const float* bp = bias.data_as<float>();
    if (beta == 0.0f)
      for (int64_t m = 0; m < M; ++m) std::memcpy(yp + m * N, bp, size_t(N) * sizeof(float));
    else
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) yp[m * N + n] += bp[n];
    beta = 1.0f;
  }
  sgemm(false, true, M, N, K, 1.0f, x.data_as<float>(), K, w.data_as<float>(), K, beta, yp, N);
  return y;
}

Tensor matmul_backward_input(const Tensor& dy, const Tensor& w) {
  const int64_t N = w.size(0), K = w.size(1), M = leading_rows(dy.shape());
  Shape shape = dy.shape();
  shape.back() = K;
  // beta = 0 GEMM overwrites dx, so only the empty sum (N == 0) needs the zero fill.
  if (N == 0) return Tensor::zeros(shape, DType::Float32);
  Tensor dx = Tensor::empty(shape, DType::Float32);
  sgemm(false, false, M, K, N, 1.0f, dy.data_as<float>(), N, w.data_as<float>(), K, 0.0f, dx.data_as<float>(), K);
  return dx;
}

void matmul_backward_weight(const Tensor& dy, const Tensor& x, Tensor& dw, Tensor& dbias, bool accumulate) {
  const int64_t N = dy.size(-1), K = x.size(-1), M = leading_rows(dy.shape());
  if (!accumulate) dw.zero_();
  if (M > 0) sgemm(true, false, N, K, M, 1.0f, dy.data_as<float>(), N, x.data_as<float>(), K, 1.0f, dw.data_as<float>(), K);
  if (dbias.defined()) {
    if (!accumulate) dbias.zero_();
    float* db = dbias.data_as<float>();
    const float* g = dy.data_as<float>();
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) db[n] += g[m * N + n];
  }
}

}  // namespace ringloom::cpu
